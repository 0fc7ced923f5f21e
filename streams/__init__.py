"""The running system's wiring, around the pure core: one folder per question.

- `processing/` — running the stream processors: the Faust app, the splitter, the supervisor.
- `ingest/` — getting events in: the SDK, `publish`, the synthetic generator.
- `operations/` — the operator side: tenants, termination, certificates, audit, signing, buffer reads.
- `reporting/` — getting aggregates out: the sink's Kafka feed, `sink` and `analytics` commands.
- `kafka/` — thin confluent-kafka adapters; `launcher/` — the local broker.
- here: settings, the topic catalog, errors, the key store opener, the CLI dispatcher, the demo.
"""
