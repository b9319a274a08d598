"""HTTP/2 frame payloads as both lean HTTP/2 peers read them (RFC 9113 §6.1, §6.2)."""

from __future__ import annotations

from infra.h2frames import PADDED, PRIORITY_FLAG, header_fragment, unpadded


def test_padding_is_removed_only_when_the_frame_says_so() -> None:
    assert unpadded(PADDED, b"\x03body\x00\x00\x00") == b"body"
    assert unpadded(PADDED, b"\x00body") == b"body"
    assert unpadded(0, b"\x03body\x00\x00\x00") == b"\x03body\x00\x00\x00"


def test_a_header_fragment_drops_padding_and_priority_fields() -> None:
    priority = b"\x00\x00\x00\x01\x10"  # stream dependency and weight
    padded = b"\x02" + priority + b"hpack\x00\x00"
    assert header_fragment(PADDED | PRIORITY_FLAG, padded) == b"hpack"
    assert header_fragment(PRIORITY_FLAG, priority + b"hpack") == b"hpack"
    assert header_fragment(0, b"hpack") == b"hpack"
