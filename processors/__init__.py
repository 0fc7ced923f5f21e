"""What happens to an event: split, anonymise, redact, validate; the logical roles of streams. Pure, no Kafka."""
