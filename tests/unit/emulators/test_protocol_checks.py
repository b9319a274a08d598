"""The emulators check the real protocols: each refuses what the real provider refuses.

ASGI in-process (no server); APNs requests are presented as HTTP/2 by a scope wrapper.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.emulators import apns, fcm, sendgrid, twilio, vonage, webpush
from infra.emulators.state import EmulatorState

DEVICE = "ab" * 32


class _AsHttp2:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app({**scope, "http_version": "2"}, receive, send)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emu")


# --- APNs -------------------------------------------------------------------------------

APNS_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def apns_state() -> EmulatorState:
    return EmulatorState()


@pytest.fixture
def apns_client(apns_state: EmulatorState) -> httpx.AsyncClient:
    key = apns.SigningKey("KID1", "TEAM1", APNS_KEY.public_key(), frozenset({"app.id"}))
    return client(_AsHttp2(apns.app(apns_state, [key])))


def apns_jwt(key: Any = APNS_KEY, kid: str = "KID1", iss: str = "TEAM1", age: float = 0) -> str:
    return jwt.encode(
        {"iss": iss, "iat": int(time.time() - age)}, key, "ES256", headers={"kid": kid}
    )


def apns_headers(**over: str) -> dict[str, str]:
    h = {
        "authorization": f"bearer {apns_jwt()}",
        "apns-topic": "app.id",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-id": str(uuid.uuid4()),
    }
    h.update(over)
    return {k: v for k, v in h.items() if v != ""}


PAYLOAD = json.dumps({"aps": {"alert": {"title": "t", "body": "b"}}})


async def test_apns_accepts_a_well_formed_push(
    apns_client: httpx.AsyncClient, apns_state: EmulatorState
) -> None:
    headers = apns_headers()
    resp = await apns_client.post(f"/3/device/{DEVICE}", headers=headers, content=PAYLOAD)
    assert resp.status_code == 200
    assert resp.headers["apns-id"] == headers["apns-id"]
    [entry] = apns_state.ledger
    assert (entry.delivery_id, entry.address, entry.title, entry.body) == (
        headers["apns-id"],
        DEVICE,
        "t",
        "b",
    )


@pytest.mark.parametrize(
    ("headers", "path_token", "payload", "status", "reason"),
    [
        ({"authorization": ""}, DEVICE, PAYLOAD, 403, "MissingProviderToken"),
        (
            {"authorization": f"bearer {apns_jwt(ec.generate_private_key(ec.SECP256R1()))}"},
            DEVICE,
            PAYLOAD,
            403,
            "InvalidProviderToken",
        ),
        (
            {"authorization": f"bearer {apns_jwt(kid='OTHER')}"},
            DEVICE,
            PAYLOAD,
            403,
            "InvalidProviderToken",
        ),
        (
            {"authorization": f"bearer {apns_jwt(iss='OTHER')}"},
            DEVICE,
            PAYLOAD,
            403,
            "InvalidProviderToken",
        ),
        (
            {"authorization": f"bearer {apns_jwt(age=3700)}"},
            DEVICE,
            PAYLOAD,
            403,
            "ExpiredProviderToken",
        ),
        ({"apns-topic": ""}, DEVICE, PAYLOAD, 400, "MissingTopic"),
        ({"apns-topic": "other.app"}, DEVICE, PAYLOAD, 400, "TopicDisallowed"),
        ({"apns-push-type": ""}, DEVICE, PAYLOAD, 400, "InvalidPushType"),
        (
            {"apns-push-type": "background", "apns-priority": "10"},
            DEVICE,
            PAYLOAD,
            400,
            "BadPriority",
        ),
        ({"apns-id": "not-a-uuid"}, DEVICE, PAYLOAD, 400, "BadMessageId"),
        ({"apns-expiration": "tomorrow"}, DEVICE, PAYLOAD, 400, "BadExpirationDate"),
        ({"apns-collapse-id": "x" * 65}, DEVICE, PAYLOAD, 400, "BadCollapseId"),
        ({}, "not-hex", PAYLOAD, 400, "BadDeviceToken"),
        ({}, DEVICE, "", 400, "PayloadEmpty"),
        ({}, DEVICE, json.dumps({"aps": {"alert": "x" * 5000}}), 413, "PayloadTooLarge"),
    ],
)
async def test_apns_refuses_what_apple_refuses(
    apns_client: httpx.AsyncClient,
    apns_state: EmulatorState,
    headers: dict[str, str],
    path_token: str,
    payload: str,
    status: int,
    reason: str,
) -> None:
    resp = await apns_client.post(
        f"/3/device/{path_token}", headers=apns_headers(**headers), content=payload
    )
    assert (resp.status_code, resp.json()["reason"]) == (status, reason)
    assert apns_state.ledger == []


async def test_apns_refuses_http_1_1(apns_state: EmulatorState) -> None:
    key = apns.SigningKey("KID1", "TEAM1", APNS_KEY.public_key(), frozenset({"app.id"}))
    async with client(apns.app(apns_state, [key])) as c:
        resp = await c.post(f"/3/device/{DEVICE}", headers=apns_headers(), content=PAYLOAD)
    assert resp.status_code == 505


# --- FCM --------------------------------------------------------------------------------

SA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ACCOUNT = fcm.ServiceAccount(
    "proj", "sender@proj.iam.gserviceaccount.com", "k1", SA_KEY.public_key()
)
FCM_TOKEN = "abcdefgh:" + "A" * 40


def assertion(
    key: Any = SA_KEY, scope: str = "https://www.googleapis.com/auth/firebase.messaging"
) -> str:
    now = int(time.time())
    claims = {
        "iss": ACCOUNT.client_email,
        "aud": fcm.GOOGLE_TOKEN_AUDIENCE,
        "scope": scope,
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, key, "RS256", headers={"kid": "k1"})


async def fcm_token(c: httpx.AsyncClient, signed: str) -> httpx.Response:
    return await c.post(
        "/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": signed},
    )


async def test_fcm_token_endpoint_checks_the_assertion() -> None:
    async with client(fcm.app(EmulatorState(), [ACCOUNT])) as c:
        assert (await fcm_token(c, assertion())).json()["token_type"] == "Bearer"
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = await fcm_token(c, assertion(other_key))
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
        scope = await fcm_token(c, assertion(scope="https://www.googleapis.com/auth/drive"))
        assert scope.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("message", "project", "status"),
    [
        ({"token": FCM_TOKEN, "notification": {"title": "t"}}, "proj", 200),
        ({"token": FCM_TOKEN, "topic": "news", "notification": {"title": "t"}}, "proj", 400),
        ({"token": "short", "notification": {"title": "t"}}, "proj", 400),
        ({"token": FCM_TOKEN, "data": {"n": 1}}, "proj", 400),
        ({"token": FCM_TOKEN, "android": {"priority": "urgent"}}, "proj", 400),
        ({"token": FCM_TOKEN, "android": {"ttl": "1 hour"}}, "proj", 400),
        ({"token": FCM_TOKEN, "notification": {"title": "t"}}, "someone-else", 403),
    ],
)
async def test_fcm_checks_bearer_project_and_message_shape(
    message: dict[str, Any], project: str, status: int
) -> None:
    state = EmulatorState()
    async with client(fcm.app(state, [ACCOUNT])) as c:
        access = (await fcm_token(c, assertion())).json()["access_token"]
        resp = await c.post(
            f"/v1/projects/{project}/messages:send",
            json={"message": message},
            headers={"authorization": f"Bearer {access}"},
        )
        unauthenticated = await c.post("/v1/projects/proj/messages:send", json={"message": message})
    assert resp.status_code == status, resp.text
    assert len(state.ledger) == (1 if status == 200 else 0)
    assert unauthenticated.status_code == 401
    if status != 200:
        assert resp.json()["error"]["details"][0]["@type"].endswith("FcmError")


# --- SMS and the email API ---------------------------------------------------------------


async def test_twilio_checks_basic_auth_and_form() -> None:
    state = EmulatorState()
    url = "/2010-04-01/Accounts/AC1/Messages.json"
    async with client(twilio.app(state, {"AC1": "tok"})) as c:
        wrong = await c.post(
            url, data={"To": "+14155550100", "From": "+1500", "Body": "x"}, auth=("AC1", "nope")
        )
        bad_to = await c.post(
            url, data={"To": "0800", "From": "+1500", "Body": "x"}, auth=("AC1", "tok")
        )
        no_body = await c.post(
            url, data={"To": "+14155550100", "From": "+1500"}, auth=("AC1", "tok")
        )
        ok = await c.post(
            url, data={"To": "+14155550100", "From": "+1500", "Body": "x"}, auth=("AC1", "tok")
        )
    assert (wrong.status_code, wrong.json()["code"]) == (401, 20003)
    assert (bad_to.status_code, bad_to.json()["code"]) == (400, 21211)
    assert (no_body.status_code, no_body.json()["code"]) == (400, 21602)
    assert ok.status_code == 201 and ok.json()["sid"].startswith("SM")
    assert len(state.ledger) == 1


async def test_vonage_checks_credentials_and_number() -> None:
    state = EmulatorState()
    form = {"api_key": "k", "api_secret": "s", "from": "herald", "to": "14155550100", "text": "x"}
    async with client(vonage.app(state, {"k": "s"})) as c:
        wrong = await c.post("/sms/json", data={**form, "api_secret": "nope"})
        bad_to = await c.post("/sms/json", data={**form, "to": "+1 415"})
        ok = await c.post("/sms/json", data=form)
    assert wrong.json()["messages"][0]["status"] == "4"
    assert bad_to.json()["messages"][0]["status"] == "3"
    assert ok.json()["messages"][0]["status"] == "0"
    assert [e.address for e in state.ledger] == ["+14155550100"]


async def test_sendgrid_checks_key_and_body() -> None:
    state = EmulatorState()
    body = {
        "personalizations": [{"to": [{"email": "ann@example.com"}]}],
        "from": {"email": "n@h.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "hi"}],
    }
    async with client(sendgrid.app(state, {"SG.k"})) as c:
        wrong = await c.post("/v3/mail/send", json=body, headers={"authorization": "Bearer SG.x"})
        bad = await c.post(
            "/v3/mail/send",
            json={**body, "personalizations": [{"to": [{"email": "nope"}]}]},
            headers={"authorization": "Bearer SG.k"},
        )
        ok = await c.post("/v3/mail/send", json=body, headers={"authorization": "Bearer SG.k"})
    assert wrong.status_code == 401
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (
        400,
        "personalizations.0.to.0.email",
    )
    assert ok.status_code == 202 and ok.headers["x-message-id"]
    assert len(state.ledger) == 1


# --- Web Push -----------------------------------------------------------------------------


async def test_webpush_checks_vapid_key_encryption_and_subscription() -> None:
    from senders.providers.webpush import VapidSigner, encrypt, parse_subscription

    state, service = EmulatorState(), webpush.PushService()
    vapid = ec.generate_private_key(ec.SECP256R1())
    signer = VapidSigner(vapid, "mailto:ops@example.com")
    sub = service.subscribe("http://emu", signer.public_key)
    endpoint, p256dh, auth = parse_subscription(sub)
    path = endpoint.removeprefix("http://emu")
    body = encrypt(json.dumps({"title": "t", "body": "b"}).encode(), p256dh, auth)
    good = {
        "authorization": signer.header("http://emu"),
        "content-encoding": "aes128gcm",
        "ttl": "60",
    }
    stranger = VapidSigner(ec.generate_private_key(ec.SECP256R1()), "mailto:x@example.com")

    async with client(webpush.app(state, service)) as c:
        unknown = await c.post("/fcm/send/nope", content=body, headers=good)
        wrong_key = await c.post(
            path, content=body, headers={**good, "authorization": stranger.header("http://emu")}
        )
        wrong_aud = await c.post(
            path, content=body, headers={**good, "authorization": signer.header("http://other")}
        )
        no_ttl = await c.post(
            path, content=body, headers={k: v for k, v in good.items() if k != "ttl"}
        )
        plain = await c.post(
            path, content=b"hello", headers={**good, "content-encoding": "identity"}
        )
        # The last byte flipped: replaced by a fixed byte, it was unchanged 1 time in 256.
        garbled = await c.post(path, content=body[:-1] + bytes([body[-1] ^ 0xFF]), headers=good)
        ok = await c.post(path, content=body, headers=good)

    assert [r.status_code for r in (unknown, wrong_key, wrong_aud, no_ttl, plain, garbled)] == [
        404,
        403,
        403,
        400,
        415,
        400,
    ]
    assert ok.status_code == 201 and ok.headers["location"]
    [entry] = state.ledger
    assert (entry.provider, entry.channel, entry.title, entry.body) == (
        "webpush",
        "push.web",
        "t",
        "b",
    )
