"""SMTP and SendGrid providers: message shape and error mapping (no server)."""

from __future__ import annotations

import json
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.links import LIST_UNSUBSCRIBE
from senders.providers.base import DeliveryError, Message
from senders.providers.sendgrid import SendgridProvider, build_body
from senders.providers.settings import SendgridSettings, SmtpSettings
from senders.providers.smtp import build_email, map_error
from senders.providers.smtp_client import (
    ConnectFailed,
    Disconnected,
    RecipientRefused,
    ReplyError,
    Timeout,
    _data,
    _framed,
)


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "delivery_id": "d-1",
        "notification_id": "n-1",
        "channel": "email",
        "address": "ann@example.com",
        "body": "plain",
        "subject": "Receipt",
        "html": "<p>rich</p>",
    }
    return Message(**{**base, **kw})


def parsed(message: Message, settings: SmtpSettings | None = None) -> EmailMessage:
    message_id, raw = build_email(message, settings or SmtpSettings())
    email = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(email, EmailMessage)
    assert email["Message-ID"] == message_id
    assert not email.defects
    return email


def test_email_is_multipart_with_delivery_headers() -> None:
    email = parsed(msg(), SmtpSettings(message_id_domain="mail.test"))
    assert email["Message-ID"] == "<d-1@mail.test>"
    assert email["X-Herald-Delivery-Id"] == "d-1"
    assert email["Subject"] == "Receipt"
    assert email["From"] == "herald <notifications@herald.example>"
    assert email["MIME-Version"] == "1.0"
    assert email.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content()) for p in email.iter_parts()]
    assert parts == [("text/plain", "plain"), ("text/html", "<p>rich</p>")]


def test_text_only_email_has_one_part() -> None:
    email = parsed(msg(html=None))
    assert email.get_content_type() == "text/plain"
    assert email.get_content() == "plain"


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


@given(
    subject=st.text(alphabet=st.characters(exclude_categories=("Cc", "Zl", "Zp", "Cs"))),
    body=st.text(),
    html=st.one_of(st.none(), st.text(min_size=1)),
)
def test_any_text_arrives_intact(subject: str, body: str, html: str | None) -> None:
    email = parsed(msg(subject=subject, body=body, html=html))
    assert email["Subject"] == subject
    plain = email.get_body(preferencelist=("plain",))
    assert plain is not None
    # Line ends are the transport's business: SMTP carries CRLF.
    assert _lines(plain.get_content()) == _lines(body)
    if html:
        rich = email.get_body(preferencelist=("html",))
        assert rich is not None
        assert _lines(rich.get_content()) == _lines(html)


_HEADER_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Zl", "Zp", "Cs")))


@given(
    subject=_HEADER_TEXT,
    body=st.text(),
    html=st.one_of(st.none(), st.text(min_size=1)),
    local=st.text(alphabet="abc.-_+", min_size=1, max_size=12),
    unsubscribe=st.one_of(st.none(), _HEADER_TEXT.filter(bool)),
)
def test_the_built_message_is_already_framed_for_data(
    subject: str, body: str, html: str | None, local: str, unsubscribe: str | None
) -> None:
    """The SMTP client sends the provider's messages as they are (`framed=True`): every
    line ends in CRLF and none starts with a dot, whatever the text, dots and bare line
    ends included."""
    data = {} if unsubscribe is None else {LIST_UNSUBSCRIBE: unsubscribe}
    message = msg(subject=subject, body=body, html=html, address=f"{local}@example.com", data=data)
    _, raw = build_email(message, SmtpSettings())
    assert _data(raw) == _framed(raw) == raw + b".\r\n"


@pytest.mark.parametrize("subject", ["a\r\nBcc: x@y.z", "a\nb", "a\u2028b", "a\x1eb", "a\x00"])
def test_a_line_break_in_a_header_raises_before_sending(subject: str) -> None:
    with pytest.raises(ValueError):
        build_email(msg(subject=subject), SmtpSettings())


def refused(code: int, text: str = "") -> RecipientRefused:
    # Servers often echo the address in the reply; the reason must not carry it.
    return RecipientRefused(code, f"{text} <a@b.c>".strip(), "RCPT")


