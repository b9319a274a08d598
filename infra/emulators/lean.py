"""The lean emulators: the same providers on raw asyncio protocols, for benchmarks.

The strict emulators (hypercorn, starlette, aiosmtpd) check every protocol detail the
contract tests rely on and cost about 1.8 ms of CPU per delivery. Here every check is
O(1) in the number of requests and cheap per request, so an emulator is never what a
benchmark measures:

- credentials: the exact `Authorization` header (Twilio, SendGrid), a dict lookup
  (FCM access tokens, Vonage keys), or a JWT verified once and then remembered (APNs
  provider tokens, Web Push VAPID tokens; both are reused for hours);
- the delivery id is read from the `X-Herald-Delivery-Id` header herald sends (FCM's
  `data.herald_delivery_id` and SMTP's header need the body); payloads are not decoded,
  Web Push bodies not decrypted, and a receipt keeps no title, subject or body;
- no faults (the control API refuses them), no STARTTLS or AUTH on SMTP.

One protocol class serves HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN h2 under TLS):
HTTP/2 frames are parsed by hand, header blocks decoded by `hpack_lean` (the `hpack`
package's decoder alone cost 120 µs per APNs request); answers are written without HPACK
indexing, so the server keeps no encoder state.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import struct
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl

from infra.emulators import apns, fcm, webpush
from infra.emulators.state import Accepted, EmulatorState
from infra.h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    FrameReader,
    frame,
    header_fragment,
    unpadded,
)
from infra.hpack_lean import HeaderDecoder

Headers = dict[bytes, bytes]
# status, extra response headers, body
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler = Callable[[bytes, bytes, Headers, bytes], Answer]  # method, path, headers, body

JSON = (b"content-type", b"application/json")
_REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 400: b"Bad Request"}
_FCM_SEND = re.compile(rb"^/v1/projects/([^/]+)/messages:send$")
_TWILIO = re.compile(rb"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")


def _json(status: int, body: dict[str, Any], *headers: tuple[bytes, bytes]) -> Answer:
    return status, [JSON, *headers], json.dumps(body).encode()


def _authority(headers: Headers) -> str:
    """host[:port] the client addressed: `Host` in HTTP/1.1, `:authority` in HTTP/2."""
    return (headers.get(b"host") or headers.get(b":authority") or b"").decode()


def _ids(prefix: str) -> Callable[[], str]:
    """Unique message ids, cheaper than uuid4 per request."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):024x}"


