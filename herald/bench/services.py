"""The herald processes a benchmark run starts: emulators, N processors and N senders."""

from __future__ import annotations

from dataclasses import dataclass

from herald.services import ServiceSpec, free_port, python_module


@dataclass(frozen=True)
class Ports:
    """The emulators' ports; free ones, so a run never collides with a demo or a test."""

    apns: int
    fcm: int
    twilio: int
    vonage: int
    smtp: int
    sendgrid: int
    control: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*(free_port() for _ in range(7)))

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control}"


def emulator_spec(ports: Ports) -> ServiceSpec:
    return ServiceSpec(
        name="emulators",
        argv=python_module("infra.emulators"),
        ready_port=ports.control,
        env={
            "HERALD_EMULATORS__APNS_PORT": str(ports.apns),
            "HERALD_EMULATORS__FCM_PORT": str(ports.fcm),
            "HERALD_EMULATORS__TWILIO_PORT": str(ports.twilio),
            "HERALD_EMULATORS__VONAGE_PORT": str(ports.vonage),
            "HERALD_EMULATORS__SMTP_PORT": str(ports.smtp),
            "HERALD_EMULATORS__SENDGRID_PORT": str(ports.sendgrid),
            "HERALD_EMULATORS__CONTROL_PORT": str(ports.control),
        },
    )


def provider_env(ports: Ports) -> dict[str, str]:
    """Point every provider client at this run's emulators."""
    return {
        "HERALD_PROVIDERS__APNS__URL": f"https://127.0.0.1:{ports.apns}",
        "HERALD_PROVIDERS__FCM__URL": f"http://127.0.0.1:{ports.fcm}",
        "HERALD_PROVIDERS__TWILIO__URL": f"http://127.0.0.1:{ports.twilio}",
        "HERALD_PROVIDERS__VONAGE__URL": f"http://127.0.0.1:{ports.vonage}",
        "HERALD_PROVIDERS__SMTP__PORT": str(ports.smtp),
        "HERALD_PROVIDERS__SENDGRID__URL": f"http://127.0.0.1:{ports.sendgrid}",
    }


def processor_spec(index: int) -> ServiceSpec:
    metrics = free_port()
    return ServiceSpec(
        name=f"processor-{index}",
        argv=python_module("processors"),
        ready_port=metrics,
        env={"HERALD_METRICS_PORT": str(metrics), "HERALD_WEB_PORT": str(free_port())},
    )


def sender_spec(index: int, ports: Ports) -> ServiceSpec:
    metrics = free_port()
    return ServiceSpec(
        name=f"senders-{index}",
        argv=python_module("senders", "run", "--channel", "all"),
        ready_port=metrics,
        env={"HERALD_METRICS_PORT": str(metrics), **provider_env(ports)},
    )
