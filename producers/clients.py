"""Send API clients: app key + secret, what each may send, and its quota.

Secrets are stored only as salted scrypt hashes and never logged. Checking scrypt costs
tens of milliseconds on purpose, so a verified (key, secret) pair is remembered in
process for `cache_ttl_s` as an HMAC under a per-process random key: a request with a
known-good secret costs one hash, and a revoked client is refused within the TTL.

Failed logins are throttled per app key and per client address (token buckets of
`failed_logins_burst`, refilled at `failed_logins_per_minute`): each verification that is not
a cache hit takes a token from both, a success gives them back, and an empty bucket answers
`LoginThrottled` without hashing. An unknown or disabled key is checked against a dummy hash,
so it costs the same scrypt as a wrong secret and the answer time tells nothing about which
keys exist. A client whose secret is cached still gets in while its key is throttled.

Scopes grant access beyond sending: `contacts:read` (a user's contacts, devices and
preferences) and `contacts:write` (changing them). A client without them may send, but may
not read or change anyone's email, phone or devices; none are granted by default.
`templates:read` (list, show, preview) and `templates:write` (create, new version, delete)
do the same for the templates every client's notifications use. `inbox:token` mints a
short-lived user token for one user's in-app feed (what a browser holds);
`inbox:read`/`inbox:write` read and change any user's feed from a server.

A client's `client_id` (derived from its app key) scopes what it creates: the event ids of
its requests start with it, so two clients' idempotency keys never collide and a client
sees and cancels only its own notifications.

Quotas are token buckets held in each API process (rate per second, burst). With N API
replicas behind a balancer a client gets up to N times its quota; that is the documented
trade-off for not paying a Cassandra round trip per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session

from infra.cache import TTLCache
from infra.cassandra import aexecute
from infra.ratelimit import TokenBucket
from schemas.errors import HeraldError

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
CONTACTS_READ, CONTACTS_WRITE = "contacts:read", "contacts:write"
TEMPLATES_READ, TEMPLATES_WRITE = "templates:read", "templates:write"
# inbox:token mints a user token for one user's feed; inbox:read / inbox:write let a
# server read or change any user's feed directly.
INBOX_TOKEN, INBOX_READ, INBOX_WRITE = "inbox:token", "inbox:read", "inbox:write"
SCOPES = frozenset(
    {
        CONTACTS_READ,
        CONTACTS_WRITE,
        TEMPLATES_READ,
        TEMPLATES_WRITE,
        INBOX_TOKEN,
        INBOX_READ,
        INBOX_WRITE,
    }
)


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class ApiClient:
    app_key: str
    name: str
    sources: frozenset[str]
    categories: frozenset[str]
    rate_per_s: float
    burst: int
    disabled: bool = False
    scopes: frozenset[str] = frozenset()

    @property
    def client_id(self) -> str:
        """Stable, public id of this client: 48 bits of SHA-256 of the app key, short enough
        that `<client_id>:<180-char key>:<batch index>` fits an event id (200 chars)."""
        return hashlib.sha256(self.app_key.encode()).hexdigest()[:12]

    def may_send_as(self, source: str) -> bool:
        return source in (self.sources or {self.name})

    def may_send(self, category: str) -> bool:
        return not self.categories or category in self.categories


class LoginThrottled(HeraldError):
    """Too many failed logins for this app key or from this address."""

    retriable = True

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after:.0f}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class NewClient:
    client: ApiClient
    secret: str  # shown once


class ClientStore:
    """`herald.api_clients` with verification and quota state for one API process."""

    def __init__(
        self,
        session: Session,
        *,
        cache_ttl_s: float = 30.0,
        failed_logins_burst: int = 10,
        failed_logins_per_minute: float = 10.0,
    ) -> None:
        self.session = session
        self.failed_logins_burst = failed_logins_burst
        self.failed_logins_per_s = failed_logins_per_minute / 60
        self._failures: dict[str, TokenBucket] = {}
        self._dummy_hash = hash_secret(secrets.token_urlsafe(16))
        self._get = session.prepare("SELECT * FROM api_clients WHERE app_key = ?")
        self._put = session.prepare(
            "INSERT INTO api_clients (app_key, name, secret_hash, sources, categories,"
            " rate_per_s, burst, disabled, created_at, scopes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._disable = session.prepare("UPDATE api_clients SET disabled = true WHERE app_key = ?")
        # IF EXISTS: an UPDATE alone would create a client row for a mistyped key.
        self._grant = session.prepare(
            "UPDATE api_clients SET scopes = scopes + ? WHERE app_key = ? IF EXISTS"
        )
        self._cache_key = secrets.token_bytes(32)
        self._verified: TTLCache[tuple[bytes, ApiClient]] = TTLCache(100_000, cache_ttl_s)
        self._buckets: dict[str, TokenBucket] = {}

    def create(
        self,
        name: str,
        *,
        sources: set[str] | None = None,
        categories: set[str] | None = None,
        rate_per_s: float = 100.0,
        burst: int = 200,
        scopes: set[str] | None = None,
    ) -> NewClient:
        check_scopes(scopes or set())
        app_key = f"hk_{secrets.token_hex(12)}"
        secret = secrets.token_urlsafe(32)
        client = ApiClient(
            app_key,
            name,
            frozenset(sources or ()),
            frozenset(categories or ()),
            rate_per_s,
            burst,
            scopes=frozenset(scopes or ()),
        )
        self.session.execute(
            self._put,
            (
                app_key,
                name,
                hash_secret(secret),
                set(client.sources),
                set(client.categories),
                rate_per_s,
                burst,
                False,
                datetime.now(UTC),
                set(client.scopes),
            ),
        )
        return NewClient(client, secret)

    def disable(self, app_key: str) -> None:
        self.session.execute(self._disable, (app_key,))

    def grant(self, app_key: str, scopes: set[str]) -> bool:
        """Add scopes to a client (effective within the API's cache TTL); False: no such key."""
        check_scopes(scopes)
        return bool(self.session.execute(self._grant, (scopes, app_key)).was_applied)

    async def authenticate(
        self, app_key: str, secret: str, *, address: str | None = None
    ) -> ApiClient | None:
        """The client for a valid, enabled key + secret; None otherwise. Raises
        `LoginThrottled` after too many failures for this key or from `address`."""
        proof = hmac.new(self._cache_key, f"{app_key}\0{secret}".encode(), "sha256").digest()
        hit = self._verified.get(app_key)
        if hit and hmac.compare_digest(hit[0], proof):
            return hit[1]
        buckets = self._attempt([f"key:{app_key}", *([f"address:{address}"] if address else [])])
        rows = await aexecute(self.session, self._get, (app_key,))
        row = rows[0] if rows else {}
        usable = bool(row.get("secret_hash")) and not row.get("disabled")
        # Off the event loop: scrypt takes tens of milliseconds by design.
        stored = row["secret_hash"] if usable else self._dummy_hash
        if not await asyncio.to_thread(verify_secret, secret, stored) or not usable:
            return None
        for bucket in buckets:
            bucket.refund()
        client = _client(row)
        self._verified.put(app_key, (proof, client))
        return client

    def _attempt(self, keys: list[str]) -> list[TokenBucket]:
        """Take a token for a verification from each bucket, or none and raise."""
        if len(self._failures) > 100_000:
            self._failures.clear()
        buckets = [
            self._failures.setdefault(
                k, TokenBucket(self.failed_logins_per_s, self.failed_logins_burst)
            )
            for k in keys
        ]
        waits = [b.take() for b in buckets]
        if any(waits):
            for bucket, wait in zip(buckets, waits, strict=True):
                if not wait:
                    bucket.refund()
            raise LoginThrottled(max(waits))
        return buckets

    def take(self, client: ApiClient, n: int = 1) -> float:
        bucket = self._buckets.get(client.app_key)
        if bucket is None or bucket.rate != client.rate_per_s or bucket.capacity != client.burst:
            bucket = self._buckets[client.app_key] = TokenBucket(client.rate_per_s, client.burst)
        return bucket.take(n)


def check_scopes(scopes: set[str]) -> None:
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")


def _client(row: dict[str, Any]) -> ApiClient:
    return ApiClient(
        app_key=row["app_key"],
        name=row["name"],
        sources=frozenset(row.get("sources") or ()),
        categories=frozenset(row.get("categories") or ()),
        rate_per_s=float(row.get("rate_per_s") or 0.0),
        burst=int(row.get("burst") or 0),
        disabled=bool(row.get("disabled")),
        scopes=frozenset(row.get("scopes") or ()),
    )
