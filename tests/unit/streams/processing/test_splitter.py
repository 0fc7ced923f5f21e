"""The splitter without Kafka: real keys on SQLite, outputs captured from its `send`."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shredline.keystore.errors import KeyDestroyed, MasterKeyError
from shredline.keystore.ingest import IngestPublicKey, Kem
from shredline.keystore.keys import Keys, Sealed
from shredline.keystore.master import load_keyring, rotate
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.processors.roles import Role
from shredline.processors.validation import validate
from shredline.schemas.codec import decode, encode
from shredline.streams.processing.splitter import Output, Splitter

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
CANARY_NAME, CANARY_PHONE, CANARY_MAIL = "Zq9 Canária Souza", "+5511987650001", "zq9.canary@example.com"
CANARY_BODY = "zq9 canary body: my card is 4111"


def message(**extra: Any) -> dict[str, Any]:
    event = {
        "type": "message",
        "event_id": "evt-zq9-canary-1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:59:30Z",
        "channel": "SMS",
        "direction": "INBOUND",
        "conversation_id": "conv-1",
        "contact_phone": CANARY_PHONE,
        "contact_name": CANARY_NAME,
        "contact_email": CANARY_MAIL,
        "body": CANARY_BODY,
    }
    event.update(extra)
    return event


def plain(event: dict[str, Any]) -> bytes:
    """An event as producers wrote it before sealed ingest: Avro, in the clear."""
    valid = validate(event, NOW)
    return encode(valid.record, valid.value)


def envelope(key: IngestPublicKey, inner: bytes, topic: str) -> bytes:
    """`inner` sealed to `key` for `topic` (a full topic name), as the SDK seals it."""
    sealed = {
        "tenant": key.tenant,
        "generation": key.generation,
        "kem": key.kem.value,
        "ciphertext": key.seal(inner, topic),
    }
    return encode("sealed_ingest", sealed)


class Harness:
    def __init__(self, tmp_path: Path, *, allow_plaintext: bool = False) -> None:
        self.keys = Keys(
            SqliteKeyStore(tmp_path / "keys.sqlite"), load_keyring(None, tmp_path / "master.key", create=True)
        )
        self.sent: list[Output] = []
        self.refuse: Callable[[Output], str | None] = lambda _output: None  # Kafka's refusal of an output, if any
        self.splitter = Splitter(self.keys, "t", self._send, clock=lambda: NOW, allow_plaintext=allow_plaintext)
        self.keys.clock = NOW.timestamp

    def _send(self, outputs: list[Output]) -> dict[int, str]:
        """Like `Outputs.send`: writes what it does not refuse, returns what it refuses."""
        refused = {i: name for i, output in enumerate(outputs) if (name := self.refuse(output)) is not None}
        self.sent.extend(output for i, output in enumerate(outputs) if i not in refused)
        return refused

    def seal(self, inner: bytes, topic: str, tenant: str = "acme", kem: Kem = Kem.X25519) -> bytes:
        """`inner` sealed to the tenant's current ingest key for `topic` (a role, under prefix `t`)."""
        return envelope(self.keys.ingest_key(tenant, kem).public, inner, f"t.{topic}")

    def wire(self, topic: str, event: dict[str, Any]) -> bytes:
        """A valid event as the SDK publishes it: validated, encoded, sealed."""
        return self.seal(plain(event), topic, str(event["tenant"]))

    def handle(self, topic: str, value: bytes | None, offset: int = 0, at: dt.datetime | None = None) -> str:
        return self.splitter.handle(Role(topic), 0, offset, value, at)

    def on(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        return [(k, v) for t, k, v in self.sent if t == topic]


def test_message_is_sealed_and_counted_and_nothing_personal_leaves_in_clear(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    assert h.handle("ingest.messages", h.wire("ingest.messages", message())) == "processed"
    ((key, value),) = h.on("buffer.messages")
    _r, env = decode(value or b"")
    assert key == env["record_id"].encode() and env["event_ref"]
    sealed = Sealed("acme", "conversation", env["record_id"], env["key_id"], env["nonce"], env["ciphertext"])
    assert decode(h.keys.open(sealed, "t.buffer.messages"))[1]["body"] == CANARY_BODY
    ((_k, metric),) = h.on("metrics.usage")
    assert decode(metric or b"")[1]["length_bucket"] == "1-64"
    everything = b"".join((k or b"") + (v or b"") for _t, k, v in h.sent)
    for canary in (CANARY_NAME, CANARY_PHONE, CANARY_MAIL, CANARY_BODY, "conv-1", "evt-zq9-canary-1"):
        assert canary.encode() not in everything


def test_closing_message_destroys_the_conversation_key_after_sealing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    h.handle("ingest.messages", h.wire("ingest.messages", message(closes_conversation=True)))
    assert [decode(v or b"")[1]["kind"] for _k, v in h.on("metrics.usage")] == ["MESSAGE", "CONVERSATION_CLOSED"]
    _r, env = decode(h.on("buffer.messages")[0][1] or b"")
    with pytest.raises(KeyDestroyed):
        h.keys.open(
            Sealed("acme", "conversation", env["record_id"], env["key_id"], env["nonce"], env["ciphertext"]),
            "t.buffer.messages",
        )


def test_contact_delete_destroys_the_key_and_writes_a_tombstone(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    contact = {
        "type": "contact",
        "event_id": "c1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:00:00Z",
        "op": "UPSERT",
        "contact_id": "contact-1",
        "phone": CANARY_PHONE,
        "name": CANARY_NAME,
    }
    h.handle("ingest.contacts", h.wire("ingest.contacts", contact))
    h.handle(
        "ingest.contacts",
        h.wire("ingest.contacts", {**contact, "event_id": "c2", "op": "DELETE", "phone": None, "name": None}),
    )
    (k1, sealed), (k2, tombstone) = h.on("buffer.contacts")
    assert k1 == k2 and sealed is not None and tombstone is None
    assert h.keys.report()[0].contact_keys == 0


def test_execution_logs_are_redacted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    execution = {
        "type": "execution",
        "event_id": "x1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:00:00Z",
        "workflow_id": "order-status",
        "execution_id": "exec-1",
        "status": "FAILED",
        "duration_ms": 1500,
        "log_line": f"sent reminder to {CANARY_NAME} at (11) 98765-0001",
        "error": f"bounce {CANARY_MAIL}",
        "contact_name": CANARY_NAME,
        "contact_phone": CANARY_PHONE,
        "contact_email": CANARY_MAIL,
    }
    h.handle("ingest.executions", h.wire("ingest.executions", execution))
    ((_k, log),) = h.on("logs.executions")
    record = decode(log or b"")[1]
    assert record["message"] == "sent reminder to [NAME] at [PHONE]" and record["error"] == "bounce [EMAIL]"
    assert record["minute"] == dt.datetime(2026, 11, 28, 11, 0, tzinfo=dt.UTC)
    assert decode(h.on("metrics.usage")[0][1] or b"")[1]["duration_bucket"] == "1-10s"


def a_key_nobody_holds(tenant: str) -> IngestPublicKey:
    """A well-formed ingest public key for `tenant` whose private half no key store has."""
    raw = X25519PrivateKey.generate().public_key().public_bytes_raw()
    return IngestPublicKey(tenant, 1, Kem.X25519, raw)


def test_bad_input_goes_to_dead_letters_with_ids_and_reason_only(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    assert h.handle("ingest.messages", b"\xc3\x01" + b"\x00" * 8 + CANARY_BODY.encode(), offset=7) == "dead"
    assert h.handle("ingest.messages", CANARY_BODY.encode(), offset=8) == "dead"
    assert h.handle("ingest.messages", None, offset=9) == "dead"
    ghost = envelope(a_key_nobody_holds("ghost"), plain(message(tenant="ghost")), "t.ingest.messages")
    assert h.handle("ingest.messages", ghost, offset=10) == "dead"
    bad_phone = validate(message(), NOW).value | {"contact_phone": "+1555"}
    assert (
        h.handle("ingest.messages", h.seal(encode("message_event", bad_phone), "ingest.messages"), offset=11) == "dead"
    )
    letters = [decode(v or b"")[1] for _k, v in h.on("deadletter.ingest")]
    assert [(d["offset"], d["reason"]) for d in letters] == [
        (7, "unknown schema fingerprint"),
        (8, "not Avro single-object encoded (missing C3 01 header)"),
        (9, "empty record"),
        (10, "tenant: not provisioned"),
        (11, "contact_phone: not a valid phone number"),
    ]
    assert letters[3]["tenant"] == "ghost" and all(d["source_topic"] == "t.ingest.messages" for d in letters)
    assert b"zq9" not in b"".join(v or b"" for _k, v in h.on("deadletter.ingest")).lower()
    assert h.on("buffer.messages") == []


def test_a_plaintext_event_is_dead_lettered_as_not_sealed_without_its_payload(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    assert h.handle("ingest.messages", plain(message()), offset=3) == "dead"
    ((_k, value),) = h.on("deadletter.ingest")
    letter = decode(value or b"")[1]
    assert (letter["reason"], letter["tenant"], letter["offset"]) == ("not sealed", "acme", 3)
    assert b"zq9" not in (value or b"").lower()
    assert h.on("buffer.messages") == [] and h.on("metrics.usage") == []
    assert h.keys.report()[0].conversation_keys == 0  # nothing was processed


def test_the_migration_switch_processes_plaintext_events_and_counts_them(tmp_path: Path) -> None:
    h = Harness(tmp_path, allow_plaintext=True)
    h.keys.provision("acme")
    assert h.handle("ingest.messages", plain(message())) == "processed"
    assert h.handle("ingest.messages", h.wire("ingest.messages", message(event_id="e2"))) == "processed"
    assert len(h.on("buffer.messages")) == 2 and h.on("deadletter.ingest") == []
    assert h.splitter.counts["plaintext"] == 1 and h.splitter.counts["processed"] == 2


def test_sealed_events_open_for_either_kem_only_on_the_topic_and_tenant_they_were_sealed_for(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    h.keys.provision("globex")
    inner = plain(message())
    hybrid = h.seal(plain(message(event_id="pq-1")), "ingest.messages", kem=Kem.MLKEM768_X25519)
    assert h.handle("ingest.messages", hybrid) == "processed"
    cases = {
        "other topic": h.seal(inner, "ingest.contacts"),
        "sealed to another tenant's key, under this tenant's name": envelope(
            IngestPublicKey("acme", 1, Kem.X25519, h.keys.ingest_key("globex", Kem.X25519).public.raw),
            inner,
            "t.ingest.messages",
        ),
        "key nobody holds": envelope(a_key_nobody_holds("acme"), inner, "t.ingest.messages"),
    }
    for name, data in cases.items():
        assert h.handle("ingest.messages", data) == "dead", name
    mismatched = h.seal(plain(message(tenant="globex")), "ingest.messages", tenant="acme")
    assert h.handle("ingest.messages", mismatched) == "dead"
    reasons = [decode(v or b"")[1]["reason"] for _k, v in h.on("deadletter.ingest")]
    assert reasons == ["sealed: cannot be opened"] * 3 + ["tenant: does not match the sealed envelope"]
    assert len(h.on("buffer.messages")) == 1


def test_sealed_events_of_a_terminated_tenant_are_dropped_and_counted_by_their_broker_minute(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    message_wire = h.wire("ingest.messages", message())
    execution = {
        "type": "execution",
        "event_id": "x1",
        "tenant": "acme",
        "occurred_at": "2026-11-28T11:00:00Z",
        "workflow_id": "order-status",
        "execution_id": "exec-1",
        "status": "SUCCEEDED",
    }
    execution_wire = h.wire("ingest.executions", execution)
    h.keys.destroy_tenant("acme", "ended")
    arrived = dt.datetime(2026, 11, 28, 11, 58, 41, tzinfo=dt.UTC)
    assert h.handle("ingest.messages", message_wire, at=arrived) == "dropped"
    assert h.handle("ingest.executions", execution_wire) == "dropped"
    assert h.on("buffer.messages") == [] and h.on("logs.executions") == [] and h.on("deadletter.ingest") == []
    facts = [decode(v or b"")[1] for _k, v in h.on("metrics.usage")]
    assert [f["kind"] for f in facts] == ["DROPPED_TERMINATED"] * 2
    assert [f["minute"] for f in facts] == [arrived.replace(second=0), NOW]
    assert all(f["tenant"] == "acme" and f["dedup"] is None for f in facts)
    assert h.keys.report()[0].conversation_keys == 0  # no key was created for it


def test_an_envelope_of_an_earlier_generation_is_dropped_after_reprovisioning(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    old = h.wire("ingest.messages", message())
    h.keys.destroy_tenant("acme", "ended")
    h.keys.provision("acme", reprovision=True)
    assert h.handle("ingest.messages", old) == "dropped"
    assert h.handle("ingest.messages", h.wire("ingest.messages", message())) == "processed"


def test_processing_the_same_event_twice_is_harmless(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    h.handle("ingest.messages", h.wire("ingest.messages", message()))
    h.handle("ingest.messages", h.wire("ingest.messages", message()))
    refs = {decode(v or b"")[1]["event_ref"] for _k, v in h.on("buffer.messages")}
    assert len(refs) == 1  # same event, same ref: `buffer read` shows it once
    tokens = [decode(v or b"")[1]["dedup"] for _k, v in h.on("metrics.usage")]
    assert len(tokens) == 2 and tokens[0] == tokens[1] and tokens[0] is not None  # the sink counts it once


def test_a_refused_output_dead_letters_its_source_and_the_rest_of_the_batch_goes_on(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    big = message(event_id="evt-big", body=CANARY_BODY * 100)  # its sealed envelope is what the broker refuses
    records = [
        (Role.INGEST_MESSAGES, 2, 40 + i, h.wire("ingest.messages", event), None)
        for i, event in enumerate([message(event_id="evt-1"), big, message(event_id="evt-3")])
    ]

    def too_large(output: Output) -> str | None:
        role, _key, value = output
        return "MSG_SIZE_TOO_LARGE" if role == Role.BUFFER_MESSAGES and len(value or b"") > 2000 else None

    h.refuse = too_large
    assert h.splitter.handle_batch(records) == ["processed", "dead", "processed"]
    assert h.splitter.counts["dead"] == 1 and h.splitter.counts["processed"] == 2
    ((_k, value),) = h.on("deadletter.ingest")
    letter = decode(value or b"")[1]
    assert (letter["source_topic"], letter["partition"], letter["offset"], letter["tenant"]) == (
        "t.ingest.messages",
        2,
        41,
        "acme",
    )
    assert letter["reason"] == "output to t.buffer.messages refused by Kafka: MSG_SIZE_TOO_LARGE"
    assert b"zq9" not in (value or b"").lower()
    refs = {decode(v or b"")[1]["event_ref"] for _k, v in h.on("buffer.messages")}
    assert refs == {h.keys.pseudonym("acme", "event", e) for e in ("evt-1", "evt-3")}
    assert len(h.on("metrics.usage")) == 3  # the refused record's other outputs were written


def test_a_source_with_several_refused_outputs_gets_one_letter_and_a_refused_letter_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    h.refuse = lambda output: "INVALID_RECORD" if output[0] != Role.DEADLETTER_INGEST else None
    assert h.splitter.handle_batch([(Role.INGEST_MESSAGES, 0, 5, h.wire("ingest.messages", message()), None)]) == [
        "dead"
    ]
    ((_k, value),) = h.on("deadletter.ingest")
    assert decode(value or b"")[1]["reason"].endswith("refused by Kafka: INVALID_RECORD")

    h.sent.clear()
    h.refuse = lambda _output: "MSG_SIZE_TOO_LARGE"  # the dead-letter topic refuses too: nothing left to write
    with caplog.at_level("ERROR", "shredline.splitter"):
        outcomes = h.splitter.handle_batch(
            [
                (Role.INGEST_MESSAGES, 0, 6, h.wire("ingest.messages", message()), None),
                (Role.INGEST_MESSAGES, 0, 7, None, None),
            ]
        )
    assert outcomes == ["dead", "dead"] and h.sent == []
    skipped = sorted(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert skipped == [
        "dead letter of t.ingest.messages[0]@6 refused by Kafka (MSG_SIZE_TOO_LARGE): that record is skipped",
        "dead letter of t.ingest.messages[0]@7 refused by Kafka (MSG_SIZE_TOO_LARGE): that record is skipped",
    ]


def test_a_host_whose_keyring_was_rotated_elsewhere_stops_instead_of_dead_lettering(tmp_path: Path) -> None:
    # Another host rotated the master key; this host's keyring is a copy from before. An event it
    # cannot open for that reason is not bad input: dead-lettering it (no payload) would lose it.
    h = Harness(tmp_path)
    h.keys.provision("acme")
    value = h.wire("ingest.messages", message())
    (tmp_path / "b").mkdir()
    stale = tmp_path / "b" / "master.key"
    stale.write_bytes((tmp_path / "master.key").read_bytes())
    stale.chmod(0o600)
    rotate(tmp_path / "master.key", h.keys)  # "another host": the keyring file that host holds
    sent: list[Output] = []

    def send(outputs: list[Output]) -> dict[int, str]:
        sent.extend(outputs)
        return {}

    host_b = Splitter(Keys(h.keys.store, load_keyring(None, stale, create=False)), "t", send, clock=lambda: NOW)
    with pytest.raises(MasterKeyError, match="version 2 is not in the keyring"):
        host_b.handle_batch([(Role.INGEST_MESSAGES, 0, 0, value, None)])
    assert sent == [] and host_b.counts["dead"] == 0


def test_a_batch_retried_while_the_key_store_is_locked_says_it_is_waiting_and_writes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    value = h.wire("ingest.messages", message())
    h.keys.store = SqliteKeyStore(tmp_path / "keys.sqlite", busy_timeout_s=0.05)  # another process's lock: fail fast
    blocker = sqlite3.connect(tmp_path / "keys.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    waits: list[int] = []

    def waiting() -> None:  # the split loop's watchdog hears of each retry; the third lets go of the lock
        assert h.sent == []  # nothing leaves while the store is unavailable
        waits.append(len(waits))
        if len(waits) == 3:
            blocker.execute("ROLLBACK")

    outcomes = h.splitter.handle_batch([(Role.INGEST_MESSAGES, 0, 0, value, None)], waiting=waiting)
    assert outcomes == ["processed"] and len(waits) == 3
    assert len(h.on("buffer.messages")) == 1