@pytest.mark.parametrize(
    ("exc", "retriable", "invalid"),
    [
        (refused(550, "5.1.1 user unknown"), False, True),
        (refused(553), False, True),
        (refused(554, "5.1.10 null MX"), False, True),
        (refused(552, "5.2.2 mailbox full"), False, False),
        (refused(450), True, False),
        (refused(451, "4.7.1 rate limited"), True, False),
        (ReplyError(554, "rejected", "end of data"), False, False),
        (ReplyError(451, "try later", "end of data"), True, False),
        (ReplyError(550, "5.1.1 sender unknown", "MAIL"), False, False),
        (ReplyError(535, "bad credentials", "AUTH"), False, False),
        (Disconnected("gone"), True, False),
        (ConnectFailed("refused"), True, False),
        (Timeout("slow"), True, False),
    ],
)
def test_smtp_error_mapping(exc: Exception, retriable: bool, invalid: bool) -> None:
    err = map_error(exc)
    assert (err.retriable, err.invalid_address) == (retriable, invalid)
    assert "a@b.c" not in err.reason


def test_sendgrid_body() -> None:
    body = build_body(msg(), SendgridSettings(from_address="n@h.test", from_name="herald"))
    assert body["personalizations"] == [
        {
            "to": [{"email": "ann@example.com"}],
            "custom_args": {"delivery_id": "d-1", "notification_id": "n-1"},
        }
    ]
    assert body["from"] == {"email": "n@h.test", "name": "herald"}
    assert body["content"] == [
        {"type": "text/plain", "value": "plain"},
        {"type": "text/html", "value": "<p>rich</p>"},
    ]
    assert body["headers"] == {"X-Herald-Delivery-Id": "d-1"}


async def sendgrid_failure(resp: httpx.Response) -> DeliveryError:
    p = SendgridProvider(SendgridSettings())
    await p.start()
    assert p._client is not None
    await p._client.aclose()
    p._client = httpx.AsyncClient(
        base_url="http://sg.test", transport=httpx.MockTransport(lambda r: resp)
    )
    with pytest.raises(DeliveryError) as err:
        await p.send(msg())
    return err.value


@pytest.mark.parametrize(
    ("status", "field", "retriable", "invalid"),
    [
        (400, "personalizations.0.to.0.email", False, True),
        (400, "subject", False, False),
        (401, None, False, False),
        (413, None, False, False),
        (500, None, True, False),
    ],
)
async def test_sendgrid_error_mapping(
    status: int, field: str | None, retriable: bool, invalid: bool
) -> None:
    err = await sendgrid_failure(
        httpx.Response(status, content=json.dumps({"errors": [{"message": "x", "field": field}]}))
    )
    assert (err.retriable, err.invalid_address) == (retriable, invalid)


async def test_sendgrid_429_waits_until_the_rate_limit_resets() -> None:
    reset = int(time.time()) + 20
    err = await sendgrid_failure(httpx.Response(429, headers={"X-RateLimit-Reset": str(reset)}))
    assert err.retriable
    assert err.retry_after == pytest.approx(20, abs=2)


def test_smtp_failure_without_a_reply_is_ambiguous_only_once_sending() -> None:
    lost = Disconnected("gone")
    assert map_error(lost).ambiguous is True
    assert map_error(lost, sending=False).ambiguous is False
    assert map_error(ReplyError(451, "later", "end of data")).ambiguous is None


def test_an_internationalised_address_is_written_as_utf8() -> None:
    email = parsed(msg(address="josé@bücher.example", subject="Grüße"))
    assert email["To"] == "josé@bücher.example"
    assert email["Subject"] == "Grüße"


UNSUB = {"herald.list_unsubscribe": "https://herald.example/u/tok"}


@pytest.mark.parametrize("category", ["marketing", "social", "transactional"])
def test_non_mandatory_mail_carries_one_click_unsubscribe(category: str) -> None:
    email = parsed(msg(category=category, data=UNSUB))
    assert email["List-Unsubscribe"] == "<https://herald.example/u/tok>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    headers = build_body(msg(category=category, data=UNSUB), SendgridSettings())["headers"]
    assert headers["List-Unsubscribe"] == "<https://herald.example/u/tok>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_security_mail_never_carries_unsubscribe_even_if_asked() -> None:
    email = parsed(msg(category="security", data=UNSUB))
    assert email["List-Unsubscribe"] is None and email["List-Unsubscribe-Post"] is None
    assert (
        "List-Unsubscribe"
        not in build_body(msg(category="security", data=UNSUB), SendgridSettings())["headers"]
    )
    assert parsed(msg(category="marketing"))["List-Unsubscribe"] is None
