"""Publishing through the real broker: CLI and SDK seal every event; round trip, rejections, delivery failures."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from shredline.keystore.ingest import Kem
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.processors.roles import Role
from shredline.processors.validation import InvalidEvent
from shredline.schemas.codec import decode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import StaticKeys
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import DeliveryError, Publisher
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.key_store import open_keys
from shredline.streams.settings import Settings
from tests.conftest import Broker, drain
from tests.integration.test_worker import provision
from tests.unit.streams.ingest.hostile import CANARY, hostile_lines

pytestmark = pytest.mark.kafka
INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)
CANARY_PHONE = "+55 11 97777-1234"
CANARY_NAME = "Canária Zq9 Pereira"


def _events(count: int) -> list[dict[str, object]]:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    return list(generate(3, count, 5, start, dt.timedelta(days=1)))


def opened(keys: Keys, msg: Message) -> tuple[str, dict[str, Any]]:
    """Open one ingest record as the worker does; returns the inner record and event."""
    _r, envelope = decode(msg.value() or b"", expect="sealed_ingest")
    inner = keys.open_ingest(
        envelope["tenant"], envelope["generation"], Kem(envelope["kem"]), msg.topic() or "", envelope["ciphertext"]
    )
    return decode(inner)


def provisioned(broker: Broker, prefix: str, data_dir: Path, tenants: set[str]) -> Keys:
    provision(broker.client_env(prefix, data_dir), tenants)
    return open_keys(Settings(data_dir=data_dir))


def test_cli_seals_valid_lines_and_rejects_invalid_ones_without_echoing_them(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    apply_catalog(broker.connection, topic_prefix, 1)
    events = _events(400)
    keys = provisioned(broker, topic_prefix, tmp_path, {str(e["tenant"]) for e in events})
    bad = [
        {**events[0], "event_id": "bad-1", "contact_phone": CANARY_PHONE},
        {**events[1], "event_id": "bad-2", "tenant": CANARY_NAME},
        {**events[2], "event_id": "bad-3", "tenant": "never-provisioned"},
    ]
    lines = [json.dumps(e) for e in events[:200]] + [json.dumps(b) for b in bad] + [json.dumps(e) for e in events[200:]]
    result = subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "publish", "-"],
        input="\n".join(lines).encode(),
        env=broker.client_env(topic_prefix, tmp_path),
        capture_output=True,
        timeout=120,
    )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stdout.startswith("published 400, rejected 3 in ")
    assert "line 201: " in stderr and "line 202: tenant: not a tenant slug" in stderr
    assert "line 203: tenant: not provisioned or terminated (no ingest public key)" in stderr
    for secret in (CANARY_PHONE, CANARY_NAME, "97777", "Zq9"):
        assert secret not in stdout + stderr

    records = drain(broker.connection, [topic_name(topic_prefix, t) for t in INGEST], 400, group_id)
    decoded = {}
    for msg in records:
        assert not msg.headers()
        record, value = opened(keys, msg)
        decoded[value["event_id"]] = (msg.topic(), msg.key(), record, value)
    assert set(decoded) == {e["event_id"] for e in events}
    keys_of_conversation: dict[str, set[bytes]] = {}
    for event in events:
        topic, key, record, value = decoded[str(event["event_id"])]
        assert topic == topic_name(topic_prefix, f"ingest.{event['type']}s")
        anchor = str(event.get("conversation_id") or event.get("contact_id") or event.get("execution_id"))
        assert re.fullmatch(rf"{event['tenant']}:[0-9a-f]{{2}}", key.decode()), key  # tenant and a bucket only
        keys_of_conversation.setdefault(anchor, set()).add(key)
        assert record == f"{event['type']}_event"
    assert all(len(k) == 1 for k in keys_of_conversation.values())  # one conversation, one key, one partition
    everything = b"".join((m.key() or b"") + (m.value() or b"") for m in records)
    for event in events[:50]:
        for field in ("contact_phone", "contact_name", "contact_email", "phone", "name", "email", "body", "event_id"):
            if isinstance(event.get(field), str) and len(str(event[field])) > 6:
                assert str(event[field]).encode() not in everything, field


def test_cli_on_a_file_of_hostile_json_publishes_exactly_the_valid_lines(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    apply_catalog(broker.connection, topic_prefix, 1)
    valid = {**next(e for e in _events(20) if e["type"] == "message"), "event_id": "hostile"}
    keys = provisioned(broker, topic_prefix, tmp_path, {str(valid["tenant"])})
    cases = hostile_lines(valid)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join(line + b"\r\n" if n % 2 else line + b"\n" for n, (line, _why) in enumerate(cases)))
    result = subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "publish", str(path)],
        env=broker.client_env(topic_prefix, tmp_path),
        capture_output=True,
        timeout=120,
    )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    valid_lines = [line for line, why in cases if why is None]
    assert result.returncode == 1, stderr
    assert stdout.startswith(f"published {len(valid_lines)}, rejected {len(cases) - len(valid_lines)} in "), stdout
    rejections = [r for r in stderr.splitlines() if r.startswith("line ")]
    expected = [f"line {n}: {why}" for n, (_line, why) in enumerate(cases, start=1) if why is not None]
    assert len(rejections) == len(expected), stderr
    for got, want in zip(rejections, expected, strict=True):
        assert got.startswith(want), (got, want)
    assert CANARY not in stdout + stderr and "internal error" not in stderr
    records = drain(broker.connection, [topic_name(topic_prefix, Role.INGEST_MESSAGES)], len(valid_lines), group_id)
    published = sorted(opened(keys, m)[1]["event_id"] for m in records)
    assert published == sorted(json.loads(line.removeprefix(b"\xef\xbb\xbf"))["event_id"] for line in valid_lines)


def test_sdk_seals_and_flushes_on_exit(broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path) -> None:
    apply_catalog(broker.connection, topic_prefix, 1)
    events = _events(50)
    keys = provisioned(broker, topic_prefix, tmp_path, {str(e["tenant"]) for e in events})
    with Publisher(broker.connection, topic_prefix, kem=Kem.MLKEM768_X25519) as publisher:
        for event in events:
            publisher.publish(event)
        with pytest.raises(InvalidEvent, match=r"^contact_phone: not E\.164"):
            first_message = next(e for e in events if e["type"] == "message")
            publisher.publish({**first_message, "contact_phone": CANARY_PHONE})
    assert publisher.delivered == 50 and publisher.failed == 0
    seen = drain(broker.connection, [topic_name(topic_prefix, t) for t in INGEST], 50, group_id)
    assert {decode(m.value() or b"")[1]["kem"] for m in seen} == {"MLKEM768_X25519"}
    assert sorted(opened(keys, m)[1]["event_id"] for m in seen) == sorted(str(e["event_id"]) for e in events)


def test_sdk_surfaces_delivery_failures_as_exceptions(broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    # No topics under this prefix and auto-creation is off: the broker cannot take the records.
    keys = Keys(SqliteKeyStore(tmp_path / "keys.sqlite"), load_keyring(None, tmp_path / "master.key", create=True))
    tenants = {str(e["tenant"]) for e in _events(5)}
    for tenant in tenants:
        keys.provision(tenant)
    given = StaticKeys(k for t in tenants for k in keys.ingest_public_keys(t))
    publisher = Publisher(broker.connection, topic_prefix, producer_config={"message.timeout.ms": 3000}, keys=given)
    with pytest.raises(DeliveryError) as err, publisher:
        for event in _events(5):
            publisher.publish(event)
    assert err.value.failed == 5
    assert "records not delivered" in str(err.value)
