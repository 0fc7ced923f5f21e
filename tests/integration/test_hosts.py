"""Several hosts (issue 18): three worker processes, each with a data dir of its own, and an
operator's fourth data dir share one PostgreSQL key store, one master keyring file (the shared
mount of README "Running on several machines") and one broker.

The module runs one story in order: 20,000 events for 5 tenants with one worker SIGKILLed
mid-stream and restarted; a termination from the fourth host that all three workers obey, and one
killed after its keys step on a worker's host and finished from the fourth; then the audit chain,
relayed by all four hosts."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from shredline.analytics.warehouse import Warehouse
from shredline.keystore.dburl import DatabaseUrl
from shredline.keystore.master import load_keyring
from shredline.processors.roles import Role
from shredline.schemas.codec import decode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import StaticKeys
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.postgres import PostgresServer
from shredline.streams.operations.audit import Trail, head_of, read_positioned, read_trail, verify
from shredline.streams.operations.signing import PUBLIC_KEY_FILE, load_public_key
from shredline.streams.operations.termination import FAULT_EXIT, STEPS
from shredline.streams.settings import load_settings
from tests.conftest import Broker, read_topic, record_count, wait_for, wait_worker_caught_up
from tests.integration.test_faults import exact
from tests.integration.test_worker import Worker, background, cli, expected_metrics, provision, publish

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]
EVENTS, TENANTS = 20_000, 5
WORKERS = 3
LATE = 60  # events of the terminated tenant published after its termination, one conversation each


@dataclass
class Hosts:
    broker: Broker
    prefix: str
    url: DatabaseUrl
    envs: list[dict[str, str]]  # hosts 0-2 run a worker each; host 3 is the operator's
    dirs: list[Path]
    logs: list[Path]
    workers: list[Worker]
    events: list[dict[str, Any]]

    @property
    def operator(self) -> dict[str, str]:
        return self.envs[WORKERS]

    def topic(self, role: Role) -> str:
        return topic_name(self.prefix, role)

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url.reveal()) as db:
            return db.execute(query, params).fetchall()  # type: ignore[arg-type]  # fixed queries of this module

    def said(self, host: int, pattern: str) -> list[str]:
        return re.findall(pattern, self.logs[host].read_text(errors="replace"))


@pytest.fixture(scope="module")
def hosts(broker: Broker, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    schema = f"h{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url().reveal(), autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]  # a generated name: letters and digits
    url = postgres.url(options=f"-csearch_path={schema}")
    prefix = f"hosts{uuid.uuid4().hex[:8]}"
    keyring = tmp_path_factory.mktemp("keyring") / "master.key"
    load_keyring(None, keyring, create=True)  # one keyring for every host: terminations rotate it
    dirs = [tmp_path_factory.mktemp(f"host{i}") for i in range(WORKERS + 1)]
    envs = [
        {
            **broker.client_env(prefix, d),
            "SHREDLINE_KEY_STORE": url.reveal(),
            "SHREDLINE_MASTER_KEY_FILE": str(keyring),
        }
        for d in dirs
    ]
    apply_catalog(broker.connection, prefix, 1)
    events = background(TENANTS, EVENTS, seed=18)
    provision(envs[WORKERS], {str(e["tenant"]) for e in events})
    h = Hosts(broker, prefix, url, envs, dirs, [d / "worker.log" for d in dirs[:WORKERS]], [], events)
    try:
        yield h
    finally:
        for worker in h.workers:
            if worker.proc.poll() is None:
                worker.stop()


def envelopes(h: Hosts, group: str) -> list[dict[str, Any]]:
    records = read_topic(h.broker.connection, h.topic(Role.BUFFER_MESSAGES), group)
    return [decode(m.value() or b"")[1] for m in records if m.value()]


def sink_facts(h: Hosts) -> int:
    """Run the sink from a data dir of its own until it is idle; the facts its warehouse holds."""
    env = {**h.operator, "SHREDLINE_DATA_DIR": str(h.dirs[WORKERS].parent / "sink")}
    sink = subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "sink", "--until-idle", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sink.returncode == 0, sink.stderr[-2000:]
    settings = load_settings(env)
    warehouse = Warehouse(settings.data_dir / "analytics.duckdb", open_keys(settings).service_secret("duckdb"))
    try:
        row = warehouse.db.execute("SELECT count(*) FROM w.usage_facts").fetchone()
        return int(row[0]) if row else -1
    finally:
        warehouse.close()


def keys_by_conversation(sealed: list[dict[str, Any]]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The keys each conversation was sealed under, and those sealed under two. Only a conversation
    processed twice may have two: one whose sealed and closed tail (its key destroyed) the killed
    host had not committed is processed again on another host, re-sealed under a new key and
    destroyed again by the same close."""
    used: dict[str, set[str]] = defaultdict(set)
    refs: dict[str, list[str]] = defaultdict(list)
    for e in sealed:
        used[e["record_id"]].add(e["key_id"])
        refs[e["record_id"]].append(e["event_ref"])
    two = {c: ks for c, ks in used.items() if len(ks) > 1}
    once = [c for c in two if len(refs[c]) == len(set(refs[c]))]
    assert not once, f"{len(once)} conversations processed once have two keys"
    assert all(len(ks) == 2 for ks in two.values()), two
    return used, two


