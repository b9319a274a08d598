"""Avro single-object encoding, with writer schemas resolved by fingerprint.

Wire format (Avro spec, "Single-object encoding"): 0xC3 0x01, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form, then the Avro binary body.
Records herald 0.1 wrote with the fingerprint byte-reversed are read until 2027-01-31 (LEGACY).
A reader resolves the writer schema by fingerprint among every version shipped in
`schemas/avro` and reads into the newest version of the same record (schema resolution),
so old and new producers and consumers interoperate.

With a schema registry configured (`KafkaSettings.schema_registry_url`), `RegistryCodec`
writes the Confluent wire format instead (0x00, 4-byte big-endian schema id, Avro body),
registering each schema under the topic's `<topic>-value` subject. Its `decode` reads both
formats, so a topic can move from one to the other without a flag day.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.avro_reader import compile_reader
from schemas.avro_writer import compile_writer
from schemas.errors import HeraldError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = 5
_FILE_RE = re.compile(r"^(?P<name>\w+)\.v(?P<version>\d+)\.avsc$")

REQUEST = "herald.NotificationRequest"
DELIVERY = "herald.Delivery"
STATUS = "herald.StatusEvent"
USER_CHANGE = "herald.UserChange"
TEMPLATE_CHANGE = "herald.TemplateChange"


class DecodeError(HeraldError, ValueError):
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
    source: str = dc_field(default="", compare=False, repr=False)  # the .avsc text
    # The compiled writer of the body (schemas.avro_writer), None: fastavro writes it.
    compiled: Callable[[Mapping[str, Any]], bytes] | None = dc_field(
        default=None, compare=False, repr=False
    )
    # The compiled reader of a body it wrote (schemas.avro_reader), None: fastavro reads.
    read: Callable[[bytes, int], Any] | None = dc_field(default=None, compare=False, repr=False)

    def body(self, record: Mapping[str, Any]) -> bytes:
        if self.compiled is not None:
            return self.compiled(record)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, record)
        return buf.getvalue()

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def crc64_fingerprint(parsed: Any) -> bytes:
    # fastavro's hex string already lists the fingerprint's bytes in wire order.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def load_schema_file(text: str, fullname_hint: str, version: int) -> SchemaVersion:
    schema = json.loads(text)
    parsed = fastavro.parse_schema(schema, _write_hint=True, _force=True)
    return SchemaVersion(
        fullname_hint,
        version,
        parsed,
        crc64_fingerprint(parsed),
        text,
        compile_writer(schema),
        compile_reader(schema),
    )


class Registry:
    """Every schema version shipped with herald, by fingerprint and by name."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        # LEGACY: herald 0.1 wrote the fingerprint byte-reversed and such records stay on
        # topics for up to 30 days; read until 2027-01-31, delete in herald 0.3 (contract.md).
        legacy = {v.fingerprint[::-1]: v for v in versions}
        self.by_fingerprint = legacy | {v.fingerprint: v for v in versions}
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


def encode(fullname: str, record: Mapping[str, Any], *, version: int | None = None) -> bytes:
    """Encode with the newest (or the given) version of a schema."""
    if version is None:
        return _newest_writer(fullname)(record)
    sv = registry().version(fullname, version)
    return sv.header + sv.body(record)


@cache
def _newest_writer(fullname: str) -> Callable[[Mapping[str, Any]], bytes]:
    """The newest version's header and body writer, looked up once per schema instead of
    once per record (every record herald produces is encoded here)."""
    sv = registry().latest(fullname)
    header, body = sv.header, sv.compiled or sv.body
    return lambda record: header + body(record)


def peek_schema(data: bytes) -> SchemaVersion:
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        if len(data) > CONFLUENT_HEADER_LEN and data[:1] == CONFLUENT_MAGIC:
            raise DecodeError(
                "registry_encoded",
                "Confluent wire format: read it with codec_for(kafka.schema_registry_url)",
            )
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
    if reader is writer and writer.read is not None:  # no schema resolution: compiled
        try:
            out: dict[str, Any] = writer.read(data, HEADER_LEN)
        except Exception as exc:  # IndexError, Truncated, UnicodeDecodeError, ...
            raise DecodeError("corrupt_body", f"{type(exc).__name__}: {exc}") from exc
        return out
    return _read(data[HEADER_LEN:], writer.parsed, reader.parsed)


