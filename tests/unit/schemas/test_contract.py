"""The contract's names: the prefixed topic builder, and every header documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.channels import Channel
from schemas.contract import DEAD_LETTER_HEADERS, Header, Topics

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_topics_under_a_prefix() -> None:
    named = Topics("run-1.")
    assert named.requested == "run-1.notifications.requested"
    assert named.status == "run-1.notifications.status"
    assert named.channel(Channel.SMS, priority=True) == "run-1.notifications.sms.priority"
    assert named.retries("email") == [f"run-1.notifications.email.retry.{t}" for t in (1, 2, 3)]
    assert named.dlq(Channel.PUSH_IOS) == "run-1.notifications.push.ios.dlq"
    assert named.of("users.changes") == named.user_changes == "run-1.users.changes"
    assert Topics().requested_dlq == "notifications.requested.dlq"


def test_there_is_no_fourth_retry_tier() -> None:
    with pytest.raises(ValueError):
        Topics().retry(Channel.SMS, 4)


def test_every_dead_letter_header_is_documented() -> None:
    docs = " ".join(p.read_text() for p in DOCS.glob("*.md"))
    for name in (*DEAD_LETTER_HEADERS, Header.REPLAY, Header.REDRIVEN_FROM, Header.RELEASED):
        assert f"`{name}" in docs, name
