"""ClickHouse side of touchflow: migrations, row encoding and the Kafka -> ClickHouse sink."""
