"""Rendering templates and literal content with sandboxed Jinja2.

Templates come from `herald.templates` and are written by people who are not herald's
developers, so they run in Jinja's sandbox (no attribute access to internals) with
StrictUndefined (a missing parameter is an error naming it, never an empty string).
Only email HTML is autoescaped: push and SMS bodies are plain text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import escape

from schemas.errors import HeraldError

_TEXT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


class RenderError(HeraldError, ValueError):
    """A template that cannot be rendered with the request's parameters. Never retry:
    the same request always fails the same way; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rendered:
    title: str | None
    subject: str | None
    body: str
    html: str | None


@dataclass(frozen=True)
class _Compiled:
    template: Template
    names: frozenset[str]
    # Literal text and parameter names, when the template is nothing but `{{ name }}`
    # substitutions: rendered by joining, without a Jinja context (most of a render's cost).
    parts: tuple[tuple[bool, str], ...] | None = None


def _plain_parts(ast: nodes.Template) -> tuple[tuple[bool, str], ...] | None:
    """(is_name, text) per piece, or None when the template uses any other construct."""
    parts: list[tuple[bool, str]] = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            return None
        for item in node.nodes:
            if isinstance(item, nodes.TemplateData):
                parts.append((False, item.data))
            elif isinstance(item, nodes.Name) and item.ctx == "load":
                parts.append((True, item.name))
            else:
                return None
    return tuple(parts)


@lru_cache(maxsize=4096)
def _compile(source: str, html: bool) -> _Compiled:
    env = _HTML if html else _TEXT
    try:
        ast = env.parse(source)
        names = frozenset(meta.find_undeclared_variables(ast))
        return _Compiled(env.from_string(ast), names, _plain_parts(ast))
    except TemplateSyntaxError as exc:
        raise RenderError(f"template_syntax:{exc.lineno}") from exc


def render_text(source: str | None, params: Mapping[str, Any], *, html: bool = False) -> str | None:
    if source is None:
        return None
    if "{" not in source:
        return source  # no expression, tag or comment: nothing to render or escape
    compiled = _compile(source, html)
    missing = sorted(compiled.names - params.keys())
    if missing:
        raise RenderError(f"missing_param:{missing[0]}")
    if compiled.parts is not None:
        if html:
            return "".join(str(escape(params[t])) if name else t for name, t in compiled.parts)
        return "".join(str(params[t]) if name else t for name, t in compiled.parts)
    try:
        return compiled.template.render(params)
    except UndefinedError as exc:
        # Names built at run time (e.g. attribute lookups) escape the static check.
        raise RenderError(f"missing_param:{_undefined_name(exc)}") from exc
    except SecurityError as exc:
        raise RenderError("template_unsafe") from exc


def _undefined_name(exc: UndefinedError) -> str:
    text = str(exc)
    if "'" in text:
        return text.split("'")[1]
    return "unknown"


def render(
    *,
    title: str | None,
    subject: str | None,
    body: str | None,
    html: str | None,
    params: Mapping[str, Any],
) -> Rendered:
    return Rendered(
        title=render_text(title, params),
        subject=render_text(subject, params),
        body=render_text(body, params) or "",
        html=render_text(html, params, html=True),
    )
