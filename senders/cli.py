"""`herald senders ...` / `python -m senders ...`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from schemas.channels import Channel

app = typer.Typer(help="Senders: drain the channel topics into the providers.")

CHANNEL_HELP = "all | " + " | ".join(c.value for c in Channel) + " (repeatable)"


@app.callback()
def _main() -> None:
    """Senders: drain the channel topics into the providers."""


@app.command()
def run(
    channel: Annotated[list[str], typer.Option("--channel", "-c", help=CHANNEL_HELP)] = ["all"],  # noqa: B006
) -> None:
    """Consume the channels' main, priority and retry topics and deliver every record."""
    from infra.logging import configure_logging
    from senders.runtime import parse_channels
    from senders.service import serve
    from senders.settings import SenderSettings

    settings = SenderSettings()  # the only place the environment is read
    settings.tune_interpreter()
    configure_logging("senders", settings.log_level)
    # httpx logs every request URL at INFO, and an APNs URL carries the device token.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        channels = parse_channels(channel)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--channel") from None
    settings.run(serve(settings, channels))
