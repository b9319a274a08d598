"""The in-app inbox over HTTP (`producers.inbox`): a user's feed, counts, state changes,
the SSE stream, user tokens, and the embeddable page and script."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from infra.inbox import BadCursor, State
from infra.links import BadLink
from producers import inbox
from producers.api.auth import (
    CASSANDRA_DOWN,
    ApiError,
    Handler,
    authenticate,
    charge,
    endpoint,
    guarded,
    read_json,
    scoped_intake,
)
from producers.api.intake import Intake
from producers.clients import (
    INBOX_READ,
    INBOX_TOKEN,
    INBOX_WRITE,
    ApiClient,
)


def feed_endpoint(*, write: bool) -> Callable[[Handler], Handler]:
    """A user token for the path's user, or an API client with inbox:read / inbox:write."""

    async def access(request: Request) -> None:
        intake: Intake = request.app.state.intake
        user_id = request.path_params["user_id"]
        token = inbox.bearer(request)
        if token is not None:
            try:
                link = inbox.verify_user_token(token, user_id, intake.settings.links.secret)
            except BadLink as err:
                raise ApiError(401, "unauthenticated", f"user token refused: {err}") from None
            except PermissionError as err:
                raise ApiError(403, "forbidden", str(err), field="user_id") from None
            request.state.access = inbox.FeedAccess(user_id, client=None, token=link)
            return
        client = await authenticate(request)
        charge(request, client)
        scope = INBOX_WRITE if write else INBOX_READ
        if scope not in client.scopes:
            raise ApiError(403, "forbidden", f"client {client.name} lacks the {scope} scope")
        request.state.access = inbox.FeedAccess(user_id, client=client, token=None)

    def deco(handler: Handler) -> Handler:
        wrapped = guarded(handler, access)
        wrapped.__name__ = handler.__name__
        wrapped.__doc__ = handler.__doc__
        return wrapped

    return deco


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid", "true or false", field=name)
    return value in ("true", "1")


@endpoint
async def mint_feed_token(request: Request) -> Response:
    """A short-lived user token for one user's feed (scope inbox:token)."""
    intake = scoped_intake(request, INBOX_TOKEN)
    user_id = request.path_params["user_id"]
    s = intake.settings.inbox
    body = await read_json(request) if await request.body() else {}
    ttl = body.get("ttl_s", s.token_ttl_s) if isinstance(body, dict) else None
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= s.token_max_ttl_s:
        raise ApiError(400, "invalid", f"seconds, 1 to {s.token_max_ttl_s}", field="ttl_s")
    if not await intake.user_exists(user_id):
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    client: ApiClient = request.state.client
    token, expires = inbox.user_token(user_id, client.client_id, ttl, intake.settings.links.secret)
    return JSONResponse(
        {
            "token": token,
            "user_id": user_id,
            "expires_at": expires,
            "page_url": inbox.page_url(intake.settings.links.base_url, token),
        },
        201,
    )


@feed_endpoint(write=False)
async def get_feed(request: Request) -> Response:
    """The user's feed, newest first: cursor pagination, filters unread / category /
    archived, and the counts."""
    intake: Intake = request.app.state.intake
    s = intake.settings.inbox
    raw_limit = request.query_params.get("limit", str(s.page_size))
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= s.max_page_size:
        raise ApiError(400, "invalid", f"1 to {s.max_page_size}", field="limit")
    user_id = request.path_params["user_id"]
    try:
        page = await intake.inbox.page(
            user_id,
            limit=int(raw_limit),
            cursor=request.query_params.get("cursor") or None,
            unread=_flag(request, "unread"),
            category=request.query_params.get("category") or None,
            archived=_flag(request, "archived"),
        )
    except BadCursor as err:
        raise ApiError(400, "invalid", str(err), field="cursor") from None
    return JSONResponse(
        {
            "items": [it.as_json() for it in page.items],
            "next_cursor": page.next_cursor,
            "counts": await intake.inbox.counts(user_id),
        }
    )


@feed_endpoint(write=False)
async def get_feed_counts(request: Request) -> Response:
    """Unread and unseen items (archived ones not counted)."""
    intake: Intake = request.app.state.intake
    return JSONResponse(await intake.inbox.counts(request.path_params["user_id"]))


def _feed_state(state: State) -> Handler:
    async def change(request: Request) -> Response:
        intake: Intake = request.app.state.intake
        user_id = request.path_params["user_id"]
        try:
            ids = inbox.parse_ids(await read_json(request))
        except ValueError as err:
            raise ApiError(400, "invalid", str(err), field="item_ids") from None
        found, changed = await intake.inbox.mark(user_id, ids, state)
        outcome = inbox.ANNOUNCED.get(state)
        if outcome is not None and changed:
            assert intake.publisher is not None
            topic = inbox.status_topic(intake.settings.topic_prefix)
            await asyncio.gather(
                *(
                    intake.publisher.publish_status(topic, inbox.status_for(it, outcome))
                    for it in changed
                )
            )
        return JSONResponse({"updated": found, "counts": await intake.inbox.counts(user_id)})

    change.__name__ = f"mark_{state}"
    change.__doc__ = f"Mark items {state} (`item_ids`, or `all: true`)."
    return feed_endpoint(write=True)(change)


@feed_endpoint(write=False)
async def feed_stream(request: Request) -> Response:
    """New items as Server-Sent Events (`item`, `counts`, `expired`)."""
    intake: Intake = request.app.state.intake
    access: inbox.FeedAccess = request.state.access
    expires = access.token.expires_at if access.token is not None else None
    return inbox.stream_response(
        inbox.stream(request, intake.inbox, request.path_params["user_id"], expires)
    )


async def inbox_page(request: Request) -> Response:
    """The embeddable feed page for the user named by `?token=`."""
    intake: Intake = request.app.state.intake
    token = request.query_params.get("token", "")
    try:
        link = inbox.page_token(token, intake.settings.links.secret)
    except BadLink:
        return Response(
            "This link is invalid or has expired.",
            401,
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )
    try:
        items = (await intake.inbox.page(link.user_id, limit=intake.settings.inbox.page_size)).items
        counts = await intake.inbox.counts(link.user_id)
    except CASSANDRA_DOWN:
        return Response("Try again in a moment.", 503, headers={"Retry-After": "1"})
    return inbox.page(link.user_id, token, items, counts, intake.settings.inbox.frame_ancestors)


async def inbox_script(request: Request) -> Response:
    return Response(
        inbox.script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )
