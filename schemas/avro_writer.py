"""A compiled Avro binary writer for herald's own schemas.

fastavro's generic writer resolves every union branch and logical type per value, which
made encoding the largest single cost of deciding a request (~40 µs per Delivery). The
schemas herald ships use a handful of types, so each is compiled once into the source of
one function that writes every value inline, as `schemas.avro_reader` reads them (a call
per value costs ~0.3 µs on the dev VM). The bytes are the Avro spec's, identical to
fastavro's (property-tested in tests/unit/schemas/test_avro_writer.py). A schema using
anything else (a recursive record included, as for the reader) is not compiled: the codec
keeps using fastavro for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.avro_codegen import SourceGen, Unsupported, build
from schemas.avro_codegen import null_index as null_branch

__all__ = ["Unsupported", "compile_writer"]


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


class _Gen(SourceGen):
    """Python source for one schema. The common case of each value (a `str`, an `int`
    below 64, None) is written inline; anything else goes through the functions above,
    which also raise TypeError for a value of the wrong type."""

    def __init__(self) -> None:
        super().__init__()
        self.constants: dict[str, Any] = {}  # field defaults, by the name the source uses

    def primitive(self, kind: str, logical: str | None, depth: int, v: str) -> None:
        if kind == "long" and logical == "timestamp-millis":
            self.emit(depth, f"if {v}.__class__ is int:")
            self.emit(depth + 1, f"_varint(out, {v})")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_timestamp_millis(out, {v})")
        elif logical is not None:
            raise Unsupported(f"logical type {logical}")
        elif kind in ("int", "long"):
            self.emit(depth, f"if {v}.__class__ is int and 0 <= {v} < 64:")
            self.emit(depth + 1, f"out.append({v} << 1)")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_long(out, {v})")  # bool, IntEnum, big or negative
        elif kind == "string":
            e = self.var("e")
            self.emit(depth, f"if {v}.__class__ is str:")
            self.emit(depth + 1, f"{e} = {v}.encode()")
            self.emit(depth + 1, f"if len({e}) < 64:")
            self.emit(depth + 2, f"out.append(len({e}) << 1)")
            self.emit(depth + 1, "else:")
            self.emit(depth + 2, f"_varint(out, len({e}))")
            self.emit(depth + 1, f"out += {e}")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_string(out, {v})")  # a str enum, or TypeError
        elif kind == "boolean":
            self.emit(depth, f"out.append(1 if {v} else 0)")
        elif kind == "null":
            self.emit(depth, f"if {v} is not None:")
            self.emit(depth + 1, f"_null(out, {v})")
        else:
            raise Unsupported(kind)

    def union(self, branches: list[Any], depth: int, v: str) -> None:
        null_index = null_branch(branches)
        self.emit(depth, f"if {v} is None:")
        self.emit(depth + 1, f"out.append({null_index * 2})")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"out.append({(1 - null_index) * 2})")
        self.value(branches[1 - null_index], depth + 1, v)

    def blocks(self, schema: dict[str, Any], depth: int, v: str) -> None:
        item = self.var()
        self.emit(depth, f"if {v}:")
        self.emit(depth + 1, f"_varint(out, len({v}))")
        if schema["type"] == "map":
            key = self.var()
            self.emit(depth + 1, f"for {key}, {item} in {v}.items():")
            self.primitive("string", None, depth + 2, key)
            self.value(schema["values"], depth + 2, item)
        else:
            self.emit(depth + 1, f"for {item} in {v}:")
            self.value(schema["items"], depth + 2, item)
        self.emit(depth, "out.append(0)")

    def record(self, schema: dict[str, Any], depth: int, v: str) -> None:
        get = self.var("get")
        self.emit(depth, f"{get} = {v}.get")
        for f in schema["fields"]:
            fv = self.var()
            # As fastavro does: a missing field takes its default, else None.
            default = f.get("default")
            if default is None:
                self.emit(depth, f"{fv} = {get}({f['name']!r})")
            else:
                name = self.var("default")
                self.constants[name] = default
                self.emit(depth, f"{fv} = {get}({f['name']!r}, {name})")
            self.value(f["type"], depth, fv)


def compile_writer(schema: Any) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function that writes a record's Avro binary body, or None when `schema` uses a
    type this module does not compile (the caller then falls back to fastavro)."""
    gen = _Gen()
    try:
        gen.value(schema, 1, "record")
    except Unsupported:
        return None
    source = ["def encode(record):", "    out = bytearray()", *gen.lines, "    return bytes(out)"]
    scope: dict[str, Any] = {
        "_varint": _varint,
        "_long": _long,
        "_string": _string,
        "_null": _null,
        "_timestamp_millis": _timestamp_millis,
        **gen.constants,
    }
    encode: Callable[[Mapping[str, Any]], bytes] = build(schema, "encode", source, scope)
    return encode
