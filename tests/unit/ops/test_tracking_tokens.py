"""Signed tracking tokens and HTML rewriting."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from infra.tokens import compact_json, unb64
from processors.tracking import BadToken, Claim, TrackingSettings, rewrite_html, sign, verify

SETTINGS = TrackingSettings(base_url="https://t.example.com/", secret=SecretStr("s3cret"))
HTML = """<html><body>
<p>Hi <a class="btn" href="https://shop.example.com/order?id=1&amp;ref=mail">your order</a></p>
<a href='http://example.org/help'>help</a>
<a href="mailto:help@example.com">mail us</a> <a href="#top">top</a>
</body></html>"""


def _tokens(html: str, kind: str) -> list[str]:
    return re.findall(rf"https://t\.example\.com/{kind}/([A-Za-z0-9_.-]+)", html)


def test_rewrite_signs_every_http_link_and_appends_pixel() -> None:
    out = rewrite_html(HTML, delivery_id="d1", notification_id="n1", settings=SETTINGS)
    clicks = _tokens(out, "c")
    assert len(clicks) == 2
    targets = [verify(t, SETTINGS.secret, kind="click").url for t in clicks]
    assert targets == ["https://shop.example.com/order?id=1&ref=mail", "http://example.org/help"]
    assert 'href="mailto:help@example.com"' in out and 'href="#top"' in out
    assert "shop.example.com" not in out.replace(clicks[0], "")
    (pixel,) = _tokens(out, "o")
    claim = verify(pixel, SETTINGS.secret, kind="open")
    assert (claim.delivery_id, claim.notification_id) == ("d1", "n1")
    assert out.index("/o/") < out.index("</body>")


@pytest.mark.parametrize(
    ("context", "url"),
    [
        (("d1", "n1", None, None, None), "https://shop.example.com/order?id=1&ref=mail"),
        (("d2", "n2", "user-7", "billing", "ev-9"), 'https://x.example/ä?q="quoted"\\'),
        (("d3", "n3", "user-8", None, "ev-1"), "http://example.org/ü/ñ"),
    ],
)
def test_rewritten_links_carry_exactly_the_tokens_sign_makes(
    context: tuple[str, str, str | None, str | None, str | None], url: str
) -> None:
    did, nid, uid, cat, ev = context
    html = f'<a href="{url.replace("&", "&amp;").replace(chr(34), "&quot;")}">x</a>'
    out = rewrite_html(
        html,
        delivery_id=did,
        notification_id=nid,
        settings=SETTINGS,
        user_id=uid,
        category=cat,
        event_id=ev,
    )
    (click,) = _tokens(out, "c")
    (pixel,) = _tokens(out, "o")
    base = Claim("open", did, nid, None, uid, cat, ev)
    assert click == sign(Claim("click", did, nid, url, uid, cat, ev), SETTINGS.secret)
    assert pixel == sign(base, SETTINGS.secret)
    assert verify(click, SETTINGS.secret, kind="click").url == url
    # The payload is compact JSON, keys in a fixed order, unset ones left out.
    fields = {"d": did, "n": nid, "u": url, "uid": uid, "cat": cat, "ev": ev}
    body = {"k": "click", **{k: v for k, v in fields.items() if v is not None}}
    assert unb64(click.split(".")[0]) == compact_json(body)


def test_disabled_leaves_html_alone() -> None:
    off = SETTINGS.model_copy(update={"enabled": False})
    assert rewrite_html(HTML, delivery_id="d", notification_id="n", settings=off) == HTML


def test_pixel_appended_without_body() -> None:
    out = rewrite_html("<p>x</p>", delivery_id="d", notification_id="n", settings=SETTINGS)
    assert out.startswith("<p>x</p><img ")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: t + "..",
        lambda t: "",
    ],
)
def test_tampered_tokens_are_rejected(tamper) -> None:  # type: ignore[no-untyped-def]
    token = sign(Claim("click", "d", "n", "https://a.example/"), SETTINGS.secret)
    with pytest.raises(BadToken):
        verify(tamper(token), SETTINGS.secret)


def test_payload_swap_is_rejected() -> None:
    good = sign(Claim("click", "d", "n", "https://a.example/"), SETTINGS.secret)
    evil = sign(Claim("click", "d", "n", "https://evil.example/"), SecretStr("other"))
    forged = evil.split(".")[0] + "." + good.split(".")[1]
    with pytest.raises(BadToken):
        verify(forged, SETTINGS.secret)


def test_kind_mismatch_and_non_http_target_rejected() -> None:
    open_token = sign(Claim("open", "d", "n"), SETTINGS.secret)
    with pytest.raises(BadToken):
        verify(open_token, SETTINGS.secret, kind="click")
    js = sign(Claim("click", "d", "n", "javascript:alert(1)"), SETTINGS.secret)
    with pytest.raises(BadToken):
        verify(js, SETTINGS.secret)
