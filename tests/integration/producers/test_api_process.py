"""`python -m producers api` serves the send API over real HTTP (the operator's entry point)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cassandra.cluster import Session

from herald.services import ServiceSpec, free_port, python_module, start
from infra.settings import DEV_PROFILE
from producers.clients import ClientStore
from tests.integration.producers.intakekit import uid

pytestmark = pytest.mark.integration


def test_entry_point_serves_openapi_and_accepts_a_request(session: Session, tmp_path: Path) -> None:
    user = uid()
    session.execute("INSERT INTO users (user_id, locale) VALUES (%s, 'en')", (user,))
    client = ClientStore(session).create("proc-" + uid())
    port = free_port()
    svc = start(
        ServiceSpec(
            "send-api",
            python_module("producers", "api"),
            ready_port=port,
            env={"HERALD_API__PORT": str(port), "HERALD_PROFILE": DEV_PROFILE},
        ),
        tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/openapi.json").json()["openapi"].startswith("3.1")
        r = httpx.post(
            f"{base}/v1/notifications",
            json={
                "user_id": user,
                "category": "transactional",
                "content": {"sms": {"body": "hi"}},
            },
            auth=(client.client.app_key, client.secret),
            timeout=10,
        )
        assert r.status_code == 202, r.text
        assert httpx.post(f"{base}/v1/notifications", json={}).status_code == 401
    finally:
        svc.stop()
    assert client.secret not in svc.log_tail(500)


def test_the_demo_puts_its_templates_through_the_template_api(
    session: Session, tmp_path: Path
) -> None:
    from herald.demo.fixtures import template_bodies
    from herald.demo.seeding import put_templates

    port = free_port()
    svc = start(
        ServiceSpec(
            "send-api",
            python_module("producers", "api"),
            ready_port=port,
            env={"HERALD_API__PORT": str(port), "HERALD_PROFILE": DEV_PROFILE},
        ),
        tmp_path,
    )
    run = uid()
    shipped = template_bodies()["order_shipped"]
    mine = f"demo-check-{run}"
    base = f"http://127.0.0.1:{port}"
    reader = ClientStore(session).create("reader-" + run, scopes={"templates:read"})
    auth = (reader.client.app_key, reader.secret)
    try:
        put_templates(base, session, run, {mine: shipped})
        first = httpx.get(f"{base}/v1/templates/{mine}", auth=auth).json()
        assert first["version"] == 1
        assert first["created_by"] == f"demo-templates-{run}"  # the API's client, not a row
        put_templates(base, session, run, {mine: shipped})  # unchanged: no new version
        assert httpx.get(f"{base}/v1/templates/{mine}", auth=auth).json()["version"] == 1
        variants = [dict(v) for v in shipped["variants"]]
        variants[0]["body"] = "Order {{ order }} shipped today"  # same parameters
        changed = {**shipped, "variants": variants}
        put_templates(base, session, run, {mine: changed})
        assert httpx.get(f"{base}/v1/templates/{mine}", auth=auth).json()["version"] == 2
    finally:
        svc.stop()
