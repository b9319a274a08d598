"""The operator commands end to end through typer, against the real stack."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from herald.ops.cli import app
from infra import topics
from schemas import codec
from schemas.events import now_ms, status_event
from tests.conftest import KAFKA
from tests.integration.ops.opskit import PREFIX, delivery, produce_records

pytestmark = pytest.mark.integration
ENV = {"HERALD_KAFKA__BOOTSTRAP_SERVERS": KAFKA, "COLUMNS": "160"}


def test_status_once_prints_health_and_every_channel() -> None:
    result = CliRunner().invoke(app, ["status", "--once", "--interval", "0.2"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "Kafka" in result.output and "● up" in result.output
    for row in ("requests", "push.ios", "push.android", "sms", "email"):
        assert row in result.output


def test_stats_counts_the_funnel_from_the_status_topic(producer: Producer, category: str) -> None:
    def ev(outcome: str, n: int, channel: str | None = "email", reason: str | None = None) -> dict:  # type: ignore[type-arg]
        return status_event(
            notification_id=f"n{n}-{category}",
            event_id=f"e{n}",
            user_id=f"u{n}",
            category=category,
            outcome=outcome,
            reason=reason,
            delivery_id=f"d{n}-{category}" if channel else None,
            channel=channel,
        )

    start = now_ms() - 1000
    events = [
        ev("accepted", 1, None),
        ev("accepted", 2, None),
        ev("dropped", 3, None, "opted_out"),
        ev("sent", 1),
        ev("sent", 2),
        ev("opened", 1),
        ev("opened", 1),
        ev("clicked", 1),
    ]
    produce_records(producer, topics.STATUS, events, schema=codec.STATUS)
    result = CliRunner().invoke(
        app,
        ["stats", "--from", str(start), "--to", "now", "--category", category, "--json"],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    rows = {r["channel"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["-"]["requested"] == 2 and rows["-"]["dropped_by_reason"] == {"opted_out": 1}
    assert (rows["email"]["sent"], rows["email"]["opened"], rows["email"]["clicked"]) == (2, 1, 1)
    assert rows["email"]["open_rate"] == 0.5


def test_replay_dry_run_via_cli(category: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "replay",
            "--topic",
            "push.web",
            "--from",
            "2m",
            "--category",
            category,
            "--dry-run",
            "--json",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True and summary["would_send"] == 0


def test_dlq_list_and_show_mask_the_address(producer: Producer, category: str) -> None:
    email = f"jane-{category}@example.com"
    record = delivery("email", category, address=email, attempt=3)
    produce_records(
        producer,
        PREFIX + topics.dlq_topic("email"),
        [record],
        headers=[
            ("herald.reason", b"retries_exhausted"),
            ("herald.attempts", b"3"),
            ("herald.last_error", b"451 try later"),
        ],
    )
    env = {**ENV, "HERALD_TOPIC_PREFIX": PREFIX}
    listed = CliRunner().invoke(app, ["dlq", "list", "--topic", "email", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout) if r["delivery_id"] == record["delivery_id"]]
    assert (row["reason"], row["attempts"], row["last_error"]) == (
        "retries_exhausted",
        3,
        "451 try later",
    )
    shown = CliRunner().invoke(
        app, ["dlq", "show", "--topic", "email", "--delivery-id", record["delivery_id"]], env=env
    )
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert detail["record"]["address"] == "j***@example.com"
    assert email not in shown.stdout
