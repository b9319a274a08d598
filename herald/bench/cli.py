"""`python -m herald.bench` (`make bench`): herald against the raw Kafka limit.

One run: seed a user base, time the bare consume → produce passthrough of the request
records, then run the real pipeline (lean emulators, processors, senders as OS processes)
with 1 and 2 processes per stage: a saturating phase for sustained throughput and a paced
phase for latency at a fixed offered rate; then the senders with the null provider.
Prints the tables, CPU µs per delivery per component beside the budget, and writes the
JSON file. Figures are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import typer
from cassandra.cluster import Session
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from herald.bench import costs, load, passthrough, pipeline
from herald.bench import services as bench_services
from herald.bench.sampler import Sampler, listener_pid
from herald.services import ServiceError
from infra.cassandra import connect
from infra.settings import ServiceSettings
from schemas import codec
from senders.settings import RoutingSettings

app = typer.Typer(help="Benchmark herald against a bare Kafka passthrough.")
# Wide enough for the table when the output is a file or a CI log.
console = Console(width=None if Console().is_terminal else 160)


# The bench runs on its own copy of herald's topics, so no other herald on the broker (a
# demo, a test run) takes part in its deliveries; its consumer groups start at their end.
TOPIC_PREFIX = "herald-bench."
BENCH = "bench"  # the bench process in the per-process table
# The null-provider run: every channel routed to the in-process provider, no emulators.
NULL_ROUTES = {
    f"HERALD_ROUTING__{route}__PROVIDERS": '["null"]'
    for route in (name.upper() for name in RoutingSettings.model_fields)
}
PACED_SECONDS = 20
PASSTHROUGH_MIN = 20_000


class BenchSettings(ServiceSettings):
    """Where the benchmark finds Kafka and Cassandra (`HERALD_KAFKA__*`, `HERALD_CASSANDRA__*`)."""


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _updater(progress: Progress, task: TaskID) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


def _usage_rows(sampler: Sampler) -> list[dict[str, Any]]:
    return [
        {
            "process": u.name,
            "cpu_avg_pct": round(u.cpu_avg, 1),
            "cpu_max_pct": round(u.cpu_max, 1),
            "rss_max_mib": round(u.rss_max / 2**20, 1),
            "cpu_seconds": round(u.cpu_seconds, 3),
        }
        for u in sampler.usage.values()
    ]


def _ledger_totals(stack: bench_services.Pipeline) -> dict[str, float]:
    """The senders' conditional ledger rounds so far, summed over the running senders."""
    totals = {"rounds": 0.0, "rows": 0.0, "seconds": 0.0}
    for name, svc in stack.services.items():
        if costs.component_of(name) != "senders" or svc.spec.ready_port is None:
            continue
        try:
            text = httpx.get(f"http://127.0.0.1:{svc.spec.ready_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue  # a figure missing, not a failed run
        for key, value in costs.ledger_totals(text).items():
            totals[key] += value
    return totals


def _pipeline_runs(
    settings: BenchSettings,
    *,
    users: list[load.User],
    prefix: str,
    requests: int,
    rate: float,
    latency_requests: int,
    scales: list[int],
    log_dir: Path,
    settle_timeout: float,
    max_wait: float,
    progress: Progress,
    null_provider: bool,
    cassandra: Session,
) -> list[dict[str, Any]]:
    """One run per entry of `scales` against the lean emulators, then (`null_provider`)
    one saturating run with one process per stage and the null provider."""
    mix = load.RequestMix(users)
    infra_pids = {
        name: pid
        for name, pid in (
            ("kafka", listener_pid(int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1]))),
            ("cassandra", listener_pid(settings.cassandra.port)),
        )
        if pid
    }
    results: list[dict[str, Any]] = []
    runs = [(n, False) for n in scales] + ([(1, True)] if null_provider else [])
    for n, null in runs:
        run_id = f"{prefix}-x{n}" + ("-null" if null else "")
        stack = bench_services.Pipeline(
            run_id, settings.kafka, log_dir / run_id, topic_prefix=TOPIC_PREFIX
        )
        sender_env = {**bench_services.BENCH_SENDER_ENV, **(NULL_ROUTES if null else {})}
        control_url = None if null else stack.control_url
        try:
            task = progress.add_task(f"x{n} start {2 * n + (not null)} processes", total=1)
            if not null:
                stack.start_emulators(lean=True)
            for i in range(1, n + 1):
                stack.start_processor(i)
                stack.start_sender(i, env=sender_env)
            stack.wait_ready(processors=n, senders=n, timeout=120)
            progress.update(task, completed=1)
            pids = {**infra_pids, **{name: svc.pid for name, svc in stack.services.items()}}
            # Warm-up: every partition assigned, every connection and cache opened once.
            task = progress.add_task(f"x{n} warm-up", total=1)
            pipeline.run_phase(
                name="warmup",
                processes=n,
                kafka=settings.kafka,
                requests=list(mix.requests(50, run_id=f"{run_id}-w")),
                user_prefix=prefix,
                rate=0,
                control_url=control_url,
                settle_timeout=60,
                topic_prefix=TOPIC_PREFIX,
                on_progress=_updater(progress, task),
                check=stack.check_alive,
            )
            saturated = 0.0
            for phase in ("saturate",) if null else ("saturate", "paced"):
                if phase == "saturate":
                    count, offered = requests, 0.0
                else:
                    # Latency is only meaningful below capacity: by default, half of it.
                    offered = rate or max(1.0, round(saturated / 2))
                    count = latency_requests or max(1, int(offered * PACED_SECONDS))
                if not null:
                    stack.reset()
                label = "max" if not offered else f"{offered:g}/s"
                task = progress.add_task(f"x{n} {phase} ({label})", total=count)
                rounds_before = _ledger_totals(stack)
                began = datetime.now(UTC)
                # The bench's own process too (it decodes every record it watches): it
                # shares the machine, but is no part of herald's cost per delivery.
                with Sampler({**pids, BENCH: os.getpid()}, alone=frozenset({BENCH})) as sampler:
                    res = pipeline.run_phase(
                        name=f"{phase} (null provider)" if null else phase,
                        processes=n,
                        kafka=settings.kafka,
                        requests=list(mix.requests(count, run_id=f"{run_id}-{phase}")),
                        user_prefix=prefix,
                        rate=offered,
                        control_url=control_url,
                        settle_timeout=settle_timeout,
                        max_wait=max_wait,
                        topic_prefix=TOPIC_PREFIX,
                        on_progress=_updater(progress, task),
                        check=stack.check_alive,
                        # Reading the emulator ledger is the bench's work, not herald's.
                        on_settled=sampler.stop,
                    )
                saturated = saturated or res.requests_per_s
                cpu = {u.name: u.cpu_seconds for u in sampler.usage.values()}
                results.append(
                    {
                        **asdict(res),
                        "provider": "null" if null else "emulators",
                        "processes_usage": _usage_rows(sampler),
                        "cpu_us_per_delivery": costs.cpu_us_per_delivery(cpu, res.delivered),
                        "ledger_rounds": costs.ledger_rounds(
                            rounds_before, _ledger_totals(stack), res.deliveries_ended
                        ),
                        "cassandra_compacted_mb": _compacted_mb(
                            cassandra, settings.cassandra.keyspace, began
                        ),
                    }
                )
                if res.interrupted:
                    return results
                if not res.complete:
                    # A backlog is left in the topics: a paced phase would queue behind it.
                    break
        finally:
            stack.stop()
    return results


