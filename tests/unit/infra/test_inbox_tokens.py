"""User tokens of the in-app feed and the feed's cursors: a token opens one user's feed;
altered, expired, another purpose's, or another user's tokens are refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from infra.inbox import BadCursor, decode_cursor, encode_cursor
from infra.links import BadLink, Link, sign
from producers.inbox import user_token, verify_user_token

SECRET = SecretStr("unit-secret")


def test_a_token_opens_its_users_feed_and_names_the_client() -> None:
    token, expires = user_token("u-1", "client-a", 60, SECRET)
    link = verify_user_token(token, "u-1", SECRET)
    assert (link.user_id, link.client, link.expires_at) == ("u-1", "client-a", expires)


def test_another_users_token_is_refused() -> None:
    token, _ = user_token("u-1", "client-a", 60, SECRET)
    with pytest.raises(PermissionError):
        verify_user_token(token, "u-2", SECRET)


def altered(token: str) -> str:
    """The token with its last two characters changed (never left as they were)."""
    return token[:-2] + ("yy" if token.endswith("xx") else "xx")


@pytest.mark.parametrize(
    "token",
    [
        user_token("u-1", "c", 60, SecretStr("other-secret"))[0],
        sign(Link("inbox", "u-1", int(time.time()) - 1, client="c"), SECRET),
        sign(Link("preferences", "u-1", int(time.time()) + 60), SECRET),
        altered(user_token("u-1", "c", 60, SECRET)[0]),
    ],
    ids=["other-secret", "expired", "preference-link", "altered"],
)
def test_foreign_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadLink):
        verify_user_token(token, "u-1", SECRET)


def test_cursor_round_trip_and_garbage() -> None:
    at = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "d-1")) == (at, "d-1")
    for bad in ("!!", "bm90LWEtY3Vyc29y", ""):
        with pytest.raises(BadCursor):
            decode_cursor(bad)
