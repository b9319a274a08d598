"""What every emulator shares: the ledger of accepted messages, the fault switches, and the
control API (`GET /ledger`, `POST /faults`, `POST /reset`) that tests and the demo drive.

Faults: each `POST /faults` appends a rule for one provider (or `"all"`); a request is
matched against that provider's rules in order, and the first that applies decides:

- `error`: answer with the provider's error for `status` (default: its 5xx);
- `throttle`: 429 (or the provider's equivalent) with `Retry-After: retry_after`;
- `timeout`: hold the request and never answer (nothing is accepted);
- `slow`: wait `latency_ms`, then handle the request normally;
- `unregistered`: reject the address as unknown (APNs 410, FCM UNREGISTERED, ...);
- `ok`: removes the provider's rules.

A rule applies to a `rate` share of requests (default all), only to `addresses` when
given, and at most `count` times when given.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PROVIDERS = ("apns", "fcm", "webpush", "twilio", "vonage", "smtp", "sendgrid")
# What a `timeout` fault holds a request for: longer than any client waits.
HOLD_S = 3600.0

Mode = Literal["ok", "error", "throttle", "timeout", "slow", "unregistered"]


class Fault(BaseModel):
    provider: str = "all"
    mode: Mode
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    status: int | None = None
    retry_after: float = 1.0
    latency_ms: int = 0
    count: int | None = Field(default=None, ge=0)
    addresses: list[str] | None = None

    def applies(self, address: str, rng: random.Random) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.addresses is not None and address not in self.addresses:
            return False
        return self.rate >= 1.0 or rng.random() < self.rate


@dataclass
class Accepted:
    provider: str
    channel: str
    delivery_id: str | None
    address: str
    title: str | None = None
    subject: str | None = None
    body: str | None = None
    message_id: str | None = None
    received_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form body (every client here sends urlencoded, never multipart)."""
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


class EmulatorState:
    """Ledger + faults, shared by the emulators of one process (one event loop)."""

    def __init__(self, seed: int | None = None) -> None:
        self.ledger: list[Accepted] = []
        self.faults: list[Fault] = []
        self._rng = random.Random(seed)

    def record(self, entry: Accepted) -> None:
        self.ledger.append(entry)

    def fault_for(self, provider: str, address: str) -> Fault | None:
        """The fault rule that decides this request, if any (and use up one of its `count`)."""
        for fault in self.faults:
            if fault.provider not in (provider, "all"):
                continue
            if fault.applies(address, self._rng):
                if fault.count is not None:
                    fault.count -= 1
                return fault
        return None

    async def before(self, provider: str, address: str) -> Fault | None:
        """Apply latency/timeouts; return the fault the emulator must answer with, if any."""
        fault = self.fault_for(provider, address)
        if fault is None:
            return None
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.mode == "timeout":
            await asyncio.sleep(HOLD_S)
        if fault.mode == "slow":
            return None
        return fault

    def add_fault(self, fault: Fault) -> None:
        if fault.mode == "ok":
            self.faults = [f for f in self.faults if fault.provider not in ("all", f.provider)]
        else:
            self.faults.append(fault)

    def reset(self) -> None:
        self.ledger.clear()
        self.faults.clear()


def control_app(state: EmulatorState) -> Starlette:
    async def ledger(request: Request) -> Response:
        provider = request.query_params.get("provider")
        delivery_id = request.query_params.get("delivery_id")
        entries: list[dict[str, Any]] = [
            asdict(e)
            for e in state.ledger
            if (provider is None or e.provider == provider)
            and (delivery_id is None or e.delivery_id == delivery_id)
        ]
        return JSONResponse(entries)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse([f.model_dump() for f in state.faults])
        try:
            fault = Fault.model_validate(await request.json())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if fault.provider not in (*PROVIDERS, "all"):
            return JSONResponse({"error": f"unknown provider {fault.provider!r}"}, status_code=400)
        state.add_fault(fault)
        return JSONResponse(fault.model_dump(), status_code=201)

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "ledger": len(state.ledger), "faults": len(state.faults)})

    return Starlette(
        routes=[
            Route("/ledger", ledger, methods=["GET"]),
            Route("/faults", faults, methods=["GET", "POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
