"""Open/click tracking and client push reports, as status events on `notifications.status`.

    GET  /o/{token}        1x1 GIF, `opened` event
    GET  /c/{token}        302 to the signed target, `clicked` event
    POST /v1/push/events   client apps report push `delivered` / `opened` (X-Herald-App-Key)
    GET  /metrics, /health

A token that fails verification gets a 400 and never a redirect: the target comes only
from the signed payload, so the endpoint cannot be used as an open redirect.

Run: `python -m herald.ops.tracking` (port 9404, HERALD_TRACKING_SERVER__PORT).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from cassandra.cluster import Session
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from herald.ops.settings import OpsSettings
from infra.cassandra import aexecute
from infra.kafka_producer import AsyncProducer
from processors.tracking import BadToken, Claim, verify
from schemas import codec
from schemas.channels import Channel, Outcome
from schemas.contract import Topics
from schemas.events import status_event

log = logging.getLogger("herald.ops.tracking")  # not "__main__" when run with -m

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}
PUSH_OUTCOMES = {"delivered": Outcome.DELIVERED, "opened": Outcome.OPENED}
MAX_EVENTS = 500

EVENTS = Counter("herald_tracking_events_total", "Status events recorded", ["outcome", "channel"])
REJECTED = Counter("herald_tracking_rejected_total", "Requests refused", ["reason"])


class StatusSink:
    """Produces status events on herald's one asyncio producer (its thread serves acks)."""

    def __init__(self, producer: Producer, topic: str, values: codec.Codec) -> None:
        self.producer = AsyncProducer(producer=producer)
        self.topic = topic
        self.values = values

    async def produce(self, event: Mapping[str, Any]) -> asyncio.Future[None]:
        """Queued; the future settles once the broker acked it, or raises (and logs) if not."""
        answer = await self.producer.submit(
            self.topic,
            self.values.encode(codec.STATUS, event, topic=self.topic),
            key=event["notification_id"].encode(),
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def relay(fut: asyncio.Future[tuple[KafkaError | None, Message | None]]) -> None:
            err, _msg = fut.result()
            if err is not None:
                done.set_exception(RuntimeError(err.str()))
            else:
                done.set_result(None)

        answer.add_done_callback(relay)
        EVENTS.labels(event["outcome"], event["channel"] or "-").inc()
        done.add_done_callback(_log_failure)
        return done

    def close(self) -> None:
        self.producer.close(10)


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("status event not recorded: %s", fut.exception())


async def _context(
    session: Session | None, notification_id: str, delivery_id: str
) -> dict[str, Any]:
    """user_id, category, channel of a delivery from the notification log, when reachable."""
    if session is None:
        return {}
    try:
        rows = await aexecute(
            session,
            f"SELECT user_id, category, channel FROM {session.keyspace}.notification_log "
            "WHERE notification_id = %s AND delivery_id = %s",
            (notification_id, delivery_id),
        )
    except Exception:  # tracking must still answer when the log cannot
        log.warning("notification log lookup failed", exc_info=True)
        return {}
    return rows[0] if rows else {}


def create_app(
    settings: OpsSettings, producer: Producer, session: Session | None = None
) -> Starlette:
    secret = settings.tracking.secret
    app_keys = [k.get_secret_value().encode() for k in settings.tracking_server.app_keys]
    sink: StatusSink | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal sink
        sink = StatusSink(
            producer,
            Topics(settings.topic_prefix).status,
            codec.codec_for(settings.kafka.schema_registry_url),
        )
        try:
            yield
        finally:
            sink.close()

    async def record(
        claim: Claim, outcome: str, channel: str | None, **extra: Any
    ) -> asyncio.Future[None]:
        ctx: dict[str, Any] = {}
        if claim.user_id is None or claim.category is None or channel is None:
            ctx = await _context(session, claim.notification_id, claim.delivery_id)
        event = status_event(
            notification_id=claim.notification_id,
            delivery_id=claim.delivery_id,
            event_id=claim.event_id or "",
            user_id=claim.user_id or ctx.get("user_id") or "",
            category=claim.category or ctx.get("category") or "unknown",
            channel=channel or ctx.get("channel"),
            outcome=outcome,
            source="tracking",
            **extra,
        )
        assert sink is not None
        return await sink.produce(event)

    def _verified(request: Request, kind: str) -> Claim | Response:
        try:
            return verify(request.path_params["token"], secret, kind=kind)  # type: ignore[arg-type]
        except BadToken as exc:
            REJECTED.labels("bad_token").inc()
            log.info("rejected tracking token: %s", exc)
            return PlainTextResponse("invalid tracking link", status_code=400, headers=NO_STORE)

    async def opened(request: Request) -> Response:
        claim = _verified(request, "open")
        if isinstance(claim, Response):
            return claim
        await record(claim, Outcome.OPENED, Channel.EMAIL)
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    async def clicked(request: Request) -> Response:
        claim = _verified(request, "click")
        if isinstance(claim, Response):
            return claim
        await record(claim, Outcome.CLICKED, Channel.EMAIL)
        assert claim.url is not None
        return RedirectResponse(claim.url, status_code=302, headers=NO_STORE)

    async def push_events(request: Request) -> Response:
        given = (request.headers.get("x-herald-app-key") or "").encode()
        if not given or not any(hmac.compare_digest(given, k) for k in app_keys):
            REJECTED.labels("bad_app_key").inc()
            return JSONResponse({"error": "missing or unknown X-Herald-App-Key"}, status_code=401)
        try:
            body = await request.json()
            items = body.get("events", [body]) if isinstance(body, dict) else body
            if not isinstance(items, list) or not 0 < len(items) <= MAX_EVENTS:
                raise ValueError(f"send 1 to {MAX_EVENTS} events")
            parsed = [_push_event(item) for item in items]
        except ValueError as exc:
            REJECTED.labels("bad_request").inc()
            return JSONResponse({"error": str(exc), "retriable": False}, status_code=400)
        pending = [
            await record(claim, outcome, channel, occurred_at=at)
            for claim, outcome, channel, at in parsed
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*pending), timeout=15)
        except (RuntimeError, TimeoutError) as exc:
            log.warning("status events not acknowledged: %s", exc)
            return JSONResponse({"error": "not recorded", "retriable": True}, status_code=503)
        return JSONResponse({"accepted": len(parsed)}, status_code=202)

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/o/{token}", opened),
            Route("/c/{token}", clicked),
            Route("/v1/push/events", push_events, methods=["POST"]),
            Route("/health", health),
            Mount("/metrics", make_asgi_app()),
        ],
        lifespan=lifespan,
    )


