"""What happens to an event: split, anonymise, redact, seal, control. Pure functions, no Kafka."""