def _read(body: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    try:
        out = fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
    except Exception as exc:  # fastavro raises many types for corrupt bodies
        raise DecodeError("corrupt_body", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise DecodeError("corrupt_body", "decoded value is not a record")
    return out


class Codec(Protocol):
    """What producers and consumers call; `topic` picks the registry subject."""

    def encode(
        self, fullname: str, record: Mapping[str, Any], *, topic: str, version: int | None = None
    ) -> bytes: ...

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]: ...


class SingleObjectCodec:
    """The default: Avro single-object encoding, no registry needed."""

    def encode(
        self, fullname: str, record: Mapping[str, Any], *, topic: str, version: int | None = None
    ) -> bytes:
        return encode(fullname, record, version=version)

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        return decode(data, expect)


class RegistryCodec:
    """Confluent wire format through a schema registry client.

    `client` is a `confluent_kafka.schema_registry.SchemaRegistryClient` (or anything with
    its `register_schema(subject, Schema) -> int` and `get_schema(id) -> Schema`). Ids are
    cached, so the registry is asked once per schema and subject per process. A registry
    that cannot be reached raises from the client: retriable, nothing was produced.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._ids: dict[tuple[str, bytes], int] = {}
        self._writers: dict[int, tuple[str, Any]] = {}

    @classmethod
    def from_url(cls, url: str) -> RegistryCodec:
        """`mock://<scope>` gives confluent-kafka's in-process mock registry, for tests."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient.new_client({"url": url}))

    def schema_id(self, sv: SchemaVersion, topic: str) -> int:
        subject = f"{topic}-value"  # Confluent's default TopicNameStrategy
        key = (subject, sv.fingerprint)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            self._ids[key] = int(self.client.register_schema(subject, Schema(sv.source, "AVRO")))
        return self._ids[key]

    def encode(
        self, fullname: str, record: Mapping[str, Any], *, topic: str, version: int | None = None
    ) -> bytes:
        reg = registry()
        sv = reg.latest(fullname) if version is None else reg.version(fullname, version)
        return CONFLUENT_MAGIC + self.schema_id(sv, topic).to_bytes(4, "big") + sv.body(record)

    def _writer(self, schema_id: int) -> tuple[str, Any]:
        if schema_id not in self._writers:
            schema = self.client.get_schema(schema_id)
            parsed = fastavro.parse_schema(json.loads(schema.schema_str), _force=True)
            if not isinstance(parsed, dict):
                raise DecodeError("wrong_schema", f"schema {schema_id} is not a record")
            self._writers[schema_id] = (str(parsed["name"]), parsed)
        return self._writers[schema_id]

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        if data[:2] == MAGIC:
            return decode(data, expect)
        if len(data) < CONFLUENT_HEADER_LEN or data[:1] != CONFLUENT_MAGIC:
            raise DecodeError("bad_magic", "neither Confluent wire format nor single-object")
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big")
        try:
            fullname, writer = self._writer(schema_id)
        except Exception as exc:
            raise DecodeError("unknown_schema_id", f"{schema_id}: {exc}") from exc
        if expect is not None and fullname != expect:
            raise DecodeError("wrong_schema", f"expected {expect}, got {fullname}")
        reader = registry().latest(fullname).parsed if fullname in registry().by_name else writer
        return _read(data[CONFLUENT_HEADER_LEN:], writer, reader)


@cache
def codec_for(schema_registry_url: str | None) -> Codec:
    """The one codec every encode and decode of a process goes through, chosen by
    `KafkaSettings.schema_registry_url`: the registry's wire format only when it is set.

    Cached, so the components of a process share one registry client and its schema ids.
    """
    if schema_registry_url:
        return RegistryCodec.from_url(schema_registry_url)
    return SingleObjectCodec()
