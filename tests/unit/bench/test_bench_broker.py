"""A benchmark started without a broker says what to do instead of timing out."""

from __future__ import annotations

import socket

import pytest

from herald.bench.kafkautil import require_broker
from infra.settings import KafkaSettings


def test_no_broker_is_a_clear_exit() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as exc:
        require_broker(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=1)
    assert f"Kafka does not answer on 127.0.0.1:{port}" in str(exc.value)
    assert "make stack-up" in str(exc.value)
