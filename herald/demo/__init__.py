"""`make demo` / `herald demo`: the whole pipeline on this machine, with a realistic batch.

Starts (or reuses) Kafka and Cassandra, starts the provider emulators, the processor and
the senders as separate processes, seeds a handful of users through the contacts API,
publishes a batch through the producer library, then prints what each emulator received
and what was dropped, deferred or collected into a digest, and why; then reads one user's
in-app inbox through the send API, as an app would with a user token.

The parts: `fixtures` (the users, requests and templates), `seeding` (templates through
the template API, users through the contacts directory), `collection` (this run's status
events) and `report` (what is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer

from herald.bench.services import Pipeline
from herald.demo.collection import collect, status_reader
from herald.demo.fixtures import demo_requests, demo_users
from herald.demo.report import console, print_report, show_inbox
from herald.demo.seeding import seed
from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra.settings import DEV_PROFILE, CassandraSettings, KafkaSettings
from producers.publisher import Publisher
from schemas import codec

app = typer.Typer()

LOG_DIR = Path(".run") / "demo"


@app.command()
def demo(
    keep_running: bool = typer.Option(
        False, help="Leave the processor, senders and emulators running until Ctrl-C."
    ),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the batch to settle."),
) -> None:
    """Start the pipeline, seed users, publish a realistic batch, show what happened."""
    from infra.stack.cli import ensure_up
    from infra.stack.settings import StackSettings

    stack = StackSettings()
    ensure_up(stack)  # reuses a healthy stack; creates topics and tables if missing
    # The processes the demo starts read these; explicit settings in the environment win.
    for key, value in stack.client_env().items():
        os.environ.setdefault(key, value)
    # A laptop demo: the services may use the secrets published in herald's source.
    os.environ.setdefault("HERALD_PROFILE", DEV_PROFILE)
    kafka = KafkaSettings(
        bootstrap_servers=os.environ["HERALD_KAFKA__BOOTSTRAP_SERVERS"],
        schema_registry_url=os.environ.get("HERALD_KAFKA__SCHEMA_REGISTRY_URL"),
    )
    cassandra = CassandraSettings(
        hosts=json.loads(os.environ["HERALD_CASSANDRA__HOSTS"]),
        port=int(os.environ["HERALD_CASSANDRA__PORT"]),
    )
    run = datetime.now(UTC).strftime("demo%H%M%S")
    users = demo_users(run)
    batch = demo_requests(users, run)
    # Fresh consumer groups that start at the topics' end: the demo shows its own batch,
    # not whatever earlier runs or tests left on the shared topics.
    pipeline = Pipeline(run, kafka, LOG_DIR / run)
    try:
        pipeline.start_emulators()
        pipeline.start_processor()
        pipeline.start_sender()
        api = start_api(pipeline)
        pipeline.wait_ready()
        console.print(
            f"services up: {', '.join(pipeline.services)} (logs in {pipeline.log_dir}/, "
            f"emulator control API {pipeline.control_url})"
        )
        seed(users, kafka, cassandra, api, run)
        console.print(f"seeded {len(users)} users with devices, numbers, emails and opt-outs")
        with status_reader(kafka) as consumer:
            publisher = Publisher(kafka, client="demo")
            try:
                results = publisher.publish_batch([req for _, req in batch])
            finally:
                publisher.close()
            console.print(f"published {sum(r.ok for r in results)}/{len(batch)} requests")
            expected = {req.notification_id for _, req in batch}
            # Alice's likes and Eli's (in quiet hours) each become one digest.
            digests = (f"digest:{run}-", 2)
            events = collect(
                consumer,
                codec.codec_for(kafka.schema_registry_url),
                expected,
                timeout,
                digests=digests,
            )
        ledger = httpx.get(f"{pipeline.control_url}/ledger", timeout=5).json()
        print_report(batch, users, events, ledger)
        show_inbox(api, cassandra, users[0], run)
        _check_alive(pipeline.services)
        if keep_running:
            console.print("services keep running; Ctrl-C stops them (Kafka/Cassandra stay up)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    finally:
        pipeline.stop()
    console.print(
        "herald services stopped; Kafka and Cassandra keep running (`make down` stops them)."
    )


def start_api(pipeline: Pipeline) -> str:
    """The send API, for the inbox: its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"HERALD_API__PORT": str(port), "HERALD_LINKS__BASE_URL": base}
    spec = ServiceSpec("send-api", python_module("producers", "api"), ready_port=port, env=env)
    pipeline.services[spec.name] = start(spec, pipeline.log_dir, timeout=60)
    return base


def _check_alive(services: dict[str, Service]) -> None:
    dead = [name for name, svc in services.items() if not svc.alive()]
    if dead:
        console.print(f"[red]exited during the demo: {', '.join(dead)} (see {LOG_DIR}/)[/red]")
        raise typer.Exit(1)
