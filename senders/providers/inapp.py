"""The in-app provider: writes each `inapp` delivery into the user's feed in Cassandra
(`herald.inbox_items`, see `infra.inbox`). The send API serves the feed and streams it.

The delivery's address is the user id. The row's key is the delivery's fan-out time and
delivery id, so writing the same delivery twice rewrites one row: a repeated write after
an ambiguous failure cannot show an item twice, which is why the `inapp` route retries
ambiguous failures (`HERALD_ROUTING__INAPP__RETRY_AMBIGUOUS`, default true).

Sends that arrive together share one unlogged batch (one round trip), as the ledger does.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cassandra import OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable, Session

from infra.inbox import InboxSettings, InboxStore, NewItem
from senders.providers.base import Message, PermanentError, Provider, RetriableError, SendResult
from senders.providers.settings import InappSettings

# Feed writes batched into one round trip at most.
MAX_BATCH = 100


class InappProvider(Provider):
    name = "inapp"
    channels = frozenset({"inapp"})
    needs_session = True

    def __init__(self, settings: InappSettings, session: Session | None = None) -> None:
        self.settings = settings
        self._session = session
        self._store: InboxStore | None = None
        self._pending: list[tuple[NewItem, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._session is None:
            raise RuntimeError("the inapp provider needs the sender's Cassandra session")
        self._store = await asyncio.to_thread(
            InboxStore, self._session, InboxSettings(ttl_s=self.settings.ttl_s)
        )

    async def send(self, message: Message) -> SendResult:
        if not message.address:
            raise PermanentError("inapp:no user id", provider=self.name, invalid_address=True)
        item = NewItem(
            user_id=message.address,
            item_id=message.delivery_id,
            created_at=message.created_at or datetime.now(UTC),
            notification_id=message.notification_id,
            category=message.category,
            title=message.title,
            body=message.body,
            data=dict(message.data),
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done
        return SendResult(self.name, message.delivery_id)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the sends of this round join the batch
        while self._pending:
            chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                assert self._store is not None, "start() first"
                await self._store.write([item for item, _ in chunk])
            except (NoHostAvailable, OperationTimedOut, RequestExecutionException) as exc:
                # A timeout may have applied the write; repeating it rewrites the same rows.
                err = RetriableError(
                    f"inapp:{type(exc).__name__}", provider=self.name, ambiguous=True
                )
                for _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for _, fut in chunk:
                if not fut.done():
                    fut.set_result(None)
