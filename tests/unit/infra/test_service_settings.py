"""Service-wide settings that tune the client libraries and the interpreter."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from unittest import mock

import pytest
from pydantic import ValidationError

from infra.cassandra import connect
from infra.settings import CassandraSettings, ServiceSettings


@pytest.fixture
def restore_switch_interval() -> Iterator[None]:
    before, gc_before = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(before)
    gc.set_threshold(*gc_before)


def test_the_gil_switch_interval_is_shortened_by_default(restore_switch_interval: None) -> None:
    ServiceSettings().tune_interpreter()
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_the_gil_switch_interval_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, restore_switch_interval: None
) -> None:
    monkeypatch.setenv("HERALD_GIL_SWITCH_INTERVAL_S", "0.005")
    ServiceSettings().tune_interpreter()
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_switch_interval_of_zero_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_GIL_SWITCH_INTERVAL_S", "0")
    with pytest.raises(ValidationError, match="gil_switch_interval_s"):
        ServiceSettings()


def test_the_cassandra_driver_speaks_the_configured_protocol_version() -> None:
    with mock.patch("infra.cassandra.Cluster") as cluster:
        connect(CassandraSettings())
        assert cluster.call_args.kwargs["protocol_version"] == 4
        connect(CassandraSettings(protocol_version=5))
        assert cluster.call_args.kwargs["protocol_version"] == 5


def test_an_unknown_protocol_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="protocol_version"):
        CassandraSettings(protocol_version=3)


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_services_run_on_uvloop_by_default() -> None:
    assert ServiceSettings().run(_loop_module()).startswith("uvloop")


def test_the_standard_event_loop_is_one_setting_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_EVENT_LOOP", "asyncio")
    assert ServiceSettings().run(_loop_module()) == "asyncio.unix_events"


def test_an_unknown_event_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        ServiceSettings()


@pytest.mark.parametrize(
    ("setting", "faust_name", "policy"),
    [
        ("uvloop", "uvloop", "uvloop"),
        ("asyncio", "aio", "asyncio.unix_events"),
    ],
)
def test_faust_is_given_the_loop_policy_and_its_name(
    monkeypatch: pytest.MonkeyPatch, setting: str, faust_name: str, policy: str
) -> None:
    monkeypatch.setenv("HERALD_EVENT_LOOP", setting)
    before = asyncio.get_event_loop_policy()
    try:
        assert ServiceSettings().install_event_loop() == faust_name
        assert type(asyncio.get_event_loop_policy()).__module__.startswith(policy)
    finally:
        asyncio.set_event_loop_policy(before)


def test_the_processor_keeps_the_standard_loop_by_default() -> None:
    from processors.settings import ProcessorSettings

    assert ProcessorSettings().event_loop == "asyncio"


@pytest.fixture
def restore_gc_threshold() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often(restore_gc_threshold: None) -> None:
    _, older, oldest = gc.get_threshold()
    ServiceSettings().tune_interpreter()
    assert gc.get_threshold() == (20_000, older, oldest)


def test_the_gc_threshold_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, restore_gc_threshold: None
) -> None:
    monkeypatch.setenv("HERALD_GC_THRESHOLD", "700")
    ServiceSettings().tune_interpreter()
    assert gc.get_threshold()[0] == 700
