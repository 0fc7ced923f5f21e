"""Admin operations: readiness, describing topics, and applying the topic catalog."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from shredline.streams.catalog import CATALOG, Change, ObservedTopic, TopicSpec, plan, topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks

REQUEST_TIMEOUT_S = 30.0


def admin_client(conn: Connection) -> AdminClient:
    # log_level 3 keeps librdkafka's connection chatter (which names no data) to errors.
    return AdminClient(conn.confluent(log_level=3))


#: The broker's refusals. Their text can quote the whole request (forwarded ones do), so the
#: message keeps only the code.
AUTHORIZATION_FAILED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
#: Consumer errors only an operator can end: the group or a topic refused, a group its members
#: disagree on. librdkafka reports most of them once, then polls return nothing.
PERMANENT = AUTHORIZATION_FAILED | {KafkaError.INCONSISTENT_GROUP_PROTOCOL, KafkaError.INVALID_GROUP_ID}


def permanent(error: KafkaError) -> bool:
    """Does `error`, returned by a consumer's poll, keep it from ever moving on by itself? Poll
    errors carry no retriable flag (confluent-kafka builds them from the bare code), so the code
    decides; any other non-fatal one librdkafka retries."""
    return not error.retriable() and error.code() in PERMANENT


def error_of(exc: KafkaException) -> KafkaError:
    """The `KafkaError` a confluent-kafka exception carries (a generic failure if none)."""
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else KafkaError(KafkaError._FAIL)


def kafka_error(what: str, exc: BaseException, who: str | None = None) -> KafkaOperationError:
    """One line for a failed Kafka call: `what`, then Kafka's reason (for a refusal, its code and
    `who` was refused)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(err, KafkaError):
        reason = err.str()
        if err.code() in AUTHORIZATION_FAILED:
            reason = f"refused by the broker ({err.name()}{f' for {who}' if who else ''})"
        return KafkaOperationError(f"{what}: {reason}", code=err.code(), retriable=err.retriable())
    return KafkaOperationError(f"{what}: {exc}")


