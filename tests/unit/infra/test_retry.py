"""The retry rule: outages are waited out, everything else is raised."""

from __future__ import annotations

import sys

import pytest
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaError, KafkaException

from infra.retry import Backoff, is_outage, retrying, retrying_blocking


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(0.1, 0.5).delays()
    assert [next(delays) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_an_outage_is_not_a_refused_record() -> None:
    assert is_outage(NoHostAvailable("down", {}))
    assert is_outage(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert is_outage(ConnectionRefusedError())
    assert not is_outage(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    assert not is_outage(ValueError("a bug"))


async def test_an_outage_is_retried_until_it_ends() -> None:
    calls, waits = [], []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise NoHostAvailable("down", {})
        return "done"

    async def sleep(s: float) -> None:
        waits.append(s)

    assert await retrying(op, Backoff(1, 2), sleep=sleep) == "done"
    assert waits == [1, 2, 2]


async def test_on_retry_sees_the_failure_being_handled_and_each_delay() -> None:
    seen: list[tuple[object, float]] = []
    calls = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NoHostAvailable(f"down {len(calls)}", {})
        return "done"

    async def sleep(_s: float) -> None:
        pass

    def on_retry(exc: Exception, delay: float) -> None:
        # Called inside the `except`, so `log.exception` there shows the traceback.
        seen.append((sys.exc_info()[1], delay))
        assert sys.exc_info()[1] is exc

    assert await retrying(op, Backoff(1, 4), on_retry=on_retry, sleep=sleep) == "done"
    assert [(str(e), d) for e, d in seen] == [("('down 1', {})", 1), ("('down 2', {})", 2)]


async def test_any_other_failure_is_raised_after_the_allowed_attempts() -> None:
    calls = []

    async def op() -> None:
        calls.append(1)
        raise ValueError("a bug")

    async def sleep(_s: float) -> None:
        pass

    with pytest.raises(ValueError):
        await retrying(op, Backoff(0, 0), attempts=3, sleep=sleep)
    assert len(calls) == 3


async def test_a_stop_is_raised_at_once_even_with_attempts_left() -> None:
    class Stop(Exception):
        pass

    calls = []

    async def op() -> None:
        calls.append(1)
        raise Stop

    async def sleep(_s: float) -> None:
        pass

    with pytest.raises(Stop):
        await retrying(op, Backoff(0, 0), attempts=5, sleep=sleep, stop_on=(Stop,))
    assert len(calls) == 1


def test_blocking_retries_only_what_it_is_told_to() -> None:
    with pytest.raises(KeyError):
        retrying_blocking(lambda: {}["x"], Backoff(0, 0))
    answers = iter([OSError(), "up"])

    def op() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retrying_blocking(op, Backoff(0, 0)) == "up"
