"""SMS through the Vonage (Nexmo) SMS API: the fallback SMS provider.

`POST /sms/json`, form-encoded `api_key`, `api_secret`, `from`, `to` (digits, no "+"),
`text`, `client-ref` (the delivery id). Vonage answers 200 even for rejected messages: the
outcome is the `status` of each entry in `messages` ("0" = accepted, with `message-id`).

Status codes (https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms):
1 throttled, 5 internal error and 9 quota (account credit) are retried; 6 (unroutable
prefix) and 7 (number barred) reject the address; the rest (2, 3 bad parameters, 4 bad
credentials, 8 account barred, 15 bad sender, 29 non-whitelisted) are permanent. HTTP 429
and 5xx are retried as well.
"""

from __future__ import annotations

from typing import Any

from senders.providers import _http
from senders.providers.base import Message, PermanentError, Provider, RetriableError, SendResult
from senders.providers.settings import VonageSettings

RETRIABLE_STATUS = frozenset({"1", "5", "9"})
INVALID_NUMBER_STATUS = frozenset({"6", "7"})


class VonageProvider(Provider):
    name = "vonage"
    channels = frozenset({"sms"})

    def __init__(self, settings: VonageSettings) -> None:
        self.settings = settings
        self.concurrency = settings.max_connections
        self._client: _http.Client | None = None

    async def start(self) -> None:
        s = self.settings
        self._client = _http.client(
            s.url, timeout_s=s.timeout_s, max_connections=s.max_connections, ca_file=s.ca_file
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None, "start() first"
        s = self.settings
        form = {
            "api_key": s.api_key,
            "api_secret": s.api_secret.get_secret_value(),
            "from": s.sender,
            "to": message.address.lstrip("+"),
            "text": message.body,
            "client-ref": message.delivery_id,
        }
        if not message.body.isascii():
            form["type"] = "unicode"
        resp = await _http.post(
            self._client,
            self.name,
            "/sms/json",
            data=form,
            headers={"X-Herald-Delivery-Id": message.delivery_id},
        )
        if resp.status_code != 200:
            raise _http.status_error(self.name, resp)
        try:
            entry: dict[str, Any] = resp.json()["messages"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            # Accepted or not, we cannot tell: never fail over to another SMS provider.
            raise RetriableError(
                "vonage:200 unreadable response", provider=self.name, status=200, ambiguous=True
            ) from None
        status = str(entry.get("status", ""))
        if status == "0":
            return SendResult(self.name, entry.get("message-id"))
        reason = f"vonage:status {status}"
        if status in RETRIABLE_STATUS:
            raise RetriableError(reason, provider=self.name, status=200)
        raise PermanentError(
            reason, provider=self.name, status=200, invalid_address=status in INVALID_NUMBER_STATUS
        )
