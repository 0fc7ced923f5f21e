"""Thin confluent-kafka adapters. Everything Kafka-specific lives here, out of the pure logic."""
