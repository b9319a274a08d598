"""The lean HPACK decoder reads what `hpack.Encoder` (h2, httpx) writes, table and all."""

from __future__ import annotations

import random

import hpack
import pytest

from infra.hpack_lean import HeaderDecoder, huffman_decode


def test_huffman_round_trip_of_every_byte_value() -> None:
    data = bytes(range(256)) * 3
    assert (
        huffman_decode(
            hpack.huffman.HuffmanEncoder(
                hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
            ).encode(data)
        )
        == data
    )


def test_bad_huffman_padding_is_refused() -> None:
    with pytest.raises(ValueError):
        huffman_decode(b"\x00")  # '0' then 3 padding bits that are not all 1s


@pytest.mark.parametrize("table_size", [4096, 256])
def test_a_stream_of_blocks_decodes_as_hpack_does(table_size: int) -> None:
    rng = random.Random(7)
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size
    ours, theirs = HeaderDecoder(), hpack.Decoder()
    for i in range(300):
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/3/device/{rng.getrandbits(256):064x}"),
            ("authorization", "bearer " + "x" * 150),
            ("apns-topic", "dev.herald.app"),
            ("x-herald-delivery-id", f"d-{i}-{rng.random()}"),
        ]
        sensitive = hpack.NeverIndexedHeaderTuple("cookie", f"c{i}")
        block = encoder.encode([*headers, sensitive], huffman=bool(i % 2))
        expected = {
            n.encode() if isinstance(n, str) else n: v.encode() if isinstance(v, str) else v
            for n, v in theirs.decode(block)
        }
        assert ours.decode(block) == expected
