"""The compiled writer writes exactly fastavro's bytes for every schema herald ships, and
for generated records of each: a byte of difference would break every reader."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.avro_writer import compile_writer

_LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _values(schema: Any) -> st.SearchStrategy[Any]:
    """Records that fit `schema` (the JSON form), including absent optional fields."""
    if isinstance(schema, list):
        return st.one_of(*(_values(b) for b in schema))
    if isinstance(schema, str):
        return {
            "null": st.none(),
            "string": st.text(max_size=20),
            "long": _LONGS,
            "int": _INTS,
            "boolean": st.booleans(),
        }[schema]
    kind = schema["type"]
    if kind == "record":
        required = {f["name"]: _values(f["type"]) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: _values(f["type"]) for f in schema["fields"] if "default" in f}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), _values(schema["values"]), max_size=3)
    if kind == "array":
        return st.lists(_values(schema["items"]), max_size=3)
    if schema.get("logicalType") == "timestamp-millis":
        return st.integers(min_value=0, max_value=2**45)
    return _values(kind)


def _fastavro(sv: codec.SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, sv.parsed, record)
    return buf.getvalue()


VERSIONS = sorted(
    {(v.fullname, v.version): v for v in codec.registry().by_fingerprint.values()}.values(),
    key=lambda v: (v.fullname, v.version),
)


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda v: f"{v.fullname}.v{v.version}")
def test_every_shipped_schema_is_compiled(sv: codec.SchemaVersion) -> None:
    assert sv.compiled is not None


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda v: f"{v.fullname}.v{v.version}")
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_same_bytes_as_fastavro(sv: codec.SchemaVersion, data: st.DataObject) -> None:
    import json

    record = data.draw(_values(json.loads(sv.source)))
    assert sv.compiled is not None
    assert sv.compiled(record) == _fastavro(sv, record)


def test_datetimes_are_written_as_milliseconds() -> None:
    write = compile_writer({"type": "long", "logicalType": "timestamp-millis"})
    assert write is not None
    when = datetime(2030, 1, 1, 9, 30, tzinfo=UTC)
    assert write(when) == write(int(when.timestamp() * 1000))  # type: ignore[arg-type]


def test_wrong_types_raise() -> None:
    write = compile_writer(
        {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    )
    assert write is not None
    with pytest.raises(TypeError):
        write({"n": "1"})


def test_unsupported_shapes_fall_back() -> None:
    assert compile_writer({"type": "fixed", "name": "F", "size": 4}) is None
    assert compile_writer(["null", "string", "long"]) is None


_SHAPES = {
    "type": "record",
    "name": "Shapes",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "o", "type": ["null", "string"], "default": None},
        {"name": "last", "type": ["long", "null"], "default": 7},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}, "default": {}},
        {"name": "a", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}


def _fastavro_json(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


@pytest.mark.parametrize(
    "record",
    [
        # Past the one-byte fast paths: long strings, big and negative numbers.
        {"s": "é" * 200, "n": -1, "o": "x" * 64, "m": {"k" * 70: 2**40}, "a": ["y" * 63]},
        {"s": "", "n": 2**63 - 1, "o": None, "last": None, "m": {"a": None}, "a": []},
        {"s": "s", "n": 63},
        {"s": "s", "n": 64},
        {"s": "s", "n": -64},
    ],
)
def test_inline_fast_paths_and_their_fallbacks_agree_with_fastavro(record: dict[str, Any]) -> None:
    write = compile_writer(_SHAPES)
    assert write is not None
    assert write(record) == _fastavro_json(_SHAPES, record)


def test_enum_values_are_written_as_their_str_and_int() -> None:
    import enum

    class Colour(enum.StrEnum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    write = compile_writer(_SHAPES)
    assert write is not None
    assert write({"s": Colour.RED, "n": Size.BIG}) == write({"s": "red", "n": 3})


def test_a_bool_is_not_a_long_and_a_number_is_not_a_string() -> None:
    write = compile_writer(_SHAPES)
    assert write is not None
    with pytest.raises(TypeError):
        write({"s": "s", "n": True})
    with pytest.raises(TypeError):
        write({"s": 5, "n": 1})
    with pytest.raises(TypeError):
        write({"s": "s", "n": 1, "o": 5})


def test_a_recursive_record_is_left_to_fastavro() -> None:
    """As the reader does: not compiled, so the codec writes it with fastavro."""
    node = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    }
    assert compile_writer(node) is None
