"""herald's single-object encoding against the Avro specification, not against herald.

The fingerprint is computed here from the spec's reference algorithm ("Schema
Fingerprints", CRC-64-AVRO), so neither fastavro's rendering of it nor herald's codec is
trusted. The vectors are Apache Avro's own: `share/test/data/schema-tests.txt` (input,
Parsing Canonical Form, fingerprint as a Java long) and the single-object header of "int"
from `lang/ruby/test/test_fingerprints.rb`.
"""

import io
import json
from importlib import resources
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_one

from schemas import codec

EMPTY = 0xC15D213AA4D7A795
MASK = (1 << 64) - 1


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY if fp & 1 else 0)  # Java: EMPTY & -(fp & 1L)
        table.append(fp)
    return table


FP_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ b) & 0xFF]
    return fp & MASK


def spec_header(canonical: str) -> bytes:
    return b"\xc3\x01" + crc64_avro(canonical.encode()).to_bytes(8, "little")


# (input, canonical form, fingerprint as the signed Java long), from schema-tests.txt.
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('"int"', '"int"', 8247732601305521295),
    ('"string"', '"string"', -8142146995180207161),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", '
        '"symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
]


@pytest.mark.parametrize(("schema", "canonical", "java_long"), SPEC_VECTORS)
def test_reference_algorithm_and_canonical_form_match_the_spec_vectors(
    schema: str, canonical: str, java_long: int
) -> None:
    assert crc64_avro(canonical.encode()) == java_long & MASK
    assert to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema))) == canonical


def test_header_of_int_is_apache_avros() -> None:
    assert spec_header('"int"') == bytes.fromhex("c3018f5c393f1ad57572")


def _shipped() -> list[Any]:
    """Every `schemas/avro/<Record>.v<N>.avsc`, read here rather than through herald."""
    out = []
    for path in sorted((resources.files("schemas") / "avro").iterdir(), key=lambda p: p.name):
        name, version, ext = path.name.split(".")
        if ext == "avsc":
            schema = fastavro.parse_schema(json.loads(path.read_text()), _force=True)
            fullname = f"herald.{name}"
            out.append(pytest.param(fullname, int(version[1:]), schema, id=path.name))
    return out


SHIPPED = _shipped()


def test_every_record_and_version_is_checked() -> None:
    shipped = {(p.values[0], p.values[1]) for p in SHIPPED}
    herald = {(v.fullname, v.version) for vs in codec.registry().by_name.values() for v in vs}
    assert shipped == herald


@pytest.mark.parametrize(("fullname", "version", "schema"), SHIPPED)
def test_herald_writes_the_spec_header(fullname: str, version: int, schema: Any) -> None:
    data = codec.encode(fullname, generate_one(schema), version=version)
    assert data[:10] == spec_header(to_parsing_canonical_form(schema))


@pytest.mark.parametrize(("fullname", "version", "schema"), SHIPPED)
def test_herald_reads_what_a_spec_writer_wrote(fullname: str, version: int, schema: Any) -> None:
    record = generate_one(schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    data = spec_header(to_parsing_canonical_form(schema)) + body.getvalue()
    assert codec.decode(data, expect=fullname) == codec.decode(
        codec.encode(fullname, record, version=version)
    )


def test_legacy_byte_reversed_header_is_still_read() -> None:
    # Deprecation window (docs/contract.md): delete with the legacy read in herald 0.3.
    fullname, version, schema = SHIPPED[0].values
    record = generate_one(schema)
    data = codec.encode(fullname, record, version=version)
    legacy = data[:2] + data[2:10][::-1] + data[10:]
    assert codec.decode(legacy) == codec.decode(data)