class LeanProviders:
    """One handler per provider endpoint, sharing the strict emulators' credentials."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        apns_keys: list[apns.SigningKey],
        fcm_accounts: list[fcm.ServiceAccount],
        push_service: webpush.PushService,
        twilio_accounts: dict[str, str],
        vonage_keys: dict[str, str],
        sendgrid_keys: set[str],
    ) -> None:
        self.state = state
        self._apns_tokens = apns.TokenVerifier(apns_keys)
        self._fcm = fcm.TokenIssuer(fcm_accounts)
        self._push = push_service
        self._vapid_ok: dict[tuple[bytes, str], float] = {}  # (authorization, sid) → expiry
        self._twilio = {
            b"Basic " + base64.b64encode(f"{sid}:{token}".encode()): sid.encode()
            for sid, token in twilio_accounts.items()
        }
        self._vonage = vonage_keys
        self._sendgrid = {b"Bearer " + key.encode() for key in sendgrid_keys}
        self._apns_ids = _ids("00000000-0000-4000-8000-")
        self._fcm_ids = _ids("0:")
        self._twilio_ids = _ids("SM")
        self._vonage_ids = _ids("")
        self._sendgrid_ids = _ids("sg")
        self._webpush_ids = _ids("wp")

    def _receipt(
        self, provider: str, channel: str, delivery_id: str | None, address: str, message_id: str
    ) -> None:
        self.state.record(Accepted(provider, channel, delivery_id, address, message_id=message_id))

    def apns(self, method: bytes, path: bytes, headers: Headers, body: bytes) -> Answer:
        if not path.startswith(b"/3/device/") or len(path) != 74:
            return _json(400, {"reason": "BadDeviceToken"})
        key, refused = self._apns_tokens.check(headers.get(b"authorization", b"").decode())
        if refused is not None or key is None:
            return _json(403, {"reason": refused})
        if headers.get(b"apns-topic", b"").decode() not in key.topics:
            return _json(400, {"reason": "TopicDisallowed"})
        if not body or len(body) > apns.MAX_PAYLOAD:
            return _json(400, {"reason": "PayloadEmpty" if not body else "PayloadTooLarge"})
        apns_id = headers.get(b"apns-id", b"").decode() or self._apns_ids()
        delivery = headers.get(b"x-herald-delivery-id", b"").decode() or apns_id
        self._receipt("apns", "push.ios", delivery, path[10:].decode(), apns_id)
        return 200, [(b"apns-id", apns_id.encode())], b""

    def fcm(self, method: bytes, path: bytes, headers: Headers, body: bytes) -> Answer:
        """FCM's host: the token endpoint, the v1 send, and the Web Push service beside it."""
        if path.startswith(b"/fcm/send/"):
            return self._webpush(path, headers, body)
        send = _FCM_SEND.match(path)
        if send is None:
            if path == b"/token":
                form = dict(parse_qsl(body.decode()))
                port = _authority(headers).rpartition(":")[2]
                status, answer = self._fcm.grant(form, "/token", int(port) if port else None)
                return _json(status, answer)
            if path == b"/subscriptions":
                key = json.loads(body).get("applicationServerKey") if body else None
                origin = f"http://{_authority(headers)}"
                return 201, [JSON], self._push.subscribe(origin, key).encode()
            return _json(404, {"error": "not found"})
        project = send.group(1).decode()
        if self._fcm.project(headers.get(b"authorization", b"").decode()) != project:
            return _json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        try:
            message = json.loads(body)["message"]
            delivery = message.get("data", {}).get("herald_delivery_id")
            address = str(message["token"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return _json(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}})
        message_id = self._fcm_ids()
        channel = "push.web" if "webpush" in message else "push.android"
        self._receipt("fcm", channel, delivery, address, message_id)
        return _json(200, {"name": f"projects/{project}/messages/{message_id}"})

    def _webpush(self, path: bytes, headers: Headers, body: bytes) -> Answer:
        sid = path[10:].decode()
        sub = self._push.subscriptions.get(sid)
        if sub is None:
            return _json(404, {"reason": "no such subscription"})
        auth = headers.get(b"authorization", b"")
        if self._vapid_ok.get((auth, sid), 0.0) < time.time():
            origin = f"http://{_authority(headers)}"
            refused = webpush.check_vapid(auth.decode(), origin, sub)
            if refused is not None:
                return _json(refused[0], {"reason": refused[1]})
            if len(self._vapid_ok) >= apns.TokenVerifier.MAX_CACHED:
                self._vapid_ok.clear()
            # Signers renew well before the 24 h limit; an hour bounds a cached approval.
            self._vapid_ok[(auth, sid)] = time.time() + 3600
        if headers.get(b"content-encoding") != b"aes128gcm" or b"ttl" not in headers:
            return _json(400, {"reason": "aes128gcm body and TTL header required"})
        if len(body) > webpush.MAX_BODY:
            return _json(413, {"reason": "payload too large"})
        message_id = self._webpush_ids()
        delivery = headers.get(b"x-herald-delivery-id", b"").decode() or None
        self._receipt("webpush", "push.web", delivery, sub.json, message_id)
        location = f"http://{_authority(headers)}{path.decode()}/m/{message_id}"
        return 201, [(b"location", location.encode())], b""

    def twilio(self, method: bytes, path: bytes, headers: Headers, body: bytes) -> Answer:
        route = _TWILIO.match(path)
        if route is None or self._twilio.get(headers.get(b"authorization", b"")) != route.group(1):
            return _json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        to = dict(parse_qsl(body.decode())).get("To", "")
        message_id = self._twilio_ids()
        delivery = headers.get(b"x-herald-delivery-id", b"").decode() or None
        self._receipt("twilio", "sms", delivery, to, message_id)
        return _json(201, {"sid": message_id, "to": to, "status": "queued"})

    def vonage(self, method: bytes, path: bytes, headers: Headers, body: bytes) -> Answer:
        form = dict(parse_qsl(body.decode()))
        to = form.get("to", "")
        if self._vonage.get(form.get("api_key", "")) != form.get("api_secret"):
            entry = {"to": to, "status": "4", "error-text": "Bad Credentials"}
            return _json(200, {"message-count": "1", "messages": [entry]})
        message_id = self._vonage_ids()
        delivery = headers.get(b"x-herald-delivery-id", b"").decode() or form.get("client-ref")
        self._receipt("vonage", "sms", delivery, f"+{to}", message_id)
        entry = {"to": to, "status": "0", "message-id": message_id}
        return _json(200, {"message-count": "1", "messages": [entry]})

    def sendgrid(self, method: bytes, path: bytes, headers: Headers, body: bytes) -> Answer:
        if headers.get(b"authorization", b"") not in self._sendgrid:
            return _json(401, {"errors": [{"message": "The provided authorization is invalid"}]})
        if path != b"/v3/mail/send" or not body:
            return _json(400, {"errors": [{"message": "Bad Request"}]})
        message_id = self._sendgrid_ids()
        delivery = headers.get(b"x-herald-delivery-id", b"").decode() or None
        self._receipt("sendgrid", "email", delivery, "", message_id)
        return 202, [(b"x-message-id", message_id.encode())], b""


