"""Sandboxed rendering: parameters, missing ones by name, HTML escaping, sandbox."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from infra.cache import TTLCache
from processors.enrichment import TemplateRow, pick_template
from processors.render import RenderError, render, render_text


def test_renders_parameters() -> None:
    out = render(
        title="Hi {{ name }}",
        subject=None,
        body="Code {{ code }}",
        html=None,
        params={"name": "Ann", "code": "42"},
    )
    assert (out.title, out.subject, out.body, out.html) == ("Hi Ann", None, "Code 42", None)


def test_missing_parameter_is_named() -> None:
    with pytest.raises(RenderError) as err:
        render_text("Hello {{ name }}, {{ code }}", {"name": "x"})
    assert err.value.reason == "missing_param:code"


def test_only_html_is_escaped() -> None:
    params = {"name": "<b>&"}
    assert render_text("{{ name }}", params) == "<b>&"
    assert render_text("<p>{{ name }}</p>", params, html=True) == "<p>&lt;b&gt;&amp;</p>"


def test_sandbox_blocks_internals() -> None:
    with pytest.raises(RenderError) as err:
        render_text("{{ name.__class__.__mro__[1].__subclasses__() }}", {"name": "x"})
    assert err.value.reason == "template_unsafe"


def test_syntax_error() -> None:
    with pytest.raises(RenderError) as err:
        render_text("{{ name ", {"name": "x"})
    assert err.value.reason.startswith("template_syntax")


def test_template_locale_fallback() -> None:
    rows = (
        TemplateRow("en", "push", "t", None, "en", None),
        TemplateRow("ko", "push", "t", None, "ko", None),
        TemplateRow("ko-KR", "email", None, "s", "ko-KR", None),
    )
    assert pick_template(rows, "push", ["ko-KR", "ko", "en"]).body == "ko"  # type: ignore[union-attr]
    assert pick_template(rows, "push", ["de", "en"]).body == "en"  # type: ignore[union-attr]
    assert pick_template(rows, "sms", ["en"]) is None


def test_cache_ttl_and_bound() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(2, ttl=10, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts the least recently used: b
    assert cache.get("b") is None
    now[0] = 11
    assert cache.get("a") is None
    assert (cache.hits, cache.misses) == (1, 2)
    cache.put("d", 4)
    cache.invalidate("d")
    assert cache.get("d") is None


_PIECES = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="{}%#"), max_size=12),
    st.sampled_from(["{{ name }}", "{{ref}}", "{{  name  }}", "\n", "\r\n", "<b>&</b>"]),
)
_VALUES = st.text(max_size=8)


@given(st.lists(_PIECES, max_size=8), _VALUES, _VALUES, st.booleans())
def test_plain_substitution_renders_exactly_like_jinja(
    pieces: list[str], name: str, ref: str, html: bool
) -> None:
    source = "{{ name }}" + "".join(pieces)  # (text without "{" is returned as it is)
    params = {"name": name, "ref": ref}
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=html)
    assert render_text(source, params, html=html) == env.from_string(source).render(params)
