"""Rates in `herald status` come from deltas between two snapshots."""

from __future__ import annotations

import pytest

from herald.ops.lag import TopicLag
from herald.ops.status import Health, Snapshot, rows

UP = Health(True, "")


def snap(at: float, committed: int, high: int, sent: float, failed: float) -> Snapshot:
    return Snapshot(
        at,
        UP,
        UP,
        lags=[
            TopicLag(
                "herald-sender-sms", "notifications.sms", high - committed, 4.0, committed, high
            )
        ],
        produced={"sms:main": high},
        dlq={"sms": 2},
        deliveries={("sms", "sent"): sent, ("sms", "failed"): failed, ("sms", "duplicate"): 50},
    )


def test_rates_from_offset_and_counter_deltas() -> None:
    prev, cur = snap(100.0, 10, 20, 90, 0), snap(102.0, 30, 60, 108, 2)
    (sms,) = [r for r in rows(prev, cur) if r["name"] == "sms"]
    assert sms["queued"] == 30 and sms["lag_s"] == 4.0 and sms["dlq"] == 2
    assert sms["in_per_s"] == 20.0  # 40 records in 2 s
    assert sms["out_per_s"] == 10.0  # 20 committed in 2 s
    assert sms["error_rate"] == pytest.approx(
        0.1
    )  # 2 failed of 20 provider calls; duplicates ignored


def test_single_snapshot_has_no_rates() -> None:
    (sms,) = [r for r in rows(None, snap(1.0, 0, 5, 0, 0)) if r["name"] == "sms"]
    assert sms["in_per_s"] is None and sms["out_per_s"] is None and sms["error_rate"] is None
    assert sms["queued"] == 5