def _push_event(item: Any) -> tuple[Claim, str, str | None, int | None]:
    if not isinstance(item, dict):
        raise ValueError("each event is an object")
    outcome = PUSH_OUTCOMES.get(item.get("event", ""))
    if outcome is None:
        raise ValueError(f"event must be one of {sorted(PUSH_OUTCOMES)}")
    for name in ("delivery_id", "notification_id"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise ValueError(f"{name} is required")
    channel = item.get("channel")
    if channel is not None and (
        channel not in {c.value for c in Channel} or not channel.startswith("push.")
    ):
        raise ValueError("channel must be a push channel")
    at = item.get("occurred_at")
    if at is not None and not isinstance(at, int):
        raise ValueError("occurred_at is epoch milliseconds")
    claim = Claim(
        "open",
        item["delivery_id"],
        item["notification_id"],
        user_id=item.get("user_id"),
        category=item.get("category"),
        event_id=item.get("event_id"),
    )
    return claim, outcome, channel, at


def main() -> None:
    import uvicorn

    from infra.cassandra import connect
    from infra.logging import configure_logging
    from infra.settings import refuse_published_secrets

    settings = OpsSettings()
    refuse_published_secrets(settings.profile, settings.published_secrets())
    configure_logging("tracking", settings.log_level)
    producer = Producer(settings.kafka.producer_config("tracking"))
    session: Session | None
    try:
        session = connect(settings.cassandra)
    except Exception:  # tokens carry what events need; the log only fills gaps
        log.warning("Cassandra unreachable: events without context get category 'unknown'")
        session = None
    server = settings.tracking_server
    uvicorn.run(
        create_app(settings, producer, session),
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
