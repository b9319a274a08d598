"""Adding prepared statements to a batch without the driver's per-statement machinery.

`BatchStatement.add(prepared, params)` builds a `BoundStatement` for every row (copying the
statement's policies, checking for unset values and column encryption, wrapping each
value's type error): 11-14 µs a ledger statement on the dev VM, and the senders add 5 to 7
per delivery. `add` serializes the values with per-column functions chosen once per
statement (the common CQL types by hand, any other through the driver's own type) and
appends them as the driver would: 3-4 µs. The bytes are the driver's, which the unit tests
check type by type. The first statement of a batch still goes through the driver, so the
batch takes its routing key (token-aware routing) as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra import cqltypes
from cassandra.query import BatchStatement, PreparedStatement

Serializer = Callable[[Any], bytes]

_EPOCH_AWARE = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_int32 = struct.Struct(">i").pack
_int64 = struct.Struct(">q").pack


def _text(v: Any) -> bytes:
    return v.encode() if type(v) is str else cqltypes.UTF8Type.serialize(v, 4)


def _int(v: Any) -> bytes:
    return _int32(v)


def _bigint(v: Any) -> bytes:
    return _int64(v)


def _boolean(v: Any) -> bytes:
    return b"\x01" if v else b"\x00"


def _timestamp(v: Any) -> bytes:
    # Milliseconds since the epoch, truncated, as the driver computes them; a naive
    # datetime is UTC. Anything else (a date, a number, before 1970) goes to the driver.
    if type(v) is datetime and v.year >= 1970:
        td = v - (_EPOCH_NAIVE if v.tzinfo is None else _EPOCH_AWARE)
        return _int64(td.days * 86_400_000 + td.seconds * 1000 + td.microseconds // 1000)
    return cqltypes.DateType.serialize(v, 4)


_BY_TYPE: dict[type[Any], Serializer] = {
    cqltypes.UTF8Type: _text,
    cqltypes.VarcharType: _text,
    cqltypes.Int32Type: _int,
    cqltypes.LongType: _bigint,
    cqltypes.BooleanType: _boolean,
    cqltypes.DateType: _timestamp,
    cqltypes.TimestampType: _timestamp,
}

_serializers: dict[bytes, tuple[Serializer, ...]] = {}  # per prepared statement (query id)


def _driver(col_type: Any, protocol_version: int) -> Serializer:
    return lambda v: col_type.serialize(v, protocol_version)


def _for(stmt: PreparedStatement) -> tuple[Serializer, ...]:
    found = _serializers.get(stmt.query_id)
    if found is None:
        found = tuple(
            _BY_TYPE.get(col.type) or _driver(col.type, stmt.protocol_version)
            for col in stmt.column_metadata
        )
        _serializers[stmt.query_id] = found
    return found


def values(stmt: PreparedStatement, params: Sequence[Any]) -> list[bytes | None]:
    """The serialized values of `params`, one per bind marker: the driver's bytes."""
    sers = _for(stmt)
    if len(params) != len(sers):
        raise ValueError(f"{len(params)} values for {len(sers)} bind markers: {stmt.query_string}")
    try:
        return [None if v is None else ser(v) for ser, v in zip(sers, params, strict=True)]
    except (TypeError, AttributeError, struct.error):
        pass
    # Some value does not fit its column: find it again, one by one, to name it.
    for ser, v, col in zip(sers, params, stmt.column_metadata, strict=True):
        if v is None:
            continue
        try:
            ser(v)
        except (TypeError, AttributeError, struct.error) as exc:
            raise TypeError(
                f'invalid value for column "{col.name}" ({col.type.typename}):'
                f" {type(v).__name__} ({exc})"
            ) from exc
    raise AssertionError("unreachable: a value failed above")


def add(batch: BatchStatement, stmt: PreparedStatement, params: Sequence[Any]) -> None:
    """`batch.add(stmt, params)`, faster for every statement after the first."""
    if not batch._statements_and_parameters or stmt.column_encryption_policy is not None:
        batch.add(stmt, params)
        return
    batch._statements_and_parameters.append((True, stmt.query_id, values(stmt, params)))
