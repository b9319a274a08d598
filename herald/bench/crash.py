"""A sender SIGKILLed at full load: how many deliveries end `uncertain_after_crash`.

`python -m herald.bench.crash [--requests 4000] [--users 2000] [--kill-after 1500]`

Starts the emulators, a processor and a sender (send timeout 15 s, a claim stale after
20 s, so the restarted sender resolves the dead one's claims within the run;
`max_in_flight` as configured), publishes the requests at once
so the sender drains a backlog at its full rate, SIGKILLs the sender once `--kill-after`
deliveries have reached the emulators, starts it again, and waits until every request
has settled. Prints the delivery rate before the kill, how many deliveries were
dead-lettered `uncertain_after_crash` (the bound is one process's deliveries in flight),
how many of those the emulators did receive (an operator's redrive must skip exactly
those), and the oracle's verdict: nothing lost, nothing received twice. Asserts nothing.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import typer
from rich.console import Console
from rich.table import Table

from herald.bench import load
from herald.bench.kafkautil import require_broker
from herald.bench.scenario import (
    FAULTS_TOPIC_PREFIX,
    LOG_ROOT,
    RequestFeed,
    mixed_requests,
    oracle_for,
)
from herald.bench.services import BENCH_SENDER_ENV, Pipeline
from infra import topics
from infra.cassandra import connect
from infra.settings import CassandraSettings, KafkaSettings
from schemas.contract import Reason
from senders.settings import SenderSettings

# No provider quotas (as in `make bench`); timeouts as in production, shorter only where
# the run would otherwise wait a minute for the dead sender's claims to go stale.
SENDER_ENV = {
    **BENCH_SENDER_ENV,
    "HERALD_SEND_TIMEOUT_S": "15",
    "HERALD_RETRY__CLAIM_STALE_AFTER_S": "20",
}

app = typer.Typer(add_completion=False)
console = Console()


@app.command()
def main(
    requests: int = typer.Option(4000, help="Requests published at once (a backlog)."),
    users: int = typer.Option(2000, help="Synthetic users (1-2 devices, email, phone)."),
    kill_after: int = typer.Option(1500, help="Deliveries received before the SIGKILL."),
    timeout: float = typer.Option(
        600.0, help="Seconds to wait for each phase (the kill, the settling)."
    ),
) -> None:
    """SIGKILL a sender mid-backlog and count what it left uncertain."""
    kafka, cassandra = KafkaSettings(), CassandraSettings()
    require_broker(kafka)
    session = connect(cassandra)
    population = load.make_users(
        users, prefix=f"crash-{uuid.uuid4().hex[:8]}", devices_per_user=(1, 2), opt_out_share=0
    )
    load.seed_cassandra(session, population)
    run_id = f"crash-bench-{uuid.uuid4().hex[:6]}"
    pipe = Pipeline(run_id, kafka, LOG_ROOT / run_id, topic_prefix=FAULTS_TOPIC_PREFIX)
    try:
        pipe.start_emulators()
        pipe.start_processor(1)
        pipe.start_sender(1, env=SENDER_ENV)
        pipe.wait_ready(timeout=60)
    except BaseException:
        pipe.stop()
        raise
    oracle = oracle_for(pipe, session)
    try:
        batch = mixed_requests(population, requests)
        oracle.expect(batch)
        feed = RequestFeed(kafka, FAULTS_TOPIC_PREFIX + topics.REQUESTED)
        feed.send(batch)
        started = received = first_at = 0.0
        deadline = time.monotonic() + timeout
        with console.status("waiting for the sender to reach full rate…") as spinner:
            while received < kill_after:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"only {received:,.0f} of {kill_after:,} deliveries after {timeout:.0f} s"
                        f"; the services' logs are in {pipe.log_dir}/"
                    )
                time.sleep(0.5)
                received = sum(oracle.ledger().values())
                if received and not first_at:
                    first_at, started = time.monotonic(), received
                spinner.update(f"{received:,.0f} deliveries received")
        killed_at = time.monotonic()
        rate = (received - started) / max(killed_at - first_at, 1e-9)
        pipe.kill("senders-1")
        pipe.restart("senders-1")
        with console.status("waiting for every request to settle…"):
            verdict = oracle.wait(timeout=timeout, quiet_s=5)
        uncertain = {
            did
            for did, reasons in oracle.seen.dead_letters.items()
            if Reason.UNCERTAIN_AFTER_CRASH in reasons
        }
        arrived = {did for did in uncertain if verdict.receipts.get(did)}
        reasons = Counter(r for rs in oracle.seen.dead_letters.values() for r in rs)
        by_channel = Counter(
            str(oracle.seen.fanned.get(did, {}).get("channel", "?")) for did in uncertain
        )
    finally:
        oracle.stop()
        pipe.stop()
        session.cluster.shutdown()

    table = Table(title="A sender SIGKILLed mid-backlog")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("max_in_flight (the bound)", f"{SenderSettings().max_in_flight:,}")
    table.add_row("deliveries/s before the kill", f"{rate:,.0f}")
    table.add_row("uncertain_after_crash", f"{len(uncertain):,}")
    table.add_row("  of which the emulators received", f"{len(arrived):,}")
    table.add_row("  of which never arrived (to redrive)", f"{len(uncertain - arrived):,}")
    table.add_row(
        "deliveries received twice", f"{sum(1 for n in verdict.receipts.values() if n > 1):,}"
    )
    table.add_row("verdict", "ok" if not verdict.problems else f"{len(verdict.problems)} problems")
    console.print(table)
    console.print(f"uncertain by channel: {dict(by_channel)}")
    console.print(f"dead letters by reason: {dict(reasons)}")
    console.print(verdict.summary())


if __name__ == "__main__":
    app()
