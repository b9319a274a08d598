"""CPU µs per delivery per component: the arithmetic, the sampler's CPU seconds, the table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from herald.bench import costs
from herald.bench.cli import cost_table
from herald.bench.emulators import EmulatorFigures
from herald.bench.sampler import ProcessUsage, Sampler


@pytest.mark.parametrize(
    ("process", "component"),
    [
        ("processor-1", "processor"),
        ("senders-12", "senders"),
        ("kafka", "kafka"),
        ("emulators", "emulators"),
        ("cassandra", "cassandra"),
    ],
)
def test_process_names_group_into_components(process: str, component: str) -> None:
    assert costs.component_of(process) == component


def test_cpu_seconds_divided_by_deliveries_per_component() -> None:
    cpu = {
        "processor-1": 0.5,
        "processor-2": 0.25,
        "senders-1": 1.0,
        "kafka": 0.2,
        "cassandra": 3.0,
        "emulators": 0.1,
    }

    us = costs.cpu_us_per_delivery(cpu, deliveries=10_000)

    assert us == {
        "processor": 75.0,
        "senders": 100.0,
        "herald": 175.0,
        "kafka": 20.0,
        "cassandra": 300.0,
        "emulators": 10.0,
    }


def test_no_deliveries_no_figures_and_missing_components_left_out() -> None:
    assert costs.cpu_us_per_delivery({"senders-1": 1.0}, deliveries=0) == {}
    assert costs.cpu_us_per_delivery({"kafka": 1.0}, deliveries=1000) == {"kafka": 1000.0}


def test_cpu_seconds_sum_every_pid_of_the_tree_over_the_window() -> None:
    u = ProcessUsage("senders-1", 1)
    u.cpu_first = {1: 10.0, 2: 1.0}
    u.cpu_last = {1: 12.5, 2: 1.5, 3: 0.25}  # pid 3 started during the window

    assert u.cpu_seconds == pytest.approx(3.25)


def test_sampler_records_cpu_seconds_of_a_busy_process() -> None:
    start = time.process_time()
    with Sampler({"me": os.getpid()}, interval=0.05) as sampler:
        while time.process_time() < start + 0.3:
            pass
    spent = time.process_time() - start

    assert sampler.usage["me"].cpu_seconds == pytest.approx(spent, abs=0.1)


def test_a_process_sampled_alone_leaves_out_its_childrens_cpu() -> None:
    # The bench samples itself alone: its children are the services, counted on their own.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() < t + 5: pass",
        ]
    )
    try:
        with Sampler(
            {"tree": os.getpid(), "alone": os.getpid()}, interval=0.05, alone=frozenset({"alone"})
        ) as sampler:
            time.sleep(1.0)
    finally:
        child.kill()
        child.wait()

    assert sampler.usage["tree"].cpu_seconds > sampler.usage["alone"].cpu_seconds + 0.2


def test_cost_table_prints_the_budget_beside_the_figures() -> None:
    runs = [
        {
            "name": "saturate",
            "processes": 1,
            "provider": "emulators",
            "cpu_us_per_delivery": {"senders": 1234.5, "emulators": 80.0},
            "ledger_rounds": {"rounds_per_delivery": 0.137, "rows_per_round": 14.6},
        },
        {"name": "paced", "processes": 1, "provider": "emulators", "cpu_us_per_delivery": {}},
        {
            "name": "saturate",
            "processes": 1,
            "provider": "null",
            "cpu_us_per_delivery": {"senders": 900.0},
        },
    ]
    console = Console(width=200, record=True)

    console.print(cost_table(runs))

    text = console.export_text()
    assert "1,234" in text and "null provider" in text
    assert "≤ 300" in text and "≤ 100" in text and "≤ 50" in text
    assert text.count("emulators ") >= 1 and "paced" not in text
    assert "0.14" in text and "14.6" in text  # the ledger's rounds beside Cassandra's cost


_SENDER_METRICS = """\
# HELP herald_ledger_batch_rows Writes per ledger batch
# TYPE herald_ledger_batch_rows histogram
herald_ledger_batch_rows_bucket{kind="conditional",le="+Inf"} 40.0
herald_ledger_batch_rows_count{kind="conditional"} 40.0
herald_ledger_batch_rows_sum{kind="conditional"} 600.0
herald_ledger_batch_rows_bucket{kind="plain",le="+Inf"} 7.0
herald_ledger_batch_rows_count{kind="plain"} 7.0
herald_ledger_batch_rows_sum{kind="plain"} 350.0
# HELP herald_ledger_batch_seconds Round trip of one ledger batch
# TYPE herald_ledger_batch_seconds histogram
herald_ledger_batch_seconds_bucket{kind="conditional",le="+Inf"} 40.0
herald_ledger_batch_seconds_count{kind="conditional"} 40.0
herald_ledger_batch_seconds_sum{kind="conditional"} 0.8
"""


def test_ledger_rounds_per_delivery_from_two_readings_of_the_senders_metrics() -> None:
    after = costs.ledger_totals(_SENDER_METRICS)
    assert after == {"rounds": 40.0, "rows": 600.0, "seconds": 0.8}  # plain batches apart
    before = {"rounds": 10.0, "rows": 100.0, "seconds": 0.2}

    got = costs.ledger_rounds(before, after, deliveries=250)

    assert got == {"rounds_per_delivery": 0.12, "rows_per_round": 16.7, "ms_per_round": 20.0}
    assert costs.ledger_rounds(after, after, deliveries=250) == {}


def test_emulator_figures_per_request_and_one_core_capacity() -> None:
    f = EmulatorFigures(
        "twilio",
        answered=20_000,
        ok=20_000,
        receipts=20_000,
        seconds=2.0,
        cpu_seconds=1.0,
        rss_mib=60.0,
    )

    assert f.requests_per_s == 10_000
    assert f.cpu_us_per_request == 50.0
    assert f.one_core_per_s == 20_000


def test_bench_lifts_every_providers_send_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rates set per provider merge over the defaults: a provider left out keeps its
    # production quota (SMTP's 200/s once capped the whole end-to-end bench).
    from herald.bench.services import BENCH_SENDER_ENV, UNLIMITED_PER_SECOND
    from senders.providers import PROVIDERS
    from senders.settings import SenderSettings

    for key, value in BENCH_SENDER_ENV.items():
        monkeypatch.setenv(key, value)
    limits = SenderSettings().rate_limits
    assert {p: limits.rate(p) for p in PROVIDERS} == dict.fromkeys(PROVIDERS, UNLIMITED_PER_SECOND)


def test_compacted_mb_counts_herald_compactions_that_ended_in_the_phase() -> None:
    start = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    end = start + timedelta(seconds=30)

    def row(keyspace: str, seconds: float, mb: float) -> dict[str, object]:
        at = (start + timedelta(seconds=seconds)).replace(tzinfo=None)  # the driver's naive UTC
        return {"keyspace_name": keyspace, "compacted_at": at, "bytes_in": int(mb * 1e6)}

    history = [
        row("herald", -1, 500),  # ended before the phase
        row("herald", 0, 10),
        row("herald", 12.5, 200),
        row("system", 12.5, 999),  # not herald's
        row("herald", 30, 1.5),
        row("herald", 31, 700),  # after it
    ]
    assert costs.compacted_mb(history, "herald", start, end) == 211.5
    assert costs.compacted_mb([], "herald", start, end) == 0.0
