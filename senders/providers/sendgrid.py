"""Email through the SendGrid v3 Mail Send API: the fallback email provider.

`POST /v3/mail/send` with `Authorization: Bearer <api key>` and a JSON body (one
personalization per message; the delivery id travels as a custom arg and as the
`X-Herald-Delivery-Id` header of the email). 202 means accepted; the `X-Message-Id`
response header is the provider's message id.

Errors (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send#responses):
400 on a recipient field rejects the address; other 4xx (401/403 bad key, 413 too large)
are permanent; 429 (waiting until `X-RateLimit-Reset` or `Retry-After`) and 5xx are retried.
"""

from __future__ import annotations

import time
from typing import Any

from senders.providers import _http
from senders.providers.base import Message, Provider, SendResult
from senders.providers.settings import SendgridSettings


def build_body(message: Message, settings: SendgridSettings) -> dict[str, Any]:
    sender: dict[str, str] = {"email": settings.from_address}
    if settings.from_name:
        sender["name"] = settings.from_name
    content = [{"type": "text/plain", "value": message.body or " "}]
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    return {
        "personalizations": [
            {
                "to": [{"email": message.address}],
                "custom_args": {
                    "delivery_id": message.delivery_id,
                    "notification_id": message.notification_id,
                },
            }
        ],
        "from": sender,
        "subject": message.subject or message.title or "",
        "content": content,
        "headers": {
            "X-Herald-Delivery-Id": message.delivery_id,
            **dict(message.unsubscribe_headers()),
        },
        "categories": [message.category],
    }


def _rejects_recipient(resp: _http.AnyResponse) -> bool:
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return any(
        str(e.get("field") or "").startswith("personalizations") and "email" in str(e.get("field"))
        for e in errors
        if isinstance(e, dict)
    )


class SendgridProvider(Provider):
    name = "sendgrid"
    channels = frozenset({"email"})

    def __init__(self, settings: SendgridSettings) -> None:
        self.settings = settings
        self.concurrency = settings.max_connections
        self._client: _http.Client | None = None

    async def start(self) -> None:
        s = self.settings
        self._client = _http.client(
            s.url,
            timeout_s=s.timeout_s,
            max_connections=s.max_connections,
            ca_file=s.ca_file,
            headers={"Authorization": f"Bearer {s.api_key.get_secret_value()}"},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None, "start() first"
        resp = await _http.post(
            self._client,
            self.name,
            "/v3/mail/send",
            json=build_body(message, self.settings),
            headers={"X-Herald-Delivery-Id": message.delivery_id},
        )
        if resp.status_code in (200, 202):
            return SendResult(self.name, resp.headers.get("x-message-id"))
        reset_in: float | None = None
        if reset := resp.headers.get("x-ratelimit-reset"):
            try:
                reset_in = max(0.0, float(reset) - time.time())
            except ValueError:
                reset_in = None
        raise _http.status_error(
            self.name,
            resp,
            invalid_address=resp.status_code == 400 and _rejects_recipient(resp),
            retry_after=reset_in,
        )
