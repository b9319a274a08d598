"""Run every provider emulator and the control API in one asyncio loop.

`Emulators(settings).start()` binds and listens on all ports first (port 0 = any free one,
read back from `ports`), so clients may connect as soon as it returns; then it serves:
APNs with hypercorn over TLS with HTTP/2 (ALPN h2), the HTTP APIs with hypercorn
(HTTP/1.1, h2c accepted), SMTP with aiosmtpd. Used by `python -m infra.emulators` and,
in-process, by the contract tests. With `lean`, the providers are served by the raw
asyncio protocols of `infra.emulators.lean` instead (benchmarks); the control API is the
same either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette

from infra.emulators import apns, fcm, lean, sendgrid, smtp, twilio, vonage, webpush
from infra.emulators.state import EmulatorState, control_app

log = logging.getLogger(__name__)

DEV_CREDENTIALS = Path(__file__).resolve().parent / "dev-credentials"


class EmulatorSettings(BaseSettings):
    """Ports, TLS and the credentials the emulators accept (defaults = the providers' defaults)."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_EMULATORS__", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    apns_port: int = 8443
    fcm_port: int = 8444
    twilio_port: int = 8445
    vonage_port: int = 8446
    smtp_port: int = 8025
    sendgrid_port: int = 8447
    control_port: int = 8099

    tls_cert: Path = DEV_CREDENTIALS / "emulator-tls.crt"
    tls_key: Path = DEV_CREDENTIALS / "emulator-tls.key"
    # Plain-text HTTP/2 (prior knowledge) instead of TLS for APNs.
    apns_h2c: bool = False
    apns_key_file: Path = DEV_CREDENTIALS / "apns-dev-key.p8"
    apns_key_id: str = "DEVKEY0001"
    apns_team_id: str = "HERALDDEV1"
    apns_topics: list[str] = ["dev.herald.app"]
    fcm_service_account: Path = DEV_CREDENTIALS / "fcm-dev-service-account.json"
    twilio_account_sid: str = "ACherald0000000000000000000000dev"
    twilio_auth_token: SecretStr = SecretStr("herald-dev-token")
    vonage_api_key: str = "heralddev"
    vonage_api_secret: SecretStr = SecretStr("herald-dev-secret")
    sendgrid_api_key: SecretStr = SecretStr("SG.herald-dev-key")
    smtp_username: str = "herald"
    smtp_password: SecretStr = SecretStr("herald-dev-password")
    smtp_auth_required: bool = False
    smtp_starttls: bool = True  # offer STARTTLS (with the TLS certificate above)
    seed: int | None = None  # fault coin flips, for reproducible runs
    # The benchmarks' emulators: O(1) checks, no faults (see infra.emulators.lean).
    lean: bool = False
    # Append receipts to this file instead of keeping them in memory (long runs).
    receipts_file: Path | None = None


class Ports(BaseModel):
    """The emulators' ports, as bound (`Emulators.start`) or chosen for a run (`pick`)."""

    apns: int
    fcm: int
    twilio: int
    vonage: int
    smtp: int
    sendgrid: int
    control: int

    @classmethod
    def pick(cls) -> Ports:
        """Free ports, so a run never collides with a demo or a test."""
        return cls(**{name: _free_port() for name in cls.model_fields})

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _HttpServer:
    name: str
    app: Any
    sock: socket.socket
    tls: bool = False


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _apns_keys(s: EmulatorSettings) -> list[apns.SigningKey]:
    key = load_pem_private_key(s.apns_key_file.read_bytes(), password=None)
    assert isinstance(key, EllipticCurvePrivateKey)
    return [
        apns.SigningKey(s.apns_key_id, s.apns_team_id, key.public_key(), frozenset(s.apns_topics))
    ]


def _fcm_accounts(s: EmulatorSettings) -> list[fcm.ServiceAccount]:
    info = json.loads(s.fcm_service_account.read_text())
    key = load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return [
        fcm.ServiceAccount(
            info["project_id"], info["client_email"], info["private_key_id"], key.public_key()
        )
    ]


class Emulators:
    def __init__(self, settings: EmulatorSettings, state: EmulatorState | None = None) -> None:
        self.settings = settings
        self.state = state or EmulatorState(settings.seed, settings.receipts_file)
        self.ports: Ports | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[asyncio.Server] = []
        self._smtp: Any = None
        self.push_service = webpush.PushService()

    def tls_server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return ctx

    async def start(self) -> Ports:
        s = self.settings
        socks = {
            name: _bind(s.host, getattr(s, f"{name}_port"))
            for name in ("apns", "fcm", "twilio", "vonage", "smtp", "sendgrid", "control")
        }
        self.ports = Ports(**{name: sock.getsockname()[1] for name, sock in socks.items()})
        if s.lean:
            await self._start_lean(socks)
            log.info("lean emulators listening", extra={"ports": self.ports.model_dump()})
            return self.ports
        servers = [
            _HttpServer("apns", apns.app(self.state, _apns_keys(s)), socks["apns"], not s.apns_h2c),
            # Chrome's Web Push endpoints live on FCM's host: so do the emulators'.
            _HttpServer(
                "fcm",
                Starlette(
                    routes=[
                        *fcm.app(self.state, _fcm_accounts(s)).routes,
                        *webpush.app(self.state, self.push_service).routes,
                    ]
                ),
                socks["fcm"],
            ),
            _HttpServer(
                "twilio",
                twilio.app(
                    self.state, {s.twilio_account_sid: s.twilio_auth_token.get_secret_value()}
                ),
                socks["twilio"],
            ),
            _HttpServer(
                "vonage",
                vonage.app(self.state, {s.vonage_api_key: s.vonage_api_secret.get_secret_value()}),
                socks["vonage"],
            ),
            _HttpServer(
                "sendgrid",
                sendgrid.app(self.state, {s.sendgrid_api_key.get_secret_value()}),
                socks["sendgrid"],
            ),
            _HttpServer("control", control_app(self.state), socks["control"]),
        ]
        for server in servers:
            self._tasks.append(asyncio.create_task(self._serve_http(server), name=server.name))
        self._smtp = await smtp.serve(
            self.state,
            socks["smtp"],
            users={s.smtp_username: s.smtp_password.get_secret_value()},
            auth_required=s.smtp_auth_required,
            tls=self.tls_server_context() if s.smtp_starttls else None,
        )
        log.info("emulators listening", extra={"ports": self.ports.model_dump()})
        return self.ports

    async def _start_lean(self, socks: dict[str, socket.socket]) -> None:
        s = self.settings
        providers = lean.LeanProviders(
            self.state,
            apns_keys=_apns_keys(s),
            fcm_accounts=_fcm_accounts(s),
            push_service=self.push_service,
            twilio_accounts={s.twilio_account_sid: s.twilio_auth_token.get_secret_value()},
            vonage_keys={s.vonage_api_key: s.vonage_api_secret.get_secret_value()},
            sendgrid_keys={s.sendgrid_api_key.get_secret_value()},
        )
        loop = asyncio.get_running_loop()
        apns_tls = None
        if not s.apns_h2c:
            apns_tls = self.tls_server_context()
            apns_tls.set_alpn_protocols(["h2"])
        handlers: dict[str, tuple[lean.Handler, ssl.SSLContext | None]] = {
            "apns": (providers.apns, apns_tls),
            "fcm": (providers.fcm, None),
            "twilio": (providers.twilio, None),
            "vonage": (providers.vonage, None),
            "sendgrid": (providers.sendgrid, None),
        }
        for name, (handler, tls) in handlers.items():
            self._servers.append(
                await loop.create_server(
                    lambda h=handler: lean.HttpProtocol(h),
                    sock=socks[name],
                    ssl=tls,
                )
            )
        self._servers.append(
            await loop.create_server(lambda: lean.SmtpProtocol(self.state), sock=socks["smtp"])
        )
        control = _HttpServer("control", control_app(self.state, faults=False), socks["control"])
        self._tasks.append(asyncio.create_task(self._serve_http(control), name="control"))

    async def _serve_http(self, server: _HttpServer) -> None:
        config = HypercornConfig()
        # hypercorn takes over the already bound socket: ports are known before serving.
        config.bind = [f"fd://{server.sock.detach()}"]
        config.graceful_timeout = 0.5  # held (timeout-fault) requests must not delay a stop
        config.keep_alive_timeout = 60
        # hypercorn closes a connection after 1000 requests by default; providers do not.
        config.keep_alive_max_requests = 2**31
        config.h2_max_concurrent_streams = 1000  # what APNs allows per connection
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")  # through our JSON logging only
        if server.tls:
            config.certfile = str(self.settings.tls_cert)
            config.keyfile = str(self.settings.tls_key)
            config.alpn_protocols = ["h2"]
        await hypercorn_serve(server.app, config, shutdown_trigger=self._stop.wait)

    async def stop(self) -> None:
        self._stop.set()
        if self._smtp is not None:
            self._smtp.close()
        for lean_server in self._servers:
            lean_server.close()
        self._servers.clear()
        # Bounded throughout: `wait_for` would wait without end for a task that is slow to
        # honour its cancellation, and a stop must never hang its caller.
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=5)
                for task in stuck:
                    log.error("emulator server did not stop", extra={"server": task.get_name()})
        self._tasks.clear()

    async def run_forever(self) -> None:
        await self.start()
        await self._stop.wait()
        await self.stop()
        self.state.close()

    def request_stop(self) -> None:
        self._stop.set()
