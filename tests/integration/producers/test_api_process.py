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
