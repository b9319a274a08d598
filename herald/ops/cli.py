"""Operator commands: `herald replay`, `herald dlq list|show|redrive`, `herald status`,
`herald stats`. Mounted at the top level of the `herald` command."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from herald.ops import dlq as dlqmod
from herald.ops.common import ReplayReport, TopicRef, topic_ref
from herald.ops.settings import OpsSettings
from herald.ops.slices import parse_time
from schemas.channels import Channel, PreferenceChannel

app = typer.Typer(help="Operations: replay, dead letters, status, stats.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and redrive dead-letter topics.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

CHANNEL_NAMES = {c.value for c in Channel} | {c.value for c in PreferenceChannel}

out = Console()
err = Console(stderr=True)

TopicOpt = Annotated[
    str, typer.Option("--topic", "-t", help="requests, a channel (email, push.ios, ...) or a topic")
]


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rec/s" if speed else "- rec/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Any]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
        bar.update(task, completed=total)


def _settings() -> OpsSettings:
    return OpsSettings()


def _session(settings: OpsSettings) -> Any:
    from infra.cassandra import connect

    return connect(settings.cassandra)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def infra_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Kafka or Cassandra out of reach: one line that says so, not a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (KafkaException, NoHostAvailable, TimeoutError) as exc:
            raise _fail(f"{exc} (retriable: check that the stack is up, then run again)") from None

    return run


def render_outcome(title: str, outcome: ReplayReport) -> Table:
    table = Table(title=title + (" (dry run: nothing produced)" if outcome.dry_run else ""))
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records scanned", f"{outcome.scanned:,}")
    verb = "would send" if outcome.dry_run else "produced"
    for topic, n in sorted(outcome.produced.items()):
        table.add_row(f"{verb} → {topic}", f"{n:,}", style="green")
    if not outcome.produced:
        table.add_row(verb, "0", style="green")
    for reason, n in sorted(outcome.skipped.items()):
        table.add_row(f"{'would skip' if outcome.dry_run else 'skipped'}: {reason}", f"{n:,}")
    for e in outcome.errors:
        table.add_row(f"[red]error[/red] {e}", "")
    if outcome.dry_run and outcome.sample:
        more = outcome.total_produced - len(outcome.sample)
        ids = ", ".join(outcome.sample) + (f" … and {more:,} more" if more > 0 else "")
        table.caption = f"would send: {ids}"
    return table


@app.command()
@infra_errors
def replay(
    topic: TopicOpt,
    start: Annotated[str, typer.Option("--from", help="ISO 8601, 'now' or an age: 2h, 30m")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601, 'now' or an age")] = "now",
    channel: Annotated[
        str | None, typer.Option(help="only this channel (push covers all push)")
    ] = None,
    category: Annotated[str | None, typer.Option(help="only this category")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count, produce nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Re-drive a time window of a topic; nothing already delivered is sent again."""
    from herald.ops import replay as replaymod

    try:
        settings = _settings()
        ref = topic_ref(topic, prefix=settings.topic_prefix)
        start_ms, end_ms = parse_time(start), parse_time(end)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if start_ms >= end_ms:
        raise _fail("--from must be before --to")
    if channel is not None and channel not in CHANNEL_NAMES:
        raise _fail(f"--channel must be one of {', '.join(sorted(CHANNEL_NAMES))}")
    req = replaymod.ReplayRequest(
        ref, start_ms, end_ms, channel, category, dry_run, run_id=uuid.uuid4().hex[:12]
    )
    session = None if ref.is_request else _session(settings)
    try:
        ranges = replaymod.plan(settings.kafka, req)
        total = sum(r.size for r in ranges)
        err.print(
            f"replaying {ref.name}: {total:,} records in {len(ranges)} partitions "
            f"(group herald-replay-{req.run_id})"
        )
        with progress_bar("replay", total) as advance:
            outcome = replaymod.replay(
                settings.kafka, session, req, ranges=ranges, on_progress=advance
            )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        if session is not None:
            session.cluster.shutdown()
    if as_json:
        out.print_json(json.dumps(outcome.as_dict()))
    else:
        out.print(render_outcome(f"replay {ref.name}", outcome))
    if outcome.errors:
        raise typer.Exit(1)


