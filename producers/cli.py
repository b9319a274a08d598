"""Intake commands: `herald send`, `herald users ...`, `herald templates ...`,
`herald schedules ...`, `herald api-clients create`, `herald api` (send API) and
`herald scheduler` (cron firing).

Settings come from `HERALD_*` variables (see `producers.settings.IntakeSettings`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer

from producers.settings import IntakeSettings
from schemas.validation import ValidationError

T = TypeVar("T")

app = typer.Typer(help="Intake: send notifications, manage contacts, schedules, API clients.")
users_app = typer.Typer(help="Users' contacts, devices and preferences.", no_args_is_help=True)
schedules_app = typer.Typer(help="Recurring (cron) schedules.", no_args_is_help=True)
clients_app = typer.Typer(help="Send API clients (app key + secret).", no_args_is_help=True)
templates_app = typer.Typer(
    help="Templates: versions, variants per channel and locale, preview.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(templates_app, name="templates")
app.add_typer(schedules_app, name="schedules")
app.add_typer(clients_app, name="api-clients")


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _fail(err: ValidationError) -> None:
    typer.echo(f"invalid {err.field}: {err.message}", err=True)
    raise typer.Exit(2)


def _run(make: Callable[[IntakeSettings], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(make(IntakeSettings()))
    except ValidationError as err:
        _fail(err)
        raise  # unreachable: _fail exits


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    if value.startswith("+") and value[-1] in "smhd":
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[value[-1]]
        return datetime.now().astimezone() + timedelta(**{unit: float(value[1:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("ISO 8601 time or +<n>s|m|h|d", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep:
            raise typer.BadParameter(f"{kv!r} is not k=v", param_hint="--param")
        params[k] = v
    return params


@app.command()
def send(
    user: str = typer.Option(..., "--user", "-u", help="User id."),
    category: str = typer.Option("transactional", "--category", "-c"),
    channel: list[str] = typer.Option(
        [], "--channel", help="push | sms | email | inapp (repeat); none = every allowed channel."
    ),
    template: str | None = typer.Option(None, "--template", "-t", help="Template id."),
    param: list[str] = typer.Option([], "--param", "-p", help="Template parameter k=v."),
    body: str | None = typer.Option(None, help="Literal body (instead of a template)."),
    title: str | None = typer.Option(None, help="Push title (literal content)."),
    subject: str | None = typer.Option(None, help="Email subject (literal content)."),
    priority: str = typer.Option("normal", help="high | normal | low"),
    send_at: str | None = typer.Option(None, help="ISO time or +10m: send later."),
    expires: str | None = typer.Option(None, help="ISO time or +1h: do not send after."),
    event_id: str | None = typer.Option(None, help="Idempotency key (default: random)."),
    source: str = typer.Option("cli", help="Calling service."),
    digest: str | None = typer.Option(
        None, help="Collect into a digest: key:window[:template], e.g. social:1h:social_digest."
    ),
) -> None:
    """Publish one notification request to Kafka."""
    from producers.publisher import Publisher
    from producers.request import parse_request

    params = _params(param)
    content = {}
    if body is not None:
        for ch in channel or ["push", "sms", "email"]:
            content[ch] = {"body": body, "title": title, "subject": subject}
    data: dict[str, Any] = {
        "source": source,
        "user_id": user,
        "category": category,
        "channels": channel,
        "template_id": template,
        "params": params,
        "content": content,
        "priority": priority,
        "send_at": _time(send_at, "--send-at"),
        "expires_at": _time(expires, "--expires"),
    }
    if event_id:
        data["event_id"] = event_id
    if digest is not None:
        key, _, rest = digest.partition(":")
        window, _, digest_template = rest.partition(":")
        data["digest"] = {"key": key, "window": window, "template_id": digest_template or None}
    settings = IntakeSettings()
    try:
        with Publisher(settings.kafka, **settings.publisher_args("cli")) as pub:
            result = pub.publish(parse_request(data))
    except ValidationError as err:
        _fail(err)
    _print(
        {
            "event_id": result.event_id,
            "notification_id": result.notification_id,
            "topic": result.topic,
            "partition": result.partition,
            "offset": result.offset,
        }
    )


# --- users ------------------------------------------------------------------------


def _with_directory(fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async def go(settings: IntakeSettings) -> T:
        from infra.cassandra import connect
        from infra.settings import refuse_published_secrets
        from producers.contacts import Directory
        from producers.publisher import AsyncPublisher

        # Contacts keyed with the published HMAC key would not match the API's.
        refuse_published_secrets(settings.profile, settings.published_secrets())
        session = await asyncio.to_thread(connect, settings.cassandra)
        try:
            async with AsyncPublisher(settings.kafka, **settings.publisher_args("cli")) as pub:
                directory = Directory(
                    session,
                    pub,
                    hmac_key=settings.contacts.hmac_key.get_secret_value().encode(),
                    phone_region=settings.contacts.phone_region,
                )
                return await fn(directory)
        finally:
            session.cluster.shutdown()

    return _run(go)


@users_app.command("set")
def users_set(
    user: str,
    email: str | None = typer.Option(None),
    phone: str | None = typer.Option(None),
    locale: str | None = typer.Option(None),
    timezone: str | None = typer.Option(None, help="IANA name, e.g. Asia/Seoul."),
    quiet_hours: str | None = typer.Option(None, help="HH:MM-HH:MM local time."),
) -> None:
    """Create or update a user (only the options given change)."""
    from producers.contacts import UNSET

    given = {
        k: v
        for k, v in {
            "email": email,
            "phone": phone,
            "locale": locale,
            "timezone": timezone,
            "quiet_hours": quiet_hours,
        }.items()
        if v is not None
    }
    fields: dict[str, Any] = {k: given.get(k, UNSET) for k in given}
    _print(_with_directory(lambda d: d.set_user(user, **fields)))


@users_app.command("clear")
def users_clear(user: str, field: str = typer.Argument(..., help="email|phone|locale|...")) -> None:
    """Clear one field of a user."""
    if field not in ("email", "phone", "locale", "timezone", "quiet_hours"):
        raise typer.BadParameter("email, phone, locale, timezone or quiet_hours")
    _print(_with_directory(lambda d: d.set_user(user, **{field: None})))


@users_app.command("show")
def users_show(user: str) -> None:
    """Print a user's contacts, devices and preferences."""
    found = _with_directory(lambda d: d.get_user(user))
    if found is None:
        typer.echo("unknown user", err=True)
        raise typer.Exit(1)
    _print(found)


