"""What the sealing benchmarks share: tenants' keys from a throwaway key store, an identity
"seal" (the publish path with everything but HPKE), and publishing the way producers did before
sealed ingest (plaintext Avro), as the baseline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Producer

from shredline.keystore.ingest import IngestPublicKey, Kem
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.processors.validation import validate
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import StaticKeys
from shredline.streams.ingest.sdk import PRODUCER_DEFAULTS
from shredline.streams.kafka.connection import Connection


def tenant_keys(data_dir: Path, tenants: Iterable[str]) -> Keys:
    """A key store under `data_dir` (the worker's, when it runs there) with `tenants` provisioned."""
    keys = Keys(SqliteKeyStore(data_dir / "keys.sqlite"), load_keyring(None, data_dir / "master.key", create=True))
    for tenant in sorted(set(tenants)):
        keys.provision(tenant)
    return keys


def given_keys(keys: Keys, tenants: Iterable[str]) -> StaticKeys:
    return StaticKeys(k for t in sorted(set(tenants)) for k in keys.ingest_public_keys(t))


class IdentityKey(IngestPublicKey):
    """A tenant's real key whose `seal` returns the plaintext: the SDK's path minus HPKE."""

    def seal(self, plaintext: bytes, topic: str) -> bytes:
        return plaintext


def unsealed_keys(keys: Keys, tenants: Iterable[str]) -> StaticKeys:
    x25519 = [keys.ingest_key(t, Kem.X25519).public for t in sorted(set(tenants))]
    return StaticKeys(IdentityKey(k.tenant, k.generation, k.kem, k.raw) for k in x25519)


def publish_plaintext(conn: Connection, prefix: str, events: Iterable[dict[str, object]], now: dt.datetime) -> int:
    """Validate and publish `events` unsealed, as producers did before sealed ingest (same producer
    settings as the SDK, lz4 included); returns how many."""
    producer = Producer(conn.confluent(**PRODUCER_DEFAULTS))
    count = 0
    for event in events:
        valid = validate(event, now)
        while True:
            try:
                producer.produce(topic_name(prefix, valid.role), encode(valid.record, valid.value), valid.key)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
        count += 1
    assert producer.flush(60) == 0
    return count
