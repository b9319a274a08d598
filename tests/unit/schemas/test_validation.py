"""Contact validation: normalizes good input, names the field on bad input, never echoes it."""

from __future__ import annotations

import json

import pytest

from schemas.validation import (
    ValidationError,
    contact_hmac,
    normalize_phone,
    validate_email,
    validate_token,
)

APNS = "ab" * 32
FCM = "dXNlcjEyMzQ1Njc4:APA91b" + "Zz0_-" * 27
WEB = json.dumps(
    {
        "endpoint": "https://push.example.net/wpush/v2/abc",
        "keys": {
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1Xbj"
            "hazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        },
    }
)


def test_email_is_normalized() -> None:
    assert validate_email("  Ada.Lovelace@Example.COM ") == "Ada.Lovelace@example.com"


@pytest.mark.parametrize(
    "bad", ["", "ada", "ada@", "@example.com", "a b@example.com", "ada@ex..com"]
)
def test_bad_email_names_the_field_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_email(bad, "contact.email")
    assert err.value.field == "contact.email"
    assert err.value.retriable is False
    if bad.strip():
        assert bad not in err.value.message


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (202) 555-0143", "US", "+12025550143"),
        ("202.555.0143", "US", "+12025550143"),
        ("010-1234-5678", "KR", "+821012345678"),
        ("+44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_phones_become_e164(raw: str, region: str, e164: str) -> None:
    assert normalize_phone(raw, region=region) == e164


@pytest.mark.parametrize("bad", ["", "12", "not a number", "+1 555", "+999 1234567"])
def test_bad_phone_names_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalize_phone(bad, "phone")
    assert err.value.field == "phone"
    assert "E.164" in err.value.message or "phone" in err.value.message


def test_tokens_per_platform() -> None:
    assert validate_token("ios", APNS.upper()) == APNS
    assert validate_token("android", FCM) == FCM
    assert validate_token("web", FCM) == FCM
    assert json.loads(validate_token("web", WEB))["endpoint"].startswith("https://")


@pytest.mark.parametrize(
    ("platform", "token", "field", "hint"),
    [
        ("ios", "ab" * 31, "token", "64 hexadecimal"),
        ("ios", "zz" * 32, "token", "64 hexadecimal"),
        ("android", "APA91b-no-colon", "token", "FCM"),
        ("android", "x" * 5000, "token", "longer than"),
        ("web", "{not json", "token", "JSON"),
        ("web", json.dumps({"endpoint": "http://insecure", "keys": {}}), "token.endpoint", "https"),
        (
            "web",
            json.dumps({"endpoint": "https://p.example", "keys": {"p256dh": "a"}}),
            "token.keys.auth",
            "base64url",
        ),
        ("blackberry", APNS, "platform", "ios, android, web"),
    ],
)
def test_bad_tokens_name_the_field(platform: str, token: str, field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_token(platform, token)
    assert err.value.field == field
    assert hint in err.value.message
    assert err.value.as_dict() == {"field": field, "message": err.value.message}


def test_contact_hmac_is_keyed_and_kind_scoped() -> None:
    a = contact_hmac("email", "ada@example.com", b"k1")
    assert a == contact_hmac("email", "ada@example.com", b"k1")
    assert a != contact_hmac("email", "ada@example.com", b"k2")
    assert a != contact_hmac("phone", "ada@example.com", b"k1")
    assert "ada" not in a