@users_app.command("delete")
def users_delete(user: str) -> None:
    """Delete a user with their devices and preferences."""
    if not _with_directory(lambda d: d.delete_user(user)):
        typer.echo("unknown user", err=True)
        raise typer.Exit(1)


@users_app.command("add-device")
def users_add_device(
    user: str,
    platform: str = typer.Option(..., help="ios | android | web"),
    token: str = typer.Option(...),
    app_id: str = typer.Option(...),
) -> None:
    """Register a device; prints its id."""
    _print(
        {"device_id": _with_directory(lambda d: d.register_device(user, platform, token, app_id))}
    )


@users_app.command("remove-device")
def users_remove_device(user: str, device_id: str) -> None:
    """Unregister a device."""
    if not _with_directory(lambda d: d.unregister_device(user, device_id)):
        typer.echo("unknown device", err=True)
        raise typer.Exit(1)


@users_app.command("pref")
def users_pref(
    user: str,
    channel: str = typer.Argument(..., help="push | sms | email"),
    category: str = typer.Argument("*", help="A category or '*' for all."),
    opt_in: bool = typer.Option(..., "--opt-in/--opt-out"),
) -> None:
    """Opt a user in or out of a channel for a category."""
    _print(_with_directory(lambda d: d.set_preferences(user, [(channel, category, opt_in)])))


# --- templates --------------------------------------------------------------------


