"""Delivery channels and the preference channels users opt in or out of.

A delivery channel is what a sender drains (one Kafka topic family each); a preference
channel is what a user sees in their settings ("push" covers every device).
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    PUSH_IOS = "push.ios"
    PUSH_ANDROID = "push.android"
    PUSH_WEB = "push.web"
    SMS = "sms"
    EMAIL = "email"
    # The user's feed in the app (herald.inbox_items), read through the send API.
    INAPP = "inapp"

    @property
    def preference(self) -> PreferenceChannel:
        return (
            PreferenceChannel.PUSH
            if self.value.startswith("push.")
            else PreferenceChannel(self.value)
        )


class PreferenceChannel(StrEnum):
    PUSH = "push"
    SMS = "sms"
    EMAIL = "email"
    INAPP = "inapp"


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"

    @property
    def channel(self) -> Channel:
        return {
            Platform.IOS: Channel.PUSH_IOS,
            Platform.ANDROID: Channel.PUSH_ANDROID,
            Platform.WEB: Channel.PUSH_WEB,
        }[self]


class Category(StrEnum):
    SECURITY = "security"
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"
    SOCIAL = "social"


# Users cannot opt out of these: a login code or a fraud alert must reach them.
MANDATORY_CATEGORIES: frozenset[str] = frozenset({Category.SECURITY})


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Outcome(StrEnum):
    """Values of `StatusEvent.outcome`: the life of a notification and its deliveries."""

    ACCEPTED = "accepted"  # request fanned out into deliveries
    DROPPED = "dropped"  # a decision not to send (reason says which)
    DEFERRED = "deferred"  # held until later (quiet hours, send_at)
    SENT = "sent"  # provider accepted it
    FAILED = "failed"  # permanent provider failure
    RETRIED = "retried"  # retriable failure, queued for attempt n+1
    DEAD_LETTERED = "dead_lettered"  # retries exhausted or unprocessable
    TOKEN_INVALIDATED = "token_invalidated"  # provider says the device is gone
    DELIVERED = "delivered"  # reported by the client app
    OPENED = "opened"
    CLICKED = "clicked"
    SEEN = "seen"  # an in-app item was shown to the user
    READ = "read"  # an in-app item was read (opened) by the user
    DIGESTED = "digested"  # a request collected into a digest (reason: the digest key)
