"""Wiring of one sender process: settings in, running lanes out; and its graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Mapping

from cassandra.cluster import Session
from prometheus_client import start_http_server

from infra.cassandra import connect
from infra.kafka_producer import AsyncProducer
from schemas.channels import Channel
from senders.handler import DeliveryHandler
from senders.ledger import CassandraLedger
from senders.providers.base import Provider
from senders.runtime import SenderRuntime
from senders.settings import SenderSettings

log = logging.getLogger(__name__)


def needed_providers(settings: SenderSettings, channels: list[Channel]) -> list[str]:
    names: list[str] = []
    for ch in channels:
        names.extend(n for n in settings.routing.route(ch).providers if n not in names)
    return names


def create_providers(
    settings: SenderSettings, channels: list[Channel], session: Session | None = None
) -> dict[str, Provider]:
    from senders import providers as registry

    return {
        name: registry.create(name, settings.providers, session)
        for name in needed_providers(settings, channels)
    }


@contextlib.asynccontextmanager
async def sender(
    settings: SenderSettings,
    channels: list[Channel],
    *,
    providers: Mapping[str, Provider] | None = None,
) -> AsyncIterator[SenderRuntime]:
    """A started runtime (not yet consuming: call `run()`); everything closed on exit.

    `providers` replaces the registry's (tests, benchmarks)."""
    session = await asyncio.to_thread(connect, settings.cassandra)
    producer = AsyncProducer(settings.kafka.producer_config(f"sender-{settings.instance_id}"))
    provs = (
        dict(providers) if providers is not None else create_providers(settings, channels, session)
    )
    started: list[Provider] = []
    try:
        for p in provs.values():
            await p.start()
            started.append(p)
        ledger = await asyncio.to_thread(
            functools.partial(
                CassandraLedger,
                session,
                linger_s=settings.ledger_linger_ms / 1000,
                claim_linger_s=settings.ledger_claim_linger_ms / 1000,
            )
        )
        handler = DeliveryHandler(
            settings=settings,
            ledger=ledger,
            publisher=producer,
            providers=provs,
            owner=settings.instance_id,
        )
        yield SenderRuntime(settings, channels, handler=handler, publisher=producer)
    finally:
        for p in started:
            try:
                await p.close()
            except Exception:
                log.exception("provider close failed", extra={"provider": p.name})
        await asyncio.to_thread(producer.close)
        await asyncio.to_thread(session.cluster.shutdown)


async def serve(settings: SenderSettings, channels: list[Channel]) -> None:
    """`python -m senders run`: until SIGTERM/SIGINT, then finish in-flight work and exit."""
    if settings.metrics_enabled:
        start_http_server(settings.metrics_port)
    async with sender(settings, channels) as runtime:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.stop)
        log.info(
            "sender running",
            extra={"channels": [str(c) for c in channels], "instance": settings.instance_id},
        )
        await runtime.run()
    log.info("sender stopped")
