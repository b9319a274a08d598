from infra import topics
from schemas.channels import Channel


def test_every_channel_has_main_priority_retry_and_dlq_topics() -> None:
    names = {t.name for t in topics.all_topics()}
    for ch in Channel:
        assert f"notifications.{ch}" in names
        assert f"notifications.{ch}.priority" in names
        assert f"notifications.{ch}.dlq" in names
        for tier in range(1, topics.RETRY_TIERS + 1):
            assert f"notifications.{ch}.retry.{tier}" in names
    assert {topics.REQUESTED, topics.REQUESTED_DLQ, topics.STATUS, topics.USER_CHANGES} <= names


def test_topic_names_are_unique() -> None:
    names = [t.name for t in topics.all_topics()]
    assert len(names) == len(set(names))


def test_user_changes_is_compacted_without_retention() -> None:
    spec = next(t for t in topics.all_topics() if t.name == topics.USER_CHANGES)
    assert spec.config()["cleanup.policy"] == "compact"
    assert "retention.ms" not in spec.config()


def test_retry_tier_out_of_range_is_rejected() -> None:
    import pytest

    with pytest.raises(ValueError, match="retry tier"):
        topics.retry_topic(Channel.SMS, topics.RETRY_TIERS + 1)
