"""Termination as operators run it, on a real broker with a running worker: crashes at every step,
certificates, the audit trail, operators, late events, re-provisioning and policies."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shredline.keystore.errors import KeyDestroyed
from shredline.keystore.keys import Sealed
from shredline.processors.roles import Role
from shredline.schemas.codec import decode, encode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.key_store import open_keys
from shredline.streams.operations.audit import (
    Trail,
    chain,
    head_of,
    read_positioned,
    read_trail,
    relay_lock,
    verify,
)
from shredline.streams.operations.certificate import dump
from shredline.streams.operations.signing import PUBLIC_KEY_FILE, load_public_key
from shredline.streams.operations.termination import FAULT_EXIT, STEPS
from shredline.streams.settings import Settings, load_settings
from tests.conftest import Broker, read_topic, record_count, wait_for
from tests.integration.test_worker import Worker, cli, publish, stale_keys

pytestmark = pytest.mark.kafka


@dataclass
class Pipeline:
    broker: Broker
    prefix: str
    data_dir: Path
    env: dict[str, str]

    def cli(self, *args: str, **env: str) -> Any:
        return cli({**self.env, **env}, *args)

    def trail(self) -> list[dict[str, Any]]:
        return read_trail(self.broker.connection, self.prefix)

    def events_for(self, tenant: str, n: int, tag: str) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
        return [
            {
                "type": "message",
                "event_id": f"{tag}-{i}",
                "tenant": tenant,
                "occurred_at": (now + dt.timedelta(milliseconds=i)).isoformat(),
                "channel": "SMS",
                "direction": "INBOUND",
                "conversation_id": f"{tag}-conv-{i % 3}",
                "contact_phone": "+5511987650002",
                "body": f"hello {i}",
            }
            for i in range(n)
        ]

    def processed(self, tenant: str, n: int, tag: str) -> None:
        """Publish n messages for the tenant and wait until the worker sealed them all."""
        buffer = topic_name(self.prefix, Role.BUFFER_MESSAGES)
        before = record_count(self.broker.connection, buffer)
        publish(self.broker, self.prefix, self.events_for(tenant, n, tag))
        wait_for(lambda: record_count(self.broker.connection, buffer) >= before + n, 120, f"{tenant} sealed")


@pytest.fixture(scope="module")
def pipeline(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    prefix = f"term{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path_factory.mktemp("termination")
    apply_catalog(broker.connection, prefix, 1)
    p = Pipeline(broker, prefix, data_dir, broker.client_env(prefix, data_dir))
    worker = Worker(p.env, data_dir / "worker.log")
    try:
        yield p
    finally:
        assert worker.stop() == 0


def actions(trail: list[dict[str, Any]], tenant: str) -> list[str]:
    return [r["action"] for r in trail if r["tenant"] == tenant]


@pytest.mark.parametrize("step", STEPS[:-1])
def test_a_crash_after_any_step_is_finished_by_re_running(pipeline: Pipeline, step: str) -> None:
    tenant = f"crash-{step}"
    assert pipeline.cli("tenant", "provision", tenant).returncode == 0
    pipeline.processed(tenant, 9, tenant)
    keys = open_keys(Settings(data_dir=pipeline.data_dir))
    live = next(c for c in keys.report() if c.tenant == tenant).conversation_keys
    assert live == 3

    crashed = pipeline.cli(
        "tenant", "terminate", tenant, "--reason", "contract ended", "--yes", SHREDLINE_FAULT_AFTER=step
    )
    assert crashed.returncode == FAULT_EXIT, crashed.stderr
    assert f"{step}:" in crashed.stderr and "certificate" not in crashed.stdout
    rerun = pipeline.cli("tenant", "terminate", tenant, "--reason", "contract ended", "--yes")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming the termination" in rerun.stderr
    finished = [s for s in STEPS if f"{s}:" in rerun.stderr]
    # nothing done twice, but verify: it is always checked again right before the certificate
    assert finished == [s for s in STEPS if STEPS.index(s) > STEPS.index(step) or s == "verify"]

    certificate = pipeline.data_dir / "certificates" / f"{tenant}.g1.json"
    verified = pipeline.cli("certificate", "verify", str(certificate))
    assert verified.returncode == 0, verified.stderr
    body = json.loads(certificate.read_text())["certificate"]
    assert body["keys_destroyed"] == {"root": 1, "conversation": 3, "contact": 0, "before_termination": 0}
    assert len(body["key_id_digests"]) == 3
    assert body["verification"]["buffer_records_sampled"] == 9
    assert body["verification"]["buffer_records_readable"] == 0
    assert body["operator"] and body["reason"] == "contract ended"
    assert (pipeline.data_dir / "certificates" / f"{tenant}.g1.txt").read_text().startswith("SHREDLINE DELETION")

    trail = pipeline.trail()
    mine = actions(trail, tenant)
    assert mine.count("key.tenant.destroy") == 1 and mine.count("tenant.terminate.intent") == 1
    assert mine.count("tenant.terminate.certificate") == 1
    again = pipeline.cli("tenant", "terminate", tenant, "--reason", "again", "--yes")
    assert again.returncode == 0 and "already terminated; nothing changed" in again.stdout
    assert actions(pipeline.trail(), tenant) == mine


def test_progress_written_into_the_store_by_hand_is_set_aside_and_never_certified(pipeline: Pipeline) -> None:
    # Whoever can write the key store could record a termination that never happened: no certificate
    # may follow from it, and the live tenant must still be terminated for real when asked.
    tenant = "forged"
    assert pipeline.cli("tenant", "provision", tenant).returncode == 0
    pipeline.processed(tenant, 3, tenant)
    keys = open_keys(Settings(data_dir=pipeline.data_dir))
    generation = keys.store.tenant(tenant).generation  # type: ignore[union-attr]
    done = {step: {"at": "2026-12-06T00:00:00Z"} for step in STEPS[:-1]}
    done["keys"] |= {"conversation": 4242, "contact": 17, "master_version": 9, "wrapped_under": 1}
    forged = {"tenant": tenant, "generation": generation, "operator": "User:ceo", "reason": "forged", "steps": done}
    keys.store.save_termination(tenant, generation, json.dumps(forged))

    run = pipeline.cli("tenant", "terminate", tenant, "--reason", "contract ended", "--yes")
    assert run.returncode == 0, run.stderr
    assert "its keys step is recorded as done, but the tenant is active with its root key in the store" in run.stderr
    assert [s for s in STEPS if f"{s}:" in run.stderr] == list(STEPS)  # every step, for real
    assert keys.store.tenant(tenant).state == "terminated"  # type: ignore[union-attr]
    body = json.loads((pipeline.data_dir / "certificates" / f"{tenant}.g{generation}.json").read_text())["certificate"]
    assert body["reason"] == "contract ended" and body["operator"] != "User:ceo"
    assert body["keys_destroyed"]["conversation"] == 3 and body["keys_destroyed"]["contact"] == 0
    assert "tenant.terminate.progress_refused" in actions(pipeline.trail(), tenant)


def test_a_crash_between_the_destruction_and_the_rotation_keeps_the_certificate_right(pipeline: Pipeline) -> None:
    """The re-run found the tenant fenced with nothing left to destroy, and its certificate said 0
    conversation keys destroyed by the termination and 3 destroyed before it."""
    tenant = "crash-mid-keys"
    assert pipeline.cli("tenant", "provision", tenant).returncode == 0
    pipeline.processed(tenant, 9, tenant)
    crashed = pipeline.cli(
        "tenant", "terminate", tenant, "--reason", "contract ended", "--yes", SHREDLINE_FAULT_AFTER="keys:destroyed"
    )
    assert crashed.returncode == FAULT_EXIT, crashed.stderr
    rerun = pipeline.cli("tenant", "terminate", tenant, "--reason", "contract ended", "--yes")
    assert rerun.returncode == 0, rerun.stderr
    assert [s for s in STEPS if f"{s}:" in rerun.stderr] == list(STEPS[1:])
    body = json.loads((pipeline.data_dir / "certificates" / f"{tenant}.g1.json").read_text())["certificate"]
    assert body["keys_destroyed"] == {"root": 1, "conversation": 3, "contact": 0, "before_termination": 0}
    assert body["verification"]["master_key_rotated"] is True
    keys_step = next(r for r in pipeline.trail() if r["tenant"] == tenant and r["action"] == "tenant.terminate.keys")
    assert keys_step["details"]["conversation"] == "3"


def test_the_audit_trail_verifies_and_a_forged_record_is_named(pipeline: Pipeline) -> None:
    pipeline.cli("tenant", "provision", "audited")
    pipeline.processed("audited", 3, "audited")
    wait_for(  # the worker relays its key creations every 5 s
        lambda: any(r["action"] == "key.create" and r["tenant"] == "audited" for r in pipeline.trail()), 60, "relay"
    )
    ok = pipeline.cli("audit", "verify")
    assert ok.returncode == 0 and "audit trail intact" in ok.stdout, ok.stdout + ok.stderr
    records = pipeline.trail()
    kinds = {r["action"] for r in records}
    assert {"key.root.create", "key.create", "tenant.provision", "operator.command"} <= kinds
    public = load_public_key(pipeline.data_dir / PUBLIC_KEY_FILE)
    assert verify(read_positioned(pipeline.broker.connection, pipeline.prefix), public).ok
    # No personal data in the trail: the canary phone and bodies never appear.
    blob = json.dumps(records, default=str)
    assert "+5511987650002" not in blob and "hello 1" not in blob

    forged = {**records[-1], "seq": records[-1]["seq"] + 1, "actor": "mallory", "signature": None}
    topic = topic_name(pipeline.prefix, Role.AUDIT_EVENTS)
    produce_and_wait(pipeline.broker.connection, [Record(topic, encode("audit_event", forged), partition=0)], "forged")
    broken = pipeline.cli("audit", "verify")
    assert broken.returncode == 1
    # The worker may have relayed more records meanwhile: the forgery is named wherever it landed.
    at = next(i for i, r in enumerate(pipeline.trail()) if r["actor"] == "mallory")
    assert f"BROKEN at offset {at}: the record claiming seq {forged['seq']}: hash does not match" in broken.stdout


def test_a_tampered_certificate_fails_verification(pipeline: Pipeline, tmp_path: Path) -> None:
    tenant = "cert-tamper"
    pipeline.cli("tenant", "provision", tenant)
    assert pipeline.cli("tenant", "terminate", tenant, "--reason", "ended", "--yes").returncode == 0
    document = json.loads((pipeline.data_dir / "certificates" / f"{tenant}.g1.json").read_text())
    document["certificate"]["keys_destroyed"]["conversation"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(dump(document))  # the written form, so it reaches the signature check
    result = pipeline.cli("certificate", "verify", str(tampered))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "shredline: error: certificate does not verify: it was changed or not signed by this provider's key"
    )


def test_late_events_of_a_terminated_tenant_are_dropped_and_create_no_key(pipeline: Pipeline) -> None:
    tenant = "late"
    pipeline.cli("tenant", "provision", tenant)
    pipeline.processed(tenant, 3, "late-a")
    late = stale_keys(pipeline.data_dir, tenant)  # an upstream that has not heard of the termination
    assert pipeline.cli("tenant", "terminate", tenant, "--reason", "ended", "--yes").returncode == 0
    metrics = topic_name(pipeline.prefix, Role.METRICS_USAGE)
    conn = pipeline.broker.connection

    def dropped() -> int:
        records = read_topic(conn, metrics, f"late-{uuid.uuid4().hex[:6]}")
        return sum(
            (m := decode(r.value() or b"")[1])["kind"] == "DROPPED_TERMINATED" and m["tenant"] == tenant
            for r in records
        )

    publish(pipeline.broker, pipeline.prefix, pipeline.events_for(tenant, 5, "late-b"), keys=late)
    wait_for(lambda: dropped() == 5, 120, "late events dropped")
    keys = open_keys(Settings(data_dir=pipeline.data_dir))
    counts = next(c for c in keys.report() if c.tenant == tenant)
    assert counts.conversation_keys == counts.contact_keys == counts.retired_keys == 0
    trail = pipeline.trail()
    after = trail[
        max(i for i, r in enumerate(trail) if r["action"] == "tenant.terminate.intent" and r["tenant"] == tenant) :
    ]
    assert not [r for r in after if r["action"] == "key.create" and r["tenant"] == tenant]


def test_a_terminated_tenant_comes_back_only_with_the_flag_and_new_keys(pipeline: Pipeline) -> None:
    tenant = "phoenix"
    pipeline.cli("tenant", "provision", tenant)
    pipeline.processed(tenant, 3, "phoenix-a")
    buffer = topic_name(pipeline.prefix, Role.BUFFER_MESSAGES)
    conn = pipeline.broker.connection
    old = [
        e
        for r in read_topic(conn, buffer, f"ph-{uuid.uuid4().hex[:6]}")
        if r.value() and (e := decode(r.value() or b"")[1])["tenant"] == tenant
    ]
    assert len(old) == 3
    assert pipeline.cli("tenant", "terminate", tenant, "--reason", "ended", "--yes").returncode == 0
    silent = pipeline.cli("tenant", "provision", tenant)
    assert silent.returncode != 0 and "already exists (terminated)" in silent.stderr
    back = pipeline.cli("tenant", "provision", tenant, "--reprovision-terminated")
    assert back.returncode == 0 and "generation 2" in back.stdout
    keys = open_keys(Settings(data_dir=pipeline.data_dir))
    for env_ in old:
        with pytest.raises(KeyDestroyed):
            keys.open(
                Sealed(tenant, "conversation", env_["record_id"], env_["key_id"], env_["nonce"], env_["ciphertext"]),
                buffer,
            )


def test_policies_are_published_to_active_tenants_and_acceptance_is_listed(pipeline: Pipeline, tmp_path: Path) -> None:
    for tenant in ("pol-a", "pol-b"):
        pipeline.cli("tenant", "provision", tenant)
    text = tmp_path / "policy.txt"
    text.write_text("We process names, emails, phones and messages only to run your workflows.\n")
    published = pipeline.cli("policy", "publish", "2026-12", str(text))
    assert published.returncode == 0 and "published" in published.stdout, published.stderr
    again = pipeline.cli("policy", "publish", "2026-12", str(text))
    assert again.returncode == 0 and "already published" in again.stdout
    assert pipeline.cli("tenant", "accept-policy", "pol-a", "2026-12").returncode == 0
    unknown = pipeline.cli("tenant", "accept-policy", "pol-a", "1999-01")
    assert unknown.returncode != 0 and "never published" in unknown.stderr
    listing = pipeline.cli("tenant", "list").stdout
    row = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert row["pol-a"].rstrip().endswith("2026-12") and "(NOT 2026-12)" in row["pol-b"]
    conn = pipeline.broker.connection
    control = topic_name(pipeline.prefix, Role.CONTROL_TENANTS)
    events = [decode(r.value() or b"")[1] for r in read_topic(conn, control, "pol")]
    notified = {e["tenant"] for e in events if e["kind"] == "POLICY_PUBLISHED" and e["policy_version"] == "2026-12"}
    assert {"pol-a", "pol-b"} <= notified
    assert any(e["kind"] == "POLICY_ACCEPTED" and e["tenant"] == "pol-a" for e in events)


def test_a_relay_that_died_after_sending_sends_nothing_twice(pipeline: Pipeline) -> None:
    settings = load_settings(pipeline.env)
    keys = open_keys(settings, actor="crasher")
    trail = Trail(pipeline.broker.connection, keys, settings)
    trail.flush()
    keys.store.record("test.relay-crash", None, None, {"n": "1"})
    # The dead relay held the relay lock, as every relay does: without it the running worker could
    # relay and anchor in between, and this "dead relay" would fork the chain instead.
    with relay_lock(keys.store):
        entries = keys.store.pending_audit(10)
        sent = chain(keys.store.audit_head(), entries, keys.store.store_id, trail.signer)  # what it had sent
        topic = topic_name(pipeline.prefix, Role.AUDIT_EVENTS)
        values = [Record(topic, encode("audit_event", r, canonical=True), partition=0) for r in sent]
        produce_and_wait(pipeline.broker.connection, values, "x")
    trail.flush()  # before dropping its outbox and anchoring the head
    records = pipeline.trail()
    assert [r.get("action") for r in records].count("test.relay-crash") == 1
    crash = next(i for i, r in enumerate(records) if r.get("action") == "test.relay-crash")
    seqs = [r["seq"] for r in records[crash:]]  # (an earlier test may have left a forgery just before)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
    assert keys.store.pending_audit(10) == [] and keys.store.audit_head() == head_of(records[-1])