def test_three_hosts_share_the_key_store_through_a_sigkill(hosts: Hosts) -> None:
    h, conn = hosts, hosts.broker.connection
    h.workers += [Worker(h.envs[i], h.logs[i]) for i in range(WORKERS)]
    publish(h.broker, h.prefix, h.events)
    metrics = h.topic(Role.METRICS_USAGE)
    wanted = expected_metrics(h.events)
    wait_for(lambda: record_count(conn, metrics) >= wanted // 3, 240, "a third of the metrics")
    h.workers[1].kill()  # the whole host: its Faust child dies with the supervisor (PDEATHSIG)
    progress = record_count(conn, metrics)
    assert progress < wanted, "the workers finished before one was killed; kill earlier"
    h.workers[1] = Worker(h.envs[1], h.logs[1])  # restarted: all three must obey the terminations below
    wait_worker_caught_up(conn, h.prefix, 300, "the three workers to catch up")

    exact(conn, h.prefix, h.events, "hosts-exact")  # every message sealed, every metric once by token
    assert sink_facts(h) == wanted  # and the sink, on a host of its own, loads each once
    sealed = envelopes(h, "hosts-sealed")
    keys = open_keys(load_settings(h.operator))
    refs = {e["event_ref"] for e in sealed}
    assert refs == {
        keys.pseudonym(str(e["tenant"]), "event", str(e["event_id"])) for e in h.events if e["type"] == "message"
    }

    # No conversation has two keys: every envelope's key is one the store created (or destroyed
    # when the conversation closed), a conversation processed once was sealed under one key, and
    # one still open under the one current key the store holds for it.
    stored = {k for (k,) in h.sql("SELECT key_id FROM data_keys UNION ALL SELECT key_id FROM destroyed_keys")}
    closed = {k for (k,) in h.sql("SELECT key_id FROM destroyed_keys WHERE reason = 'conversation closed'")}
    current = dict(h.sql("SELECT subject, key_id FROM data_keys WHERE scope = 'conversation' AND state = 'current'"))
    used, two = keys_by_conversation(sealed)
    assert {k for ks in used.values() for k in ks} <= stored
    assert all(ks <= closed for ks in two.values()), two
    assert current and all(used[c] == {k} for c, k in current.items() if c in used)
    assert len(used) == len({(e["tenant"], e["conversation_id"]) for e in h.events if e["type"] == "message"})
    # Positive control: a second key on a conversation processed once (no re-sealed duplicate) is seen.
    copies = Counter(e["event_ref"] for e in sealed)
    redone = {e["record_id"] for e in sealed if copies[e["event_ref"]] > 1}
    once = next(e for e in sealed if e["record_id"] not in redone)
    with pytest.raises(AssertionError, match="processed once have two keys"):
        keys_by_conversation([*sealed, {**once, "key_id": "another", "event_ref": "another"}])
    print(
        f"\n{len(h.events)} events, {wanted} metrics; host 1 killed at {progress}; "
        f"{len(sealed) - len(refs)} re-sealed; {len(used)} conversations ({len(current)} open), "
        f"{len(two)} re-keyed after their close by the re-delivery"
    )


def late_messages(tenant: str, count: int, tag: str) -> list[dict[str, Any]]:
    """`count` messages, one conversation each, so they land on every partition."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    return [
        {
            "type": "message",
            "event_id": f"{tag}-{i}",
            "tenant": tenant,
            "occurred_at": (now + dt.timedelta(milliseconds=i)).isoformat(),
            "channel": "SMS",
            "direction": "INBOUND",
            "conversation_id": f"{tag}-conv-{i}",
            "contact_phone": "+5511987650003",
            "body": f"late {i}",
        }
        for i in range(count)
    ]


def high_watermarks(h: Hosts, topic: str) -> dict[int, int]:
    consumer = Consumer(h.broker.connection.confluent(**{"group.id": "hosts-wm", "log_level": 3}))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {p: watermarks(consumer, topic, p)[1] for p in partitions}
    finally:
        consumer.close()


def assignments(h: Hosts, topic: str) -> list[set[int]]:
    """The partitions of `topic` each member of the workers' group holds now."""
    group = topic_name(h.prefix, "shredline-worker")
    admin = AdminClient(h.broker.connection.confluent(log_level=3))
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic} for m in description.members]


