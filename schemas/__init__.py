"""herald's public contract: Avro schemas (versioned in `schemas/avro`), channels, codec."""