def _with_templates(fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async def go(settings: IntakeSettings) -> T:
        from infra.cassandra import connect
        from producers.publisher import AsyncPublisher
        from producers.templates import Conflict, TemplateStore

        session = await asyncio.to_thread(connect, settings.cassandra)
        try:
            async with AsyncPublisher(settings.kafka, **settings.publisher_args("cli")) as pub:
                return await fn(TemplateStore(session, pub))
        except Conflict as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
        finally:
            session.cluster.shutdown()

    return _run(go)


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise typer.BadParameter(str(err), param_hint="FILE") from None


TEMPLATE_FILE = typer.Argument(
    ..., help="JSON: {params, examples, variants: [{channel, locale, ...}], description}; - = stdin"
)


@templates_app.command("create")
def templates_create(template_id: str, file: str = TEMPLATE_FILE) -> None:
    """Create a template (version 1) from a JSON file, validated like the API does."""
    body = _read_json(file)

    async def go(store: Any) -> Any:
        return (await store.create(template_id, body, author="cli")).as_dict()

    _print(_with_templates(go))


@templates_app.command("version")
def templates_version(template_id: str, file: str = TEMPLATE_FILE) -> None:
    """Add a version; it is the latest for the next request, in every processor."""
    body = _read_json(file)

    async def go(store: Any) -> Any:
        try:
            return (await store.add_version(template_id, body, author="cli")).as_dict()
        except LookupError:
            typer.echo("unknown template", err=True)
            raise typer.Exit(1) from None

    _print(_with_templates(go))


@templates_app.command("list")
def templates_list() -> None:
    """Every template with its latest version."""
    _print(_with_templates(lambda store: store.list()))


async def _find(store: Any, ref: str, version: int | None) -> Any:
    from producers.templates import split_ref

    template_id, pinned = split_ref(ref)
    found = await store.get(template_id, version or pinned)
    if found is None:
        typer.echo("unknown template or version", err=True)
        raise typer.Exit(1)
    return found


@templates_app.command("show")
def templates_show(
    template_id: str, version: int | None = typer.Option(None, help="Default: the latest.")
) -> None:
    """One version of a template (`id` or `id@n`)."""

    async def go(store: Any) -> Any:
        return (await _find(store, template_id, version)).as_dict()

    _print(_with_templates(go))


@templates_app.command("delete")
def templates_delete(template_id: str) -> None:
    """Delete a template and all its versions."""
    if not _with_templates(lambda store: store.delete(template_id)):
        typer.echo("unknown template", err=True)
        raise typer.Exit(1)


@templates_app.command("preview")
def templates_preview(
    template_id: str,
    locale: str = typer.Option("en"),
    param: list[str] = typer.Option([], "--param", "-p", help="Sample parameter k=v."),
    channel: list[str] = typer.Option([], "--channel", help="push | sms | email (repeat)."),
    version: int | None = typer.Option(None, help="Default: the latest."),
) -> None:
    """Render a version for a locale, per channel, with sample params; nothing is sent."""
    from jinja2 import TemplateError

    from producers.templates import preview

    params = _params(param)

    async def go(store: Any) -> Any:
        found = await _find(store, template_id, version)
        try:
            return preview(found, locale, params, channel)
        except TemplateError as err:
            typer.echo(f"does not render: {err}", err=True)
            raise typer.Exit(2) from None

    _print(_with_templates(go))


# --- schedules --------------------------------------------------------------------


def _with_schedules(fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async def go(settings: IntakeSettings) -> T:
        from infra.cassandra import connect
        from producers.schedules import RecurringStore

        session = await asyncio.to_thread(connect, settings.cassandra)
        try:
            return await fn(RecurringStore(session))
        finally:
            session.cluster.shutdown()

    return _run(go)


@schedules_app.command("create")
def schedules_create(
    owner: str = typer.Option(..., help="Owning source service."),
    cron: str = typer.Option(..., help="Five-field cron, e.g. '0 9 * * mon'."),
    request: str = typer.Option(..., help="JSON of the request (no event_id)."),
    timezone: str = typer.Option("UTC"),
    schedule_id: str | None = typer.Option(None),
) -> None:
    """Create a recurring schedule."""
    try:
        body = json.loads(request)
    except json.JSONDecodeError:
        raise typer.BadParameter("not JSON", param_hint="--request") from None
    s = _with_schedules(
        lambda st: st.create(owner, cron, body, timezone=timezone, schedule_id=schedule_id)
    )
    _print(s.as_dict())


@schedules_app.command("list")
def schedules_list(owner: str = typer.Option(...)) -> None:
    """List an owner's recurring schedules."""
    _print([s.as_dict() for s in _with_schedules(lambda st: st.of_owner(owner))])


@schedules_app.command("delete")
def schedules_delete(schedule_id: str, owner: str = typer.Option(...)) -> None:
    """Delete a recurring schedule."""
    if not _with_schedules(lambda st: st.delete(owner, schedule_id)):
        typer.echo("unknown schedule", err=True)
        raise typer.Exit(1)


# --- api clients ------------------------------------------------------------------


def _scopes(values: list[str]) -> list[str]:
    from producers.clients import check_scopes

    try:
        check_scopes(set(values))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    return values


@clients_app.command("create")
def clients_create(
    name: str,
    source: list[str] = typer.Option([], help="Sources it may send as (default: its name)."),
    category: list[str] = typer.Option([], help="Categories it may send (default: all)."),
    rate: float | None = typer.Option(None, help="Quota, requests/s."),
    burst: int | None = typer.Option(None, help="Quota burst."),
    scope: list[str] = typer.Option(
        [],
        help="contacts:read|write, templates:read|write (default: none, send only).",
        callback=_scopes,
    ),
) -> None:
    """Create a send API client; prints its key and secret (the secret only this once)."""
    from infra.cassandra import connect
    from producers.clients import ClientStore

    settings = IntakeSettings()
    session = connect(settings.cassandra)
    try:
        new = ClientStore(session).create(
            name,
            sources=set(source),
            categories=set(category),
            rate_per_s=rate if rate is not None else settings.api.default_rate_per_s,
            burst=burst if burst is not None else settings.api.default_burst,
            scopes=set(scope),
        )
    finally:
        session.cluster.shutdown()
    _print({"name": name, "app_key": new.client.app_key, "app_secret": new.secret})
    typer.echo("Store the secret now: it is kept only as a hash.", err=True)


@clients_app.command("disable")
def clients_disable(app_key: str) -> None:
    """Disable a client (refused within the API's cache TTL)."""
    from infra.cassandra import connect
    from producers.clients import ClientStore

    session = connect(IntakeSettings().cassandra)
    try:
        ClientStore(session).disable(app_key)
    finally:
        session.cluster.shutdown()


@clients_app.command("grant")
def clients_grant(
    app_key: str,
    scope: list[str] = typer.Argument(
        ..., help="contacts:read|write, templates:read|write.", callback=_scopes
    ),
) -> None:
    """Add scopes (contacts:read|write, templates:read|write) to an existing client."""
    from infra.cassandra import connect
    from producers.clients import ClientStore

    session = connect(IntakeSettings().cassandra)
    try:
        found = ClientStore(session).grant(app_key, set(scope))
    finally:
        session.cluster.shutdown()
    if not found:
        typer.echo("unknown app key", err=True)
        raise typer.Exit(1)


# --- services ---------------------------------------------------------------------


@app.command("api")
def api(host: str | None = typer.Option(None), port: int | None = typer.Option(None)) -> None:
    """Run the send API (HTTP, default :8080)."""
    import uvicorn

    from infra.logging import configure_logging
    from infra.settings import refuse_published_secrets
    from producers.api import create_app

    settings = IntakeSettings()
    refuse_published_secrets(settings.profile, settings.published_secrets())
    configure_logging("send-api", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


@app.command("scheduler")
def scheduler() -> None:
    """Run the recurring-schedule firing loop."""
    from infra.logging import configure_logging

    settings = IntakeSettings()
    configure_logging("scheduler", settings.log_level)
    asyncio.run(_scheduler(settings))


async def _scheduler(settings: IntakeSettings) -> None:
    from infra.cassandra import connect
    from producers.publisher import AsyncPublisher
    from producers.schedules import RecurringScheduler, RecurringStore

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    session = await asyncio.to_thread(connect, settings.cassandra)
    try:
        async with AsyncPublisher(settings.kafka, **settings.publisher_args("scheduler")) as pub:
            fire = RecurringScheduler(
                RecurringStore(session),
                pub,
                misfire_grace=timedelta(seconds=settings.scheduler.misfire_grace_s),
                owners=settings.scheduler.owners,
            )
            await fire.run(stop, settings.scheduler.interval_s)
    finally:
        session.cluster.shutdown()


def main() -> None:
    sys.exit(typer.main.get_command(app).main(prog_name="python -m producers"))
