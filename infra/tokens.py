"""Signed tokens' building blocks, shared by the preference/unsubscribe links
(`infra.links`) and the open/click tracking links (`processors.tracking`): compact JSON,
unpadded base64url and an HMAC-SHA256 under a key derived per purpose (the salt).

Signing runs several times per email the processor renders, so the derived key is kept
and the one-shot `hmac.digest` is used.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import re
from typing import Any

from pydantic import SecretStr

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_JSON = json.JSONEncoder(separators=(",", ":"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    # The decoder silently skips foreign characters; a token must not carry any.
    if not text or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact_json(body: dict[str, Any]) -> bytes:
    return _JSON.encode(body).encode()


@functools.lru_cache(maxsize=64)
def _key(secret: str, salt: bytes) -> bytes:
    return hmac.digest(secret.encode(), salt, "sha256")


def mac(payload: str, secret: SecretStr, salt: bytes) -> bytes:
    return hmac.digest(_key(secret.get_secret_value(), salt), payload.encode("ascii"), "sha256")
