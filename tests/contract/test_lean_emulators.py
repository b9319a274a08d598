"""The lean emulators (benchmarks) accept what every provider module sends, record it once
under its delivery id in the receipts file, and refuse wrong credentials and faults."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from infra.emulators.server import Emulators, EmulatorSettings
from senders.providers import create
from senders.providers.base import Message, PermanentError
from senders.providers.settings import SmtpSettings
from tests.contract.conftest import CASES, ProviderCase, settings_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lean(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Emulators]:
    receipts = tmp_path_factory.mktemp("lean") / "receipts.jsonl"
    ports = dict.fromkeys(("apns", "fcm", "twilio", "vonage", "smtp", "sendgrid", "control"), 0)
    settings = EmulatorSettings(
        _env_file=None,  # type: ignore[call-arg]
        lean=True,
        receipts_file=receipts,
        **{f"{name}_port": port for name, port in ports.items()},
    )
    emu = Emulators(settings)
    await emu.start()
    yield emu
    await emu.stop()
    emu.state.close()


def _settings(emu: Emulators, *, bad_auth: bool = False) -> object:
    assert emu.ports is not None
    s = settings_for(emu.ports, bad_auth=bad_auth)
    # The lean SMTP server speaks neither STARTTLS nor AUTH.
    s.smtp = SmtpSettings(port=emu.ports.smtp)
    return s


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_each_provider_lands_once_in_the_receipts_file(
    case: ProviderCase, lean: Emulators
) -> None:
    assert lean.ports is not None
    provider = create(case.provider, _settings(lean))  # type: ignore[arg-type]
    await provider.start()
    case = dataclasses.replace(case, emulators=lean)
    msg = Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel=case.channel,
        address=case.new_address(),
        title="Your parcel",
        subject="Your parcel is on its way",
        body="Arrives tomorrow.",
        data={"order": "A-1001"},
    )
    try:
        result = await provider.send(msg)
    finally:
        await provider.close()

    assert result.message_id
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lean.ports.control}") as c:
        entries = (await c.get("/ledger", params={"delivery_id": msg.delivery_id})).json()
    assert [(e["provider"], e["channel"]) for e in entries] == [(case.provider, case.channel)]
    assert not lean.state.ledger  # in the file, not in memory
    assert sum(e["delivery_id"] == msg.delivery_id for e in lean.state.entries()) == 1


@pytest.mark.parametrize("name", ["apns", "twilio", "vonage", "sendgrid"])
async def test_wrong_credentials_are_refused(name: str, lean: Emulators) -> None:
    provider = create(name, _settings(lean, bad_auth=True))  # type: ignore[arg-type]
    await provider.start()
    case = next(c for c in CASES if c.provider == name)
    msg = Message(
        delivery_id=str(uuid.uuid4()),
        notification_id="n",
        channel=case.channel,
        address=dataclasses.replace(case, emulators=lean).new_address(),
        body="b",
        title="t",
        subject="s",
    )
    try:
        with pytest.raises(PermanentError):
            await provider.send(msg)
    finally:
        await provider.close()


async def test_faults_are_refused_and_reset_empties_the_file(lean: Emulators) -> None:
    assert lean.ports is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lean.ports.control}") as c:
        refused = await c.post("/faults", json={"provider": "apns", "mode": "error"})
        assert refused.status_code == 409
        assert (await c.post("/reset")).status_code == 200
        assert (await c.get("/ledger")).json() == []
        assert (await c.get("/health")).json()["ledger"] == 0
