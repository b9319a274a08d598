"""SMS through Twilio's Messages API (or any Twilio-compatible one): primary SMS provider.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From` (or
`MessagingServiceSid`) and `Body`, HTTP basic auth with the account SID and auth token.
201 returns the message resource; its `sid` is the provider's message id.

Errors (https://www.twilio.com/docs/api/errors): 21211, 21214, 21217, 21612, 21614 say the
number cannot receive SMS (rejected address); other 4xx, including 401 (20003, bad
credentials), are permanent; 429 (20429) and 5xx are retried, honouring Retry-After.
"""

from __future__ import annotations

from senders.providers import _http
from senders.providers.base import Message, Provider, SendResult
from senders.providers.settings import TwilioSettings

# Invalid 'To', not a valid phone number, not reachable by SMS, not a mobile number.
INVALID_NUMBER_CODES = frozenset({21211, 21214, 21217, 21612, 21614})


class TwilioProvider(Provider):
    name = "twilio"
    channels = frozenset({"sms"})

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.concurrency = settings.max_connections
        self._client: _http.Client | None = None

    async def start(self) -> None:
        s = self.settings
        if not s.from_number and not s.messaging_service_sid:
            raise ValueError("twilio: set from_number or messaging_service_sid")
        self._client = _http.client(
            s.url,
            timeout_s=s.timeout_s,
            max_connections=s.max_connections,
            ca_file=s.ca_file,
            auth=(s.account_sid, s.auth_token.get_secret_value()),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None, "start() first"
        s = self.settings
        form = {"To": message.address, "Body": message.body}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        else:
            form["From"] = s.from_number or ""
        resp = await _http.post(
            self._client,
            self.name,
            f"/2010-04-01/Accounts/{s.account_sid}/Messages.json",
            data=form,
            headers={"X-Herald-Delivery-Id": message.delivery_id},
        )
        if resp.status_code in (200, 201):
            # Accepted: an unreadable body must not turn into a retry (a second SMS).
            try:
                sid = resp.json().get("sid")
            except (ValueError, AttributeError):
                sid = None
            return SendResult(self.name, str(sid) if sid else None)
        try:
            code = int(resp.json().get("code") or 0)
        except (ValueError, TypeError, AttributeError):
            code = 0
        raise _http.status_error(
            self.name,
            resp,
            str(code) if code else "",
            invalid_address=code in INVALID_NUMBER_CODES,
        )
