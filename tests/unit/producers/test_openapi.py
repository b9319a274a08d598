"""The OpenAPI document covers exactly the routes the app serves."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from producers.api import ROUTES, Intake, create_app
from producers.openapi import openapi_document
from producers.settings import IntakeSettings


def _served() -> set[tuple[str, str]]:
    out = set()
    for route in ROUTES:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((route.path, method.lower()))
    return out


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = openapi_document()
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert documented == _served()


def test_document_is_openapi_31_with_security_and_schemas() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["components"]["securitySchemes"]) == {
        "appKey",
        "appSecret",
        "basic",
        "userToken",
    }
    schemas = doc["components"]["schemas"]
    assert "user_id" in schemas["NotificationRequest"]["properties"]
    assert "Content" in schemas
    post = doc["paths"]["/v1/notifications"]["post"]
    assert {"202", "400", "401", "403", "409", "429"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    # Every $ref resolves.
    text = str(doc)
    for name in schemas:
        text = text.replace(f"#/components/schemas/{name}'", "")
    assert "#/components/schemas/" not in text


async def test_served_without_credentials() -> None:
    settings = IntakeSettings()
    app = create_app(settings, Intake(settings))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as client:
        r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.json()["info"]["title"] == "herald send API"


def test_tenant_isolation_codes_are_documented() -> None:
    paths = openapi_document()["paths"]
    for method in ("get", "delete"):
        assert "404" in paths["/v1/notifications/{event_id}"][method]["responses"]
    contacts = [
        op for path, ops in paths.items() if path.startswith("/v1/users") for op in ops.values()
    ]
    assert contacts and all("403" in op["responses"] for op in contacts)
