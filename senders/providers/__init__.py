"""Provider modules, one per third-party service, behind `senders.providers.base.Provider`.

The registry maps a provider name (as used in routing settings) to an import string, so a
sender process imports only the providers its channels use (firebase-admin is heavy).
Adding a provider = one module + one line here + one settings section.
"""

from __future__ import annotations

import importlib
from typing import Any

from senders.providers.base import Provider
from senders.providers.settings import ProvidersSettings

PROVIDERS: dict[str, str] = {
    "apns": "senders.providers.apns:ApnsProvider",
    "fcm": "senders.providers.fcm:FcmProvider",
    "webpush": "senders.providers.webpush:WebpushProvider",
    "twilio": "senders.providers.twilio:TwilioProvider",
    "vonage": "senders.providers.vonage:VonageProvider",
    "smtp": "senders.providers.smtp:SmtpProvider",
    "sendgrid": "senders.providers.sendgrid:SendgridProvider",
    "inapp": "senders.providers.inapp:InappProvider",
    "null": "senders.providers.null:NullProvider",
}


def load(name: str) -> type[Provider]:
    """The provider class registered under `name`; KeyError names the known ones."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise KeyError(
            f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create(name: str, settings: ProvidersSettings, session: Any = None) -> Provider:
    """A new, not yet started, provider configured from its section of `settings`; one
    that stores into Cassandra itself (`needs_session`, the inapp feed) gets `session`."""
    cls = load(name)
    section = getattr(settings, name)
    if cls.needs_session:
        return cls(section, session)  # type: ignore[call-arg]
    provider: Provider = cls(section)  # type: ignore[call-arg]
    return provider


__all__ = ["PROVIDERS", "create", "load"]