def _h1_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = [
        b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n"
        % (status, _REASONS.get(status, b"-"), len(body))
    ]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(head) + b"\r\n" + body


def _literal(name: bytes, value: bytes) -> bytes:
    # HPACK "literal without indexing, new name", lengths < 127 without Huffman: stateless.
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


# HPACK static table entries for `:status` (RFC 7541 appendix A).
_STATUS_INDEX = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}
# What APNs allows per connection; the window lets a client send without waiting on us.
MAX_STREAMS = 1000
WINDOW = 1 << 24
MAX_FRAME = DEFAULT_MAX_FRAME


def h2_headers_block(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    index = _STATUS_INDEX.get(status)
    block = bytes((0x80 | index,)) if index else b"\x08\x03" + str(status).encode()
    return block + b"".join(_literal(n, v) for n, v in headers)


class _Http2:
    """The server side of one HTTP/2 connection, after the client's preface."""

    def __init__(self, write: Callable[[bytes], None], handler: Handler) -> None:
        self._write = write
        self._handler = handler
        self._decoder = HeaderDecoder()
        self._frames = FrameReader()
        self._streams: dict[int, tuple[Headers, bytearray]] = {}
        self._pending: tuple[int, int, bytearray] | None = None  # headers awaiting CONTINUATION
        settings = struct.pack(">HIHI", 0x3, MAX_STREAMS, 0x4, WINDOW)
        write(
            frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW))
        )

    def data_received(self, data: bytes) -> bool:
        """Handle every complete frame; False once the client said GOAWAY."""
        out: list[bytes] = []
        consumed = 0
        for kind, flags, stream, payload in self._frames.feed(data):
            if kind == DATA:
                consumed += len(payload)
                payload = unpadded(flags, payload)
                entry = self._streams.get(stream)
                if entry is not None:
                    entry[1].extend(payload)
                    if flags & END_STREAM:
                        out.append(self._answer(stream))
            elif kind in (HEADERS, CONTINUATION):
                if kind == HEADERS:
                    self._pending = (stream, flags, bytearray(header_fragment(flags, payload)))
                elif self._pending is not None:
                    self._pending[2].extend(payload)
                if flags & END_HEADERS and self._pending is not None:
                    sid, first_flags, block = self._pending
                    self._pending = None
                    self._streams[sid] = (self._decoder.decode(bytes(block)), bytearray())
                    if first_flags & END_STREAM:
                        out.append(self._answer(sid))
            elif kind == SETTINGS and not flags & ACK:
                out.append(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                out.append(frame(PING, ACK, 0, payload))
            elif kind == RST_STREAM:
                self._streams.pop(stream, None)
            elif kind == GOAWAY:
                return False
        if consumed:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", consumed)))
        if out:
            self._write(b"".join(out))
        return True

    def _answer(self, stream: int) -> bytes:
        headers, body = self._streams.pop(stream)
        status, extra, payload = self._handler(
            headers.get(b":method", b""), headers.get(b":path", b""), headers, bytes(body)
        )
        block = h2_headers_block(status, extra)
        if not payload:
            return frame(HEADERS, END_HEADERS | END_STREAM, stream, block)
        # Answers are far below the client's flow-control window, but may exceed a frame.
        frames = [frame(HEADERS, END_HEADERS, stream, block)]
        for at in range(0, len(payload), MAX_FRAME):
            last = at + MAX_FRAME >= len(payload)
            frames.append(
                frame(DATA, END_STREAM if last else 0, stream, payload[at : at + MAX_FRAME])
            )
        return b"".join(frames)


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, or HTTP/2 when the client opens with the preface."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._buf = bytearray()
        self._h2: _Http2 | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if self._h2 is not None:
            if not self._h2.data_received(data):
                transport.close()
            return
        buf = self._buf
        buf += data
        if buf[:3] == b"PRI":
            if len(buf) < len(PREFACE):
                return
            self._h2 = _Http2(transport.write, self._handler)
            rest = bytes(buf[len(PREFACE) :])
            buf.clear()
            self.data_received(rest)
            return
        out: list[bytes] = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = bytes(buf[:end]).split(b"\r\n")
            method, path, _version = lines[0].split(b" ", 2)
            headers: Headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get(b"content-length", b"0"))
            if len(buf) < end + 4 + size:
                break
            body = bytes(buf[end + 4 : end + 4 + size])
            del buf[: end + 4 + size]
            out.append(_h1_response(*self._handler(method, path, headers, body)))
            if headers.get(b"connection", b"").lower() == b"close":
                close = True
                break
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()


