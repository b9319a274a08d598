"""A compiled Avro binary writer for herald's own schemas.

fastavro's generic writer resolves every union branch and logical type per value, which
made encoding the largest single cost of deciding a request (~40 µs per Delivery). The
schemas herald ships use a handful of types, so each is compiled once into a chain of
small functions; the bytes are the Avro spec's, identical to fastavro's (property-tested
in tests/unit/schemas/test_avro_writer.py). A schema using anything else is not compiled
and the codec keeps using fastavro for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.errors import HeraldError

Write = Callable[[bytearray, Any], None]


class Unsupported(HeraldError):
    """The schema uses a type this writer does not compile."""


def _varint(out: bytearray, n: int) -> None:
    if 0 <= n < 64:  # one byte: most lengths, counts and enum-like ints
        out.append(n << 1)
        return
    n = (n << 1) ^ (n >> 63)  # zig-zag: small magnitudes, small encodings
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _long(out: bytearray, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"expected an int, got {type(v).__name__}")
    _varint(out, v)


def _timestamp_millis(out: bytearray, v: Any) -> None:
    if isinstance(v, datetime):
        # fastavro's rule: naive datetimes are taken as UTC.
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        v = int(v.timestamp() * 1000)
    _long(out, v)


def _string(out: bytearray, v: Any) -> None:
    if not isinstance(v, str):  # str enums are str
        raise TypeError(f"expected a str, got {type(v).__name__}")
    b = v.encode()
    _varint(out, len(b))
    out += b


def _null(_out: bytearray, v: Any) -> None:
    if v is not None:
        raise TypeError(f"expected None, got {type(v).__name__}")


def _boolean(out: bytearray, v: Any) -> None:
    out.append(1 if v else 0)


def _compile(schema: Any, names: dict[str, Write]) -> Write:
    if isinstance(schema, str):
        if schema in names:
            return names[schema]
        return _primitive(schema, None)
    if isinstance(schema, list):
        return _union(schema, names)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, names)
    if kind == "map":
        values = _compile(schema["values"], names)

        def write_map(out: bytearray, v: Any) -> None:
            if v:
                _varint(out, len(v))
                for key, item in v.items():
                    _string(out, key)
                    values(out, item)
            out.append(0)

        return write_map
    if kind == "array":
        items = _compile(schema["items"], names)

        def write_array(out: bytearray, v: Any) -> None:
            if v:
                _varint(out, len(v))
                for item in v:
                    items(out, item)
            out.append(0)

        return write_array
    if isinstance(kind, str):
        return _primitive(kind, schema.get("logicalType"))
    return _compile(kind, names)


def _primitive(kind: str, logical: str | None) -> Write:
    if kind == "long" and logical == "timestamp-millis":
        return _timestamp_millis
    if logical is not None:
        raise Unsupported(f"logical type {logical}")
    try:
        return {
            "null": _null,
            "boolean": _boolean,
            "int": _long,
            "long": _long,
            "string": _string,
        }[kind]
    except KeyError:
        raise Unsupported(kind) from None


def _union(branches: list[Any], names: dict[str, Write]) -> Write:
    # Only the optional-value shape herald uses: null and one other branch.
    if len(branches) != 2 or "null" not in branches:
        raise Unsupported("union other than [null, T] / [T, null]")
    null_index = branches.index("null")
    other = _compile(branches[1 - null_index], names)
    null_tag, other_tag = bytes([null_index * 2]), bytes([(1 - null_index) * 2])

    def write_optional(out: bytearray, v: Any) -> None:
        if v is None:
            out += null_tag
        else:
            out += other_tag
            other(out, v)

    return write_optional


def _record(schema: Mapping[str, Any], names: dict[str, Write]) -> Write:
    fields: list[tuple[str, Write, Any]] = []

    def write_record(out: bytearray, v: Any) -> None:
        get = v.get
        for name, write, default in fields:
            # As fastavro does: a missing field takes its default, else None.
            write(out, get(name, default))

    fullname = schema["name"]
    if "." not in fullname and schema.get("namespace"):
        fullname = f"{schema['namespace']}.{fullname}"
    names[fullname] = names[schema["name"]] = write_record
    for f in schema["fields"]:
        fields.append((f["name"], _compile(f["type"], names), f.get("default")))
    return write_record


def compile_writer(schema: Any) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function that writes a record's Avro binary body, or None when `schema` uses a
    type this module does not compile (the caller then falls back to fastavro)."""
    try:
        write = _compile(schema, {})
    except Unsupported:
        return None

    def encode(record: Mapping[str, Any]) -> bytes:
        out = bytearray()
        write(out, record)
        return bytes(out)

    return encode
