"""Avro single-object encoding, with writer schemas resolved by fingerprint.

Wire format (Avro spec, "Single-object encoding"): 0xC3 0x01, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form, then the Avro binary body.
A reader resolves the writer schema by fingerprint among every version shipped in
`schemas/avro` and reads into the newest version of the same record (schema resolution),
so old and new producers and consumers interoperate.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_FILE_RE = re.compile(r"^(?P<name>\w+)\.v(?P<version>\d+)\.avsc$")

REQUEST = "herald.NotificationRequest"
DELIVERY = "herald.Delivery"
STATUS = "herald.StatusEvent"
USER_CHANGE = "herald.UserChange"


class DecodeError(ValueError):
    """Bytes that cannot be decoded; `reason` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaVersion:
    fullname: str
    version: int
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian as on the wire

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def crc64_fingerprint(parsed: Any) -> bytes:
    hex_fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    # fastavro renders the fingerprint big-endian; the wire carries it little-endian.
    return int(hex_fp, 16).to_bytes(8, "little")


def load_schema_file(text: str, fullname_hint: str, version: int) -> SchemaVersion:
    parsed = fastavro.parse_schema(json.loads(text), _write_hint=True, _force=True)
    return SchemaVersion(fullname_hint, version, parsed, crc64_fingerprint(parsed))


class Registry:
    """Every schema version shipped with herald, by fingerprint and by name."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self.by_fingerprint = {v.fingerprint: v for v in versions}
        self.by_name: dict[str, list[SchemaVersion]] = {}
        for v in sorted(versions, key=lambda v: v.version):
            self.by_name.setdefault(v.fullname, []).append(v)

    def latest(self, fullname: str) -> SchemaVersion:
        try:
            return self.by_name[fullname][-1]
        except KeyError:
            raise KeyError(f"no schema named {fullname!r}") from None

    def version(self, fullname: str, version: int) -> SchemaVersion:
        for v in self.by_name.get(fullname, []):
            if v.version == version:
                return v
        raise KeyError(f"no schema {fullname!r} version {version}")


@cache
def registry() -> Registry:
    versions = []
    folder = resources.files("schemas") / "avro"
    for path in folder.iterdir():
        m = _FILE_RE.match(path.name)
        if m:
            versions.append(
                load_schema_file(path.read_text(), f"herald.{m['name']}", int(m["version"]))
            )
    return Registry(versions)


def encode(fullname: str, record: dict[str, Any], *, version: int | None = None) -> bytes:
    """Encode with the newest (or the given) version of a schema."""
    reg = registry()
    sv = reg.latest(fullname) if version is None else reg.version(fullname, version)
    buf = io.BytesIO()
    buf.write(sv.header)
    fastavro.schemaless_writer(buf, sv.parsed, record)
    return buf.getvalue()


def peek_schema(data: bytes) -> SchemaVersion:
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        raise DecodeError("bad_magic", "not Avro single-object encoded (missing C3 01 header)")
    fp = data[2:HEADER_LEN]
    sv = registry().by_fingerprint.get(fp)
    if sv is None:
        fp_hex = struct.unpack("<Q", fp)[0]
        raise DecodeError("unknown_fingerprint", f"writer schema fingerprint {fp_hex:016x}")
    return sv


def decode(data: bytes, expect: str | None = None) -> dict[str, Any]:
    """Decode into the newest version of the writer's record (or of `expect`)."""
    writer = peek_schema(data)
    if expect is not None and writer.fullname != expect:
        raise DecodeError("wrong_schema", f"expected {expect}, got {writer.fullname}")
    reader = registry().latest(writer.fullname)
    try:
        out = fastavro.schemaless_reader(
            io.BytesIO(data[HEADER_LEN:]), writer.parsed, reader.parsed
        )
    except Exception as exc:  # fastavro raises many types for corrupt bodies
        raise DecodeError("corrupt_body", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise DecodeError("corrupt_body", "decoded value is not a record")
    return out
