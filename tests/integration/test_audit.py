"""The audit trail against an attacker of the topic, on a real broker with real `shredline` processes:
a forged record is named and never chained on, a cut tail shows against the key store's anchor and
against a certificate's head, and a clean worker stop leaves nothing in the outbox."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from shredline.keystore.store import AuditHead
from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.key_store import open_keys
from shredline.streams.operations import audit
from shredline.streams.operations.audit import (
    HEAD_MISSING,
    TAIL_NOT_OURS,
    TAIL_WINDOW,
    head_of,
    read_trail,
    record_hash,
)
from shredline.streams.operations.signing import PUBLIC_KEY_FILE
from shredline.streams.settings import Settings
from tests.conftest import Broker, wait_for
from tests.integration.test_worker import Worker, cli, publish

pytestmark = pytest.mark.kafka


@dataclass
class Site:
    broker: Broker
    prefix: str
    data_dir: Path
    env: dict[str, str]

    @property
    def topic(self) -> str:
        return topic_name(self.prefix, Role.AUDIT_EVENTS)

    def cli(self, *args: str) -> Any:
        return cli(self.env, *args)

    def ok(self, *args: str) -> Any:
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result

    def trail(self) -> list[dict[str, Any]]:
        return read_trail(self.broker.connection, self.prefix)

    def anchor(self) -> AuditHead | None:
        keys = open_keys(Settings(data_dir=self.data_dir))
        try:
            return keys.store.audit_head()
        finally:
            keys.store.close()

    def append(self, record: dict[str, Any]) -> None:
        """What anyone holding a client certificate can do today."""
        value = encode("audit_event", record)
        produce_and_wait(self.broker.connection, [Record(self.topic, value, partition=0)], "forged record")


@pytest.fixture
def site(broker: Broker, topic_prefix: str, tmp_path: Path) -> Site:
    apply_catalog(broker.connection, topic_prefix, 1)
    data_dir = tmp_path / "provider"
    return Site(broker, topic_prefix, data_dir, broker.client_env(topic_prefix, data_dir))


def test_a_forged_record_is_named_and_the_relay_never_chains_on_it(site: Site) -> None:
    """Issue 13 (a): a record chained right (seq, prev_hash, its own hash) but unsigned."""
    site.ok("tenant", "provision", "alpha")
    last = site.trail()[-1]
    forged: dict[str, Any] = {
        "seq": last["seq"] + 1,
        "at": dt.datetime.now(dt.UTC),
        "actor": "root",
        "action": "tenant.terminate.certificate",
        "tenant": "acme",
        "subject": None,
        "details": {},
        "prev_hash": last["hash"],
        "signature": None,
    }
    forged["hash"] = record_hash(forged)
    site.append(forged)
    offset = len(site.trail()) - 1
    claim = f"the record claiming seq {forged['seq']}"
    named = f"BROKEN at offset {offset}: {claim} is not signed: the provider did not write it"

    broken = site.cli("audit", "verify")
    assert broken.returncode == 1 and broken.stdout.startswith(f"audit trail {named}"), broken.stdout

    provisioned = site.ok("tenant", "provision", "gamma")  # the next ordinary command still works...
    assert "audit alarm" in provisioned.stderr and "the relay did not chain on it" in provisioned.stderr
    trail = site.trail()
    raised = trail[offset + 1]  # ...and the relay put an alarm, not gamma's records, after the forgery
    assert raised["action"] == TAIL_NOT_OURS and raised["details"]["offset"] == str(offset)
    assert (raised["seq"], raised["prev_hash"]) == (last["seq"] + 1, last["hash"])  # chained from its own head
    assert not [r for r in trail if r["prev_hash"] == forged["hash"]]  # nothing chains on the forgery
    assert {"tenant.provision", "key.root.create"} <= {r["action"] for r in trail[offset + 2 :]}
    assert site.anchor() == head_of(trail[-1])

    still = site.cli("audit", "verify")  # signed records after it do not vouch for it
    assert still.returncode == 1 and still.stdout.startswith(f"audit trail {named}"), still.stdout
    assert f"also at offset {offset + 1}: alarm {TAIL_NOT_OURS} at seq {forged['seq']}" in still.stdout

    site.ok("tenant", "provision", "delta")  # the forgery lies before the head now: no second alarm
    assert [r["action"] for r in site.trail()].count(TAIL_NOT_OURS) == 1


def test_a_transaction_written_to_the_topic_neither_stalls_nor_fools_the_relay(site: Site) -> None:
    """A committed transaction leaves a control record that takes an offset and is never delivered:
    reading up to the last delivered offset would wait for it forever, and every command with it."""
    site.ok("tenant", "provision", "alpha")
    producer = Producer(site.broker.connection.confluent(**{"transactional.id": f"mallory-{site.prefix}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(site.topic, b"not an audit record", partition=0)
    producer.commit_transaction(30)
    after = site.ok("tenant", "provision", "beta")
    assert "audit alarm" in after.stderr and "not an audit record" in after.stderr
    verdict = site.cli("audit", "verify")
    assert verdict.returncode == 1 and "not an audit record" in verdict.stdout.splitlines()[0]


def test_an_open_transaction_hides_nothing_from_the_relay_or_verify(site: Site) -> None:
    """Anyone may leave a transaction open on the topic (up to the broker's transaction.max.timeout.ms,
    15 min by default). A read_committed reader stops at its first record: the relay then lost sight
    of its own head and wrote a false "head missing" alarm at every command, and verify said "cut"."""
    site.ok("tenant", "provision", "alpha")
    end = len(site.trail())
    producer = Producer(
        site.broker.connection.confluent(
            **{"transactional.id": f"mallory-open-{site.prefix}", "transaction.timeout.ms": 300_000, "log_level": 0}
        )
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(site.topic, b"left open", partition=0)
    producer.flush(30)
    try:
        for tenant in ("beta", "gamma"):
            after = site.ok("tenant", "provision", tenant)
            assert HEAD_MISSING not in after.stderr, after.stderr
        verdict = site.cli("audit", "verify")
        assert verdict.returncode == 1, verdict.stdout
        assert verdict.stdout.startswith(f"audit trail BROKEN at offset {end}: not an audit record"), verdict.stdout
        assert "cut" not in verdict.stdout and HEAD_MISSING not in verdict.stdout, verdict.stdout
        alarms = [r["action"] for r in site.trail() if str(r.get("action")).startswith("audit.alarm.")]
        assert alarms == [TAIL_NOT_OURS], alarms
    finally:
        producer.abort_transaction(30)
    assert site.cli("audit", "verify").stdout == verdict.stdout  # the same verdict once it is aborted


def audit_values(site: Site) -> list[bytes]:
    consumer = Consumer(site.broker.connection.confluent(**{"group.id": f"copy-{uuid.uuid4().hex[:6]}"}))
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(site.topic, 0), timeout=10)
        consumer.assign([TopicPartition(site.topic, 0, 0)])
        values: list[bytes] = []
        while len(values) < high:
            values += [m.value() or b"" for m in consumer.consume(high - len(values), 1.0) if m.error() is None]
        return values
    finally:
        consumer.close()


def recreate_from_prefix(site: Site, keep: int) -> None:
    """Delete audit.events and write back its first `keep` records: what the owner of the topic can do."""
    recreate_from_values(site, audit_values(site)[:keep])


def recreate_from_values(site: Site, values: list[bytes]) -> None:
    """Delete audit.events and write `values` to it anew."""
    admin = AdminClient(site.broker.connection.confluent())
    admin.delete_topics([site.topic])[site.topic].result(timeout=30)
    wait_for(lambda: site.topic not in admin.list_topics(timeout=10).topics, 60, "the topic to be deleted")

    def recreated() -> bool:
        try:
            apply_catalog(site.broker.connection, site.prefix, 1)
        except Exception:  # the broker may still be finishing the deletion
            return False
        return site.topic in admin.list_topics(timeout=10).topics

    wait_for(recreated, 60, "the topic to be re-created")
    records = [Record(site.topic, v, partition=0) for v in values]
    produce_and_wait(site.broker.connection, records, "the kept prefix")


def test_a_cut_tail_is_detected_by_the_anchor_and_by_any_certificate(site: Site, tmp_path: Path) -> None:
    """Issue 13 (b): the topic re-created from a prefix of itself."""
    site.ok("tenant", "provision", "alpha")
    site.ok("tenant", "terminate", "alpha", "--reason", "contract ended", "--yes")
    certificate = site.data_dir / "certificates" / "alpha.g1.json"
    text = (site.data_dir / "certificates" / "alpha.g1.txt").read_text()
    site.ok("tenant", "provision", "beta")  # the trail goes on past the certificate
    trail = site.trail()
    head = json.loads(certificate.read_text())["certificate"]["audit_head"]
    on_chain = next(r for r in trail if r["seq"] == head["seq"])
    assert on_chain["hash"].hex() == head["hash"] and on_chain["action"] == "tenant.terminate.verify"
    assert f"Audit trail      reached seq {head['seq']}, record SHA-256 {head['hash']}" in text
    whole = site.ok("audit", "verify", "--certificate", str(certificate))
    anchor = site.anchor()
    assert anchor is not None and anchor == head_of(trail[-1])
    assert f"reaches certificate alpha.g1.json (seq {head['seq']}) and the key store's anchor (seq {anchor.seq})" in (
        whole.stdout
    )

    recreate_from_prefix(site, keep=head["seq"])  # cut just before the certificate's head

    cut = site.cli("audit", "verify")
    assert cut.returncode == 1
    assert cut.stdout.startswith(
        f"audit trail BROKEN: the key store's anchor says the trail reached seq {anchor.seq}, "
        f"but the chain on the topic ends at seq {head['seq'] - 1}: cut"
    ), cut.stdout
    # An auditor with only the public key and a certificate: no key store, the certificate tells.
    auditor = {**site.env, "SHREDLINE_DATA_DIR": str(tmp_path / "auditor")}
    public = str(site.data_dir / PUBLIC_KEY_FILE)
    blind = cli(auditor, "audit", "verify", "--public-key", public)
    assert blind.returncode == 0 and "no key store anchor here, so a cut tail shows only against --certificate" in (
        blind.stdout
    )
    told = cli(auditor, "audit", "verify", "--public-key", public, "--certificate", str(certificate))
    assert told.returncode == 1 and told.stdout.startswith(
        f"audit trail BROKEN: certificate alpha.g1.json says the trail reached seq {head['seq']}"
    ), told.stdout

    # The relay does not chain on the cut topic as if nothing happened: it alarms, from its anchor.
    after = site.ok("tenant", "provision", "gamma")
    assert "audit alarm" in after.stderr
    raised = site.trail()[head["seq"]]
    assert raised["action"] == HEAD_MISSING and (raised["seq"], raised["prev_hash"]) == (anchor.seq + 1, anchor.hash)
    again = site.cli("audit", "verify")
    assert again.returncode == 1
    assert f"BROKEN at offset {head['seq']}: seq {anchor.seq + 1} where {head['seq']} was due" in again.stdout


def test_a_signed_record_re_encoded_in_another_byte_form_is_named(site: Site) -> None:
    """An Avro map may list its entries in any order: the same record, the same hash and signature,
    other bytes. The topic re-written with such a copy of a genuine record verified intact."""
    site.ok("tenant", "provision", "alpha")
    values = audit_values(site)
    records = site.trail()
    index = next(i for i, r in enumerate(records) if len(r["details"]) > 1)
    swapped = records[index] | {"details": dict(reversed(list(records[index]["details"].items())))}
    assert record_hash(swapped) == records[index]["hash"]  # the signature still covers it
    values[index] = encode("audit_event", swapped)
    assert values[index] != audit_values(site)[index]
    recreate_from_values(site, values)
    verdict = site.cli("audit", "verify")
    assert verdict.returncode == 1, verdict.stdout
    assert (
        verdict.stdout.startswith(f"audit trail BROKEN at offset {index}: not an audit record (audit_event")
        and "not in its canonical encoding" in verdict.stdout.splitlines()[0]
    ), verdict.stdout


def test_the_relay_reads_only_what_follows_its_head_however_much_anyone_appends(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More records after the head than the relay's window made it read the whole topic, in every
    command, within one 60-s read: an attacker who appended enough (or a long trail) made every
    audited command fail. The relay now reads from its head's anchored offset."""
    site.ok("tenant", "provision", "alpha")
    head = site.anchor()
    assert head is not None
    junk = TAIL_WINDOW + 100
    produce_and_wait(
        site.broker.connection, [Record(site.topic, b"junk", partition=0)] * junk, "records after the head"
    )
    read: list[int] = []
    original = audit.read_positioned

    def counting(*args: Any, **kwargs: Any) -> list[Any]:
        records = original(*args, **kwargs)
        read.append(len(records))
        return records

    monkeypatch.setattr(audit, "read_positioned", counting)
    keys = open_keys(Settings(data_dir=site.data_dir))
    try:
        trail = audit.Trail(site.broker.connection, keys, Settings(data_dir=site.data_dir, topic_prefix=site.prefix))
        trail.record("operator.command", details={"command": "test"})
    finally:
        keys.store.close()
    assert sum(read) == junk + 1, read  # the head and what follows it, once
    records = site.trail()
    raised = records[head.seq + 1 + junk]
    assert raised["action"] == TAIL_NOT_OURS and raised["details"]["offset"] == str(head.seq + 1)
    assert (raised["seq"], raised["prev_hash"]) == (head.seq + 1, head.hash)
    verdict = site.cli("audit", "verify")
    assert verdict.returncode == 1 and verdict.stdout.startswith(f"audit trail BROKEN at offset {head.seq + 1}: ")


