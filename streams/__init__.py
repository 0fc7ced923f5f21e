"""The running system's wiring: settings, topic catalog, Kafka adapters, local launcher, CLI."""
