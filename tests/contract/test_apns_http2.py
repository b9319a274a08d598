"""APNs specifics against its emulator: one HTTP/2 connection for many concurrent streams,
an expired provider token refreshed on 403 ExpiredProviderToken, and cleartext h2c."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import pytest

from infra.emulators.server import Emulators, EmulatorSettings
from senders.providers.apns import ApnsProvider
from senders.providers.base import Message, RetriableError
from senders.providers.settings import ApnsSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def push() -> Message:
    return Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel="push.ios",
        address=secrets.token_hex(32),
        body="hello",
        title="hi",
    )


async def test_concurrent_pushes_share_one_http2_connection(emulators: Emulators) -> None:
    assert emulators.ports is not None
    provider = ApnsProvider(ApnsSettings(url=f"https://127.0.0.1:{emulators.ports.apns}"))
    await provider.start()
    try:
        await asyncio.gather(*(provider.send(push()) for _ in range(50)))
        assert provider._client is not None
        assert provider._client.connections == 1
    finally:
        await provider.close()


async def test_expired_provider_token_is_replaced_and_the_retry_succeeds(
    emulators: Emulators,
) -> None:
    assert emulators.ports is not None
    # The first token is signed two hours in the past, and the refresh period is set too
    # long to catch it: only APNs' 403 can tell.
    first = iter([time.time() - 2 * 3600])
    provider = ApnsProvider(
        ApnsSettings(url=f"https://127.0.0.1:{emulators.ports.apns}", token_refresh_s=5 * 3600),
        clock=lambda: next(first, None) or time.time(),
    )
    await provider.start()
    try:
        msg = push()
        with pytest.raises(RetriableError) as err:
            await provider.send(msg)
        assert err.value.reason == "apns:403 ExpiredProviderToken"
        assert err.value.retry_after == 0

        await provider.send(msg)
        assert [e.delivery_id for e in emulators.state.ledger].count(msg.delivery_id) == 1
    finally:
        await provider.close()


async def test_cleartext_http2_prior_knowledge() -> None:
    emu = Emulators(
        EmulatorSettings(
            apns_h2c=True,
            apns_port=0,
            fcm_port=0,
            twilio_port=0,
            vonage_port=0,
            smtp_port=0,
            sendgrid_port=0,
            control_port=0,
        )
    )
    ports = await emu.start()
    provider = ApnsProvider(ApnsSettings(url=f"http://127.0.0.1:{ports.apns}", ca_file=None))
    await provider.start()
    try:
        msg = push()
        await provider.send(msg)
        assert [e.delivery_id for e in emu.state.ledger] == [msg.delivery_id]
    finally:
        await provider.close()
        await emu.stop()