def _wait(futures: dict[Any, Future[Any]], what: str) -> dict[Any, Any]:
    results = {}
    for key, fut in futures.items():
        try:
            results[key] = fut.result(timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # every failure becomes one typed error
            raise kafka_error(f"{what} {key}", exc) from None
    return results


def wait_until_ready(conn: Connection, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until the broker answers a metadata request over TLS (or the process dies)."""
    admin = AdminClient(conn.confluent(log_level=0))
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise KafkaOperationError("broker process exited")
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return
        except KafkaException as exc:
            last = exc
        time.sleep(0.3)
    raise kafka_error(f"no metadata from {conn.bootstrap} within {timeout_s:.0f}s", last or TimeoutError())


def describe(admin: AdminClient, names: Iterable[str]) -> dict[str, ObservedTopic]:
    """Partition counts and configs of those of `names` that exist."""
    try:
        metadata = admin.list_topics(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        raise kafka_error("listing topics", exc) from None
    existing = [n for n in names if n in metadata.topics]
    if not existing:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in existing]
    configs = _wait(admin.describe_configs(resources), "describing")
    return {
        res.name: ObservedTopic(
            partitions=len(metadata.topics[res.name].partitions),
            configs={k: v.value for k, v in entries.items() if v.value is not None},
        )
        for res, entries in configs.items()
    }


def execute(
    admin: AdminClient, changes: list[Change], catalog: tuple[TopicSpec, ...], prefix: str, replication: int
) -> None:
    """Carry out a plan: create, then alter configs (incrementally, only the drifted keys), then grow partitions."""
    specs = {topic_name(prefix, s.role): s for s in catalog}
    creates = [
        NewTopic(c.topic, specs[c.topic].partitions, replication, config=dict(specs[c.topic].configs))
        for c in changes
        if c.kind == "create"
    ]
    if creates:
        _wait(admin.create_topics(creates, request_timeout=REQUEST_TIMEOUT_S), "creating")

    alters: dict[str, list[ConfigEntry]] = {}
    for c in changes:
        if c.kind == "config":
            alters.setdefault(c.topic, []).append(
                ConfigEntry(c.key, c.value, incremental_operation=AlterConfigOpType.SET)
            )
    if alters:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=e) for t, e in alters.items()]
        _wait(admin.incremental_alter_configs(resources), "altering")

    grows = [NewPartitions(c.topic, int(c.value)) for c in changes if c.kind == "partitions"]
    if grows:
        _wait(admin.create_partitions(grows), "adding partitions to")


def require_catalog(conn: Connection, prefix: str, catalog: tuple[TopicSpec, ...] = CATALOG) -> None:
    """Raise, naming the first one, unless every topic of the catalog exists (and `conn` may see it:
    Kafka leaves topics a principal may not DESCRIBE out of its metadata)."""
    admin = admin_client(conn)
    try:
        existing = admin.list_topics(timeout=REQUEST_TIMEOUT_S).topics
    except KafkaException as exc:
        raise kafka_error("listing topics", exc) from None
    missing = [name for s in catalog if (name := topic_name(prefix, s.role)) not in existing]
    if missing:
        raise KafkaOperationError(
            f"topics: {missing[0]} does not exist (or is not visible to this role); "
            "run `shredline topics apply` and `shredline acl apply` first"
        )


def apply_catalog(
    conn: Connection, prefix: str, replication: int, catalog: tuple[TopicSpec, ...] = CATALOG
) -> list[Change]:
    """Bring the broker in line with the catalog; returns what was changed (empty on a second run).

    Returns only once the broker reports the new state: metadata reaches brokers
    asynchronously, and a caller (or a second run) must not see the old configs.
    """
    admin = admin_client(conn)
    names = [topic_name(prefix, s.role) for s in catalog]
    changes = plan(prefix, describe(admin, names), catalog)
    if not changes:
        return changes
    execute(admin, changes, catalog, prefix, replication)
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while pending := [c for c in plan(prefix, describe(admin, names), catalog) if c.kind != "warn"]:
        if time.monotonic() > deadline:
            raise KafkaOperationError(f"topics apply: broker still reports drift after applying ({pending[0].detail})")
        time.sleep(0.2)
    while leaderless := _leaderless(admin, names):
        if time.monotonic() > deadline:
            raise KafkaOperationError(f"topics apply: {leaderless[0]} has no leader yet")
        time.sleep(0.2)
    return changes


def _leaderless(admin: AdminClient, names: list[str]) -> list[str]:
    """Partitions without a leader yet: a new topic is not usable until every one has one."""
    topics = admin.list_topics(timeout=REQUEST_TIMEOUT_S).topics
    return [
        f"{name}[{p.id}]"
        for name in names
        for p in (topics[name].partitions.values() if name in topics else [])
        if p.leader < 0 or p.error is not None
    ]


def record_counts(conn: Connection, topic: str) -> tuple[int, int]:
    """(records readable now, records ever appended) over the topic's partitions; (0, 0) if absent."""
    consumer = Consumer(conn.confluent(**{"group.id": "shredline-counts", "log_level": 3}))
    try:
        meta = consumer.list_topics(topic, timeout=REQUEST_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0, 0
        marks = [watermarks(consumer, topic, p) for p in meta.partitions]
        return sum(hi - lo for lo, hi in marks), sum(hi for _lo, hi in marks)
    finally:
        consumer.close()


def committed_offsets(conn: Connection, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offset per (topic, partition); a partition it never committed is absent."""
    admin = admin_client(conn)  # keep a reference: a collected client never completes its futures
    request = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in request.result(timeout=REQUEST_TIMEOUT_S).topic_partitions
        if tp.offset >= 0
    }


def consumer_lag(conn: Connection, group: str, topics: Iterable[str]) -> int:
    """Records of `topics` the group has not committed yet (a partition it never committed counts
    whole). Zero means caught up."""
    committed = committed_offsets(conn, group)
    consumer = Consumer(conn.confluent(**{"group.id": "shredline-lag", "log_level": 3}))
    try:
        lag = 0
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=REQUEST_TIMEOUT_S).topics[topic].partitions:
                _low, high = watermarks(consumer, topic, p)
                lag += max(0, high - max(committed.get((topic, p), 0), 0))
        return lag
    finally:
        consumer.close()
