"""herald's public contract beside the Avro schemas: topic names, headers, status outcomes
and reasons, and the delivery-ledger states.

Every name here is read by code outside herald (analytics, operators' tools, other
languages; `docs/contract.md` documents each), so a value never changes meaning: new
values are added, old ones stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from schemas.channels import Channel, Outcome

__all__ = [
    "DEAD_LETTER_HEADERS",
    "FINAL_STATES",
    "REQUESTED",
    "REQUESTED_DLQ",
    "REQUESTED_PRIORITY",
    "RETRY_TIERS",
    "STATUS",
    "TEMPLATE_CHANGES",
    "USER_CHANGES",
    "Header",
    "LedgerState",
    "Outcome",
    "Reason",
    "Topics",
    "channel_topic",
    "dlq_topic",
    "retry_topic",
]

# --- Topics -------------------------------------------------------------------------------

REQUESTED: Final = "notifications.requested"
# Urgent requests (priority high, mandatory categories): a lane of their own, so a marketing
# backlog on the request topic cannot delay a login code.
REQUESTED_PRIORITY: Final = "notifications.requested.priority"
REQUESTED_DLQ: Final = "notifications.requested.dlq"
STATUS: Final = "notifications.status"
USER_CHANGES: Final = "users.changes"
# Keyed by template id: every processor drops its cached rows of a template that changed.
TEMPLATE_CHANGES: Final = "templates.changes"
RETRY_TIERS: Final = 3


def channel_topic(channel: Channel | str, *, priority: bool = False) -> str:
    """Main topic of a channel; high-priority requests take their own lane."""
    return f"notifications.{channel}" + (".priority" if priority else "")


def retry_topic(channel: Channel | str, tier: int) -> str:
    if not 1 <= tier <= RETRY_TIERS:
        raise ValueError(f"retry tier must be 1..{RETRY_TIERS}, got {tier}")
    return f"notifications.{channel}.retry.{tier}"


def dlq_topic(channel: Channel | str) -> str:
    return f"notifications.{channel}.dlq"


@dataclass(frozen=True)
class Topics:
    """The topic names under `prefix`: a test's, a benchmark run's or a tenant's own copy
    of the topics (empty: the real ones)."""

    prefix: str = ""

    def of(self, name: str) -> str:
        """`name` (one of the names above) under the prefix."""
        return self.prefix + name

    @property
    def requested(self) -> str:
        return self.prefix + REQUESTED

    @property
    def requested_priority(self) -> str:
        return self.prefix + REQUESTED_PRIORITY

    @property
    def requested_dlq(self) -> str:
        return self.prefix + REQUESTED_DLQ

    @property
    def status(self) -> str:
        return self.prefix + STATUS

    @property
    def user_changes(self) -> str:
        return self.prefix + USER_CHANGES

    @property
    def template_changes(self) -> str:
        return self.prefix + TEMPLATE_CHANGES

    def channel(self, channel: Channel | str, *, priority: bool = False) -> str:
        return self.prefix + channel_topic(channel, priority=priority)

    def retry(self, channel: Channel | str, tier: int) -> str:
        return self.prefix + retry_topic(channel, tier)

    def retries(self, channel: Channel | str) -> list[str]:
        return [self.retry(channel, tier) for tier in range(1, RETRY_TIERS + 1)]

    def dlq(self, channel: Channel | str) -> str:
        return self.prefix + dlq_topic(channel)


# --- Headers ------------------------------------------------------------------------------


class Header:
    """Kafka header names herald sets. Values are UTF-8 text."""

    # `1`: re-produced by an operator (`herald replay`, `herald dlq redrive`); the request
    # dedup is skipped, the delivery ledger still applies.
    REPLAY: Final = "herald.replay"
    # `<topic>:<partition>:<offset>` of the dead letter an operator sent back.
    REDRIVEN_FROM: Final = "herald.redriven_from"
    # `1`: released by the scheduler after `send_at` or quiet hours.
    RELEASED: Final = "herald.released"
    SCHEDULE_REASON: Final = "herald.schedule_reason"
    # A dead letter cut to fit the topic: the original size in bytes.
    TRUNCATED_FROM: Final = "herald.truncated_from"
    # Dead letters: why, how often tried, the first and last error, where it came from.
    REASON: Final = "herald.reason"
    ATTEMPTS: Final = "herald.attempts"
    FIRST_ERROR: Final = "herald.first_error"
    LAST_ERROR: Final = "herald.last_error"
    ORIGINAL_TOPIC: Final = "herald.original_topic"
    ORIGINAL_PARTITION: Final = "herald.original_partition"
    ORIGINAL_OFFSET: Final = "herald.original_offset"
    FAILED_AT: Final = "herald.failed_at"  # ms since the epoch


# The headers a sender writes on every dead letter of a channel.
DEAD_LETTER_HEADERS: Final = (
    Header.REASON,
    Header.ATTEMPTS,
    Header.FIRST_ERROR,
    Header.LAST_ERROR,
    Header.ORIGINAL_TOPIC,
    Header.FAILED_AT,
)


# --- Reasons ------------------------------------------------------------------------------


class Reason:
    """Values of `StatusEvent.reason` and of the `herald.reason` dead-letter header (besides
    the provider errors, `<provider>:<code>`)."""

    # The processor's decisions.
    DUPLICATE: Final = "duplicate"
    UNKNOWN_USER: Final = "unknown_user"
    OPTED_OUT: Final = "opted_out"
    UNSUBSCRIBED_ALL: Final = "unsubscribed_all"
    NO_CONTACT: Final = "no_contact"
    NO_DEVICE: Final = "no_device"
    INVALID_CONTACT: Final = "invalid_contact"
    INVALID_TOKEN: Final = "invalid_token"
    EXPIRED: Final = "expired"
    RATE_LIMITED: Final = "rate_limited"
    QUIET_HOURS: Final = "quiet_hours"
    SCHEDULED: Final = "scheduled"
    CANCELED: Final = "canceled"
    NO_CONTENT: Final = "no_content"
    NO_TEMPLATE: Final = "no_template"
    NO_CHANNEL: Final = "no_channel"
    INVALID_SEND_AT: Final = "invalid_send_at"
    # The request or its fan-out is over Kafka's record size limit: dead-lettered.
    TOO_LARGE: Final = "too_large"
    # The senders'.
    UNDECODABLE: Final = "undecodable"
    RETRIES_EXHAUSTED: Final = "retries_exhausted"
    TOKEN_INVALIDATED: Final = "token_invalidated"
    # The provider may or may not have accepted it; resolved toward never sending twice.
    UNCERTAIN_TIMEOUT: Final = "uncertain_timeout"
    UNCERTAIN_AFTER_CRASH: Final = "uncertain_after_crash"


# --- Delivery ledger ----------------------------------------------------------------------


class LedgerState(StrEnum):
    """States of a delivery in `herald.delivery_ledger_by_minute` and the notification log."""

    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"


# A delivery in one of these states is never sent again.
FINAL_STATES: Final = frozenset(
    {LedgerState.SENT, LedgerState.FAILED, LedgerState.DEAD_LETTERED, LedgerState.DROPPED}
)
