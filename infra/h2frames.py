"""HTTP/2 framing (RFC 9113 §4, §6) shared by the lean HTTP/2 code: the push providers'
client (`senders/providers/_h2.py`), the emulators' server and the bench's load generator.
Frames only; what a frame means is each side's business."""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# Flags.
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# The default SETTINGS_MAX_FRAME_SIZE, which every peer accepts.
DEFAULT_MAX_FRAME = 16_384

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def unpadded(flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS payload without its padding (the PADDED flag, §6.1)."""
    return payload[1 : len(payload) - payload[0]] if flags & PADDED else payload


def header_fragment(flags: int, payload: bytes) -> bytes:
    """A HEADERS frame's header block fragment: no padding, no priority fields (§6.2)."""
    payload = unpadded(flags, payload)
    return payload[5:] if flags & PRIORITY_FLAG else payload


class FrameReader:
    """Bytes in, whole frames out; a frame split across reads waits for its rest."""

    def __init__(self, max_size: int | None = None) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> list[Frame]:
        """The frames `data` completes; ValueError for a frame above `max_size`."""
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if self._max is not None and length > self._max:
                raise ValueError(f"frame of {length} bytes")
            if len(buf) - pos < 9 + length:
                break
            stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            out.append(
                (buf[pos + 3], buf[pos + 4], stream_id, bytes(buf[pos + 9 : pos + 9 + length]))
            )
            pos += 9 + length
        del buf[:pos]
        return out
