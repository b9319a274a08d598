"""`python -m infra.emulators` as the demo and the benchmarks run it: its own process, ports
from the environment, every provider served, the control API answering, a clean SIGTERM."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from herald.services import ServiceSpec, free_port, python_module, start
from infra.emulators.server import Ports
from senders.providers import create
from senders.providers.base import Message
from tests.contract.conftest import CASES, settings_for, vapid_public_key

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_emulator_process_serves_every_provider_and_stops_cleanly(tmp_path: Path) -> None:
    ports = Ports(**{name: free_port() for name in Ports.model_fields})
    env = {f"HERALD_EMULATORS__{name.upper()}_PORT": str(port) for name, port in ports}
    env["HERALD_EMULATORS__SMTP_USERNAME"] = "contract"
    env["HERALD_EMULATORS__SMTP_PASSWORD"] = "contract-password"
    service = start(
        ServiceSpec("emulators", python_module("infra.emulators"), ports.control, env), tmp_path
    )
    try:
        settings = settings_for(ports)
        sent: dict[str, str] = {}
        fcm = f"http://127.0.0.1:{ports.fcm}"
        for case in CASES:
            if case.provider == "webpush":  # the subscription lives in that process
                async with httpx.AsyncClient() as browser:
                    resp = await browser.post(
                        f"{fcm}/subscriptions", json={"applicationServerKey": vapid_public_key()}
                    )
                    address = resp.text
            else:
                address = case.make_address(None)  # type: ignore[arg-type]
            provider = create(case.provider, settings)
            await provider.start()
            try:
                msg = Message(
                    delivery_id=str(uuid.uuid4()),
                    notification_id=str(uuid.uuid4()),
                    channel=case.channel,
                    address=address,
                    body="hello",
                    title="hi",
                    subject="hi",
                )
                await provider.send(msg)
            finally:
                await provider.close()
            sent[msg.delivery_id] = case.provider
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.control}") as control:
            ledger = (await control.get("/ledger")).json()
            assert {e["delivery_id"]: e["provider"] for e in ledger} == sent
            assert (await control.post("/reset")).status_code == 200
            assert (await control.get("/ledger")).json() == []
    finally:
        service.stop(timeout=10)
    assert service.proc.returncode == 0, service.log_tail()