def test_a_relay_that_never_ends_makes_others_fail_in_one_line_not_wait_for_ever(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command suspended (Ctrl-Z) while it relays holds the relay lock: every audited command, and
    the worker's last relay at SIGTERM, waited on it for ever without a word."""
    site.ok("tenant", "provision", "alpha")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; "
            "from shredline.keystore.sqlite_store import SqliteKeyStore\n"
            "from shredline.streams.operations.audit import relay_lock\n"
            "with relay_lock(SqliteKeyStore(Path(sys.argv[1]))):\n"
            "    print('held', flush=True); os.kill(os.getpid(), signal.SIGSTOP)",
            str(site.data_dir / "keys.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        stat = Path(f"/proc/{holder.pid}/stat")
        wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 30, "the holder to be suspended")
        monkeypatch.setattr(audit, "RELAY_LOCK_WAIT_S", 2.0, raising=False)
        keys = open_keys(Settings(data_dir=site.data_dir))
        trail = audit.Trail(site.broker.connection, keys, Settings(data_dir=site.data_dir, topic_prefix=site.prefix))
        trail.signer  # noqa: B018 - loaded before the lock is contended
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                trail.record("operator.command", details={"command": "while suspended"})
                outcome.append(None)
            except BaseException as exc:  # reported to the test thread
                outcome.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert outcome, "the relay waited on the suspended holder for ever"
        took = time.monotonic() - started
        error = outcome[0]
        assert isinstance(error, audit.AuditError) and took < 10, (error, took)
        assert f"another process (pid {holder.pid}) has held the relay lock" in str(error), str(error)
        assert [e.details for e in keys.store.pending_audit(10)] == [{"command": "while suspended"}]
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.wait(timeout=30)
    trail.flush()  # once the holder is gone, the record goes out
    assert keys.store.pending_audit(10) == []
    assert site.trail()[-1]["details"]["command"] == "while suspended"
    keys.store.close()


def test_a_clean_stop_relays_the_outbox_before_exiting(site: Site) -> None:
    """Key creations made after the worker's last 5-s relay reach audit.events when it stops."""
    site.ok("tenant", "provision", "stopper")
    log = site.data_dir / "worker.log"
    worker = Worker(site.env, log)
    keys = open_keys(Settings(data_dir=site.data_dir))

    def pending_key_creations() -> bool:
        return any(e.action == "key.create" for e in keys.store.pending_audit(1000))

    def relays() -> int:
        return log.read_text(errors="replace").count("records appended") if log.exists() else 0

    try:
        for attempt in range(5):
            seen = relays()
            publish(site.broker, site.prefix, [message("stopper", f"warmup-{attempt}")])
            wait_for(lambda seen=seen: relays() > seen, 120, "a relay by the worker's timer")
            # Just after a relay: a new conversation's key now waits ~5 s for the next one.
            publish(site.broker, site.prefix, [message("stopper", f"stop-{attempt}")])
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not pending_key_creations():
                time.sleep(0.02)
            if pending_key_creations():
                break
        else:
            pytest.fail("never caught a key creation waiting in the outbox")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    assert keys.store.pending_audit(1000) == []
    created = [r for r in site.trail() if r["action"] == "key.create" and r["tenant"] == "stopper"]
    made = sum(c.conversation_keys + c.contact_keys + c.retired_keys + c.destroyed_keys for c in keys.report())
    assert len(created) == made > 0
    keys.store.close()


def message(tenant: str, conversation: str) -> dict[str, Any]:
    return {
        "type": "message",
        "event_id": f"{conversation}-1",
        "tenant": tenant,
        "occurred_at": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat(),
        "channel": "SMS",
        "direction": "INBOUND",
        "conversation_id": conversation,
        "contact_phone": "+5511987650003",
        "body": "hello",
    }
