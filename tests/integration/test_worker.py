"""The worker on a real broker: canaries, termination mid-stream, SIGKILL and restart."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shredline.keystore.errors import KeyDestroyed
from shredline.keystore.keys import Sealed
from shredline.processors.anonymise import metric_count
from shredline.processors.roles import Role
from shredline.schemas.codec import decode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import IngestKeySource, NoIngestKey, StaticKeys
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.admin import admin_client, apply_catalog, describe
from shredline.streams.key_store import open_keys
from shredline.streams.operations.audit import read_trail
from shredline.streams.operations.buffer_read import READ_DEPTH, conversation_envelopes
from shredline.streams.settings import Settings
from tests.conftest import Broker, drain, read_topic, record_count, wait_for, wait_worker_caught_up

pytestmark = pytest.mark.kafka
CANARY_NAME = "Zq9canary Wilhelmina Oyelaran"
CANARY_PHONE = "+5511987650001"
CANARY_MAIL = "zq9.canary.wilhelmina@example.com"
CANARY_BODY = "zq9-canary-message-text about my diagnosis"
CANARIES = [CANARY_NAME, CANARY_PHONE, CANARY_MAIL, CANARY_BODY, "987650001", "Wilhelmina", "zq9-canary"]


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shredline.streams.cli", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def expected_metrics(events: list[dict[str, Any]]) -> int:
    return sum(map(metric_count, events))


def background(tenants: int, count: int, seed: int) -> list[dict[str, Any]]:
    """Events of the last day (inside the de-dup window), ending before now."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=25)
    return list(generate(tenants, count, seed, start, dt.timedelta(days=1)))


def canary_events(tenant: str) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    base = {"tenant": tenant, "occurred_at": now.isoformat()}
    person = {"contact_phone": CANARY_PHONE, "contact_name": CANARY_NAME, "contact_email": CANARY_MAIL}
    return [
        {
            **base,
            "type": "contact",
            "event_id": "canary-c1",
            "op": "UPSERT",
            "contact_id": "contact-canary",
            "phone": CANARY_PHONE,
            "name": CANARY_NAME,
            "email": CANARY_MAIL,
            "attributes": {"note": CANARY_BODY},
        },
        *[
            {
                **base,
                **person,
                "type": "message",
                "event_id": f"canary-m{i}",
                "channel": "WHATSAPP",
                "direction": "INBOUND" if i % 2 == 0 else "OUTBOUND",
                "conversation_id": "conv-canary",
                "body": f"{CANARY_BODY} #{i}",
            }
            for i in range(3)
        ],
        {
            **base,
            **person,
            "type": "execution",
            "event_id": "canary-x1",
            "workflow_id": "support-triage",
            "execution_id": "exec-canary",
            "status": "FAILED",
            "duration_ms": 900,
            "log_line": f"handoff requested by {CANARY_NAME} (11) 98765-0001",
            "error": f"bounce for {CANARY_MAIL}",
        },
        {  # a contact name as phones carry it, around its words: emoji, brackets, an underscore
            **base,
            **person,
            "contact_name": f"🌸({CANARY_NAME.replace(' ', '_')})🌸",
            "type": "execution",
            "event_id": "canary-x2",
            "workflow_id": "support-triage",
            "execution_id": "exec-canary-2",
            "status": "SUCCEEDED",
            "duration_ms": 300,
            "log_line": f"{CANARY_NAME.upper()} confirmed; Hi {CANARY_NAME.split()[1]}!",
        },
    ]


def provision(env: dict[str, str], tenants: set[str]) -> None:
    for tenant in sorted(tenants):
        result = cli(env, "tenant", "provision", tenant)
        assert result.returncode == 0, result.stderr


def publish(broker: Broker, prefix: str, events: list[dict[str, Any]], keys: IngestKeySource | None = None) -> None:
    """Publish through the SDK, sealing to keys from control.tenants (or `keys`)."""
    with Publisher(broker.connection, prefix, keys=keys) as publisher:
        for event in events:
            publisher.publish(event)