def _compacted_mb(session: Session, keyspace: str, since: datetime) -> float | None:
    """What Cassandra compacted of herald's tables during a phase (None: unreadable)."""
    until = datetime.now(UTC)
    try:
        history = session.execute(
            "SELECT keyspace_name, compacted_at, bytes_in FROM system.compaction_history"
        )
        return costs.compacted_mb(history, keyspace, since, until)
    except Exception:  # a figure beside the others, never a reason to lose the run
        return None


def _keeping_up(r: dict[str, Any]) -> str | None:
    """For a paced phase: whether it kept up with the offered rate, from how its p50 latency
    moved between the first and the last fifth of its requests."""
    if not r["offered_rate"]:
        return None  # a saturating phase: nothing offered to keep up with
    drift = r.get("latency_drift_ms") or {}
    behind = pipeline.fell_behind(drift)
    if behind is None:
        return None
    first, last = _fmt(drift["first"]), _fmt(drift["last"])
    phase = f"{r['name']} ({r['processes']} procs, {r['offered_rate']:g}/s offered)"
    moved = f"p50 latency {first} ms for the first fifth of its requests, {last} ms for the last"
    if behind:
        return (
            f"{phase}: {moved}. It fell behind the offered rate: "
            "its percentiles measure a backlog that grew."
        )
    return f"{phase}: {moved}: kept up."


