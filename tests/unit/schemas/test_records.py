"""The TypedDicts of `schemas.records` name exactly the fields of the newest schemas."""

from __future__ import annotations

from typing import get_type_hints

import pytest

from schemas import codec, records

CASES = [
    (records.NotificationRequest, codec.REQUEST),
    (records.Delivery, codec.DELIVERY),
    (records.StatusEvent, codec.STATUS),
    (records.UserChange, codec.USER_CHANGE),
    (records.TemplateChange, codec.TEMPLATE_CHANGE),
]


@pytest.mark.parametrize(("typed", "fullname"), CASES)
def test_fields_and_defaults_match_the_schema(typed: type, fullname: str) -> None:
    fields = codec.registry().latest(fullname).parsed["fields"]
    assert list(get_type_hints(typed)) == [f["name"] for f in fields]
    optional = {f["name"] for f in fields if "default" in f}
    assert set(typed.__optional_keys__) == optional  # type: ignore[attr-defined]
