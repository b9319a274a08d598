"""How many requests per second the send API sustains here: prints figures, asserts none.

    python -m herald.bench.loadtest --spawn --concurrency 64 --duration 10

`--spawn` starts `python -m producers api` on a free port for the run; without it the
API at `--url` is used. Without `--app-key`, a load-test client (quota high enough not to
interfere) and a user are created in Cassandra first. Every request is really published
to Kafka (acks=all), so the figure includes the broker round trip.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from tempfile import mkdtemp

import httpx
import typer

from herald.services import ServiceSpec, free_port, python_module, start
from infra.settings import DEV_PROFILE
from producers.settings import IntakeSettings

app = typer.Typer(add_completion=False)


async def _setup(settings: IntakeSettings) -> tuple[str, str, str]:
    from infra.cassandra import connect
    from producers.clients import ClientStore
    from producers.contacts import Directory
    from producers.publisher import AsyncPublisher

    session = await asyncio.to_thread(connect, settings.cassandra)
    try:
        new = ClientStore(session).create(
            f"loadtest-{uuid.uuid4().hex[:8]}", rate_per_s=1e6, burst=1_000_000
        )
        user_id = f"loadtest-{uuid.uuid4()}"
        async with AsyncPublisher(settings.kafka, **settings.publisher_args("loadtest")) as pub:
            directory = Directory(
                session, pub, hmac_key=settings.contacts.hmac_key.get_secret_value().encode()
            )
            await directory.set_user(user_id, email="loadtest@example.com", locale="en")
        return new.client.app_key, new.secret, user_id
    finally:
        session.cluster.shutdown()


async def _run(
    url: str, key: str, secret: str, user: str, concurrency: int, duration: float, batch: int
) -> None:
    headers = {"X-Herald-App-Key": key, "X-Herald-App-Secret": secret}
    one = {
        "user_id": user,
        "category": "transactional",
        "channels": ["email"],
        "content": {"email": {"subject": "Load", "body": "test"}},
    }
    payload = {"notifications": [one] * batch} if batch > 1 else one
    latencies: list[float] = []
    codes: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        # Warm up: the first call verifies the secret (scrypt) and opens connections.
        await client.post("/v1/notifications", json=payload)
        deadline = time.monotonic() + duration

        async def worker() -> None:
            while time.monotonic() < deadline:
                t = time.perf_counter()
                r = await client.post("/v1/notifications", json=payload)
                latencies.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    ok = codes.get(202, 0)
    lat = sorted(latencies)
    typer.echo(f"concurrency {concurrency}, batch {batch}, {elapsed:.1f}s")
    typer.echo(
        f"requests/s (202): {ok / elapsed:,.0f}   notifications/s: {ok * batch / elapsed:,.0f}"
    )
    if lat:
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        typer.echo(f"latency ms: p50 {statistics.median(lat) * 1000:.1f}  p99 {p99 * 1000:.1f}")
    typer.echo(f"status codes: {dict(sorted(codes.items()))}")


@app.command()
def main(
    url: str = typer.Option("http://127.0.0.1:8080"),
    concurrency: int = typer.Option(32, "--concurrency", "-c"),
    duration: float = typer.Option(10.0, "--duration", "-d", help="Seconds."),
    batch: int = typer.Option(1, help="Notifications per request."),
    app_key: str | None = typer.Option(None),
    app_secret: str | None = typer.Option(None),
    user: str | None = typer.Option(None, help="An existing user id."),
    spawn: bool = typer.Option(False, help="Start the API for the run."),
) -> None:
    """Drive POST /v1/notifications with N concurrent clients and print the rate."""
    settings = IntakeSettings()
    if app_key is None or app_secret is None or user is None:
        app_key, app_secret, user = asyncio.run(_setup(settings))
    if not spawn:
        asyncio.run(_run(url, app_key, app_secret, user, concurrency, duration, batch))
        return
    port = free_port()
    svc = start(
        ServiceSpec(
            "send-api",
            python_module("producers", "api"),
            ready_port=port,
            env={
                "HERALD_API__PORT": str(port),
                "HERALD_LOG_LEVEL": "WARNING",
                "HERALD_PROFILE": os.environ.get("HERALD_PROFILE", DEV_PROFILE),
            },
        ),
        Path(mkdtemp(prefix="herald-loadtest-")),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_run(url, app_key, app_secret, user, concurrency, duration, batch))
    finally:
        svc.stop()


if __name__ == "__main__":
    app()
