"""HPACK (RFC 7541) for the lean HTTP/2 code: the push providers' client
(`senders/providers/_h2.py`) and the emulators' server. Several times cheaper than the
`hpack` package: bytes in, `dict[bytes, bytes]` out, Huffman decoded a byte at a time
through a table built once from the code (one lookup per input byte, not per bit).

Decoding, of well-formed blocks: a malformed block raises `ValueError` or `IndexError`
(the connection is then closed). Encoding (`encode_request`) writes every field as a
literal that is never indexed, so it needs no table state.
"""

from __future__ import annotations

from collections import deque
from functools import cache

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

STATIC = [(b"", b""), *HeaderTable.STATIC_TABLE]  # 1-based, as the RFC numbers it
ENTRY_OVERHEAD = 32
EOS = 256


@cache
def _huffman_table() -> list[tuple[bytes, int, bool]]:
    """For state s (an inner node of the code tree) and input byte b, entry [s * 256 + b] =
    (symbols emitted, next state, whether the next state may end the string: the bits
    since the last symbol are all 1s and fewer than 8, i.e. valid padding)."""
    children: list[list[int]] = [[-1, -1]]  # inner nodes; a leaf is stored as -(symbol + 2)
    for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)):
        node = 0
        for i in range(length - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = -(symbol + 2)
            else:
                if children[node][bit] == -1:
                    children.append([-1, -1])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    # depth of ones from the root: a state reached by only 1-bits (< 8 of them) may end.
    all_ones = {0}
    node = 0
    for _ in range(7):
        node = children[node][1]
        all_ones.add(node)
    table: list[tuple[bytes, int, bool]] = []
    for state in range(len(children)):
        for byte in range(256):
            out = bytearray()
            node = state
            for i in range(7, -1, -1):
                nxt = children[node][(byte >> i) & 1]
                if nxt >= 0:
                    node = nxt
                elif -nxt - 2 == EOS:
                    node = -1  # EOS inside a string is an error
                    break
                else:
                    out.append(-nxt - 2)
                    node = 0
            table.append((bytes(out), node, node in all_ones))
    return table


def huffman_decode(data: bytes) -> bytes:
    table = _huffman_table()
    state, may_end = 0, True
    out = []
    for byte in data:
        emitted, state, may_end = table[state * 256 + byte]
        if state < 0:
            raise ValueError("EOS in a Huffman-coded string")
        out.append(emitted)
    if not may_end:
        raise ValueError("bad Huffman padding")
    return b"".join(out)


class HeaderDecoder:
    """One connection's decoding context (its dynamic table)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        self._dynamic: deque[tuple[bytes, bytes]] = deque()
        self._size = 0
        self._max = self._limit = max_table_size

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if index <= 61:
            if index == 0:
                raise IndexError("header index 0")
            return STATIC[index]
        return self._dynamic[index - 62]

    def _add(self, name: bytes, value: bytes) -> None:
        self._dynamic.appendleft((name, value))
        self._size += len(name) + len(value) + ENTRY_OVERHEAD
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max and self._dynamic:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD

    def decode(self, block: bytes) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = {}
        pos, end = 0, len(block)
        while pos < end:
            first = block[pos]
            if first & 0x80:  # indexed field
                index, pos = _integer(block, pos, 7)
                name, value = self._entry(index)
                headers[name] = value
                continue
            if first & 0xE0 == 0x20:  # dynamic table size update
                size, pos = _integer(block, pos, 5)
                if size > self._limit:
                    raise ValueError("table size update above the limit")
                self._max = size
                self._evict()
                continue
            indexing = first & 0x40
            index, pos = _integer(block, pos, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, pos = _string(block, pos)
            value, pos = _string(block, pos)
            if indexing:
                self._add(name, value)
            headers[name] = value
        return headers


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    raw = data[pos : pos + length]
    if len(raw) != length:
        raise ValueError("truncated header block")
    return (huffman_decode(raw) if huffman else raw), pos + length


def _int(value: int, prefix: int, flags: int) -> bytes:
    """An HPACK integer with `prefix` bits in the first byte, its other bits `flags`."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(value: bytes) -> bytes:
    return _int(len(value), 7, 0) + value


_METHODS = {b"GET": b"\x82", b"POST": b"\x83"}
_SCHEMES = {b"http": b"\x86", b"https": b"\x87"}


def encode_request(
    method: bytes, authority: bytes, scheme: bytes, path: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A request's header block: the pseudo-headers by static-table index where the RFC's
    table has them, every other field a literal without indexing (lowercase names)."""
    out = [
        _METHODS.get(method) or (b"\x02" + _literal(method)),
        _SCHEMES.get(scheme) or (b"\x06" + _literal(scheme)),
        b"\x01" + _literal(authority),  # :authority (static index 1)
        b"\x04" + _literal(path),  # :path (static index 4)
    ]
    for name, value in headers:
        out.append(b"\x00" + _literal(name) + _literal(value))
    return b"".join(out)
