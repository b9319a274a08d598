"""The digest field of a request: parsed, validated with a field name, and encoded into
NotificationRequest v2 so that v1 readers still read the rest."""

from __future__ import annotations

import pytest

from producers.request import parse_request, validate_request
from schemas import codec
from schemas.validation import ValidationError


def req(**digest: object) -> dict[str, object]:
    return {
        "source": "social",
        "user_id": "u-1",
        "category": "social",
        "template_id": "liked",
        "digest": {"key": "social", "window": "1h", **digest},
    }


@pytest.mark.parametrize(
    ("window", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86_400), (120, 120)]
)
def test_windows_are_read_as_seconds(window: object, seconds: int) -> None:
    data = validate_request(parse_request(req(window=window)))
    assert codec.decode(data, codec.REQUEST)["digest"] == {
        "key": "social",
        "window_s": seconds,
        "template_id": None,
    }


@pytest.mark.parametrize(
    ("digest", "field"),
    [
        ({"window": "1 hour"}, "digest.window"),
        ({"window": "8d"}, "digest.window"),
        ({"window": 0}, "digest.window"),
        ({"key": "Social!"}, "digest.key"),
        ({"template_id": " "}, "digest.template_id"),
    ],
)
def test_bad_digests_name_the_field(digest: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(parse_request(req(**digest)))
    assert err.value.field == field


def test_a_digest_needs_a_template() -> None:
    body = {**req(), "template_id": None, "content": {"push": {"body": "hi"}}}
    with pytest.raises(ValidationError) as err:
        validate_request(parse_request(body))
    assert err.value.field == "digest.template_id"


def test_a_request_without_digest_is_read_by_a_v1_reader() -> None:
    data = validate_request(parse_request({**req(), "digest": None}))
    v1 = codec.registry().version(codec.REQUEST, 1)
    assert codec.decode(data, codec.REQUEST)["digest"] is None
    assert data[:10] != v1.header  # written as v2, resolvable into v1 (test_evolution)
