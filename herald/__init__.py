"""herald: a notification pipeline on Apache Kafka and Apache Cassandra."""

__version__ = "0.1.0"
