"""`python -m herald.bench.isolated`: the processor with every topic under `HERALD_TOPIC_PREFIX`.

Benchmark and fault runs share a broker with whatever else runs herald; only a topic family
of their own keeps another pipeline's senders from claiming their deliveries (and theirs
from ours). The senders take `HERALD_TOPIC_PREFIX` themselves; the processor reads its
request, status, dead-letter and user-change topic names from settings but names channel
topics through `infra.topics.channel_topic`, so this entry point prefixes that one call
and then runs the processor's own `main`. Once `ProcessorSettings` has a `topic_prefix`,
`herald.bench.services` starts `python -m processors` directly and this module goes.
"""

from __future__ import annotations

import os

from infra import topics


def main() -> None:
    prefix = os.environ.get("HERALD_TOPIC_PREFIX", "")
    for name, topic in (
        ("REQUESTED_TOPIC", topics.REQUESTED),
        ("REQUESTED_DLQ_TOPIC", topics.REQUESTED_DLQ),
        ("STATUS_TOPIC", topics.STATUS),
        ("USER_CHANGES_TOPIC", topics.USER_CHANGES),
    ):
        os.environ.setdefault(f"HERALD_{name}", prefix + topic)

    from processors import __main__ as processor
    from processors import pipeline

    def channel_topic(channel: str, *, priority: bool = False) -> str:
        return prefix + topics.channel_topic(channel, priority=priority)

    pipeline.channel_topic = channel_topic
    processor.main()


if __name__ == "__main__":
    main()
