"""A compiled Avro binary reader for a record read with its own writer schema.

fastavro's `schemaless_reader` costs ~17 µs for a 135-byte request (its per-call set-up
and per-value dispatch), the largest single cost left in deciding a warm request (7% of
the processor in a py-spy profile of `make bench-processor`). Herald's records are almost
always read with the schema they were written with, and the schemas use a handful of
types, so each is compiled once into the source of one function that reads every value
inline (a call per value costs ~0.3 µs on the dev VM): 25.9 → 15.9 µs a request. The values
are fastavro's, equal field for field (property-tested in tests/unit/schemas/
test_avro_reader.py). Anything else (another writer version, so schema resolution; a type
not compiled here) is read by fastavro as before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.avro_codegen import SourceGen, Unsupported, build
from schemas.avro_codegen import null_index as null_branch
from schemas.errors import HeraldError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Truncated(HeraldError, ValueError):
    """The body ends inside a value."""


def _long(b: bytes, pos: int) -> tuple[int, int]:
    # Zig-zag varint; an index past the end raises IndexError (truncated body).
    byte = b[pos]
    pos += 1
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos
    n = byte & 0x7F
    shift = 7
    while True:
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


class _Gen(SourceGen):
    """Python source for one schema: every value read inline into a local, no call per
    value but for a varint longer than a byte (a call costs ~0.3 µs on the dev VM)."""

    def varint(self, depth: int, v: str) -> None:
        self.emit(depth, f"{v} = b[p]")
        self.emit(depth, f"if {v} < 0x80:")
        self.emit(depth + 1, "p += 1")
        self.emit(depth + 1, f"{v} = ({v} >> 1) ^ -({v} & 1)")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{v}, p = _long(b, p)")

    def primitive(self, kind: str, logical: str | None, depth: int, v: str) -> None:
        if kind == "long" and logical == "timestamp-millis":
            self.varint(depth, v)
            # fastavro's arithmetic (not `fromtimestamp`, which rounds differently).
            self.emit(depth, f"{v} = _EPOCH + _timedelta(microseconds={v} * 1000)")
        elif logical is not None:
            raise Unsupported(f"logical type {logical}")
        elif kind in ("int", "long"):
            self.varint(depth, v)
        elif kind == "string":
            n = self.var()
            self.varint(depth, n)
            self.emit(depth, f"if {n} < 0 or p + {n} > size:")
            self.emit(depth + 1, f"raise Truncated(f'string of {{{n}}} bytes at {{p}}')")
            self.emit(depth, f"{v} = b[p : p + {n}].decode()")
            self.emit(depth, f"p += {n}")
        elif kind == "null":
            self.emit(depth, f"{v} = None")
        else:
            raise Unsupported(kind)

    def union(self, branches: list[Any], depth: int, v: str) -> None:
        null_index = null_branch(branches)
        self.varint(depth, v)
        self.emit(depth, f"if {v} == {null_index}:")
        self.emit(depth + 1, f"{v} = None")
        self.emit(depth, f"elif {v} == {1 - null_index}:")
        self.value(branches[1 - null_index], depth + 1, v)
        self.emit(depth, "else:")
        self.emit(depth + 1, f"raise ValueError(f'union branch {{{v}}} of 2')")

    def blocks(self, schema: dict[str, Any], depth: int, v: str) -> None:
        count, item = self.var(), self.var()
        self.emit(depth, f"{v} = {{}}" if schema["type"] == "map" else f"{v} = []")
        self.varint(depth, count)
        self.emit(depth, f"while {count}:")
        self.emit(depth + 1, f"if {count} < 0:  # a block with its size in bytes")
        self.emit(depth + 2, f"{count} = -{count}")
        self.varint(depth + 2, self.var())
        self.emit(depth + 1, f"for _ in range({count}):")
        if schema["type"] == "map":
            key = self.var()
            self.primitive("string", None, depth + 2, key)
            self.value(schema["values"], depth + 2, item)
            self.emit(depth + 2, f"{v}[{key}] = {item}")
        else:
            self.value(schema["items"], depth + 2, item)
            self.emit(depth + 2, f"{v}.append({item})")
        self.varint(depth + 1, count)

    def record(self, schema: dict[str, Any], depth: int, v: str) -> None:
        fields = []
        for f in schema["fields"]:
            fv = self.var()
            self.value(f["type"], depth, fv)
            fields.append(f"{f['name']!r}: {fv}")
        self.emit(depth, f"{v} = {{{', '.join(fields)}}}")


def compile_reader(schema: Any) -> Callable[[bytes, int], Any] | None:
    """A function reading the Avro binary body that starts at an offset of its bytes into
    the value fastavro would return, or None when `schema` uses a type not compiled here.
    A body that ends early raises (IndexError or `Truncated`); bytes after it are ignored,
    as fastavro ignores them."""
    gen = _Gen()
    try:
        gen.value(schema, 1, "out")
    except Unsupported:
        return None
    source = ["def decode(b, p):", "    size = len(b)", *gen.lines, "    return out"]
    scope: dict[str, Any] = {
        "_long": _long,
        "_EPOCH": _EPOCH,
        "_timedelta": timedelta,
        "Truncated": Truncated,
    }
    decode: Callable[[bytes, int], Any] = build(schema, "decode", source, scope)
    return decode
