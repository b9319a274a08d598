"""Settings of the intake services (send API, scheduler, CLI): one class, read once at
each entry point from `HERALD_*` variables (nested with `__`, e.g. HERALD_API__PORT)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from infra.inbox import InboxSettings
from infra.links import LinkSettings
from infra.settings import ServiceSettings
from producers.request import DEFAULT_MAX_PAYLOAD_BYTES
from schemas.contract import Topics
from schemas.validation import DEFAULT_PHONE_REGION


class ApiSection(BaseModel):
    host: str = "0.0.0.0"
    port: int = 8080
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES  # per encoded request
    max_batch: int = 500
    max_body_bytes: int = 8 * 1024 * 1024
    # Default quota of a client created without one: sustained requests/s and burst.
    default_rate_per_s: float = 100.0
    default_burst: int = 200
    # How long a positive lookup (client secret, known user, known template) is trusted.
    cache_ttl_s: float = 30.0
    # Failed logins allowed per app key and per client address before 429, and their refill.
    failed_logins_burst: int = 10
    failed_logins_per_minute: float = 10.0
    check_users: bool = True
    check_templates: bool = True


LOCAL_CONTACT_KEY = "herald-local-contact-key"


class ContactsSection(BaseModel):
    # Keys `users_by_contact` and derives device ids: every service writing contacts must
    # share it. The default only suits a local stack (refused outside HERALD_PROFILE=dev).
    hmac_key: SecretStr = SecretStr(LOCAL_CONTACT_KEY)
    phone_region: str = DEFAULT_PHONE_REGION  # for numbers written without +country


class SchedulerSection(BaseModel):
    interval_s: float = 1.0
    # After downtime, the latest missed firing of a schedule is still sent if it is at most
    # this old; older missed firings are skipped (a daily digest should not arrive 3 times).
    misfire_grace_s: float = 900.0
    owners: list[str] = Field(default_factory=list)  # empty = every owner


class SmsInboundSection(BaseModel):
    # Twilio signs every webhook with the account's auth token; unset = the webhook is off.
    twilio_auth_token: SecretStr | None = None
    # The URL as configured in Twilio (what it signs), when a proxy changes what we see.
    public_url: str | None = None
    help_text: str = "herald notifications. Reply STOP to unsubscribe, START to resubscribe."
    # Empty with Twilio's Advanced Opt-Out, which sends its own confirmations.
    stop_text: str = (
        "You are unsubscribed and will receive no more messages. Reply START to resubscribe."
    )
    start_text: str = "You are resubscribed. Reply STOP to unsubscribe."


class IntakeSettings(ServiceSettings):
    api: ApiSection = Field(default_factory=ApiSection)
    contacts: ContactsSection = Field(default_factory=ContactsSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    # Verifies the unsubscribe and preference links the processor signs (same secret).
    links: LinkSettings = Field(default_factory=LinkSettings)
    sms_inbound: SmsInboundSection = Field(default_factory=SmsInboundSection)
    # The in-app feed's API: page sizes, the cap, the live stream, user tokens.
    inbox: InboxSettings = Field(default_factory=InboxSettings)

    def published_secrets(self) -> list[str]:
        """Variables whose secrets still hold the default published in herald's source."""
        published = self.contacts.hmac_key.get_secret_value() == LOCAL_CONTACT_KEY
        contacts = ["HERALD_CONTACTS__HMAC_KEY"] if published else []
        return contacts + self.links.published_secrets("HERALD_LINKS__SECRET")

    def publisher_args(self, client: str) -> dict[str, Any]:
        """Keyword arguments of `Publisher`/`AsyncPublisher` for this deployment."""
        return {
            "client": client,
            "topic": Topics(self.topic_prefix).requested,
            "changes_topic": Topics(self.topic_prefix).user_changes,
            "template_changes_topic": Topics(self.topic_prefix).template_changes,
            "max_payload_bytes": self.api.max_payload_bytes,
        }