def stale_keys(data_dir: Path, tenant: str) -> StaticKeys:
    """The tenant's public keys as an upstream that has not heard of its termination still holds them."""
    return StaticKeys(open_keys(Settings(data_dir=data_dir)).ingest_public_keys(tenant))


def all_topic_bytes(broker: Broker, prefix: str, group: str) -> bytes:
    """Every key, value and header of every topic under the prefix, the ingest topics included."""
    from confluent_kafka.admin import AdminClient

    names = [
        t
        for t in AdminClient(broker.connection.confluent()).list_topics(timeout=10).topics
        if t.startswith(prefix + ".")
    ]
    assert f"{prefix}.ingest.messages" in names and f"{prefix}.buffer.messages" in names
    blob = bytearray()
    for name in names:
        for msg in read_topic(broker.connection, name, f"{group}-{name}"):
            blob += (msg.key() or b"") + (msg.value() or b"")
            for hk, hv in msg.headers() or []:
                blob += hk.encode() + (hv or b"")
    return bytes(blob)


def test_canaries_never_leave_ingest_in_clear_and_counts_match(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    events = background(2, 400, seed=21)
    tenants = {str(e["tenant"]) for e in events}
    canary_tenant = sorted(tenants)[0]
    events += canary_events(canary_tenant)
    provision(env, tenants)
    publish(broker, topic_prefix, events)

    worker = Worker(env, tmp_path / "worker.log")
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)

    def read_back() -> subprocess.CompletedProcess[str]:
        return cli(env, "buffer", "read", canary_tenant, "conv-canary", "--purpose", "canary test")

    try:
        wait_for(lambda: record_count(broker.connection, metrics) >= expected_metrics(events), 180, "all metrics")
        wait_for(lambda: len(read_back().stdout.splitlines()) == 3, 60, "the canary conversation")
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]

    kinds = Counter(
        decode(m.value() or b"")[1]["kind"]
        for m in drain(broker.connection, [metrics], expected_metrics(events), group_id)
    )
    assert kinds["MESSAGE"] == sum(e["type"] == "message" for e in events)
    assert kinds["CONVERSATION_STARTED"] == sum(bool(e.get("opens_conversation")) for e in events)
    assert kinds["CONVERSATION_CLOSED"] == sum(bool(e.get("closes_conversation")) for e in events)
    assert kinds["EXECUTION"] == sum(e["type"] == "execution" for e in events)
    assert kinds["CONTACT_UPSERT"] + kinds["CONTACT_DELETE"] == sum(e["type"] == "contact" for e in events)

    read = read_back()
    assert read.returncode == 0, read.stderr
    assert [line.split('"body": ')[1] for line in read.stdout.splitlines()] == [
        f'"{CANARY_BODY} #{i}"}}' for i in range(3)
    ]

    written = all_topic_bytes(broker, topic_prefix, group_id)
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "worker.log")
    worker_log = (tmp_path / "worker.log").read_bytes()
    for canary in CANARIES:
        for where, blob in (("topics", written), ("data dir", files), ("worker log", worker_log)):
            assert canary.encode() not in blob, f"{canary!r} found in {where}"
            assert canary.lower().encode() not in blob.lower(), f"{canary!r} found in {where}"


