"""`python -m infra.stack up|down|status|restart|env`: the local Kafka + Cassandra.

`up` is idempotent: a healthy running server is reused, a missing one started; then the
topics (infra/topics.py) and the tables (infra/cql/*.cql) are created if missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from enum import StrEnum
from pathlib import Path

import psutil
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import KafkaSettings
from infra.stack.cassandra import Cassandra
from infra.stack.component import Component, StackError
from infra.stack.jars import JarResolutionError
from infra.stack.kafka import Kafka
from infra.stack.settings import StackSettings

app = typer.Typer(help="Run the local Kafka and Cassandra that herald needs.", no_args_is_help=True)
console = Console()


class Which(StrEnum):
    ALL = "all"
    KAFKA = "kafka"
    CASSANDRA = "cassandra"


def components(settings: StackSettings, which: Which = Which.ALL) -> list[Component]:
    every: list[Component] = [Kafka(settings), Cassandra(settings)]
    return [c for c in every if which == Which.ALL or c.name == which.value]


def _quiet_clients() -> None:
    # Connection refusals while a server boots are expected; the probe reports them.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)


def warm_up_group_coordinator(bootstrap_servers: str, timeout: float = 120.0) -> None:
    """A fresh broker creates and loads `__consumer_offsets` on the first group request,
    and until then every consumer group fails to join. Pay that once here, so the first
    service or test that joins a group does not have to."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    from infra.topics import STATUS

    group = "herald-stack-warmup"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False}
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(STATUS, 0, 0)], asynchronous=False)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"Kafka group coordinator not ready: {exc}") from exc
                time.sleep(1.0)
    finally:
        consumer.close()
    AdminClient({"bootstrap.servers": bootstrap_servers}).delete_consumer_groups([group])


def bootstrap(settings: StackSettings) -> None:
    from infra.cassandra import apply_migrations
    from infra.topics import ensure_topics

    created = ensure_topics(settings.bootstrap_servers)
    warm_up_group_coordinator(settings.bootstrap_servers)
    console.print(
        f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else "")
    )
    applied = apply_migrations([settings.host], settings.cassandra_port)
    console.print(f"cql: {len(applied)} migration(s) applied" + (f" {applied}" if applied else ""))


def ensure_up(
    settings: StackSettings, which: Which = Which.ALL, *, bootstrap_only: bool = False
) -> None:
    """Start what is not running, wait until healthy; raises StackError/JarResolutionError."""
    _quiet_clients()
    if not bootstrap_only:
        for component in components(settings, which):
            component.up()
    if which == Which.ALL:
        bootstrap(settings)


@app.command()
def up(
    which: Which = typer.Argument(Which.ALL),
    bootstrap_only: bool = typer.Option(
        False, help="Only create topics and tables on servers running elsewhere."
    ),
) -> None:
    """Start (or reuse) the servers, wait until healthy, create topics and tables."""
    try:
        ensure_up(StackSettings(), which, bootstrap_only=bootstrap_only)
    except (StackError, JarResolutionError) as exc:
        console.print(f"[red]stack: {exc}[/red]")
        raise typer.Exit(1) from exc


# herald's own services, as `python -m <module>`: what the demo and the tests start.
SERVICE_MODULES = ("processors", "senders", "infra.emulators", "producers", "herald.ops.")
DEFAULT_BOOTSTRAP = KafkaSettings().bootstrap_servers


def stray_services(root: Path, bootstrap_servers: str) -> list[psutil.Process]:
    """herald processes started from this checkout against this stack that are still
    running: an interrupted demo or test run leaves them behind (they run in their own
    sessions). Processes pointed at another Kafka are someone else's."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            argv = proc.info["cmdline"] or []
            if proc.info["cwd"] != str(root) or "-m" not in argv or proc.pid == os.getpid():
                continue
            module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
            kafka = proc.environ().get("HERALD_KAFKA__BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)
            if module.startswith(SERVICE_MODULES) and kafka == bootstrap_servers:
                found.append(proc)
    return found


@app.command()
def down(which: Which = typer.Argument(Which.ALL)) -> None:
    """Stop herald services left running from this checkout, then the servers (data is
    kept in the run directory)."""
    if which == Which.ALL:
        settings = StackSettings()
        strays = stray_services(Path.cwd().resolve(), settings.bootstrap_servers)
        for proc in strays:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _gone, alive = psutil.wait_procs(strays, timeout=15)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if strays:
            console.print(f"stopped {len(strays)} herald service process(es)")
    for component in reversed(components(StackSettings(), which)):
        stopped = component.down()
        console.print(f"{component.name}: {'stopped' if stopped else 'not running'}")


@app.command()
def restart(which: Which = typer.Argument(Which.ALL)) -> None:
    """Stop then start the servers, keeping their data (used by the fault suite)."""
    settings = StackSettings()
    _quiet_clients()
    for component in components(settings, which):
        component.down()
        try:
            component.up()
        except StackError as exc:
            console.print(f"[red]stack: {exc}[/red]")
            raise typer.Exit(1) from exc


@app.command()
def status() -> None:
    """Health, port, pid and memory of each server. Exit 1 if any is unhealthy."""
    _quiet_clients()
    table = Table("component", "health", "port", "pid", "RSS MiB", "detail")
    healthy = True
    for component in components(StackSettings()):
        st = component.status()
        healthy &= st.healthy
        table.add_row(
            st.name,
            "[green]healthy[/green]" if st.healthy else "[red]down[/red]",
            str(st.port),
            str(st.pid or "-"),
            f"{st.rss_mb:.0f}" if st.rss_mb else "-",
            st.detail,
        )
    console.print(table)
    if not healthy:
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print the environment herald's services need to reach this stack."""
    for key, value in StackSettings().client_env().items():
        print(f"export {key}='{value}'")


def main() -> None:
    app()
