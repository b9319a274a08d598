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
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PROVIDERS = ("apns", "fcm", "webpush", "twilio", "vonage", "smtp", "sendgrid")
# What a `timeout` fault holds a request for: longer than any client waits.
HOLD_S = 3600.0
LEDGER_CHUNK = 1000  # entries per chunk of a streamed `GET /ledger`

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


_FIELDS = tuple(f.name for f in fields(Accepted))
# One encoder for every receipt line: `json.dumps` with options builds one per call, and
# texts in other scripts are written as UTF-8, not as \u escapes.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class EmulatorState:
    """Ledger + faults, shared by the emulators of one process (one event loop).

    With `receipts`, accepted messages are appended to that file (one JSON array per
    line, in `Accepted` field order) instead of kept in `ledger`: a long benchmark then
    costs disk, not memory. `received` counts them per provider either way.
    """

    def __init__(self, seed: int | None = None, receipts: Path | None = None) -> None:
        self.ledger: list[Accepted] = []
        self.faults: list[Fault] = []
        self.received: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._receipts = receipts
        self._file = receipts.open("wb") if receipts else None

    def record(self, e: Accepted) -> None:
        self.received[e.provider] += 1
        if self._file is None:
            self.ledger.append(e)
        else:
            self._file.write(_ENCODE([getattr(e, n) for n in _FIELDS]).encode() + b"\n")

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every accepted message, oldest first, as `GET /ledger` returns them."""
        if self._file is None or self._receipts is None:
            yield from (asdict(e) for e in list(self.ledger))
            return
        self._file.flush()
        # Only what is complete now: the loop keeps appending while a reader streams.
        end = self._file.tell()
        with self._receipts.open("rb") as lines:
            for line in lines:
                end -= len(line)
                if end < 0:
                    break
                yield dict(zip(_FIELDS, json.loads(line), strict=True))

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
        self.received.clear()
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def control_app(state: EmulatorState, *, faults: bool = True) -> Starlette:
    """The control API; `faults=False` (lean emulators, which cannot inject them) refuses
    new fault rules instead of silently ignoring them."""

    async def ledger(request: Request) -> Response:
        provider = request.query_params.get("provider")
        delivery_id = request.query_params.get("delivery_id")

        def body() -> Iterator[bytes]:
            # Streamed, in chunks: the ledger of a long run is far larger than a response
            # should hold, and a chunk per entry costs more than the entry.
            chunk: list[str] = []
            first = True
            for e in state.entries():
                if (provider is None or e["provider"] == provider) and (
                    delivery_id is None or e["delivery_id"] == delivery_id
                ):
                    chunk.append(json.dumps(e))
                    if len(chunk) == LEDGER_CHUNK:
                        yield ("[" if first else ",").encode() + ",".join(chunk).encode()
                        chunk, first = [], False
            if first:
                yield ("[" + ",".join(chunk) + "]").encode()
            else:
                yield ("," + ",".join(chunk) + "]" if chunk else "]").encode()

        return StreamingResponse(body(), media_type="application/json")

    async def fault_rules(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse([f.model_dump() for f in state.faults])
        if not faults:
            return JSONResponse(
                {"error": "the lean emulators take no faults; run the strict ones"},
                status_code=409,
            )
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
        return JSONResponse(
            {"ok": True, "ledger": state.received.total(), "faults": len(state.faults)}
        )

    return Starlette(
        routes=[
            Route("/ledger", ledger, methods=["GET"]),
            Route("/faults", fault_rules, methods=["GET", "POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
