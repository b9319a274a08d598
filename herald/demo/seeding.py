"""Putting the demo's data in place the way an operator would: templates through the
template API, users through the contacts directory."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cassandra.cluster import Session

from herald.demo.fixtures import DemoUser, template_bodies
from infra.cassandra import connect
from infra.settings import CassandraSettings, KafkaSettings
from producers.clients import ClientStore
from producers.contacts import SyncDirectory
from producers.publisher import AsyncPublisher
from schemas.templating import Variant


def seed(
    users: list[DemoUser], kafka: KafkaSettings, cassandra: CassandraSettings, api: str, run: str
) -> None:
    session = connect(cassandra)
    put_templates(api, session, run)
    directory = SyncDirectory(
        session, AsyncPublisher(kafka, client="demo-contacts"), hmac_key=b"herald-demo"
    )
    try:
        for u in users:
            quiet: str | None = None
            if u.quiet_now:
                local = datetime.now(ZoneInfo(u.timezone))
                start, end = local - timedelta(hours=1), local + timedelta(hours=2)
                quiet = f"{start:%H:%M}-{end:%H:%M}"
            directory.set_user(
                u.user_id,
                email=u.email,
                phone=u.phone,
                locale=u.locale,
                timezone=u.timezone,
                quiet_hours=quiet,
                unsubscribed_all=u.unsubscribed_all,
            )
            for platform, token in u.devices:
                directory.register_device(u.user_id, platform=platform, token=token, app_id="demo")
            for channel, category in u.opt_outs:
                directory.set_preference(u.user_id, channel, category, opt_in=False)
    finally:
        directory.close()
        session.cluster.shutdown()


def put_templates(
    base: str, session: Session, run: str, bodies: dict[str, dict[str, Any]] | None = None
) -> None:
    """Through the template API (`/v1/templates`), as an operator would: validated,
    versioned, announced to running processors; created on the first run, a new version
    only when TEMPLATES changed."""
    created = ClientStore(session).create(
        f"demo-templates-{run}", scopes={"templates:read", "templates:write"}
    )
    keys = {"X-Herald-App-Key": created.client.app_key, "X-Herald-App-Secret": created.secret}
    with httpx.Client(base_url=base, timeout=10, headers=keys) as http:
        for template_id, body in (bodies or template_bodies()).items():
            found = http.get(f"/v1/templates/{template_id}")
            if found.status_code == 404:
                answer = http.post("/v1/templates", json={"template_id": template_id, **body})
            else:
                found.raise_for_status()
                latest = found.json()
                wanted = [Variant(**v).as_dict() for v in body["variants"]]
                if latest["variants"] == wanted and latest["params"] == body["params"]:
                    continue
                answer = http.post(f"/v1/templates/{template_id}/versions", json=body)
            if answer.is_error:
                raise RuntimeError(f"template {template_id}: {answer.status_code} {answer.text}")
