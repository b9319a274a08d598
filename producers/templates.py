"""Managed templates: versions in `herald.template_versions`, the latest materialized in
`herald.templates` (what the processor reads), every change announced on
`templates.changes` so running processors drop their cached rows at once.

A version is immutable once written. `<template_id>@<version>` names a pinned version: its
rows are materialized under that id too, so the processor and the send API need nothing
else to honour a pin.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType

from infra.cassandra import aexecute
from producers.contacts import validate_locale
from producers.publisher import AsyncPublisher
from producers.request import parse_digest
from schemas import templating
from schemas.errors import HeraldError
from schemas.templating import Variant
from schemas.validation import ValidationError

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CATALOG = 0  # the catalog's single partition


class Conflict(HeraldError):
    """The template exists (create) or another writer took the version number (retry)."""


@dataclass(frozen=True)
class Version:
    template_id: str
    version: int
    params: list[str]
    examples: dict[str, str]
    variants: list[Variant]
    description: str | None
    created_by: str | None
    created_at: datetime | None
    # {key, window_s, template_id}: every request using the template waits in a digest.
    digest: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "version": self.version,
            "params": self.params,
            "examples": self.examples,
            "variants": [v.as_dict() for v in self.variants],
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "digest": self.digest,
        }


def split_ref(ref: str) -> tuple[str, int | None]:
    """`order_shipped@3` -> ("order_shipped", 3); without `@`, the latest (None)."""
    template_id, sep, version = ref.partition("@")
    if not sep:
        return template_id, None
    if not version.isdigit() or int(version) < 1:
        raise ValidationError("template_id", "a pinned version is <template_id>@<n>, n >= 1")
    return template_id, int(version)


def validate_id(template_id: str) -> str:
    if not isinstance(template_id, str) or not _ID.match(template_id):
        raise ValidationError(
            "template_id", "1-100 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
        )
    return template_id


def parse_version_body(body: Any) -> tuple[list[str], dict[str, str], list[Variant], str | None]:
    """(params, examples, variants, description) from a JSON body, fully validated."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = set(body) - {
        "template_id",
        "params",
        "examples",
        "variants",
        "description",
        "digest",
    }
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    params = body.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise ValidationError("params", "an array of parameter names")
    for i, p in enumerate(params):
        if not _PARAM.match(p):
            raise ValidationError(f"params[{i}]", "a name: letters, digits, '_'")
    examples = body.get("examples", {})
    if not isinstance(examples, dict) or not all(isinstance(v, str) for v in examples.values()):
        raise ValidationError("examples", "an object of parameter name to sample text")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise ValidationError("description", "must be a string")
    variants = templating.parse_variants(body.get("variants"))
    variants = [
        Variant(
            v.channel,
            validate_locale(v.locale, f"variants[{i}].locale"),
            v.title,
            v.subject,
            v.body,
            v.html,
        )
        for i, v in enumerate(variants)
    ]
    templating.check(params, examples, variants)
    return params, examples, variants, description


def parse_digest_declaration(body: Any) -> dict[str, Any] | None:
    """The template's digest (`{"key", "window", "template_id"}`), or None."""
    data = body.get("digest") if isinstance(body, dict) else None
    if data is None:
        return None
    digest = parse_digest(data)
    if digest.template_id is not None:
        validate_id(digest.template_id.partition("@")[0])
    return {"key": digest.key, "window_s": digest.window_s, "template_id": digest.template_id}