def _render(doc: dict[str, Any]) -> None:
    pt = doc.get("passthrough")
    table = Table(title="herald benchmark", show_lines=False)
    for col in (
        "run",
        "procs",
        "offered/s",
        "requests/s",
        "deliveries/s",
        "processor req/s",
        "senders dlv/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "vs passthrough",
        "complete",
    ):
        table.add_column(col, justify="right" if col not in ("run",) else "left")
    if pt:
        table.add_row(
            "kafka passthrough",
            "1",
            "max",
            _fmt(pt["records_per_s"]),
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "1.00",
            "yes",
        )
    for r in doc.get("pipeline", []):
        ratio = r["requests_per_s"] / pt["records_per_s"] if pt and pt["records_per_s"] else None
        table.add_row(
            r["name"],
            str(r["processes"]),
            "max" if not r["offered_rate"] else f"{r['offered_rate']:g}",
            _fmt(r["requests_per_s"]),
            _fmt(r["deliveries_per_s"]),
            _fmt(r["processor_per_s"]),
            _fmt(r["senders_per_s"]),
            _fmt(r["latency_ms"]["p50"]),
            _fmt(r["latency_ms"]["p95"]),
            _fmt(r["latency_ms"]["p99"]),
            _fmt(ratio, 4),
            "yes" if r["complete"] else "no",
        )
    console.print(table)
    runs = doc.get("pipeline", [])
    for r in runs:
        line = _keeping_up(r)
        if line:
            console.print(line)
    legs = [r for r in runs if r.get("stage_latency_ms")]
    if legs:
        stages = Table(
            title="Latency by leg, ms: publish → channel record (processor), then → receipt"
        )
        for col in ("run", "procs", "processor p50", "p95", "p99", "senders p50", "p95 ", "p99 "):
            stages.add_column(col, justify="left" if col == "run" else "right")
        for r in legs:
            proc, send = r["stage_latency_ms"]["processor"], r["stage_latency_ms"]["senders"]
            stages.add_row(
                r["name"],
                str(r["processes"]),
                *(_fmt(proc[q]) for q in ("p50", "p95", "p99")),
                *(_fmt(send[q]) for q in ("p50", "p95", "p99")),
            )
        console.print(stages)
    if runs:
        usage = Table(title="CPU and RSS per process (saturating and paced phases)")
        for col in ("run", "procs", "process", "CPU avg %", "CPU max %", "RSS max MiB"):
            usage.add_column(col, justify="left" if col in ("run", "process") else "right")
        for r in runs:
            for u in r["processes_usage"]:
                usage.add_row(
                    r["name"],
                    str(r["processes"]),
                    u["process"],
                    _fmt(u["cpu_avg_pct"], 1),
                    _fmt(u["cpu_max_pct"], 1),
                    _fmt(u["rss_max_mib"], 1),
                )
        console.print(usage)
        per_channel = Table(title="Senders: deliveries/s per channel against the emulators")
        channels = sorted({ch for r in runs for ch in r.get("senders_per_channel", {})})
        per_channel.add_column("run")
        per_channel.add_column("procs", justify="right")
        for ch in channels:
            per_channel.add_column(ch, justify="right")
        for r in runs:
            rates = r.get("senders_per_channel", {})
            per_channel.add_row(
                r["name"], str(r["processes"]), *(_fmt(rates.get(ch)) for ch in channels)
            )
        console.print(per_channel)
        outcome = Table(title="What happened to the requests")
        for col in ("run", "procs", "requests", "deliveries", "delivered", "dup. receipts"):
            outcome.add_column(col, justify="left" if col == "run" else "right")
        outcome.add_column("drops / dead letters")
        for r in runs:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items()))
            outcome.add_row(
                r["name"],
                str(r["processes"]),
                str(r["requests"]),
                str(r["deliveries_fanned"]),
                str(r["delivered"]),
                str(r["duplicate_receipts"]),
                reasons or "-",
            )
        console.print(outcome)
        console.print(cost_table(runs))
        sat = [r for r in runs if r["name"] == "saturate" and r.get("provider") != "null"]
        if len(sat) > 1 and sat[0]["requests_per_s"]:
            base = sat[0]
            for r in sat[1:]:
                change = r["requests_per_s"] / base["requests_per_s"]
                console.print(
                    f"scaling: {base['processes']} → {r['processes']} processes per stage: "
                    f"{base['requests_per_s']:,.0f} → {r['requests_per_s']:,.0f} requests/s "
                    f"(x{change:.2f})"
                )


def cost_table(runs: list[dict[str, Any]]) -> Table:
    """CPU µs per delivery per component in the saturating phases, the budget beneath."""
    table = Table(title="CPU µs per delivery (CPU seconds ÷ deliveries, saturating phase)")
    table.add_column("run")
    table.add_column("procs", justify="right")
    for c in costs.COMPONENTS:
        table.add_column(c, justify="right")
    # Cassandra's cost per delivery follows the ledger's Paxos rounds per delivery.
    table.add_column("ledger rounds/dlv", justify="right")
    table.add_column("rows/round", justify="right")
    # Compactions are Cassandra's background work: one landing in a phase costs it.
    table.add_column("compacted MB", justify="right")
    for r in runs:
        if not r["name"].startswith("saturate"):
            continue
        us = r.get("cpu_us_per_delivery", {})
        rounds = r.get("ledger_rounds", {})
        label = "null provider" if r.get("provider") == "null" else "emulators"
        table.add_row(
            label,
            str(r["processes"]),
            *(_fmt(us.get(c)) for c in costs.COMPONENTS),
            _fmt(rounds.get("rounds_per_delivery"), 2),
            _fmt(rounds.get("rows_per_round"), 1),
            _fmt(r.get("cassandra_compacted_mb")),
        )
    table.add_row(
        "budget",
        "",
        *(f"≤ {costs.BUDGET_US[c]:,.0f}" if c in costs.BUDGET_US else "" for c in costs.COMPONENTS),
        "",
        "",
        "",
    )
    return table


