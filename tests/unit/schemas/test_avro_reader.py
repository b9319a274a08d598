"""The compiled reader returns exactly fastavro's values for every schema herald ships and
for generated records of each, and refuses every truncated body as fastavro does."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.avro_reader import compile_reader
from tests.unit.schemas.test_avro_writer import VERSIONS, _values


def _fastavro_bytes(sv: codec.SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, sv.parsed, record)
    return buf.getvalue()


def _fastavro_read(sv: codec.SchemaVersion, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), sv.parsed, sv.parsed)


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda v: f"{v.fullname}.v{v.version}")
def test_every_shipped_schema_is_compiled(sv: codec.SchemaVersion) -> None:
    assert sv.read is not None


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda v: f"{v.fullname}.v{v.version}")
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_same_values_as_fastavro(sv: codec.SchemaVersion, data: st.DataObject) -> None:
    record = data.draw(_values(json.loads(sv.source)))
    body = _fastavro_bytes(sv, record)
    assert sv.read is not None
    expected = _fastavro_read(sv, body)
    got = sv.read(b"HEADER" + body, 6)
    assert got == expected
    assert list(got) == list(expected)  # field order too


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda v: f"{v.fullname}.v{v.version}")
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_truncated_body_raises(sv: codec.SchemaVersion, data: st.DataObject) -> None:
    body = _fastavro_bytes(sv, data.draw(_values(json.loads(sv.source))))
    assert sv.read is not None
    for cut in range(len(body)):
        with pytest.raises((IndexError, ValueError)):
            sv.read(body[:cut], 0)


def test_blocks_with_a_byte_size_are_read() -> None:
    # Writers may prefix a block with a negative count and its size in bytes (Avro spec).
    read = compile_reader({"type": "map", "values": "long"})
    assert read is not None
    # count -1 (zig-zag 1), size 3, key "a" (len 1 -> 2), value 5 (-> 10), end 0
    assert read(bytes([1, 6, 2, ord("a"), 10, 0]), 0) == {"a": 5}


def test_codec_decodes_through_the_compiled_reader() -> None:
    sv = codec.registry().latest(codec.REQUEST)
    record = {
        "event_id": "e-1",
        "notification_id": "n-1",
        "source": "test",
        "user_id": "u-1",
        "category": "transactional",
        "channels": ["push"],
        "params": {"name": "Ann"},
        "created_at": 1_764_000_000_123,
    }
    data = codec.encode(codec.REQUEST, record)
    assert codec.decode(data) == _fastavro_read(sv, data[codec.HEADER_LEN :])
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(data[:-3])
    assert err.value.reason == "corrupt_body"


def test_unsupported_shapes_fall_back() -> None:
    assert compile_reader({"type": "fixed", "name": "F", "size": 4}) is None
    assert compile_reader(["null", "string", "long"]) is None
    assert compile_reader("boolean") is None
