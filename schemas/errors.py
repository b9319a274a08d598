"""The root of herald's own errors, in the lowest layer so every package can raise them.

As in aiokafka's `errors.py`, one flag says what a caller does next: `retriable` errors may
succeed if the same call is made again later (an outage, throttling); the others never
will as they are (bad input, a refused record, a misconfiguration, a bug).
"""

from __future__ import annotations


class HeraldError(Exception):
    """An error herald raises on purpose; `retriable` says whether to try again."""

    retriable: bool = False
