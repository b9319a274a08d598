"""Whether a paced phase kept up: from how its latency moved over the phase."""

from herald.bench import cli, pipeline


def _steady(n: int, latency: int) -> list[tuple[int, int]]:
    return [(i, latency + (i % 7)) for i in range(n)]


def test_a_phase_that_keeps_up_has_the_same_latency_first_and_last() -> None:
    drift = pipeline.latency_drift(_steady(1000, 300))
    assert drift["first"] is not None and drift["last"] is not None
    assert abs(drift["last"] - drift["first"]) < 10
    assert pipeline.fell_behind(drift) is False


def test_a_growing_backlog_shows_as_later_deliveries_for_the_last_requests() -> None:
    # Each request waits 2 ms longer than the one before: 2 s more by the end.
    growing = [(i, 300 + 2 * i) for i in range(1000)]
    drift = pipeline.latency_drift(growing)
    assert drift["first"] is not None and drift["last"] is not None
    assert drift["last"] - drift["first"] > 1500
    assert pipeline.fell_behind(drift) is True


def test_publish_order_decides_the_fifths_not_the_order_given() -> None:
    growing = [(i, 300 + 2 * i) for i in range(1000)]
    assert pipeline.latency_drift(list(reversed(growing))) == pipeline.latency_drift(growing)


def test_too_few_deliveries_say_nothing() -> None:
    drift = pipeline.latency_drift([(1, 5), (2, 6)])
    assert pipeline.fell_behind(drift) is None


def _row(offered: float, first: float, last: float) -> dict[str, object]:
    return {
        "name": "paced",
        "processes": 1,
        "offered_rate": offered,
        "latency_drift_ms": {"first": first, "last": last},
    }


def test_the_report_says_whether_a_paced_phase_kept_up() -> None:
    kept = cli._keeping_up(_row(1000, 280, 310))
    behind = cli._keeping_up(_row(1000, 300, 2100))
    assert kept is not None and "kept up" in kept
    assert behind is not None and "fell behind" in behind and "2,100" in behind
    assert cli._keeping_up(_row(0, 300, 2100)) is None  # a saturating phase: no offered rate