@dlq_app.command("list")
@infra_errors
def dlq_list(
    topic: TopicOpt,
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    limit: Annotated[int, typer.Option(help="newest N")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters with reason, attempts, first and last error, age."""
    settings = _settings()
    ref = _dlq_ref(topic, settings)
    letters = [d for d in dlqmod.read(settings.kafka, ref) if reason in (None, d.reason)]
    rows = [d.summary() for d in letters[-limit:]]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(
        title=f"{ref.name}: {len(letters)} dead letters" + (f" ({reason})" if reason else "")
    )
    for col in ("ref", "delivery_id", "reason", "attempts", "first_error", "last_error", "age"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["ref"],
            r["delivery_id"] or "-",
            r["reason"],
            str(r["attempts"] if r["attempts"] is not None else "-"),
            r["first_error"] or "-",
            r["last_error"] or "-",
            _age(r["age_s"]),
        )
    out.print(table)


def _dlq_ref(topic: str, settings: OpsSettings) -> TopicRef:
    try:
        return topic_ref(topic, dlq=True, prefix=settings.topic_prefix)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dlq_app.command("show")
@infra_errors
def dlq_show(
    topic: TopicOpt,
    ref: Annotated[str | None, typer.Option("--offset", help="offset or partition:offset")] = None,
    delivery_id: Annotated[str | None, typer.Option("--delivery-id")] = None,
) -> None:
    """One dead letter, decoded, with its contact address masked."""
    if not (ref or delivery_id):
        raise _fail("give --offset or --delivery-id")
    settings = _settings()
    tref = _dlq_ref(topic, settings)
    for d in dlqmod.read(settings.kafka, tref):
        if (ref is not None and ref in (d.ref, str(d.offset))) or (
            delivery_id is not None and d.delivery_id == delivery_id
        ):
            out.print_json(json.dumps(d.detail(), default=str))
            return
    raise _fail("no such dead letter")


@dlq_app.command("redrive")
@infra_errors
def dlq_redrive(
    topic: TopicOpt,
    offsets: Annotated[list[str] | None, typer.Option("--offset", help="repeatable")] = None,
    delivery_ids: Annotated[
        list[str] | None, typer.Option("--delivery-id", help="repeatable")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="every dead letter (with --reason: of it)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="only dead letters with this reason")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="redrive again records redriven before")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send chosen dead letters back to their main topic, never twice."""
    settings = _settings()
    ref = _dlq_ref(topic, settings)
    try:
        selection = dlqmod.Selection(
            frozenset(offsets or ()), frozenset(delivery_ids or ()), everything, reason
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    session = _session(settings)
    try:
        letters = dlqmod.read(settings.kafka, ref)
        total = sum(1 for d in letters if selection.matches(d))
        with progress_bar("redrive", total) as advance:
            result = dlqmod.redrive(
                settings.kafka,
                session,
                ref,
                selection,
                dry_run=dry_run,
                force=force,
                letters=letters,
                on_progress=advance,
            )
    finally:
        session.cluster.shutdown()
    if as_json:
        out.print_json(json.dumps({**result.outcome.as_dict(), "redriven": result.redriven}))
    else:
        out.print(render_outcome(f"redrive {ref.name}", result.outcome))
    if result.outcome.errors:
        raise typer.Exit(1)


@app.command()
def status(
    once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
    interval: Annotated[float | None, typer.Option(help="seconds between refreshes")] = None,
) -> None:
    """Live view: Kafka and Cassandra health, lag and throughput per channel, errors."""
    from rich.live import Live

    from herald.ops.status import StatusProbe, render

    settings = _settings()
    every = interval or settings.status.interval_s
    probe = StatusProbe(settings)
    try:
        prev = probe.take()
        if once:
            # Rates are offset deltas, so even one snapshot needs two readings.
            time.sleep(min(every, 1.0))
            out.print(render(prev, probe.take(), settings.topic_prefix))
            return
        with Live(
            render(None, prev, settings.topic_prefix), console=out, refresh_per_second=4
        ) as live:
            while True:
                time.sleep(every)
                cur = probe.take()
                live.update(render(prev, cur, settings.topic_prefix))
                prev = cur
    except KeyboardInterrupt:
        pass
    finally:
        probe.close()


@app.command()
@infra_errors
def stats(
    start: Annotated[str, typer.Option("--from", help="ISO 8601, 'now' or an age: 24h")] = "24h",
    end: Annotated[str, typer.Option("--to", help="ISO 8601, 'now' or an age")] = "now",
    category: Annotated[str | None, typer.Option(help="only this category")] = None,
    channel: Annotated[str | None, typer.Option(help="only this channel (push covers all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False,
) -> None:
    """Delivery funnel per category and channel from notifications.status."""
    from herald.ops.stats import aggregate, read_status

    try:
        start_ms, end_ms = parse_time(start), parse_time(end)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = _settings()
    with Progress(
        TextColumn("[bold]reading notifications.status"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("stats", total=None)
        events = read_status(
            settings.kafka,
            start_ms,
            end_ms,
            on_total=lambda n: bar.update(task, total=n),
            on_progress=lambda n: bar.advance(task, n),
            topic_prefix=settings.topic_prefix,
        )
        result = aggregate(
            events, start_ms=start_ms, end_ms=end_ms, category=category, channel=channel
        )
    data = [r.as_dict() for r in result]
    if as_json:
        out.print_json(json.dumps({"from_ms": start_ms, "to_ms": end_ms, "rows": data}))
        return
    table = Table(title="delivery funnel (rates: of sent; fail%: of attempted)")
    cols = {
        "category": "category",
        "channel": "channel",
        "requested": "req",
        "digested": "digest",
        "dropped": "drop",
        "sent": "sent",
        "failed": "fail",
        "dead_lettered": "dlq",
        "delivered": "deliv",
        "opened": "open",
        "clicked": "click",
        "seen": "seen",
        "read": "read",
        "failure_rate": "fail%",
        "delivery_rate": "deliv%",
        "open_rate": "open%",
        "click_rate": "click%",
    }
    for key, header in cols.items():
        table.add_column(header, justify="left" if key in ("category", "channel") else "right")
    for d in data:
        table.add_row(*(_cell(d[c]) for c in cols))
    out.print(table)
    drops = Table(title="dropped by reason")
    for col in ("category", "channel", "reason", "count"):
        drops.add_column(col, justify="right" if col == "count" else "left")
    for d in data:
        for reason, n in sorted(d["dropped_by_reason"].items()):
            drops.add_row(d["category"], d["channel"], reason, f"{n:,}")
    if drops.row_count:
        out.print(drops)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    return f"{value:,}" if isinstance(value, int) else str(value)
