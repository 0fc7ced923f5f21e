"""Getting aggregates out: the sink's Kafka feed and the `sink` / `analytics` commands."""
