"""`python -m herald.bench.emulators`: each lean provider emulator alone, at full load.

Starts `python -m infra.emulators` (lean, receipts to a file) as its own process on
127.0.0.1, pinned to one core when there are two, and drives one emulator at a time from
this process with its real protocol: APNs HTTP/2 over TLS with an ES256 provider token,
FCM v1 with an OAuth2 access token, Web Push with VAPID and an aes128gcm body, the two
SMS APIs, the email API, and SMTP (pipelined MAIL/RCPT/DATA). Each run stops after
`--requests` answers or `--seconds`. Prints requests/s, the emulator's CPU µs per request
(and the requests/s one core would sustain at that cost), its RSS, and whether every
accepted request left exactly one receipt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import hpack
import httpx
import jwt
import psutil
import typer
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from rich.console import Console
from rich.table import Table

from herald.bench.services import emulator_spec
from herald.services import Service, start
from infra.emulators.server import DEV_CREDENTIALS, EmulatorSettings, Ports
from infra.h2frames import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    FrameReader,
    frame,
)
from senders.providers.webpush import VapidSigner, encrypt, parse_subscription

EMULATORS = ("apns", "fcm", "webpush", "twilio", "vonage", "sendgrid", "smtp")
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
MakeRequest = Callable[[int], bytes]


@dataclass
class Load:
    """How much to send: stop at `requests` answers or after `seconds`."""

    requests: int
    seconds: float
    connections: int
    streams: int  # concurrent HTTP/2 streams per connection


@dataclass
class EmulatorFigures:
    emulator: str
    answered: int
    ok: int
    receipts: int
    seconds: float
    cpu_seconds: float
    rss_mib: float

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / self.answered if self.answered else 0.0

    @property
    def one_core_per_s(self) -> float:
        """Requests/s the emulator would sustain on one core at its measured cost."""
        return 1e6 / self.cpu_us_per_request if self.cpu_us_per_request else 0.0


class _Counter:
    def __init__(self, load: Load) -> None:
        self.load = load
        self.sent = 0
        self.answered = 0
        self.ok = 0
        self.deadline = time.monotonic() + load.seconds
        self.done = asyncio.get_running_loop().create_future()

    def more(self) -> bool:
        return self.sent < self.load.requests and time.monotonic() < self.deadline

    def answer(self, ok: bool) -> None:
        self.answered += 1
        self.ok += ok
        if self.answered >= self.sent and not self.more() and not self.done.done():
            self.done.set_result(None)


class _Http1Client(asyncio.Protocol):
    """One keep-alive connection: the next request as soon as the answer is in."""

    def __init__(self, counter: _Counter, make: MakeRequest, ok_status: bytes) -> None:
        self._c, self._make, self._ok = counter, make, ok_status
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if self._c.more():
            self._c.sent += 1
            self._transport.write(self._make(self._c.sent))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            match = _CONTENT_LENGTH.search(buf, 0, end)
            size = int(match.group(1)) if match else 0
            if len(buf) < end + 4 + size:
                return
            ok = buf[9:12] == self._ok
            del buf[: end + 4 + size]
            self._c.answer(ok)
            self._send()


class _SmtpClient(asyncio.Protocol):
    """One SMTP session: EHLO, then MAIL/RCPT/DATA pipelined and the message, repeated."""

    def __init__(self, counter: _Counter, make: MakeRequest) -> None:
        self._c, self._make = counter, make
        self._buf = bytearray()
        self._stage = "greeting"
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buf += data
        while (end := self._buf.find(b"\r\n")) >= 0:
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if line[3:4] == b"-":
                continue  # a multi-line reply goes on
            if self._stage == "greeting":
                self._transport.write(b"EHLO bench\r\n")
                self._stage = "ehlo"
            elif self._stage in ("ehlo", "sent"):
                if self._stage == "sent":
                    self._c.answer(line.startswith(b"250"))
                if not self._c.more():
                    self._transport.write(b"QUIT\r\n")
                    self._stage = "quit"
                    continue
                self._c.sent += 1
                self._message = self._make(self._c.sent)
                self._transport.write(
                    b"MAIL FROM:<bench@herald.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n"
                )
                self._stage, self._replies = "envelope", 0
            elif self._stage == "envelope":
                self._replies += 1
                if self._replies == 3:  # 250, 250, 354
                    self._transport.write(self._message + b"\r\n.\r\n")
                    self._stage = "sent"


_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


class _ApnsClient(asyncio.Protocol):
    """One HTTP/2 connection with up to `streams` requests in flight.

    Headers the same on every request go into the HPACK table once and are then sent as
    indexes; the per-request ones (path, delivery id) as Huffman-coded literals without
    indexing. The server decodes what any HTTP/2 client sends, and the client stays cheap
    enough not to be what limits the rate."""

    def __init__(
        self,
        counter: _Counter,
        headers: tuple[list[tuple[str, str]], Callable[[int], list[tuple[bytes, bytes]]]],
        body: bytes,
        streams: int,
    ) -> None:
        self._c, self._body, self._streams = counter, body, streams
        self._constant, self._varying = headers
        self._encoder = hpack.Encoder()
        self._indexed: bytes | None = None
        self._frames = FrameReader()
        self._next_stream = 1
        self._transport: asyncio.Transport | None = None
        self._status: dict[int, bool] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        out = [PREFACE, frame(SETTINGS, 0, 0, b"")]
        out += [self._request() for _ in range(self._streams) if self._c.more()]
        self._transport.write(b"".join(out))

    def _request(self) -> bytes:
        self._c.sent += 1
        stream, self._next_stream = self._next_stream, self._next_stream + 2
        if self._indexed is None:
            block = self._encoder.encode(self._constant)
            # Encoding headers already in the table only reads it: the same bytes from now on.
            self._indexed = self._encoder.encode(self._constant)
        else:
            block = self._indexed
        for name, value in self._varying(self._c.sent):
            coded = _HUFFMAN.encode(value)
            block += b"\x00%c%s%c%s" % (len(name), name, 0x80 | len(coded), coded)
        return frame(HEADERS, END_HEADERS, stream, block) + frame(
            DATA, END_STREAM, stream, self._body
        )

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        out: list[bytes] = []
        for kind, flags, stream, payload in self._frames.feed(data):
            if kind == HEADERS:
                # The lean server's block starts with :status; 0x88 is "200" from the static table.
                self._status[stream] = payload[:1] == b"\x88"
            elif kind == SETTINGS and not flags & ACK:
                out.append(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                out.append(frame(PING, ACK, 0, payload))
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                self._c.answer(self._status.pop(stream, False))
                if self._c.more():
                    out.append(self._request())
        if out:
            self._transport.write(b"".join(out))


def _http1(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


def _delivery(i: int) -> str:
    return f"bench-{i:030d}"


def _fcm_token(port: int) -> tuple[str, str]:
    """(project, access token), minted the way google-auth does: a JWT-bearer grant."""
    account = json.loads((DEV_CREDENTIALS / "fcm-dev-service-account.json").read_text())
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": account["client_email"],
            "aud": "https://oauth2.googleapis.com/token",
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": now,
            "exp": now + 3600,
        },
        account["private_key"],
        algorithm="RS256",
        headers={"kid": account["private_key_id"]},
    )
    resp = httpx.post(
        f"http://127.0.0.1:{port}/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    resp.raise_for_status()
    return account["project_id"], resp.json()["access_token"]


def _http1_requests(name: str, ports: Ports, s: EmulatorSettings) -> tuple[int, MakeRequest, bytes]:
    """(port, request maker, status that means accepted) of an HTTP/1.1 emulator."""
    if name == "fcm":
        project, token = _fcm_token(ports.fcm)
        path = f"/v1/projects/{project}/messages:send"
        auth = {"host": f"127.0.0.1:{ports.fcm}", "authorization": f"Bearer {token}"}

        def fcm_request(i: int) -> bytes:
            message = {
                "token": f"bench{i:06d}:APA91b{'x' * 120}",
                "notification": {"title": "Your parcel", "body": "Arrives tomorrow."},
                "data": {"herald_delivery_id": _delivery(i)},
                "android": {"priority": "high", "ttl": "3600s"},
            }
            return _http1("POST", path, auth, json.dumps({"message": message}).encode())

        return ports.fcm, fcm_request, b"200"
    if name == "webpush":
        vapid = load_pem_private_key(
            (DEV_CREDENTIALS / "webpush-vapid-dev-key.pem").read_bytes(), None
        )
        assert isinstance(vapid, ec.EllipticCurvePrivateKey)
        signer = VapidSigner(vapid, "mailto:bench@herald.example")
        origin = f"http://127.0.0.1:{ports.fcm}"
        sub = httpx.post(
            f"{origin}/subscriptions", json={"applicationServerKey": signer.public_key}
        ).text
        endpoint, p256dh, secret = parse_subscription(sub)
        headers = {
            "host": f"127.0.0.1:{ports.fcm}",
            "authorization": signer.header(origin),
            "content-encoding": "aes128gcm",
            "ttl": "3600",
        }
        # Encrypting is the sender's cost, not the push service's: one body serves the run.
        body = encrypt(b'{"title": "Your parcel", "body": "Arrives tomorrow."}', p256dh, secret)
        path = endpoint.removeprefix(origin)

        def webpush_request(i: int) -> bytes:
            return _http1("POST", path, {**headers, "x-herald-delivery-id": _delivery(i)}, body)

        return ports.fcm, webpush_request, b"201"
    if name == "twilio":
        sid = s.twilio_account_sid
        basic = base64.b64encode(f"{sid}:{s.twilio_auth_token.get_secret_value()}".encode())
        path = f"/2010-04-01/Accounts/{sid}/Messages.json"
        form = b"To=%2B14155550100&From=%2B15005550006&Body=Your+parcel+arrives+tomorrow."
        hdrs = {"host": "127.0.0.1", "authorization": f"Basic {basic.decode()}"}
        hdrs["content-type"] = "application/x-www-form-urlencoded"

        def twilio_request(i: int) -> bytes:
            return _http1("POST", path, {**hdrs, "x-herald-delivery-id": _delivery(i)}, form)

        return ports.twilio, twilio_request, b"201"
    if name == "vonage":
        api_secret = s.vonage_api_secret.get_secret_value()
        hdrs = {"host": "127.0.0.1", "content-type": "application/x-www-form-urlencoded"}

        def vonage_request(i: int) -> bytes:
            form = (
                f"api_key={s.vonage_api_key}&api_secret={api_secret}&from=herald&to=14155550100"
                f"&text=Your+parcel+arrives+tomorrow.&client-ref={_delivery(i)}"
            )
            return _http1("POST", "/sms/json", hdrs, form.encode())

        return ports.vonage, vonage_request, b"200"
    key = s.sendgrid_api_key.get_secret_value()
    hdrs = {"host": "127.0.0.1", "authorization": f"Bearer {key}"}
    hdrs["content-type"] = "application/json"

    def sendgrid_request(i: int) -> bytes:
        mail = {
            "personalizations": [{"to": [{"email": "user@example.com"}]}],
            "from": {"email": "notifications@herald.example", "name": "herald"},
            "subject": "Your parcel is on its way",
            "content": [{"type": "text/plain", "value": "Arrives tomorrow."}],
            "custom_args": {"delivery_id": _delivery(i)},
        }
        return _http1(
            "POST",
            "/v3/mail/send",
            {**hdrs, "x-herald-delivery-id": _delivery(i)},
            json.dumps(mail).encode(),
        )

    return ports.sendgrid, sendgrid_request, b"202"


def _smtp_message(i: int) -> bytes:
    return (
        "From: herald <notifications@herald.example>\r\nTo: user@example.com\r\n"
        f"Subject: Your parcel\r\nMessage-ID: <{_delivery(i)}@herald.example>\r\n"
        f"X-Herald-Delivery-Id: {_delivery(i)}\r\nContent-Type: text/plain\r\n\r\n"
        "Arrives tomorrow.\r\n"
    ).encode()


def _apns_headers(
    s: EmulatorSettings, port: int
) -> tuple[list[tuple[str, str]], Callable[[int], list[tuple[bytes, bytes]]]]:
    """(headers of every request, headers of request i)."""
    key = load_pem_private_key(s.apns_key_file.read_bytes(), None)
    token = jwt.encode(
        {"iss": s.apns_team_id, "iat": int(time.time())},
        key,  # type: ignore[arg-type]
        algorithm="ES256",
        headers={"kid": s.apns_key_id},
    )

    constant = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        ("authorization", f"bearer {token}"),
        ("apns-topic", s.apns_topics[0]),
        ("apns-push-type", "alert"),
        ("apns-priority", "10"),
    ]

    def varying(i: int) -> list[tuple[bytes, bytes]]:
        return [
            (b":path", b"/3/device/%064x" % i),
            (b"x-herald-delivery-id", _delivery(i).encode()),
        ]

    return constant, varying


async def _drive(name: str, ports: Ports, s: EmulatorSettings, load: Load) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    counter = _Counter(load)
    factory: Callable[[], asyncio.Protocol]
    tls: ssl.SSLContext | None = None
    connections = load.connections
    if name == "apns":
        tls = ssl.create_default_context(cafile=str(s.tls_cert))
        tls.set_alpn_protocols(["h2"])
        body = b'{"aps":{"alert":{"title":"Your parcel","body":"Arrives tomorrow."}}}'
        make = _apns_headers(s, ports.apns)
        port, connections = ports.apns, max(1, load.connections // 8)

        def factory() -> asyncio.Protocol:
            return _ApnsClient(counter, make, body, load.streams)
    elif name == "smtp":
        port = ports.smtp

        def factory() -> asyncio.Protocol:
            return _SmtpClient(counter, _smtp_message)
    else:
        port, request, ok = _http1_requests(name, ports, s)

        def factory() -> asyncio.Protocol:
            return _Http1Client(counter, request, ok)

    transports = [
        (
            await loop.create_connection(
                factory, "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
            )
        )[0]
        for _ in range(connections)
    ]
    await asyncio.wait_for(counter.done, load.seconds + 30)
    for transport in transports:
        transport.close()
    return counter.answered, counter.ok


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(
    emulator: Service, ports: Ports, names: tuple[str, ...], load: Load
) -> list[EmulatorFigures]:
    settings = EmulatorSettings(_env_file=None)  # type: ignore[call-arg]
    proc = psutil.Process(emulator.pid)
    control = httpx.Client(base_url=ports.control_url, timeout=60)
    figures = []
    for name in names:
        control.post("/reset").raise_for_status()
        cpu0, t0 = _cpu(proc), time.perf_counter()
        answered, ok = asyncio.run(_drive(name, ports, settings, load))
        seconds, cpu = time.perf_counter() - t0, _cpu(proc) - cpu0
        receipts = int(control.get("/health").json()["ledger"])
        figures.append(
            EmulatorFigures(
                name, answered, ok, receipts, seconds, cpu, proc.memory_info().rss / 2**20
            )
        )
    return figures


def render(figures: list[EmulatorFigures], console: Console) -> None:
    table = Table(title="lean emulators, each alone (127.0.0.1, emulator on one core)")
    for col in (
        "emulator",
        "requests",
        "ok",
        "receipts",
        "req/s",
        "CPU µs/req",
        "1 core req/s",
        "RSS MiB",
    ):
        table.add_column(col, justify="left" if col == "emulator" else "right")
    for f in figures:
        table.add_row(
            f.emulator,
            f"{f.answered:,}",
            f"{f.ok:,}",
            f"{f.receipts:,}",
            f"{f.requests_per_s:,.0f}",
            f"{f.cpu_us_per_request:,.1f}",
            f"{f.one_core_per_s:,.0f}",
            f"{f.rss_mib:,.1f}",
        )
    console.print(table)


def main(
    requests: int = typer.Option(30_000, help="Requests per emulator (upper bound)."),
    seconds: float = typer.Option(10.0, help="Seconds per emulator (upper bound)."),
    connections: int = typer.Option(16, help="HTTP/1.1 and SMTP connections (HTTP/2: ÷ 8)."),
    streams: int = typer.Option(100, help="Concurrent streams per HTTP/2 connection."),
    only: str = typer.Option(",".join(EMULATORS), help="Emulators to drive, comma-separated."),
    log_dir: Path = typer.Option(Path(".run/bench/emulators"), help="The emulators' log."),
) -> None:
    """Drive each lean emulator alone and print its requests/s, CPU µs per request, RSS."""
    names = tuple(n for n in only.split(",") if n.strip())
    ports = Ports.pick()
    with tempfile.TemporaryDirectory() as tmp:
        spec = emulator_spec(ports, lean=True, receipts=Path(tmp) / "receipts.jsonl")
        emulator = start(spec, log_dir)
        try:
            cores = psutil.cpu_count() or 1
            if cores >= 2:
                # The emulator on one core, the load on another: the emulator is measured alone.
                psutil.Process(emulator.pid).cpu_affinity([0])
                psutil.Process().cpu_affinity([1])
            figures = measure(emulator, ports, names, Load(requests, seconds, connections, streams))
        finally:
            emulator.stop()
    # Wide enough for the table when the output is a file or a CI log.
    render(figures, Console(width=None if Console().is_terminal else 120))


if __name__ == "__main__":
    typer.run(main)
