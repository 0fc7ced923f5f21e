"""The logical streams of records, by what they are for. Pure names, no Kafka.

Processors plan their outputs by role; `shredline.streams.catalog` owns each role's topic
(partitions, retention, configs) and `topic_name(prefix, role)` turns it into the topic of
one environment (`staging.` + role). A role's value is its topic name without a prefix.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    INGEST_MESSAGES = "ingest.messages"
    INGEST_CONTACTS = "ingest.contacts"
    INGEST_EXECUTIONS = "ingest.executions"
    BUFFER_MESSAGES = "buffer.messages"
    BUFFER_CONTACTS = "buffer.contacts"
    METRICS_USAGE = "metrics.usage"
    LOGS_EXECUTIONS = "logs.executions"
    CONTROL_TENANTS = "control.tenants"
    AUDIT_EVENTS = "audit.events"
    DEADLETTER_INGEST = "deadletter.ingest"