def test_a_termination_from_a_fourth_host_is_obeyed_by_all_three_and_a_crashed_one_finished_by_another(
    hosts: Hosts,
) -> None:
    h, conn = hosts, hosts.broker.connection
    assert all(w.proc.poll() is None for w in h.workers)
    # The host restarted in the test before must be splitting again before the terminations.
    ingest = h.topic(Role.INGEST_MESSAGES)

    def all_splitting() -> bool:
        try:
            return sum(map(bool, assignments(h, ingest))) == WORKERS
        except KafkaException:  # the group is rebalancing
            return False

    wait_for(all_splitting, 120, "all three workers in the group")
    doomed, resumed, *survivors = sorted({str(e["tenant"]) for e in h.events})
    upstream_not_told = StaticKeys(open_keys(load_settings(h.operator)).ingest_public_keys(doomed))
    sealed_before = sum(e["tenant"] == doomed for e in envelopes(h, "hosts-before"))
    done = cli(h.operator, "tenant", "terminate", doomed, "--reason", "contract ended", "--yes")
    assert done.returncode == 0, done.stderr

    # Killed right after its keys step on host 0 (a worker's host); finished from host 3.
    had = dict(h.sql("SELECT scope, count(*) FROM data_keys WHERE tenant = %s GROUP BY scope", resumed))
    crashed = cli(
        {**h.envs[0], "SHREDLINE_FAULT_AFTER": "keys"}, "tenant", "terminate", resumed, "--reason", "r", "--yes"
    )
    assert crashed.returncode == FAULT_EXIT, crashed.stderr
    rerun = cli(h.operator, "tenant", "terminate", resumed, "--reason", "r", "--yes")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming the termination" in rerun.stderr
    assert [s for s in STEPS if f"{s}:" in rerun.stderr] == list(STEPS[2:])  # nothing done twice
    certificate = h.dirs[WORKERS] / "certificates" / f"{resumed}.g1.json"
    verified = cli(h.operator, "certificate", "verify", str(certificate))
    assert verified.returncode == 0, verified.stderr
    body = json.loads(certificate.read_text())["certificate"]
    assert body["verification"]["master_key_rotated"] is True
    assert (body["keys_destroyed"]["conversation"], body["keys_destroyed"]["contact"]) == (
        had.get("conversation", 0),
        had.get("contact", 0),
    )
    assert had.get("conversation", 0) > 0
    assert not (h.dirs[0] / "certificates").exists()  # the crashed host certified nothing

    # Late events: the doomed tenant's, sealed by an upstream that was not told, and the
    # survivors', sealed to roots re-wrapped twice since (every worker reloads the shared keyring).
    before = high_watermarks(h, ingest)
    publish(h.broker, h.prefix, late_messages(doomed, LATE, "late"), keys=upstream_not_told)
    reached = {p for p, high in high_watermarks(h, ingest).items() if high > before[p]}
    after = [m for t in survivors for m in late_messages(t, 20, f"after-{t}")]
    publish(h.broker, h.prefix, after)
    wait_worker_caught_up(conn, h.prefix, 180, "the workers to take the late events")

    facts = [decode(m.value() or b"")[1] for m in read_topic(conn, h.topic(Role.METRICS_USAGE), "hosts-dropped")]
    dropped = [f for f in facts if f["kind"] == "DROPPED_TERMINATED"]
    assert len(dropped) == LATE and {f["tenant"] for f in dropped} == {doomed}
    keys = open_keys(load_settings(h.operator))
    refs = {e["event_ref"] for e in envelopes(h, "hosts-after")}
    assert {keys.pseudonym(str(e["tenant"]), "event", str(e["event_id"])) for e in after} <= refs
    assert sum(e["tenant"] == doomed for e in envelopes(h, "hosts-late")) == sealed_before  # none of them sealed
    # All three refused it: each holds partitions the late events landed on (and dropped them
    # all, counted above), and each evicted both tenants when control.tenants said so.
    held = assignments(h, ingest)
    assert len(held) == WORKERS and all(held), held
    assert all(p & reached for p in held), (held, reached)
    for host in range(WORKERS):
        assert h.said(host, rf"control: TERMINATED {re.escape(doomed)}\b"), f"host {host} never evicted {doomed}"
        assert h.said(host, rf"control: TERMINATED {re.escape(resumed)}\b"), f"host {host} never evicted {resumed}"


