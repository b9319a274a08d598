"""Template parameters that end up in a header: the subject and title of a template.

A request's literal subject, title and collapse key are checked by `validate_request`; a
parameter is only header-bound if the template puts it in a subject or title, which only the
template row says. The send API asks here only for requests whose parameters hold a line
break (rare), so the common request costs no extra lookup.
"""

from __future__ import annotations

from cassandra.cluster import Session
from jinja2 import Environment, TemplateSyntaxError, meta

from infra.cache import TTLCache
from infra.cassandra import aexecute

_PARSER = Environment()


class HeaderParams:
    """Names of the parameters a template uses in the subject or title of any locale and
    channel, remembered for `ttl_s` like the API's other template lookups."""

    def __init__(self, session: Session, *, ttl_s: float) -> None:
        self.session = session
        self._select = session.prepare("SELECT subject, title FROM templates WHERE template_id = ?")
        self._seen: TTLCache[frozenset[str]] = TTLCache(10_000, ttl_s)

    async def of(self, template_id: str) -> frozenset[str]:
        hit = self._seen.get(template_id)
        if hit is not None:
            return hit
        rows = await aexecute(self.session, self._select, (template_id,))
        names = frozenset(
            name for row in rows for src in (row["subject"], row["title"]) for name in _names(src)
        )
        self._seen.put(template_id, names)
        return names

    def forget(self, template_id: str) -> None:
        self._seen.invalidate(template_id)


def _names(source: str | None) -> set[str]:
    if not source:
        return set()
    try:
        return meta.find_undeclared_variables(_PARSER.parse(source))
    except TemplateSyntaxError:
        return set()  # the processor dead-letters it with template_syntax
