"""The local Kafka and Cassandra, run from Maven Central jars (no Docker needed)."""
