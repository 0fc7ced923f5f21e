"""The SDK's sealing side without a broker: refusal of tenants without a key, the record key, and
how the key directory reads control events. (Publishing through a broker: tests/integration.)"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from shredline.keystore.ingest import IngestPublicKey, Kem
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.processors.validation import validate
from shredline.schemas.codec import encode
from shredline.streams.ingest.directory import ControlDirectory, NoIngestKey, StaticKeys
from shredline.streams.ingest.publish import publish_lines
from shredline.streams.ingest.sdk import Publisher, record_key
from shredline.streams.kafka.connection import Connection
from shredline.streams.operations.tenants import ingest_keys_field
from tests.unit.streams.ingest.test_publish_lines import GOOD, NOW, _line

NOWHERE = Connection("localhost:1")  # no broker: nothing here may reach one


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    k = Keys(SqliteKeyStore(tmp_path / "keys.sqlite"), load_keyring(None, tmp_path / "master.key", create=True))
    k.provision("acme")
    return k


def control(kind: str, tenant: str, generation: int, public: list[IngestPublicKey] | None = None) -> bytes:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "tenant": tenant,
        "occurred_at": NOW,
        "kind": kind,
        "operator": "op",
        "generation": generation,
        "policy_version": None,
        "buffer_ttl_seconds": None,
        "reason": None,
        "ingest_keys": ingest_keys_field(public or []),
    }
    return encode("tenant_control", event)


def test_a_tenant_without_a_key_is_refused_with_one_clear_line(keys: Keys) -> None:
    acme = keys.ingest_key("acme", Kem.X25519).public
    with Publisher(NOWHERE, "t", keys=StaticKeys([acme]), clock=lambda: NOW) as publisher:
        with pytest.raises(NoIngestKey) as refused:
            publisher.publish({**GOOD, "tenant": "globex"})
        assert str(refused.value) == "tenant: not provisioned or terminated (no ingest public key)"
        with pytest.raises(NoIngestKey):  # a key for another KEM is no key for this one
            Publisher(NOWHERE, "t", keys=StaticKeys([acme]), kem=Kem.MLKEM768_X25519).publish(GOOD)
        lines = [_line({**GOOD, "tenant": "globex"}), _line({**GOOD, "tenant": "initech", "event_id": "e2"})]
        reported: list[str] = []
        summary = publish_lines(lines, publisher, reject=reported.append, progress=lambda _m: None)
    assert (summary.published, summary.rejected) == (0, 2)
    assert reported == [
        "line 1: tenant: not provisioned or terminated (no ingest public key)",
        "line 2: tenant: not provisioned or terminated (no ingest public key)",
    ]
    assert publisher.delivered == 0


def test_the_record_key_keeps_a_conversation_together_and_reveals_at_most_a_byte() -> None:
    message = {
        "type": "message",
        "event_id": "m1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T10:00:00Z",
        "channel": "SMS",
        "direction": "INBOUND",
        "conversation_id": "wa:5511987650001",  # ids can be phone numbers
        "contact_phone": "+5511987650001",
        "body": "hi",
    }
    first = record_key(validate(message, NOW))
    again = record_key(validate({**message, "event_id": "m2", "body": "again"}, NOW))
    assert first == again and first.startswith(b"acme:") and len(first) == len(b"acme:") + 2
    assert b"5511" not in first and b"98765" not in first
    buckets = {
        record_key(validate({**message, "conversation_id": f"wa:55119876{n:05d}"}, NOW)).split(b":")[1]
        for n in range(2000)
    }
    assert len(buckets) > 240  # spread over the 256 buckets, so over every partition


def test_the_directory_follows_provisioning_termination_and_new_generations(keys: Keys, tmp_path: Path) -> None:
    directory = ControlDirectory(NOWHERE, "t", clock=lambda: 0.0)
    directory.refresh = lambda: None  # type: ignore[method-assign]  # records are fed below instead
    gen1 = keys.ingest_public_keys("acme")
    directory.apply(control("PROVISIONED", "legacy", 1))  # provisioned before sealed ingest: no key
    directory.apply(control("PROVISIONED", "acme", 1, gen1))
    directory.apply(control("POLICY_ACCEPTED", "acme", 1))
    assert directory.public_key("acme", Kem.X25519) == gen1[0]
    assert directory.public_key("acme", Kem.MLKEM768_X25519) == gen1[1]
    with pytest.raises(NoIngestKey):
        directory.public_key("legacy", Kem.X25519)
    directory.apply(control("TERMINATED", "acme", 1))
    with pytest.raises(NoIngestKey):
        directory.public_key("acme", Kem.X25519)
    keys.destroy_tenant("acme", "ended")
    keys.provision("acme", reprovision=True)
    gen2 = keys.ingest_public_keys("acme")
    directory.apply(control("PROVISIONED", "acme", 2, gen2))
    directory.apply(control("INGEST_KEY", "acme", 1, gen1))  # a stale re-announcement never wins
    assert directory.public_key("acme", Kem.X25519) == gen2[0] != gen1[0]
    directory.apply(control("INGEST_KEY", "legacy", 1, [IngestPublicKey("legacy", 1, Kem.X25519, gen2[0].raw)]))
    assert directory.public_key("legacy", Kem.X25519).tenant == "legacy"
    directory.apply(b"not a record")  # skipped with a warning, never fatal
    assert directory.public_key("acme", Kem.X25519) == gen2[0]


def test_a_stale_directory_reads_again_before_answering(keys: Keys) -> None:
    now = [0.0]
    directory = ControlDirectory(NOWHERE, "t", max_age_s=5.0, clock=lambda: now[0])
    reads: list[float] = []

    def refresh() -> None:
        reads.append(now[0])
        directory._read_at = now[0]
        if len(reads) == 1:
            directory.apply(control("PROVISIONED", "acme", 1, keys.ingest_public_keys("acme")))
        else:
            directory.apply(control("TERMINATED", "acme", 1))

    directory.refresh = refresh  # type: ignore[method-assign]
    directory.public_key("acme", Kem.X25519)  # unknown: read
    now[0] = 4.0
    directory.public_key("acme", Kem.X25519)  # known and fresh: no read
    now[0] = 9.5
    with pytest.raises(NoIngestKey):  # older than max_age: read again, and it was terminated
        directory.public_key("acme", Kem.X25519)
    assert reads == [0.0, 9.5]
    assert dt.timedelta(seconds=reads[-1] - reads[0]) > dt.timedelta(seconds=5)
