"""Schema evolution is a rule, checked here: every version of a record reads the data of
the version before it and the version before it reads the new one (fastavro schema
resolution), in both directions: full compatibility, as the README's rules require.

Adding a version `X.v<N+1>.avsc` puts it under these tests automatically. The synthetic
cases show the checker itself catches the changes the rules forbid.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
from importlib import resources
from typing import Any

import fastavro
import pytest

from schemas import codec

_PRIMITIVE_EXAMPLES: dict[str, Any] = {
    "string": "x",
    "bytes": b"x",
    "int": 1,
    "long": 1,
    "float": 1.0,
    "double": 1.0,
    "boolean": True,
    "null": None,
}


def _raw(fullname: str, version: int) -> dict[str, Any]:
    name = fullname.rsplit(".", 1)[1]
    text = (resources.files("schemas") / "avro" / f"{name}.v{version}.avsc").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def _example(schema: Any) -> Any:
    """A value of `schema` filling every field, defaulted ones included (non-default)."""
    if isinstance(schema, str):
        return _PRIMITIVE_EXAMPLES[schema]
    if isinstance(schema, list):
        branch = next((b for b in schema if b != "null"), "null")
        return _example(branch)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _example(f["type"]) for f in schema["fields"]}
    if kind == "array":
        return [_example(schema["items"])]
    if kind == "map":
        return {"k": _example(schema["values"])}
    if kind == "enum":
        return schema["symbols"][0]
    return _example(kind)


def _read_with(writer: dict[str, Any], reader: dict[str, Any], record: Any) -> Any:
    w = fastavro.parse_schema(copy.deepcopy(writer), _force=True)
    r = fastavro.parse_schema(copy.deepcopy(reader), _force=True)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, w, r)


def assert_full_compatible(old: dict[str, Any], new: dict[str, Any]) -> None:
    """New reads old (backward) and old reads new (forward); shared fields survive."""
    for writer, reader in ((old, new), (new, old)):
        record = _example(writer)
        out = _read_with(writer, reader, record)
        same = _read_with(writer, writer, record)  # logical types come back decoded
        shared = {f["name"] for f in writer["fields"]} & {f["name"] for f in reader["fields"]}
        assert {k: out[k] for k in shared} == {k: same[k] for k in shared}


def _pairs() -> list[tuple[str, int, int]]:
    out = []
    for fullname, versions in codec.registry().by_name.items():
        numbers = [v.version for v in versions]
        out += [(fullname, a, b) for a, b in itertools.pairwise(numbers)]
    return out


@pytest.mark.parametrize(("fullname", "old", "new"), _pairs())
def test_each_version_reads_the_previous_and_back(fullname: str, old: int, new: int) -> None:
    assert_full_compatible(_raw(fullname, old), _raw(fullname, new))


@pytest.mark.parametrize("fullname", sorted(codec.registry().by_name))
def test_versions_are_contiguous_from_one(fullname: str) -> None:
    numbers = [v.version for v in codec.registry().by_name[fullname]]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("fullname", sorted(codec.registry().by_name))
def test_every_field_added_after_v1_has_a_default(fullname: str) -> None:
    first = {f["name"] for f in _raw(fullname, 1)["fields"]}
    for sv in codec.registry().by_name[fullname][1:]:
        for f in _raw(fullname, sv.version)["fields"]:
            if f["name"] not in first:
                assert "default" in f, f"{fullname} v{sv.version}.{f['name']} needs a default"


@pytest.mark.parametrize("fullname", sorted(codec.registry().by_name))
def test_an_allowed_change_passes(fullname: str) -> None:
    old = _raw(fullname, codec.registry().latest(fullname).version)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "added_later", "type": ["null", "string"], "default": None})
    assert_full_compatible(old, new)
    # Removing fields that have defaults is allowed too.
    shrunk = copy.deepcopy(old)
    shrunk["fields"] = [f for f in old["fields"] if "default" not in f]
    assert_full_compatible(old, shrunk)


def test_the_checker_catches_a_new_field_without_default() -> None:
    old = _raw(codec.REQUEST, 1)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "tenant", "type": "string"})
    with pytest.raises(Exception, match="tenant"):
        assert_full_compatible(old, new)


def test_the_checker_catches_a_type_change() -> None:
    old = _raw(codec.STATUS, 1)
    new = copy.deepcopy(old)
    for f in new["fields"]:
        if f["name"] == "attempt":
            f["type"] = "string"
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises its own resolution errors
        assert_full_compatible(old, new)


def test_old_writer_data_decodes_through_the_codec_into_the_latest() -> None:
    for fullname, versions in codec.registry().by_name.items():
        first = versions[0]
        record = _example(_raw(fullname, first.version))
        out = codec.decode(codec.encode(fullname, record, version=first.version))
        assert set(out) == {f["name"] for f in _raw(fullname, versions[-1].version)["fields"]}
