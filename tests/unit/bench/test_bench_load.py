"""The load generator follows the seed's mix and produces requests the codec accepts."""

from __future__ import annotations

import time
from collections import Counter

from herald.bench import load
from herald.bench.pipeline import percentile, stage_latency
from schemas import codec


def test_channel_weights_follow_the_seed_daily_volumes() -> None:
    w = load.channel_weights()
    assert w[load.PreferenceChannel.PUSH] == 10 / 16
    assert w[load.PreferenceChannel.SMS] == 1 / 16
    assert w[load.PreferenceChannel.EMAIL] == 5 / 16


def test_requests_mix_roughly_matches_the_weights_and_encode() -> None:
    users = load.make_users(200, prefix="u")
    reqs = list(load.RequestMix(users).requests(8000, run_id="r"))
    share = Counter(r["channels"][0] for r in reqs)
    assert abs(share["push"] / 8000 - 10 / 16) < 0.03
    assert abs(share["sms"] / 8000 - 1 / 16) < 0.02
    assert abs(share["email"] / 8000 - 5 / 16) < 0.03
    assert len({r["event_id"] for r in reqs}) == 8000
    decoded = codec.decode(codec.encode(codec.REQUEST, reqs[0]), codec.REQUEST)
    assert decoded["template_id"] == load.template_id(reqs[0]["category"])


def test_users_have_zero_to_three_devices_and_about_ten_percent_opt_outs() -> None:
    users = load.make_users(2000, prefix="u")
    assert {len(u.devices) for u in users} == {0, 1, 2, 3}
    assert 0.07 < sum(1 for u in users if u.opt_outs) / 2000 < 0.13
    assert len({u.user_id for u in users}) == 2000


def test_device_and_opt_out_ranges_are_parameters() -> None:
    users = load.make_users(100, prefix="u", devices_per_user=(1, 2), opt_out_share=0.0)
    assert all(1 <= len(u.devices) <= 2 for u in users)
    assert not any(u.opt_outs for u in users)


def test_pacer_holds_the_offered_rate() -> None:
    pacer = load.Pacer(200)
    t0 = time.monotonic()
    for _ in range(40):
        pacer.wait()
    assert time.monotonic() - t0 >= 39 / 200 - 0.01


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) in (50, 51)
    assert percentile(values, 99) == 99
    assert percentile([], 50) is None


def test_latency_splits_at_the_channel_record_into_the_processor_and_the_senders_leg() -> None:
    created = {"n1": 1_000, "n2": 2_000}
    fanned = {"d1": ("n1", 1_040), "d2": ("n1", 1_050), "d3": ("n2", 2_300)}
    receipts = {"d1": 1_100, "d3": 2_310}  # d2 not received: in no leg

    legs = stage_latency(receipts, fanned, created)

    assert legs["processor"] == {"p50": 40, "p95": 300, "p99": 300}
    assert legs["senders"] == {"p50": 10, "p95": 60, "p99": 60}
    assert stage_latency({}, fanned, created)["senders"] == {"p50": None, "p95": None, "p99": None}