class SmtpProtocol(asyncio.Protocol):
    """Enough SMTP for a client that sends mail: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
    QUIT, with PIPELINING. The delivery id is the message's `X-Herald-Delivery-Id`."""

    GREETING = b"220 herald-smtp-emulator ESMTP lean\r\n"
    EHLO = (
        b"250-herald-smtp-emulator\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
    )
    HEADER = b"\nX-Herald-Delivery-Id:"

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._buf = bytearray()
        self._rcpts: list[str] = []
        self._in_data = False
        self._ids = _ids("")
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self.GREETING)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buf = self._buf
        buf += data
        out: list[bytes] = []
        quit_ = False
        while buf:
            if self._in_data:
                end = 0 if buf.startswith(b".\r\n") else buf.find(b"\r\n.\r\n")
                if end < 0:
                    break
                message = bytes(buf[:end])
                del buf[: end + (3 if end == 0 else 5)]
                self._in_data = False
                out.append(self._accept(message))
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                break
            line = bytes(buf[:end])
            del buf[: end + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(self.EHLO)
            elif verb == b"MAIL":
                self._rcpts = []
                out.append(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                self._rcpts.append(line.partition(b"<")[2].partition(b">")[0].decode())
                out.append(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                if self._rcpts:
                    self._in_data = True
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                else:
                    out.append(b"503 5.5.1 RCPT first\r\n")
            elif verb in (b"HELO", b"NOOP"):
                out.append(b"250 OK\r\n")
            elif verb == b"RSET":
                self._rcpts = []
                out.append(b"250 OK\r\n")
            elif verb == b"QUIT":
                out.append(b"221 Bye\r\n")
                quit_ = True
                break
            else:
                out.append(b"502 5.5.2 Command not implemented\r\n")
        if out:
            self._transport.write(b"".join(out))
        if quit_:
            self._transport.close()

    def _accept(self, message: bytes) -> bytes:
        at = message.find(self.HEADER)
        delivery = None
        if at >= 0:
            start = at + len(self.HEADER)
            delivery = message[start : message.find(b"\r\n", start)].strip().decode()
        queue_id = self._ids()
        for rcpt in self._rcpts:
            self._state.record(Accepted("smtp", "email", delivery, rcpt, message_id=queue_id))
        self._rcpts = []
        return b"250 2.0.0 OK: queued as %s\r\n" % queue_id.encode()
