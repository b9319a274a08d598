"""Tokens signed by the shared helpers are the ones herald always minted: links already in
people's inboxes must keep verifying."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from pydantic import SecretStr

from infra.links import Link, sign, verify
from infra.tokens import b64, mac, unb64
from processors.tracking import Claim
from processors.tracking import sign as sign_claim
from processors.tracking import verify as verify_claim

SECRET = SecretStr("s" * 32)


def _old(body: dict[str, object], salt: bytes) -> str:
    # The format as first written: compact JSON, base64url, HMAC under a salted key.
    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")

    payload = enc(json.dumps(body, separators=(",", ":")).encode())
    key = hmac.new(SECRET.get_secret_value().encode(), salt, hashlib.sha256).digest()
    return f"{payload}.{enc(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def test_link_tokens_are_unchanged() -> None:
    link = Link("unsubscribe", "user-1", 1_999_999_999, "email", "marketing")
    token = sign(link, SECRET)
    assert token == _old(
        {"p": "unsubscribe", "u": "user-1", "e": 1_999_999_999, "c": "email", "k": "marketing"},
        b"herald.links.v1",
    )
    assert verify(token, SECRET, "unsubscribe", now=0) == link


def test_tracking_tokens_are_unchanged() -> None:
    claim = Claim("open", "d-1", "n-1", None, "user-1", "marketing", "e-1")
    token = sign_claim(claim, SECRET)
    assert token == _old(
        {"k": "open", "d": "d-1", "n": "n-1", "uid": "user-1", "cat": "marketing", "ev": "e-1"},
        b"herald.tracking.v1",
    )
    assert verify_claim(token, SECRET, kind="open") == claim


def test_the_key_depends_on_secret_and_salt() -> None:
    assert mac("p", SECRET, b"a") != mac("p", SECRET, b"b")
    assert mac("p", SECRET, b"a") != mac("p", SecretStr("t" * 32), b"a")


@pytest.mark.parametrize("text", ["", "a=b", "ab c", "ä"])
def test_unb64_refuses_foreign_characters(text: str) -> None:
    with pytest.raises(ValueError):
        unb64(text)


def test_b64_round_trip() -> None:
    assert unb64(b64(b"\x00\xffherald")) == b"\x00\xffherald"
