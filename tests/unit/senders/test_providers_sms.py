"""Twilio and Vonage providers: request shape and error mapping against canned answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from senders.providers.base import DeliveryError, Message, Provider
from senders.providers.settings import TwilioSettings, VonageSettings
from senders.providers.twilio import TwilioProvider
from senders.providers.vonage import VonageProvider

Handler = Callable[[httpx.Request], httpx.Response]


def msg(body: str = "Your code is 123456") -> Message:
    return Message(
        delivery_id="d-1", notification_id="n-1", channel="sms", address="+14155550100", body=body
    )


async def started(provider: Provider, handler: Handler) -> Any:
    await provider.start()
    client: httpx.AsyncClient = provider._client  # type: ignore[attr-defined]
    provider._client = httpx.AsyncClient(  # type: ignore[attr-defined]
        base_url=client.base_url, auth=client.auth, transport=httpx.MockTransport(handler)
    )
    await client.aclose()
    return provider


async def failure(provider: Provider, handler: Handler) -> DeliveryError:
    p = await started(provider, handler)
    with pytest.raises(DeliveryError) as err:
        await p.send(msg())
    return err.value


async def test_twilio_posts_form_with_basic_auth_and_returns_the_sid() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"sid": "SM123", "status": "queued"})

    p = await started(TwilioProvider(TwilioSettings(account_sid="AC1")), handler)
    result = await p.send(msg())

    assert result.message_id == "SM123"
    [req] = seen
    assert req.url.path == "/2010-04-01/Accounts/AC1/Messages.json"
    assert req.headers["authorization"].startswith("Basic ")
    assert req.headers["x-herald-delivery-id"] == "d-1"
    assert parse_qs(req.content.decode()) == {
        "To": ["+14155550100"],
        "Body": ["Your code is 123456"],
        "From": ["+15005550006"],
    }


@pytest.mark.parametrize(
    ("status", "code", "retriable", "invalid"),
    [
        (400, 21211, False, True),
        (400, 21614, False, True),
        (400, 21610, False, False),
        (401, 20003, False, False),
        (429, 20429, True, False),
        (500, 20500, True, False),
        (503, 20503, True, False),
    ],
)
async def test_twilio_error_mapping(status: int, code: int, retriable: bool, invalid: bool) -> None:
    err = await failure(
        TwilioProvider(TwilioSettings()),
        lambda r: httpx.Response(
            status, json={"code": code, "status": status}, headers={"Retry-After": "3"}
        ),
    )
    assert (err.retriable, err.invalid_address) == (retriable, invalid)
    assert err.reason == f"twilio:{status} {code}"
    assert err.retry_after == (3 if retriable else None)


async def test_vonage_posts_credentials_and_client_ref_without_plus() -> None:
    seen: list[dict[str, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(parse_qs(request.content.decode()))
        return httpx.Response(200, json={"messages": [{"status": "0", "message-id": "0A1"}]})

    p = await started(VonageProvider(VonageSettings(api_key="k", api_secret="s")), handler)  # type: ignore[arg-type]
    result = await p.send(msg("Ünïcode ✓"))

    assert result.message_id == "0A1"
    [form] = seen
    assert form["to"] == ["14155550100"]
    assert form["client-ref"] == ["d-1"]
    assert (form["api_key"], form["api_secret"], form["type"]) == (["k"], ["s"], ["unicode"])


@pytest.mark.parametrize(
    ("status", "retriable", "invalid"),
    [
        ("1", True, False),
        ("5", True, False),
        ("9", True, False),
        ("6", False, True),
        ("7", False, True),
        ("2", False, False),
        ("3", False, False),
        ("4", False, False),
        ("29", False, False),
    ],
)
async def test_vonage_status_mapping(status: str, retriable: bool, invalid: bool) -> None:
    err = await failure(
        VonageProvider(VonageSettings()),
        lambda r: httpx.Response(200, json={"messages": [{"status": status, "error-text": "x"}]}),
    )
    assert (err.retriable, err.invalid_address) == (retriable, invalid)
    assert err.reason == f"vonage:status {status}"


@pytest.mark.parametrize(("http", "retriable"), [(429, True), (500, True), (401, False)])
async def test_vonage_http_errors(http: int, retriable: bool) -> None:
    err = await failure(VonageProvider(VonageSettings()), lambda r: httpx.Response(http))
    assert err.retriable is retriable


async def test_twilio_accepted_with_an_unreadable_body_is_still_sent() -> None:
    p = await started(
        TwilioProvider(TwilioSettings()), lambda r: httpx.Response(201, text="<html>")
    )
    result = await p.send(msg())
    assert (result.provider, result.message_id) == ("twilio", None)


async def test_vonage_unreadable_answer_is_ambiguous() -> None:
    err = await failure(
        VonageProvider(VonageSettings()), lambda r: httpx.Response(200, text="oops")
    )
    assert err.retriable
    assert err.ambiguous is True


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.RemoteProtocolError("reset"), True),
    ],
)
async def test_transport_errors_say_whether_the_request_left(
    exc: httpx.TransportError, ambiguous: bool
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    err = await failure(TwilioProvider(TwilioSettings()), fail)
    assert err.retriable
    assert err.ambiguous is ambiguous