class TemplateStore:
    """Async (call from an event loop); prepares its statements on construction."""

    def __init__(self, session: Session, publisher: AsyncPublisher) -> None:
        self.session = session
        self.publisher = publisher
        p = session.prepare
        self._claim = p(
            "INSERT INTO template_versions (template_id, version, params, examples, variants,"
            " description, created_by, created_at, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " IF NOT EXISTS"
        )
        self._latest = p("SELECT * FROM template_versions WHERE template_id = ? LIMIT 1")
        self._version = p("SELECT * FROM template_versions WHERE template_id = ? AND version = ?")
        self._versions = p("SELECT version FROM template_versions WHERE template_id = ?")
        self._drop_versions = p("DELETE FROM template_versions WHERE template_id = ?")
        self._list = p(
            "SELECT template_id, latest, description, updated_at FROM template_catalog"
            " WHERE bucket = ?"
        )
        self._catalog = p(
            "INSERT INTO template_catalog (bucket, template_id, latest, description, updated_at)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._uncatalog = p("DELETE FROM template_catalog WHERE bucket = ? AND template_id = ?")
        self._clear_rows = p("DELETE FROM templates USING TIMESTAMP ? WHERE template_id = ?")
        self._put_row = p(
            "INSERT INTO templates (template_id, locale, channel, title, subject, body, html,"
            " updated_at, digest_key, digest_window_s, digest_template)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )

    async def _q(self, stmt: Any, *params: Any) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params)

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._q(self._list, _CATALOG)
        return [
            {**r, "updated_at": r["updated_at"].isoformat() if r["updated_at"] else None}
            for r in rows
        ]

    async def get(self, template_id: str, version: int | None = None) -> Version | None:
        rows = await (
            self._q(self._latest, template_id)
            if version is None
            else self._q(self._version, template_id, version)
        )
        return _version(rows[0]) if rows else None

    async def create(self, template_id: str, body: Any, *, author: str) -> Version:
        """Version 1 of a new template; Conflict if the id is taken."""
        validate_id(template_id)
        if await self.get(template_id) is not None:
            raise Conflict(f"template {template_id!r} exists: add a version instead")
        return await self._write(template_id, 1, body, author, kind="created")

    async def add_version(self, template_id: str, body: Any, *, author: str) -> Version:
        """The next version, which becomes the latest; LookupError for an unknown id."""
        latest = await self.get(validate_id(template_id))
        if latest is None:
            raise LookupError(template_id)
        return await self._write(template_id, latest.version + 1, body, author, kind="version")

    async def _write(
        self, template_id: str, version: int, body: Any, author: str, *, kind: str
    ) -> Version:
        params, examples, variants, description = parse_version_body(body)
        digest = parse_digest_declaration(body)
        now = datetime.now(UTC)
        payload = json.dumps([v.as_dict() for v in variants])
        # The conditional insert hands each version number to one writer only.
        applied = await self._q(
            self._claim,
            template_id,
            version,
            params,
            examples,
            payload,
            description,
            author,
            now,
            json.dumps(digest) if digest is not None else None,
        )
        if not applied[0]["[applied]"]:
            raise Conflict(f"version {version} of {template_id!r} was just written; retry")
        stored = Version(
            template_id, version, params, examples, variants, description, author, now, digest
        )
        await self._materialize(f"{template_id}@{version}", variants, now, digest)
        await self._materialize(template_id, variants, now, digest)
        await self._q(self._catalog, _CATALOG, template_id, version, description, now)
        await self.publisher.publish_template_change(template_id, version, kind)
        return stored

    async def _materialize(
        self,
        key: str,
        variants: Sequence[Variant],
        now: datetime,
        digest: Mapping[str, Any] | None = None,
    ) -> None:
        # One partition, one batch: the delete (older timestamp) and the new rows apply
        # together, so a processor reading meanwhile sees the old version or the new one.
        micros = int(now.timestamp() * 1_000_000)
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._clear_rows, (micros - 1, key))
        d = digest or {}
        for v in variants:
            row = (
                key,
                v.locale,
                v.channel,
                v.title,
                v.subject,
                v.body,
                v.html,
                now,
                d.get("key"),
                d.get("window_s"),
                d.get("template_id"),
                micros,
            )
            batch.add(self._put_row, row)
        await aexecute(self.session, batch, None)

    async def delete(self, template_id: str) -> bool:
        versions = [r["version"] for r in await self._q(self._versions, template_id)]
        if not versions:
            return False
        micros = int(datetime.now(UTC).timestamp() * 1_000_000)
        for key in (template_id, *(f"{template_id}@{n}" for n in versions)):
            await self._q(self._clear_rows, micros, key)
        await self._q(self._drop_versions, template_id)
        await self._q(self._uncatalog, _CATALOG, template_id)
        for n in versions:
            await self.publisher.publish_template_change(f"{template_id}@{n}", n, "deleted")
        await self.publisher.publish_template_change(template_id, 0, "deleted")
        return True


def preview(
    version: Version, locale: str, params: Mapping[str, str], channels: Sequence[str] = ()
) -> dict[str, Any]:
    """Each channel's variant for `locale` (falling back to its language, then any),
    rendered with `params` over the version's examples; nothing is sent."""
    values: dict[str, Any] = {**{p: p for p in version.params}, **version.examples, **params}
    values.update(templating.digest_sample(values, set(values)))  # a digest template's items
    out: dict[str, Any] = {}
    for channel in channels or templating.CHANNELS:
        candidates = [v for v in version.variants if v.channel == channel]
        if not candidates:
            continue
        language = locale.split("-")[0]
        chosen = next(
            (v for v in candidates if v.locale == locale),
            next((v for v in candidates if v.locale.split("-")[0] == language), candidates[0]),
        )
        rendered = templating.render_variant(chosen, values)
        entry: dict[str, Any] = rendered.as_dict()
        if channel == "sms":
            length = templating.sms_length(rendered.body or "")
            entry.update(sms_encoding=length.encoding, sms_segments=length.segments)
        elif channel == "push":
            entry["push_bytes"] = templating.push_payload_bytes(rendered.title, rendered.body)
        out[channel] = entry
    return {"template_id": version.template_id, "version": version.version, "channels": out}


def _version(row: dict[str, Any]) -> Version:
    return Version(
        template_id=row["template_id"],
        version=row["version"],
        params=list(row["params"] or []),
        examples=dict(row["examples"] or {}),
        variants=[Variant(**v) for v in json.loads(row["variants"])],
        description=row["description"],
        created_by=row["created_by"],
        created_at=row["created_at"].replace(tzinfo=UTC) if row["created_at"] else None,
        digest=json.loads(row["digest"]) if row.get("digest") else None,
    )
