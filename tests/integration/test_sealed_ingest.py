"""Sealed ingest on a real broker, as a new user would try it (issue 14): the worker is NOT running,
three canary messages are published for a provisioned tenant, the tenant is terminated. No canary
is ever on the broker's disk, and none is readable from any ingest record afterwards."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from shredline.keystore.errors import KeyDestroyed
from shredline.keystore.ingest import IngestPublicKey, Kem
from shredline.processors.roles import Role
from shredline.processors.validation import validate
from shredline.schemas.codec import decode, encode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.sdk import PRODUCER_DEFAULTS
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import Launcher
from shredline.streams.settings import Settings
from tests.conftest import Broker, read_topic, wait_for
from tests.integration.test_worker import cli

pytestmark = pytest.mark.kafka
INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)
NAME, BODY, PHONE = "Zed Fakename", "CANARY-13", "+5511987651313"


def canary_lines(tenant: str) -> bytes:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    events = [
        {
            "type": "message",
            "event_id": f"issue14-{i}",
            "tenant": tenant,
            "occurred_at": now.isoformat(),
            "channel": "WHATSAPP",
            "direction": "INBOUND",
            "conversation_id": "wa-5511987651313",
            "contact_phone": PHONE,
            "contact_name": NAME,
            "body": f"hello, this is {NAME}: {BODY} #{i}",
        }
        for i in range(3)
    ]
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def publish_cli(env: dict[str, str], lines: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "publish", "-"],
        input=lines.decode(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def on_disk(segments: list[Path], needle: str) -> list[str]:
    """The segment files that hold `needle` as bytes."""
    found = []
    for segment in segments:
        try:
            if needle.encode() in segment.read_bytes():
                found.append(segment.parent.name)
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
    return found


def ingest_blob(broker: Broker, prefix: str) -> tuple[bytes, list[dict[str, Any]]]:
    """Every key, value and header of every ingest record, read by a fresh consumer; and the envelopes."""
    blob, envelopes = bytearray(), []
    for role in INGEST:
        for msg in read_topic(broker.connection, topic_name(prefix, role), f"fresh-{uuid.uuid4().hex[:8]}"):
            blob += (msg.key() or b"") + (msg.value() or b"")
            blob += b"".join(k.encode() + (v or b"") for k, v in msg.headers() or [])
            if msg.value() and decode(msg.value() or b"")[0] == "sealed_ingest":
                envelopes.append({**decode(msg.value() or b"")[1], "topic": msg.topic()})
    return bytes(blob), envelopes


def test_terminating_with_the_worker_down_leaves_no_readable_canary_anywhere(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    if broker.settings.bootstrap:
        pytest.skip("reads the segment files of the local launcher's broker")
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    assert cli(env, "tenant", "provision", "acme").returncode == 0

    # The public key reaches upstream on control.tenants; the operator command prints the same key.
    printed = cli(env, "tenant", "public-key", "acme")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert [IngestPublicKey.parse(line).kem for line in lines] == list(Kem)
    control = [
        decode(m.value() or b"")[1] for m in read_topic(broker.connection, f"{topic_prefix}.control.tenants", "c")
    ]
    (provisioned,) = [e for e in control if e["kind"] == "PROVISIONED" and e["tenant"] == "acme"]
    announced = {k["kem"]: k["public_key"] for k in provisioned["ingest_keys"]}
    assert {k.kem.value: k.raw for k in map(IngestPublicKey.parse, lines)} == announced

    published = publish_cli(env, canary_lines("acme"))  # no worker is running
    assert published.returncode == 0 and published.stdout.startswith("published 3, rejected 0"), published.stderr

    # Positive control: one event as a producer wrote it before sealed ingest (same producer
    # settings, lz4 included), so the scan below is shown to see ingest records on disk.
    # Its marker shares no substring with the canaries: "CONTROL-CANARY-13…" once failed CI (1 run in 256).
    control_canary = f"POSITIVE-CONTROL-{uuid.uuid4().hex[:8]}"
    assert not any(canary in control_canary for canary in (NAME, BODY, PHONE, "987651313"))
    first = json.loads(canary_lines("other").splitlines()[0])
    old = validate(
        {
            **first,
            "contact_name": control_canary,
            "body": control_canary,
            "contact_phone": "+5511987650000",
            "conversation_id": "control",
        },
        dt.datetime.now(dt.UTC),
    )
    producer = Producer(broker.connection.confluent(**PRODUCER_DEFAULTS))
    producer.produce(topic_name(topic_prefix, Role.INGEST_MESSAGES), encode(old.record, old.value), old.key)
    assert producer.flush(30) == 0
    del producer

    launcher = Launcher(broker.settings)
    segments = launcher.segment_files(topic_prefix)
    assert {f"{topic_prefix}.ingest.messages-{p}" for p in range(6)} <= {s.parent.name for s in segments}
    wait_for(lambda: bool(on_disk(launcher.segment_files(topic_prefix), control_canary)), 30, "the control on disk")
    decoded = launcher.decoded_segments(topic_prefix)  # lz4 batches decompressed by Kafka's own tool
    assert control_canary.encode() in decoded
    for canary in (NAME, BODY, PHONE, "987651313"):
        assert on_disk(launcher.segment_files(topic_prefix), canary) == [], f"{canary!r} on the broker's disk"
        assert canary.encode() not in decoded, f"{canary!r} in a record on the broker's disk"

    # Before termination the envelopes do hold the canaries: the tenant's key opens them.
    blob, envelopes = ingest_blob(broker, topic_prefix)
    assert control_canary.encode() in blob and NAME.encode() not in blob and BODY.encode() not in blob
    mine = [e for e in envelopes if e["tenant"] == "acme"]
    assert len(mine) == 3 and {e["kem"] for e in mine} == {"X25519"}
    keys = open_keys(Settings(data_dir=tmp_path))
    opened = [keys.open_ingest("acme", e["generation"], Kem(e["kem"]), e["topic"], e["ciphertext"]) for e in mine]
    assert all(BODY.encode() in o and NAME.encode() in o for o in opened)

    terminated = cli(env, "tenant", "terminate", "acme", "--reason", "test", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert "3 unprocessed sealed to its destroyed ingest key" in terminated.stderr
    certificate = json.loads((tmp_path / "certificates" / "acme.g1.json").read_text())["certificate"]
    assert certificate["ingest_backlog"]["unprocessed_sealed"] == 3
    assert certificate["ingest_backlog"]["unprocessed_plaintext"] == 0
    assert "3 unprocessed sealed to the destroyed ingest key (unreadable)" in str(certificate["topics_affected"])
    assert "Ingest backlog" in (tmp_path / "certificates" / "acme.g1.txt").read_text()

    # A fresh consumer: every record is still there, and none can be read.
    blob, envelopes = ingest_blob(broker, topic_prefix)
    assert len([e for e in envelopes if e["tenant"] == "acme"]) == 3
    for canary in (NAME, BODY, PHONE, "987651313"):
        assert canary.encode() not in blob, f"{canary!r} readable in an ingest record"
    keys = open_keys(Settings(data_dir=tmp_path))
    for e in mine:
        with pytest.raises(KeyDestroyed):
            keys.open_ingest("acme", e["generation"], Kem(e["kem"]), e["topic"], e["ciphertext"])
    decoded = launcher.decoded_segments(topic_prefix)
    for canary in (NAME, BODY):
        assert on_disk(launcher.segment_files(topic_prefix), canary) == [] and canary.encode() not in decoded

    # Terminated: no public key, and publishing for it is refused per line.
    gone = cli(env, "tenant", "public-key", "acme")
    assert gone.returncode == 1 and "acme is terminated (no ingest public key)" in gone.stderr
    refused = publish_cli(env, canary_lines("acme")[: canary_lines("acme").index(b"\n") + 1])
    assert refused.returncode == 1
    assert "line 1: tenant: not provisioned or terminated (no ingest public key)" in refused.stderr
    assert NAME not in refused.stderr + refused.stdout


def test_keys_of_a_tenant_provisioned_before_sealed_ingest_can_be_announced_again(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    assert cli(env, "tenant", "provision", "legacy").returncode == 0
    announced = cli(env, "tenant", "public-key", "legacy", "--announce", "--kem", "X25519")
    assert announced.returncode == 0, announced.stderr
    (line,) = announced.stdout.splitlines()
    control = [
        decode(m.value() or b"")[1] for m in read_topic(broker.connection, f"{topic_prefix}.control.tenants", "c")
    ]
    (again,) = [e for e in control if e["kind"] == "INGEST_KEY"]
    assert again["tenant"] == "legacy" and again["generation"] == 1
    assert {k["kem"]: k["public_key"] for k in again["ingest_keys"]}["X25519"] == IngestPublicKey.parse(line).raw
