"""`python -m herald.bench.providers`: each provider client alone against the lean emulators.

Starts `python -m infra.emulators` (lean, receipts to a file) as its own process, pinned to
one core when there are two, and sends `--deliveries` messages through one provider module
at a time from this process (the other core) with `--concurrency` sends in flight, as the
sender runtime does. Prints deliveries/s and this process's CPU µs per delivery: the
client side's cost per delivery, which is what a sender pays per provider call.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import typer
from rich.console import Console
from rich.table import Table

from herald.bench.services import emulator_spec
from herald.services import start
from infra.emulators.server import Ports
from senders.providers import create
from senders.providers.base import DeliveryError, Message
from senders.providers.settings import ProvidersSettings

PROVIDERS = {
    "apns": "push.ios",
    "fcm": "push.android",
    "smtp": "email",
    "twilio": "sms",
    "sendgrid": "email",
}


@dataclass(frozen=True)
class Figures:
    provider: str
    deliveries: int
    failed: int
    seconds: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.deliveries * 1e6


def message(channel: str) -> Message:
    address = (
        secrets.token_hex(32)
        if channel.startswith("push")
        else "+14155550123"
        if channel == "sms"
        else "bench@example.org"
    )
    return Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel=channel,
        address=address,
        body="Your order has shipped and will arrive on Tuesday.",
        title="Order shipped",
        subject="Order shipped",
        html="<p>Your order has shipped and will arrive on <b>Tuesday</b>.</p>",
        data={"order": "A-1001"},
    )


def settings(ports: Ports) -> ProvidersSettings:
    s = ProvidersSettings()
    s.apns.url = f"https://127.0.0.1:{ports.apns}"
    s.fcm.url = f"http://127.0.0.1:{ports.fcm}"
    s.smtp.port = ports.smtp
    s.twilio.url = f"http://127.0.0.1:{ports.twilio}"
    s.sendgrid.url = f"http://127.0.0.1:{ports.sendgrid}"
    return s


async def run(name: str, ports: Ports, deliveries: int, concurrency: int) -> Figures:
    provider = create(name, settings(ports))
    await provider.start()
    try:
        messages = [message(PROVIDERS[name]) for _ in range(deliveries)]
        await asyncio.gather(*(provider.send(m) for m in messages[:concurrency]))  # warm up
        pending = iter(messages)
        failed = 0

        async def worker() -> None:
            nonlocal failed
            for m in pending:
                try:
                    await provider.send(m)
                except DeliveryError:
                    failed += 1

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Figures(
            name, deliveries, failed, time.perf_counter() - wall, time.process_time() - cpu
        )
    finally:
        await provider.close()


def main(
    deliveries: int = typer.Option(20_000, help="Deliveries per provider."),
    concurrency: int = typer.Option(256, help="Sends in flight."),
    only: str = typer.Option(",".join(PROVIDERS), help="Providers to drive, comma-separated."),
    log_dir: Path = typer.Option(Path(".run/bench/providers"), help="The emulators' log."),
) -> None:
    """Send through each provider client and print deliveries/s and client CPU µs each."""
    ports = Ports.pick()
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start(emulator_spec(ports, lean=True, receipts=Path(tmp) / "r.jsonl"), log_dir)
        try:
            if (psutil.cpu_count() or 1) >= 2:
                psutil.Process(emulator.pid).cpu_affinity([0])
                psutil.Process().cpu_affinity([1])
            for name in (n.strip() for n in only.split(",") if n.strip()):
                figures.append(asyncio.run(run(name, ports, deliveries, concurrency)))
        finally:
            emulator.stop()
    table = Table("provider", "deliveries", "failed", "deliveries/s", "client CPU µs/delivery")
    for f in figures:
        table.add_row(
            f.provider, f"{f.deliveries:,}", str(f.failed), f"{f.per_s:,.0f}", f"{f.cpu_us:,.0f}"
        )
    Console(width=None if Console().is_terminal else 120).print(table)


if __name__ == "__main__":
    typer.run(main)
