"""Contact registration writes Cassandra and announces every change on users.changes."""

from __future__ import annotations

import time

import pytest
from cassandra.cluster import Session

from producers.contacts import Directory
from schemas.validation import ValidationError
from tests.integration.producers.intakekit import changes_for, uid

pytestmark = pytest.mark.integration

APNS = "a1" * 32
FCM = "dXNlcjEyMzQ1Njc4:APA91b" + "x" * 134


async def test_user_contacts_are_normalized_stored_and_announced(
    directory: Directory, session: Session
) -> None:
    user = uid()
    since = int(time.time() * 1000) - 1000
    out = await directory.set_user(
        user,
        email="Ada@Example.COM",
        phone="(202) 555-0143",
        locale="en-US",
        timezone="America/New_York",
        quiet_hours="22:00-07:00",
    )
    assert out["phone"] == "+12025550143"
    assert out["email"] == "Ada@example.com"
    row = session.execute("SELECT * FROM users WHERE user_id = %s", (user,)).one()
    assert row["phone"] == "+12025550143"
    assert (row["quiet_start"], row["quiet_end"]) == (22 * 60, 7 * 60)
    assert await directory.user_for_contact("phone", "+12025550143") == user

    await directory.set_user(user, phone=None)
    row = session.execute("SELECT * FROM users WHERE user_id = %s", (user,)).one()
    assert row["phone"] is None and row["email"] == "Ada@example.com"
    assert await directory.user_for_contact("phone", "+12025550143") is None

    changes = changes_for(user, since_ms=since, count=2)
    assert [c["kind"] for c in changes] == ["contact", "contact"]


async def test_devices_register_move_and_unregister(directory: Directory, session: Session) -> None:
    alice, bob = uid(), uid()
    since = int(time.time() * 1000) - 1000
    dev = await directory.register_device(alice, "ios", APNS.upper(), "com.example.app")
    assert dev == await directory.register_device(alice, "ios", APNS, "com.example.app")
    row = session.execute(
        "SELECT * FROM devices_by_user WHERE user_id = %s AND device_id = %s", (alice, dev)
    ).one()
    assert row["device_token"] == APNS and row["platform"] == "ios"

    # The same token registered by another user leaves the first one.
    assert await directory.register_device(bob, "ios", APNS, "com.example.app") == dev
    left = session.execute("SELECT * FROM devices_by_user WHERE user_id = %s", (alice,))
    assert left.one() is None

    android = await directory.register_device(bob, "android", FCM, "com.example.app")
    assert await directory.unregister_device(bob, android)
    assert not await directory.unregister_device(bob, android)
    user = await directory.get_user(bob)
    assert user is not None and [d["device_id"] for d in user["devices"]] == [dev]

    assert {c["kind"] for c in changes_for(alice, since_ms=since, count=3)} == {"device"}
    assert len(changes_for(bob, since_ms=since, count=3)) == 3


async def test_preferences_and_delete(directory: Directory, session: Session) -> None:
    user = uid()
    since = int(time.time() * 1000) - 1000
    await directory.set_user(user, email="x@example.com")
    await directory.set_preferences(user, [("sms", "*", False), ("email", "marketing", False)])
    prefs = session.execute("SELECT * FROM preferences WHERE user_id = %s", (user,)).all()
    assert {(p["channel"], p["category"], p["opt_in"]) for p in prefs} == {
        ("sms", "*", False),
        ("email", "marketing", False),
    }
    assert await directory.delete_user(user)
    assert await directory.get_user(user) is None
    assert not session.execute("SELECT * FROM preferences WHERE user_id = %s", (user,)).all()
    kinds = [c["kind"] for c in changes_for(user, since_ms=since, count=3)]
    assert kinds == ["contact", "preference", "deleted"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"quiet_hours": "25:00-07:00"}, "quiet_hours.start"),
    ],
)
async def test_bad_contacts_name_the_field(
    directory: Directory, call: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await directory.set_user(uid(), **call)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize("user_id", ["jane@example.com", "+14155550123", "(415) 555-0123"])
async def test_a_contact_as_user_id_is_refused(directory: Directory, user_id: str) -> None:
    with pytest.raises(ValidationError) as err:
        await directory.set_user(user_id, locale="en")
    assert err.value.field == "user_id"