@app.command()
def run(
    requests: int = typer.Option(2000, help="Requests per saturating phase (and passthrough)."),
    rate: float = typer.Option(
        0.0, help="Offered rate of the paced (latency) phase, req/s; 0 = half the saturated rate."
    ),
    users: int = typer.Option(2000, help="Synthetic users seeded into Cassandra."),
    latency_requests: int = typer.Option(
        0, help=f"Requests in the paced phase (default: {PACED_SECONDS} s worth)."
    ),
    scale: str = typer.Option("1,2", help="Processes per stage to compare, comma-separated."),
    pipeline_runs: bool = typer.Option(True, "--pipeline/--no-pipeline"),
    null_provider: bool = typer.Option(
        True, "--null/--no-null", help="Also run the senders with the null provider."
    ),
    output: Path = typer.Option(Path("bench-results.json"), help="Where to write the figures."),
    log_dir: Path = typer.Option(Path(".run/bench"), help="Logs of the processes started."),
    settle_timeout: float = typer.Option(
        45.0, help="Stop waiting when nothing has moved for this long (seconds)."
    ),
    max_wait: float = typer.Option(
        0.0, help="Stop a phase after this long (seconds) and report what got through; 0 = no cap."
    ),
) -> None:
    """Seed users, time the passthrough baseline, run the pipeline, print and save figures."""
    logging.basicConfig(level=logging.WARNING)
    settings = BenchSettings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    doc: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "parameters": {
            "requests": requests,
            "rate": rate,
            "users": users,
            "scale": scale,
        },
        "cpu_budget_us_per_delivery": costs.BUDGET_US,
    }
    population = load.make_users(users, prefix=prefix)
    with _progress() as progress, contextlib.ExitStack() as cleanup:
        task = progress.add_task("seed Cassandra", total=1)
        # Seeds, then reads what Cassandra compacted during each phase.
        session = connect(settings.cassandra, keyspace=False)
        cleanup.callback(session.cluster.shutdown)
        t0 = time.perf_counter()
        doc["seed"] = load.seed_cassandra(session, population, keyspace=settings.cassandra.keyspace)
        doc["seed"]["seconds"] = round(time.perf_counter() - t0, 2)
        progress.update(task, completed=1)

        payloads = []
        # At least PASSTHROUGH_MIN records: fewer copy too fast to time.
        count = max(requests, PASSTHROUGH_MIN)
        for r in load.RequestMix(population).requests(count, run_id=f"{prefix}-pt"):
            r["created_at"] = int(time.time() * 1000)
            payloads.append((r["user_id"].encode(), codec.encode(codec.REQUEST, r)))
        task = progress.add_task("kafka passthrough", total=len(payloads))
        pt = passthrough.run(settings.kafka, payloads, progress=lambda n: progress.advance(task, n))
        doc["passthrough"] = {
            "records": pt.records,
            "seconds": round(pt.seconds, 3),
            "records_per_s": round(pt.records_per_s, 1),
            "produce_per_s": round(pt.produce_per_s, 1),
            "topics": [passthrough.IN_TOPIC, passthrough.OUT_TOPIC],
        }

        if pipeline_runs:
            try:
                doc["pipeline"] = _pipeline_runs(
                    settings,
                    users=population,
                    prefix=prefix,
                    requests=requests,
                    rate=rate,
                    latency_requests=latency_requests,
                    scales=[int(s) for s in scale.split(",") if s.strip()],
                    log_dir=log_dir,
                    settle_timeout=settle_timeout,
                    max_wait=max_wait,
                    progress=progress,
                    null_provider=null_provider,
                    cassandra=session,
                )
            except (ServiceError, TimeoutError) as exc:
                doc["pipeline_error"] = str(exc).splitlines()[0]
                console.print(f"[red]pipeline not measured: {exc}[/red]")
    doc["finished_at"] = datetime.now(UTC).isoformat()
    output.write_text(json.dumps(doc, indent=2))
    _render(doc)
    console.print(f"figures written to {output}")
