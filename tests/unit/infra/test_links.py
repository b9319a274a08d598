"""Signed unsubscribe and preference links: what verifies, what does not, the footer."""

from __future__ import annotations

import time
from urllib.parse import unquote

import pytest
from pydantic import SecretStr

from infra.links import BadLink, Link, LinkSettings, add_footer, sign, unsubscribe_url, verify

SECRET = SecretStr("s3cret")


def test_round_trip_and_purpose() -> None:
    token = sign(Link("unsubscribe", "u-1", int(time.time()) + 60, "email", "marketing"), SECRET)
    link = verify(token, SECRET, "unsubscribe")
    assert (link.user_id, link.channel, link.category) == ("u-1", "email", "marketing")
    with pytest.raises(BadLink, match="not preferences"):
        verify(token, SECRET, "preferences")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: t + "!",
        lambda t: "",
    ],
)
def test_altered_tokens_are_refused(mangle: object) -> None:
    token = sign(Link("preferences", "u-1", int(time.time()) + 60), SECRET)
    with pytest.raises(BadLink):
        verify(mangle(token), SECRET, "preferences")  # type: ignore[operator]
    with pytest.raises(BadLink):
        verify(token, SecretStr("other"), "preferences")


def test_expired_links_are_refused() -> None:
    token = sign(Link("preferences", "u-1", 1000), SECRET)
    with pytest.raises(BadLink, match="expired"):
        verify(token, SECRET, "preferences", now=1001)
    assert verify(token, SECRET, "preferences", now=999).user_id == "u-1"


def test_footer_links_both_parts_and_returns_the_one_click_url() -> None:
    settings = LinkSettings(base_url="https://herald.example/", secret=SECRET)
    html, text, url = add_footer(
        "<html><body><p>hi</p></body></html>", "hi", "u-1", "marketing", settings
    )
    assert url.startswith("https://herald.example/u/")
    assert verify(unquote(url.rsplit("/", 1)[1]), SECRET, "unsubscribe").category == "marketing"
    assert html is not None and html.endswith("Email preferences</a></p></body></html>")
    assert "/preferences/" in text and url in text
    assert add_footer(None, "t", "u-1", "social", settings)[0] is None
    assert unsubscribe_url("u-1", "email", "social", settings).count("/u/") == 1
