"""The API's shared state: the Cassandra session, the Kafka publisher and the stores
built on them, started once per process (or by a test)."""

from __future__ import annotations

import asyncio
from typing import Any

from cassandra.cluster import Session

from infra.cache import TTLCache
from infra.cassandra import aexecute, connect
from infra.inbox import InboxStore
from producers.clients import (
    ClientStore,
)
from producers.contacts import Directory
from producers.headers import HeaderParams
from producers.idempotency import IdempotencyKeys
from producers.publisher import AsyncPublisher
from producers.schedules import RecurringStore
from producers.settings import IntakeSettings
from producers.templates import TemplateStore
from schemas.contract import Topics


class Intake:
    """What the API needs, started once per process (or by a test)."""

    def __init__(self, settings: IntakeSettings) -> None:
        self.settings = settings
        self.session: Session | None = None
        self.publisher: AsyncPublisher | None = None

    async def start(self) -> None:
        s = self.settings
        session = await asyncio.to_thread(connect, s.cassandra)
        self.session = session
        self.publisher = AsyncPublisher(s.kafka, **s.publisher_args("send-api"))
        self.publisher.start()
        self.clients = ClientStore(
            session,
            cache_ttl_s=s.api.cache_ttl_s,
            failed_logins_burst=s.api.failed_logins_burst,
            failed_logins_per_minute=s.api.failed_logins_per_minute,
        )
        self.directory = Directory(
            session,
            self.publisher,
            hmac_key=s.contacts.hmac_key.get_secret_value().encode(),
            phone_region=s.contacts.phone_region,
        )
        self.schedules = RecurringStore(session)
        self.templates = TemplateStore(session, self.publisher)
        self.idempotency = IdempotencyKeys(session)
        # Positive lookups remembered for a while: known users and templates are the norm.
        self.known_users: TTLCache[bool] = TTLCache(100_000, s.api.cache_ttl_s)
        self.known_templates: TTLCache[bool] = TTLCache(100_000, s.api.cache_ttl_s)
        self.header_params = HeaderParams(session, ttl_s=s.api.cache_ttl_s)
        self._user = session.prepare("SELECT user_id FROM users WHERE user_id = ?")
        self._template = session.prepare(
            "SELECT template_id FROM templates WHERE template_id = ? LIMIT 1"
        )
        self._log = session.prepare(
            "SELECT delivery_id, channel, state, reason, attempt, provider, updated_at"
            " FROM notification_log WHERE notification_id = ?"
        )
        self.held = _schedule_store(session, Topics(s.topic_prefix).requested)
        self.inbox = InboxStore(session, s.inbox)

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        if self.session is not None:
            self.session.cluster.shutdown()

    async def user_exists(self, user_id: str) -> bool:
        if user_id in self.known_users:
            return True
        assert self.session is not None
        found = bool(await aexecute(self.session, self._user, (user_id,)))
        if found:
            self.known_users.put(user_id, True)
        return found

    async def deliveries(self, notification_id: str) -> list[dict[str, Any]]:
        assert self.session is not None
        return await aexecute(self.session, self._log, (notification_id,))

    async def template_exists(self, template_id: str) -> bool:
        if template_id in self.known_templates:
            return True
        assert self.session is not None
        found = bool(await aexecute(self.session, self._template, (template_id,)))
        if found:
            self.known_templates.put(template_id, True)
        return found


def _schedule_store(session: Session, scope: str) -> Any:
    """The processor's hold store, for cancelling a scheduled send (absent in old installs)."""
    try:
        from infra.scheduling import ScheduleStore
    except ImportError:
        return None
    return ScheduleStore(session, scope)
