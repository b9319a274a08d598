"""The fast batch binding produces the driver's bytes, type by type, and the driver's
batch layout; a bad value names its column."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from cassandra import cqltypes
from cassandra.protocol import ColumnMetadata
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from infra import cql_bind

COLUMNS = [
    ("slot", cqltypes.Int32Type),
    ("minute", cqltypes.Int32Type),
    ("id", cqltypes.VarcharType),
    ("note", cqltypes.UTF8Type),
    ("count", cqltypes.LongType),
    ("flag", cqltypes.BooleanType),
    ("at", cqltypes.DateType),
    ("at2", cqltypes.TimestampType),
    ("tags", cqltypes.SetType.apply_parameters([cqltypes.UTF8Type])),
]


def prepared(query_id: bytes = b"q1") -> PreparedStatement:
    meta = [ColumnMetadata("ks", "t", name, typ) for name, typ in COLUMNS]
    return PreparedStatement(meta, query_id, [0, 1], "INSERT ...", "ks", 4, None, None)


BEFORE_1970 = datetime(1969, 12, 31, 23, 59, 59, 500_000)

ROWS: list[tuple[Any, ...]] = [
    (3, 29_000_000, "d-1", "héllo ✓", 2**40, True, datetime.now(UTC), datetime.now(UTC), {"a"}),
    (-1, 0, "", "", -(2**63), False, datetime(2026, 11, 29, 12, 0, 0, 999_999), 0, set()),
    (0, 1, "x", None, None, None, None, None, None),
    (
        2**31 - 1,
        -(2**31),
        "y",
        "z",
        0,
        1,
        datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        1_764_000_000_123,  # milliseconds already
        {"b", "c"},
    ),
    (1, 1, "old", "t", 1, False, BEFORE_1970, date(2026, 1, 2), {"x"}),
]


@pytest.mark.parametrize("row", ROWS)
def test_values_are_the_drivers_bytes(row: tuple[Any, ...]) -> None:
    stmt = prepared()
    assert cql_bind.values(stmt, row) == stmt.bind(row).values


def test_a_batch_is_laid_out_as_the_driver_lays_it_out() -> None:
    stmt, other = prepared(), prepared(b"q2")
    ours = BatchStatement(batch_type=BatchType.UNLOGGED)
    theirs = BatchStatement(batch_type=BatchType.UNLOGGED)
    for s, row in zip([stmt, other, stmt, other], ROWS, strict=False):
        cql_bind.add(ours, s, row)
        theirs.add(s, row)
    assert ours._statements_and_parameters == theirs._statements_and_parameters
    assert ours.routing_key == theirs.routing_key is not None  # from the first statement
    assert ours.keyspace == "ks"


def test_a_value_of_the_wrong_type_names_its_column() -> None:
    row = list(ROWS[0])
    row[4] = "not a number"
    with pytest.raises(TypeError, match='column "count"'):
        cql_bind.values(prepared(), row)


def test_a_missing_value_is_refused() -> None:
    with pytest.raises(ValueError, match="8 values for 9 bind markers"):
        cql_bind.values(prepared(), ROWS[0][:8])