def test_termination_mid_stream_shreds_the_tenant_and_stops_new_buffer_records(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    events = background(2, 600, seed=22)
    doomed, survivor = sorted({str(e["tenant"]) for e in events})
    provision(env, {doomed, survivor})
    first, second = events[:300], events[300:]
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    buffer = topic_name(topic_prefix, Role.BUFFER_MESSAGES)
    upstream_not_told = stale_keys(tmp_path, doomed)

    worker = Worker(env, tmp_path / "worker.log")
    try:
        publish(broker, topic_prefix, first)
        wait_for(lambda: record_count(broker.connection, metrics) >= expected_metrics(first), 180, "first half")
        before = record_count(broker.connection, buffer)
        terminated = cli(env, "tenant", "terminate", doomed, "--reason", "contract ended", "--yes")
        assert terminated.returncode == 0, terminated.stderr
        survivor_second = [e for e in second if e["tenant"] == survivor]
        doomed_second = [e for e in second if e["tenant"] == doomed]
        with pytest.raises(NoIngestKey):  # an SDK reading control.tenants refuses the terminated tenant...
            publish(broker, topic_prefix, doomed_second[:1])
        publish(broker, topic_prefix, survivor_second)
        publish(broker, topic_prefix, doomed_second, keys=upstream_not_told)  # ...one that has not heard seals on
        wanted = expected_metrics(first) + expected_metrics(survivor_second) + len(doomed_second)
        wait_for(lambda: record_count(broker.connection, metrics) >= wanted, 180, "second half")
    finally:
        assert worker.stop() == 0

    keys = open_keys(Settings(data_dir=tmp_path))
    records = read_topic(broker.connection, buffer, group_id)
    assert all(m.value() is not None for m in records)  # sealed envelopes only: no marker, no tombstone
    envelopes = [decode(m.value() or b"")[1] for m in records]
    mine = [e for e in envelopes if e["tenant"] == doomed]
    assert mine and len(envelopes) - before == sum(e["type"] == "message" for e in survivor_second)
    for env_ in mine:
        with pytest.raises(KeyDestroyed):
            keys.open(
                Sealed(doomed, "conversation", env_["record_id"], env_["key_id"], env_["nonce"], env_["ciphertext"]),
                buffer,
            )
    dropped = [decode(m.value() or b"")[1] for m in read_topic(broker.connection, metrics, group_id + "m")]
    assert sum(d["kind"] == "DROPPED_TERMINATED" for d in dropped) == len(doomed_second)
    read = cli(env, "buffer", "read", doomed, "conv-x", "--purpose", "after termination")
    assert read.returncode == 3 and "terminated" in read.stderr
    refused = [r for r in read_trail(broker.connection, topic_prefix) if r["action"] == "buffer.read"]
    assert [(r["tenant"], r["details"]["refused"]) for r in refused] == [(doomed, "tenant terminated")]  # audited


def test_worker_killed_mid_stream_loses_nothing_and_shows_nothing_twice(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    events = background(3, 3000, seed=23)
    provision(env, {str(e["tenant"]) for e in events})
    publish(broker, topic_prefix, events)
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    buffer = topic_name(topic_prefix, Role.BUFFER_MESSAGES)

    first = Worker(env, tmp_path / "worker.log")
    wait_for(lambda: record_count(broker.connection, metrics) >= 500, 180, "some progress")
    first.kill()
    progress = record_count(broker.connection, metrics)
    assert progress < expected_metrics(events), "the worker finished before it was killed; kill earlier"

    second = Worker(env, tmp_path / "worker.log")
    try:
        wait_worker_caught_up(broker.connection, topic_prefix, 240, "the worker to catch up")
    finally:
        assert second.stop() == 0

    envelopes = [decode(m.value() or b"")[1] for m in read_topic(broker.connection, buffer, group_id)]
    keys = open_keys(Settings(data_dir=tmp_path))
    refs = {e["event_ref"] for e in envelopes}
    message_refs = {
        keys.pseudonym(str(e["tenant"]), "event", str(e["event_id"])) for e in events if e["type"] == "message"
    }
    assert refs == message_refs  # nothing lost; re-sealed duplicates carry the same ref
    duplicates = len(envelopes) - len(refs)
    # `buffer read` shows each event once, a conversation the restart re-sealed included
    copies = Counter(e["event_ref"] for e in envelopes)
    resealed = [e["record_id"] for e in envelopes if copies[e["event_ref"]] > 1] or [envelopes[0]["record_id"]]
    for record_id in set(resealed[:20]):
        read = [e["event_ref"] for e in conversation_envelopes(broker.connection, topic_prefix, record_id.encode())]
        mine = {e["event_ref"] for e in envelopes if e["record_id"] == record_id}
        assert len(read) == len(set(read)) == min(len(mine), READ_DEPTH) and set(read) <= mine
    facts = [decode(m.value() or b"")[1] for m in read_topic(broker.connection, metrics, group_id + "m")]
    tokens = {f["dedup"] for f in facts}
    assert None not in tokens and len(tokens) == expected_metrics(events)  # counted once each, by token
    print(
        f"\nkilled at {progress} metrics of {expected_metrics(events)}; after restart re-sealed {duplicates}, "
        f"re-emitted {len(facts) - len(tokens)} metrics (same tokens)"
    )


def limit_record_size(broker: Broker, topic: str, max_bytes: int) -> None:
    """Set the topic's `max.message.bytes` and wait until the broker reports it."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = admin_client(broker.connection)
    entry = ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    wait_for(
        lambda: describe(admin, [topic])[topic].configs.get("max.message.bytes") == str(max_bytes), 30, "the limit"
    )


def test_an_output_the_broker_refuses_dead_letters_its_source_and_the_rest_of_the_batch_goes_on(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    """One message whose sealed envelope is larger than its buffer topic takes: its ingest record
    is dead-lettered (references and the reason only), every other output is written, and the
    worker commits past it instead of sending its batch again forever."""
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    buffer = topic_name(topic_prefix, Role.BUFFER_MESSAGES)
    ingest = topic_name(topic_prefix, Role.INGEST_MESSAGES)
    limit = 2048  # a batch of a few ordinary envelopes is over it too: each is then sent alone
    limit_record_size(broker, buffer, limit)
    events = background(2, 300, seed=24)
    tenant = sorted({str(e["tenant"]) for e in events})[0]
    poison = {**canary_events(tenant)[1], "event_id": "canary-too-large", "body": (CANARY_BODY + " ") * 90}
    events.insert(150, poison)
    provision(env, {str(e["tenant"]) for e in events})
    publish(broker, topic_prefix, events)
    largest = max(read_topic(broker.connection, ingest, group_id + "i"), key=lambda m: len(m.value() or b""))
    assert len(largest.value() or b"") > 2 * limit  # the poison, sealed: where its dead letter must point

    worker = Worker(env, tmp_path / "worker.log")
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    letters = topic_name(topic_prefix, Role.DEADLETTER_INGEST)
    try:
        wait_worker_caught_up(broker.connection, topic_prefix, 240, "the worker to commit past the poison")
        wait_for(lambda: record_count(broker.connection, metrics) >= expected_metrics(events), 60, "all metrics")
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]

    (letter,) = [decode(m.value() or b"")[1] for m in read_topic(broker.connection, letters, group_id + "d")]
    assert (letter["source_topic"], letter["partition"], letter["offset"]) == (
        ingest,
        largest.partition(),
        largest.offset(),
    )
    assert letter["reason"] == f"output to {buffer} refused by Kafka: MSG_SIZE_TOO_LARGE"
    assert letter["tenant"] == tenant and letter["fingerprint"] is None

    keys = open_keys(Settings(data_dir=tmp_path))
    refs = {decode(m.value() or b"")[1]["event_ref"] for m in read_topic(broker.connection, buffer, group_id + "b")}
    delivered = [e for e in events if e["type"] == "message" and e is not poison]
    assert refs == {keys.pseudonym(str(e["tenant"]), "event", str(e["event_id"])) for e in delivered}

    dead = b"".join((m.value() or b"") for m in read_topic(broker.connection, letters, group_id + "d2"))
    worker_log = (tmp_path / "worker.log").read_bytes()
    for canary in CANARIES:
        for where, blob in (("dead letters", dead), ("worker log", worker_log)):
            assert canary.lower().encode() not in blob.lower(), f"{canary!r} found in {where}"
