"""Shared infrastructure code: settings, Kafka topics, Cassandra schema, local stack, emulators.

`producers`, `processors` and `senders` depend on this package and on `schemas`, never
on each other.
"""
