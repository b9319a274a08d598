"""Templates through the send API against the real Kafka and Cassandra: create, list, show,
version, pin, preview, delete, and a new version reaching a running processor's cache."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session
from typer.testing import CliRunner

from infra import topics
from processors.enrichment import Enricher
from processors.invalidation import ChangeListener
from producers.api import Intake
from producers.cli import app as intake_cli
from producers.clients import ClientStore, NewClient
from tests.conftest import KAFKA_SETTINGS

pytestmark = pytest.mark.integration


def _client(session: Session, scopes: set[str]) -> dict[str, str]:
    new: NewClient = ClientStore(session).create(
        f"tpl-{uuid.uuid4().hex[:8]}", sources=set(), rate_per_s=1000, burst=1000, scopes=scopes
    )
    return {"X-Herald-App-Key": new.client.app_key, "X-Herald-App-Secret": new.secret}


@pytest.fixture(scope="module")
def editor(session: Session) -> dict[str, str]:
    return _client(session, {"templates:read", "templates:write"})


def body(text: str, template_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "params": ["order"],
        "examples": {"order": "8812"},
        "variants": [
            {"channel": "sms", "locale": "en", "body": f"{text} {{{{ order }}}}"},
            {
                "channel": "email",
                "locale": "en",
                "subject": f"{text} {{{{ order }}}}",
                "body": f"{text} {{{{ order }}}}",
                "html": f"<p>{text} {{{{ order }}}}</p>",
            },
        ],
    }
    if template_id:
        out["template_id"] = template_id
    return out


def rows(session: Session, key: str) -> dict[str, str]:
    found = session.execute("SELECT channel, body FROM templates WHERE template_id = %s", (key,))
    return {r["channel"]: r["body"] for r in found}


async def test_lifecycle_versions_pin_preview_delete(
    api: httpx.AsyncClient, intake: Intake, editor: dict[str, str], session: Session
) -> None:
    tid = f"tpl-{uuid.uuid4().hex[:8]}"
    r = await api.post("/v1/templates", json=body("Shipped", tid), headers=editor)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    assert (await api.post("/v1/templates", json=body("x", tid), headers=editor)).status_code == 409

    r = await api.post(f"/v1/templates/{tid}/versions", json=body("On its way"), headers=editor)
    assert r.status_code == 201 and r.json()["version"] == 2
    assert rows(session, tid)["sms"] == "On its way {{ order }}"
    assert rows(session, f"{tid}@1")["sms"] == "Shipped {{ order }}"
    assert await intake.template_exists(f"{tid}@1")

    assert (await api.get(f"/v1/templates/{tid}", headers=editor)).json()["version"] == 2
    old = await api.get(f"/v1/templates/{tid}?version=1", headers=editor)
    assert old.json()["variants"][0]["body"] == "Shipped {{ order }}"
    assert (await api.get(f"/v1/templates/{tid}@1", headers=editor)).json()["version"] == 1
    listed = (await api.get("/v1/templates", headers=editor)).json()["templates"]
    assert {"template_id": tid, "latest": 2} in [
        {k: t[k] for k in ("template_id", "latest")} for t in listed
    ]

    r = await api.post(
        f"/v1/templates/{tid}/preview",
        json={"version": 1, "locale": "en-GB", "params": {"order": "42"}},
        headers=editor,
    )
    assert r.status_code == 200, r.text
    channels = r.json()["channels"]
    assert channels["sms"]["body"] == "Shipped 42" and channels["sms"]["sms_segments"] == 1
    assert channels["email"]["html"] == "<p>Shipped 42</p>"

    assert (await api.delete(f"/v1/templates/{tid}", headers=editor)).status_code == 204
    assert (await api.get(f"/v1/templates/{tid}", headers=editor)).status_code == 404
    assert rows(session, tid) == {} and rows(session, f"{tid}@1") == {}


async def test_validation_errors_name_the_field(
    api: httpx.AsyncClient, editor: dict[str, str]
) -> None:
    bad = body("Hi", f"tpl-{uuid.uuid4().hex[:8]}")
    del bad["variants"][1]["html"]
    r = await api.post("/v1/templates", json=bad, headers=editor)
    assert r.status_code == 400
    assert r.json()["field"] == "variants[1].html"
    assert "email needs html" in r.json()["message"]
    r = await api.post("/v1/templates", json=body("Hi", "Bad Id"), headers=editor)
    assert (r.status_code, r.json()["field"]) == (400, "template_id")


async def test_scopes_are_required(api: httpx.AsyncClient, session: Session) -> None:
    sender = _client(session, set())
    assert (await api.get("/v1/templates", headers=sender)).status_code == 403
    reader = _client(session, {"templates:read"})
    r = await api.post("/v1/templates", json=body("x", "tpl-x"), headers=reader)
    assert r.status_code == 403 and "templates:write" in r.json()["message"]


async def test_a_new_version_reaches_a_running_processor_cache_at_once(
    api: httpx.AsyncClient, editor: dict[str, str], session: Session
) -> None:
    tid = f"tpl-{uuid.uuid4().hex[:8]}"
    assert (
        await api.post("/v1/templates", json=body("v1", tid), headers=editor)
    ).status_code == 201
    # A TTL of an hour: only the change event can make the cache read the new version.
    enricher = Enricher(session, ttl_s=3600, max_entries=1000, max_backoff_s=1)
    assert (await enricher.templates({tid}))[tid][0].body == "v1 {{ order }}"
    listener = ChangeListener(
        KAFKA_SETTINGS,
        topics.TEMPLATE_CHANGES,
        enricher.invalidate_template,
        asyncio.get_running_loop(),
    )
    await asyncio.to_thread(listener.start)
    try:
        await asyncio.sleep(2)  # the listener starts at the end of the topic
        r = await api.post(f"/v1/templates/{tid}/versions", json=body("v2"), headers=editor)
        assert r.status_code == 201
        for _ in range(100):
            bodies = {row.body for row in (await enricher.templates({tid}))[tid]}
            if bodies == {"v2 {{ order }}"}:
                break
            await asyncio.sleep(0.1)
        assert bodies == {"v2 {{ order }}"}
        # A pinned version is its own immutable entry.
        pinned = (await enricher.templates({f"{tid}@1"}))[f"{tid}@1"]
        assert {row.body for row in pinned} == {"v1 {{ order }}"}
    finally:
        await asyncio.to_thread(listener.stop)


def test_cli_create_version_preview_delete(tmp_path: Path) -> None:
    tid, cli = f"tpl-{uuid.uuid4().hex[:8]}", CliRunner()
    bad = body("Hi")
    bad["variants"][1]["subject"] = "Hi {{ nope }}"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "v.json").write_text(json.dumps(body("Hi")))

    r = cli.invoke(intake_cli, ["templates", "create", tid, str(tmp_path / "bad.json")])
    assert r.exit_code == 2
    assert "invalid variants[1].subject: uses 'nope', which is not in params" in r.output
    r = cli.invoke(intake_cli, ["templates", "create", tid, str(tmp_path / "v.json")])
    assert r.exit_code == 0 and json.loads(r.output)["version"] == 1
    r = cli.invoke(intake_cli, ["templates", "version", tid, str(tmp_path / "v.json")])
    assert json.loads(r.output)["version"] == 2
    r = cli.invoke(
        intake_cli, ["templates", "preview", f"{tid}@1", "-p", "order=7", "--channel", "sms"]
    )
    assert json.loads(r.output)["channels"]["sms"]["body"] == "Hi 7"
    assert cli.invoke(intake_cli, ["templates", "delete", tid]).exit_code == 0
    assert cli.invoke(intake_cli, ["templates", "show", tid]).exit_code == 1


async def test_a_declared_digest_is_stored_on_the_version_and_every_row(
    api: httpx.AsyncClient, editor: dict[str, str], session: Session
) -> None:
    tid = f"tpl-{uuid.uuid4().hex[:8]}"
    declared = {**body("Shipped", tid), "digest": {"key": "orders", "window": "1h"}}
    r = await api.post("/v1/templates", json=declared, headers=editor)
    assert r.status_code == 201, r.text
    want = {"key": "orders", "window_s": 3600, "template_id": None}
    assert r.json()["digest"] == want
    assert (await api.get(f"/v1/templates/{tid}", headers=editor)).json()["digest"] == want
    for key in (tid, f"{tid}@1"):
        found = session.execute(
            "SELECT digest_key, digest_window_s FROM templates WHERE template_id = %s", (key,)
        )
        assert {(r["digest_key"], r["digest_window_s"]) for r in found} == {("orders", 3600)}
    bad = {**body("x", f"tpl-{uuid.uuid4().hex[:8]}"), "digest": {"key": "o", "window": "9d"}}
    r = await api.post("/v1/templates", json=bad, headers=editor)
    assert (r.status_code, r.json()["field"]) == (400, "digest.window")
    await api.delete(f"/v1/templates/{tid}", headers=editor)