def test_the_audit_chain_relayed_by_all_four_hosts_verifies_without_fork_or_gap(hosts: Hosts) -> None:
    h, conn = hosts, hosts.broker.connection
    settings = load_settings(h.operator)
    keys = open_keys(settings, actor="host3-test")
    trail = Trail(conn, keys, settings)

    def relayed_here() -> bool:  # the workers relay every 5 s; host 3 relays too, concurrently
        keys.store.record("test.host3.relay", None, None, {})
        return trail.flush() > 0

    wait_for(relayed_here, 60, "a relay from the operator's host")
    for worker in h.workers:
        assert worker.stop() == 0  # the stop relays what is left
    # Every host runs relays; which one drains the shared outbox at a given moment is a race (a host
    # restarted late may find it empty every time, and on PostgreSQL a busy worker's relay can time out
    # behind batches holding the outbox lock), so the chain must have several writers: the operator's
    # host (above) and at least one worker host, and every worker host must have run its relay.
    appended = [list(map(int, h.said(host, r"audit: (\d+) records appended"))) for host in range(WORKERS)]
    assert all(appended), f"a worker host never ran its relay: {appended}"
    assert any(sum(counts) > 0 for counts in appended), f"no worker host relayed a record: {appended}"

    verified = cli(h.operator, "audit", "verify")
    assert verified.returncode == 0 and "audit trail intact" in verified.stdout, verified.stdout + verified.stderr
    records = read_trail(conn, h.prefix)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no fork (a seq twice), no gap
    anchored = keys.store.audit_head()
    assert anchored == head_of(records[-1])
    public = load_public_key(h.dirs[WORKERS] / PUBLIC_KEY_FILE)
    assert verify(read_positioned(conn, h.prefix), public, {"key store": anchored}).ok
    actions = {r["action"] for r in records}
    assert {"key.create", "tenant.provision", "key.tenant.destroy", "tenant.terminate.certificate"} <= actions
    assert keys.store.pending_audit(1) == []
