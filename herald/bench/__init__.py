"""Benchmark harness: load generation, the Kafka passthrough baseline, pipeline runs."""
