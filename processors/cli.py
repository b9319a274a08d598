"""`herald processor ...`: run the processor, inspect or cancel held requests."""

from __future__ import annotations

import typer
from cassandra.cluster import Session

from infra.scheduling import ScheduleStore

app = typer.Typer(
    help="The stream processor: run it, inspect or cancel held requests.",
    no_args_is_help=True,
)


@app.command()
def run() -> None:
    """Run one processor worker (same as `python -m processors`), configured by HERALD_*."""
    from processors.__main__ import main

    main()


def _store(topic: str | None) -> tuple[Session, ScheduleStore]:
    from infra.cassandra import connect
    from processors.settings import ProcessorSettings

    settings = ProcessorSettings()
    session = connect(settings.cassandra)
    return session, ScheduleStore(session, topic or settings.requested_topic)


@app.command()
def held(event_id: str, topic: str | None = typer.Option(None, help="Request topic")) -> None:
    """State of a held request: held, releasing, released, canceled, or unknown."""
    import asyncio

    session, store = _store(topic)
    try:
        state = asyncio.run(store.state(event_id))
    finally:
        session.cluster.shutdown()
    typer.echo(state or "unknown")


@app.command()
def cancel(event_id: str, topic: str | None = typer.Option(None, help="Request topic")) -> None:
    """Cancel a held (scheduled or deferred) request before it is released."""
    session, store = _store(topic)
    try:
        canceled = store.cancel(event_id)
    finally:
        session.cluster.shutdown()
    if not canceled:
        typer.echo("not canceled: unknown, already released or already canceled", err=True)
        raise typer.Exit(1)
    typer.echo("canceled")
