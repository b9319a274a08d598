"""Save-time template validation: every failure names its field and says what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.templating import Variant, check, push_payload_bytes, sms_length
from schemas.validation import ValidationError

EMAIL = Variant(
    "email", "en", subject="Order {{ order }}", body="Order {{ order }}", html="<p>{{ order }}</p>"
)
SMS = Variant("sms", "en", body="Code {{ order }}")


def fails(params: list[str], variants: list[Variant], examples: Any = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        check(params, examples or {}, variants)
    return info.value


def test_a_valid_template_passes_with_estimates() -> None:
    estimates = check(["order"], {"order": "8812"}, [EMAIL, SMS])
    assert estimates[1] == {
        "channel": "sms",
        "locale": "en",
        "sms_encoding": "GSM-7",
        "sms_segments": 1,
    }


def test_syntax_error_names_the_field_and_line() -> None:
    err = fails(["order"], [EMAIL, Variant("sms", "en", body="{{ order ")])
    assert err.field == "variants[1].body"
    assert "syntax error on line 1" in err.message


def test_a_used_parameter_must_be_declared() -> None:
    err = fails([], [SMS])
    assert (err.field, err.message) == ("variants[0].body", "uses 'order', which is not in params")


def test_a_declared_parameter_must_be_used() -> None:
    err = fails(["order", "eta"], [SMS])
    assert (err.field, err.message) == ("params.eta", "declared but used by no variant")


@pytest.mark.parametrize("missing", ["subject", "body", "html"])
def test_email_needs_subject_text_and_html(missing: str) -> None:
    fields = {"subject": "S {{ order }}", "body": "B", "html": "<p>H</p>", missing: None}
    err = fails(["order"] if missing != "subject" else [], [Variant("email", "en", **fields)])
    assert err.field == f"variants[0].{missing}"
    assert "email needs" in err.message


def test_sms_over_ten_segments_is_refused_in_its_encoding() -> None:
    err = fails(["x"], [Variant("sms", "en", body="안녕 {{ x }}" * 200)], {"x": "y"})
    assert err.field == "variants[0].body"
    assert "UCS-2 segments" in err.message


def test_push_payload_over_4kb_is_refused() -> None:
    err = fails(["x"], [Variant("push", "en", title="T", body="{{ x }}")], {"x": "a" * 5000})
    assert err.field == "variants[0].body"
    assert "push payload of" in err.message and "4096" in err.message


def test_duplicate_variant_and_header_line_break_and_unknown_example() -> None:
    assert fails(["order"], [SMS, SMS]).field == "variants[1]"
    bad = Variant("push", "en", title="a\n{{ order }}", body="b")
    assert fails(["order"], [bad]).field == "variants[0].title"
    assert fails(["order"], [SMS], {"nope": "1"}).field == "examples.nope"


def test_sandbox_refuses_unsafe_templates_at_save() -> None:
    unsafe = Variant("sms", "en", body="{{ order.__class__.__mro__ }}")
    err = fails(["order"], [unsafe])
    assert err.field == "variants[0]" and "does not render" in err.message


def test_sms_segments_gsm7_and_ucs2() -> None:
    assert sms_length("a" * 160).segments == 1
    assert sms_length("a" * 161).segments == 2
    assert sms_length("[" * 80).units == 160  # extension table: two septets each
    assert sms_length("é" * 160).encoding == "GSM-7"
    assert sms_length("ç" * 70) == sms_length("ç" * 70)
    assert (sms_length("한" * 70).segments, sms_length("한" * 71).segments) == (1, 2)
    assert sms_length("😀" * 35).units == 70  # astral characters are two UTF-16 units


def test_push_payload_bytes_counts_utf8() -> None:
    assert push_payload_bytes("T", "é") == len(
        '{"aps": {"alert": {"title": "T", "body": "é"}}}'.encode()
    )
