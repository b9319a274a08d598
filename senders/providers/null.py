"""The null provider: accepts every message at once, in process, for every channel.

For benchmarks: route every channel to it (`HERALD_ROUTING__<CHANNEL>__PROVIDERS='["null"]'`)
and the senders run without emulators or network, so what they cost is herald's own cost.
Never a production route: nothing is delivered.
"""

from __future__ import annotations

from senders.providers.base import Message, Provider, SendResult
from senders.providers.settings import NullSettings


class NullProvider(Provider):
    name = "null"
    channels = frozenset({"push.ios", "push.android", "push.web", "sms", "email"})

    def __init__(self, settings: NullSettings) -> None:
        self.settings = settings

    async def send(self, message: Message) -> SendResult:
        return SendResult(self.name, message.delivery_id)
