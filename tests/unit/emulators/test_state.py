"""Fault rules and the control API (ASGI in-process, no server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from infra.emulators.state import LEDGER_CHUNK, Accepted, EmulatorState, Fault, control_app


def test_rules_match_provider_address_and_count() -> None:
    state = EmulatorState(seed=1)
    state.add_fault(Fault(provider="apns", mode="unregistered", addresses=["t1"]))
    state.add_fault(Fault(provider="all", mode="throttle", count=2))

    assert state.fault_for("apns", "t2") is not None  # the "all" rule
    found = state.fault_for("apns", "t1")
    assert found is not None and found.mode == "unregistered"
    assert state.fault_for("fcm", "x") is not None  # second and last use of "all"
    assert state.fault_for("fcm", "x") is None


def test_rate_applies_to_about_that_share() -> None:
    state = EmulatorState(seed=7)
    state.add_fault(Fault(provider="twilio", mode="error", rate=0.25))
    hits = sum(state.fault_for("twilio", "+1") is not None for _ in range(4000))
    assert 800 < hits < 1200


def test_ok_clears_one_providers_rules_and_all_clears_every_rule() -> None:
    state = EmulatorState()
    state.add_fault(Fault(provider="apns", mode="error"))
    state.add_fault(Fault(provider="fcm", mode="error"))
    state.add_fault(Fault(provider="apns", mode="ok"))
    assert [f.provider for f in state.faults] == ["fcm"]
    state.add_fault(Fault(provider="all", mode="ok"))
    assert state.faults == []


async def test_slow_waits_then_lets_the_request_through() -> None:
    state = EmulatorState()
    state.add_fault(Fault(provider="smtp", mode="slow", latency_ms=1))
    assert await state.before("smtp", "a@b.c") is None
    state.add_fault(Fault(provider="smtp", mode="ok"))
    state.add_fault(Fault(provider="smtp", mode="error", status=554))
    decided = await state.before("smtp", "a@b.c")
    assert decided is not None and decided.status == 554


@pytest.fixture
def state() -> EmulatorState:
    return EmulatorState()


@pytest.fixture
def client(state: EmulatorState) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=control_app(state)), base_url="http://c"
    )


async def test_control_api_ledger_filters_and_reset(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    state.record(Accepted("apns", "push.ios", "d1", "tok", title="t", body="b"))
    state.record(Accepted("twilio", "sms", "d2", "+1555", body="b"))

    everything = (await client.get("/ledger")).json()
    assert [e["delivery_id"] for e in everything] == ["d1", "d2"]
    assert set(everything[0]) >= {
        "provider",
        "channel",
        "delivery_id",
        "address",
        "title",
        "subject",
        "body",
        "received_at_ms",
    }
    assert [e["delivery_id"] for e in (await client.get("/ledger?provider=twilio")).json()] == [
        "d2"
    ]
    assert [e["provider"] for e in (await client.get("/ledger?delivery_id=d1")).json()] == ["apns"]

    resp = await client.post(
        "/faults", json={"provider": "fcm", "mode": "throttle", "retry_after": 3}
    )
    assert resp.status_code == 201
    assert (await client.get("/faults")).json()[0]["retry_after"] == 3
    assert (await client.post("/reset")).status_code == 200
    assert (await client.get("/ledger")).json() == []
    assert state.faults == []


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "pigeon", "mode": "error"},
        {"provider": "apns", "mode": "explode"},
        {"provider": "apns", "mode": "error", "rate": 2},
    ],
)
async def test_control_api_rejects_bad_faults(
    body: dict[str, object], client: httpx.AsyncClient
) -> None:
    assert (await client.post("/faults", json=body)).status_code == 400


@pytest.mark.parametrize("count", [0, 1, LEDGER_CHUNK, 2 * LEDGER_CHUNK + 1])
async def test_receipts_file_keeps_nothing_in_memory_and_streams_the_ledger(
    tmp_path: Path, count: int
) -> None:
    state = EmulatorState(receipts=tmp_path / "receipts.jsonl")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=control_app(state)), base_url="http://c"
    )
    for i in range(count):
        state.record(Accepted("apns", "push.ios", f"d{i}", "tok", body="b"))
    state.record(Accepted("twilio", "sms", "dup", "+1555"))
    state.record(Accepted("twilio", "sms", "dup", "+1555"))

    assert state.ledger == []
    entries = (await client.get("/ledger")).json()
    assert [e["delivery_id"] for e in entries] == [f"d{i}" for i in range(count)] + ["dup"] * 2
    assert entries[-1]["address"] == "+1555"
    assert len((await client.get("/ledger?delivery_id=dup")).json()) == 2  # duplicates count
    assert (await client.get("/health")).json()["ledger"] == count + 2

    await client.post("/reset")
    assert (await client.get("/ledger")).json() == []
    state.record(Accepted("apns", "push.ios", "after", "tok"))
    assert [e["delivery_id"] for e in (await client.get("/ledger")).json()] == ["after"]
    state.close()


def test_receipts_keep_any_text_as_written(tmp_path: Path) -> None:
    state = EmulatorState(receipts=tmp_path / "receipts.jsonl")
    text = 'Grüße, 안녕 "quoted"\n\u2028 end'
    state.record(Accepted("smtp", "email", "d1", "josé@bücher.example", subject=text, body=text))
    (entry,) = state.entries()
    assert (entry["subject"], entry["body"], entry["address"]) == (
        text,
        text,
        "josé@bücher.example",
    )
    # One receipt per line, whatever the text holds.
    assert (tmp_path / "receipts.jsonl").read_bytes().count(b"\n") == 1
    state.close()
