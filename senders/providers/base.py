"""The interface every provider module implements, and the errors it raises.

A provider turns one `Message` into one call to a third-party service. It knows the
provider's wire protocol and error vocabulary and nothing about Kafka, retries or the
ledger: the sender runtime decides what an error means for the delivery from
`DeliveryError.retriable`, `retry_after` and `invalid_address`.
"""

from __future__ import annotations

import abc
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx

from infra.links import LIST_UNSUBSCRIBE
from schemas.channels import MANDATORY_CATEGORIES
from schemas.errors import HeraldError
from senders.providers.smtp_client import ConnectFailed


@dataclass(frozen=True)
class Message:
    """What a provider needs to deliver one delivery record."""

    delivery_id: str
    notification_id: str
    channel: str  # push.ios | push.android | push.web | sms | email | inapp
    address: str  # device token, E.164 number, email address, or user id (inapp)
    body: str
    title: str | None = None
    subject: str | None = None
    html: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    collapse_key: str | None = None
    expires_at: datetime | None = None
    priority: str = "normal"  # high | normal | low
    category: str = "transactional"
    created_at: datetime | None = None  # when the processor fanned the delivery out

    def unsubscribe_headers(self) -> list[tuple[str, str]]:
        """RFC 2369 `List-Unsubscribe` with the processor's signed one-click URL and RFC 8058
        `List-Unsubscribe-Post`, which Gmail and Yahoo require of bulk mail; never on a
        mandatory category (security mail cannot be unsubscribed from)."""
        url = self.data.get(LIST_UNSUBSCRIBE)
        if not url or self.category in MANDATORY_CATEGORIES:
            return []
        return [
            ("List-Unsubscribe", f"<{url}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]


@dataclass(frozen=True)
class SendResult:
    provider: str
    message_id: str | None  # the provider's id for the accepted message, when it gives one


class DeliveryError(HeraldError):
    """A failed send. `retriable` says whether the same message may succeed later."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str,
        retriable: bool | None = None,
        retry_after: float | None = None,
        invalid_address: bool = False,
        status: int | None = None,
        ambiguous: bool | None = None,
    ) -> None:
        super().__init__(f"{provider}: {reason}")
        self.reason = reason  # short and PII-free, e.g. "apns:410 Unregistered"
        self.provider = provider
        if retriable is not None:
            self.retriable = retriable
        self.retry_after = retry_after  # seconds the provider asked us to wait
        self.invalid_address = invalid_address  # token unregistered / number invalid
        self.status = status
        # Whether the provider may have accepted the message despite the error; None lets
        # the runtime infer it (an answer with a status = not accepted; no answer = maybe).
        self.ambiguous = ambiguous


# Raised before any byte of the request left this process: the provider cannot have taken
# the message, so failing over or retrying is safe.
NOT_SENT: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    ssl.SSLError,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    ConnectFailed,
)


class RetriableError(DeliveryError):
    """Transient: throttling, 5xx, timeouts, connection errors."""

    retriable = True


class PermanentError(DeliveryError):
    """Never succeeds as is: bad payload, rejected address, auth misconfiguration."""

    retriable = False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Provider(abc.ABC):
    """One third-party service for one or more channels.

    Lifecycle: `start()` once before the first `send()`; `send()` may then be called
    concurrently from many tasks; `close()` once after the last `send()` returns.
    """

    name: str
    channels: frozenset[str]
    # Stores into herald's own Cassandra (the inapp feed): created with the sender's session.
    needs_session: bool = False
    # Sends this client can have in progress at once (its connection pool); a send beyond
    # it waits inside the client. The handler takes a delivery's claim only once there is
    # room, so a delivery queued here is never claimed, and a crash cannot leave it
    # `uncertain_after_crash`. None: no limit of its own (HTTP/2 streams: the server's).
    concurrency: int | None = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, load credentials. Raising here stops the sender."""

    @abc.abstractmethod
    async def send(self, message: Message) -> SendResult:
        """Deliver one message, or raise `DeliveryError`.

        Returns only once the provider has accepted the message. Any other exception
        is treated by the runtime as retriable.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; no `send()` is in flight."""
