"""One contract, every provider: each provider module against its emulator.

What the sender runtime relies on: an accepted message is in the provider's ledger exactly
once under its delivery id; throttling and server errors are retriable (throttling with the
provider's Retry-After); an unknown address is a permanent `invalid_address`; wrong
credentials are permanent; no answer is retriable but ambiguous (the runtime must not fail
over); sends may run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from herald.services import free_port
from infra.emulators.server import Ports
from senders.decisions import Kind, classify
from senders.providers import create
from senders.providers.base import Message, PermanentError, RetriableError
from tests.contract.conftest import ProviderCase, settings_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def message(case: ProviderCase, address: str | None = None, **kw: Any) -> Message:
    return Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel=case.channel,
        address=address or case.new_address(),
        title="Your parcel",
        subject="Your parcel is on its way",
        body="Arrives tomorrow between 9 and 12.",
        html="<p>Arrives <b>tomorrow</b> between 9 and 12.</p>",
        data={"order": "A-1001"},
        **kw,
    )


async def ledger(control: httpx.AsyncClient, delivery_id: str) -> list[dict[str, Any]]:
    resp = await control.get("/ledger", params={"delivery_id": delivery_id})
    resp.raise_for_status()
    entries: list[dict[str, Any]] = resp.json()
    return entries


async def fault(control: httpx.AsyncClient, case: ProviderCase, address: str, **kw: Any) -> None:
    resp = await control.post(
        "/faults", json={"provider": case.provider, "addresses": [address], **kw}
    )
    assert resp.status_code == 201, resp.text


async def test_accepted_message_is_in_the_ledger_once(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider)
    msg = message(case)

    result = await provider.send(msg)

    assert result.provider == case.provider
    assert result.message_id
    [entry] = await ledger(control, msg.delivery_id)
    assert entry["provider"] == case.provider
    assert entry["channel"] == case.channel
    assert entry["address"] == msg.address
    assert entry["body"] == msg.body


async def test_throttling_is_retriable_with_retry_after(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider)
    msg = message(case)
    await fault(control, case, msg.address, mode="throttle", retry_after=7, count=1)

    with pytest.raises(RetriableError) as err:
        await provider.send(msg)

    if case.throttle_has_retry_after:
        assert err.value.retry_after == pytest.approx(7, abs=1.5)
    assert not err.value.invalid_address
    # The provider answered "not taken": failing over to the fallback cannot send twice.
    assert classify(err.value) is Kind.DEFINITE
    assert await ledger(control, msg.delivery_id) == []
    # The throttle was for one request: the retry goes through, and is recorded once.
    await provider.send(msg)
    assert len(await ledger(control, msg.delivery_id)) == 1


async def test_server_error_is_retriable(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider)
    msg = message(case)
    await fault(control, case, msg.address, mode="error", status=case.server_error)

    with pytest.raises(RetriableError) as err:
        await provider.send(msg)

    assert err.value.retriable
    assert classify(err.value) is Kind.DEFINITE
    assert await ledger(control, msg.delivery_id) == []


async def test_unregistered_address_is_permanent_and_invalid(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider)
    msg = message(case)
    await fault(control, case, msg.address, mode="unregistered")

    with pytest.raises(PermanentError) as err:
        await provider.send(msg)

    assert err.value.invalid_address
    assert not err.value.retriable
    assert await ledger(control, msg.delivery_id) == []


async def test_wrong_credentials_are_permanent(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider, bad_auth=True)
    msg = message(case)

    with pytest.raises(PermanentError) as err:
        await provider.send(msg)

    assert not err.value.invalid_address
    assert await ledger(control, msg.delivery_id) == []


async def test_no_answer_is_retriable(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider, timeout_s=0.3)
    msg = message(case)
    await fault(control, case, msg.address, mode="timeout")

    with pytest.raises(RetriableError) as err:
        await provider.send(msg)

    # The request may have reached the provider: only the same provider may retry it.
    expected = Kind.AMBIGUOUS if case.no_answer_ambiguous else Kind.DEFINITE
    assert classify(err.value) is expected


async def test_unreachable_provider_is_retriable_and_not_sent(case: ProviderCase) -> None:
    nobody = free_port()  # bound and released: nothing listens there
    settings = settings_for(Ports(**dict.fromkeys(Ports.model_fields, nobody)), timeout_s=2)
    provider = create(case.provider, settings)
    await provider.start()
    try:
        with pytest.raises(RetriableError) as err:
            await provider.send(message(case))
    finally:
        await provider.close()

    # Nothing left this process: failing over to the fallback provider is safe.
    assert classify(err.value) is Kind.DEFINITE


async def test_concurrent_sends_each_land_once(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient
) -> None:
    provider = await make_provider(case.provider)
    msgs = [message(case) for _ in range(20)]

    results = await asyncio.gather(*(provider.send(m) for m in msgs))

    assert len({r.message_id for r in results}) == len(msgs)
    for m in msgs:
        assert len(await ledger(control, m.delivery_id)) == 1


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "\u2028"], ids=repr)
async def test_line_break_in_a_field_is_sent_or_refused_before_the_wire(
    case: ProviderCase, make_provider: Callable[..., Any], control: httpx.AsyncClient, newline: str
) -> None:
    provider = await make_provider(case.provider)
    text = f"Your parcel{newline}Bcc: someone@example.com"
    msg = message(case, collapse_key=f"parcel{newline}1")
    msg = dataclasses.replace(msg, title=text, subject=text, data={"order": text})

    try:
        await provider.send(msg)
    except PermanentError as err:
        # Refused while building the request: certainly not sent, so never "uncertain".
        assert classify(err) is Kind.PERMANENT
        assert await ledger(control, msg.delivery_id) == []
    else:
        assert len(await ledger(control, msg.delivery_id)) == 1


@pytest.mark.parametrize("channel", ["push.ios", "push.android", "push.web", "sms", "email"])
async def test_null_provider_accepts_at_once_with_a_message_id_per_delivery(
    channel: str, make_provider: Callable[..., Any]
) -> None:
    # The benchmarks' in-process provider: the contract's "accepted" and "concurrent" parts
    # apply; it has no ledger, errors or network to test.
    provider = await make_provider("null")
    assert channel in provider.channels
    msgs = [
        Message(str(uuid.uuid4()), str(uuid.uuid4()), channel, "anyone", "body") for _ in range(20)
    ]

    results = await asyncio.gather(*(provider.send(m) for m in msgs))

    assert {r.provider for r in results} == {"null"}
    assert [r.message_id for r in results] == [m.delivery_id for m in msgs]
