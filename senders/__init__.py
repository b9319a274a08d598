"""Senders: one consumer group per channel, each delivering through its providers."""
