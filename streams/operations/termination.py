"""Terminating a tenant: six steps, each recorded, so a crash at any point is finished by re-running.

    intent → keys (fence + destroy; rotate the master key, destroying the version that wrapped
    the root) → announce (control.tenants) → trim (processed ingest records;
    count the unprocessed ones, sealed to the destroyed key) → verify (sampled buffer records
    unreadable, no key left, no byte of a destroyed key in any file of the key store) →
    certificate (signed JSON + text)

Progress lives in the key store (`KeyStore.save_termination`), saved after each step, so a re-run
on any host that shares the store resumes it; a re-run skips finished steps and never destroys
anything twice (the key store already refuses: a terminated tenant has nothing left to destroy).
Every step is audited.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from shredline.keystore.errors import KeystoreError, UnknownTenant
from shredline.keystore.keys import Keys, Sealed
from shredline.keystore.master import MasterKeyring, load_keyring, rotate
from shredline.keystore.residue import Probes, ProbesInvalid, scan_tree, settle
from shredline.keystore.store import TERMINATED, TenantRow, key_digest
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import Group
from shredline.streams.catalog import MARKER_HEADER, topic_name
from shredline.streams.kafka.backlog import unprocessed
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.kafka.trim import INGEST, IngestTrimmer, worker_group
from shredline.streams.operations import certificate
from shredline.streams.operations.audit import Trail
from shredline.streams.operations.tenants import announce
from shredline.streams.settings import Settings

STEPS = ("intent", "keys", "announce", "trim", "verify", "certificate")
SAMPLE = 20  # buffer records of the tenant tried after destruction
SAMPLE_TAIL = 500  # records read back per buffer partition to find them
FAULT_EXIT = 86
RESIDUE_WAIT_S = 10.0  # how long verify lets a reader of the key store finish before it gives up


class TerminationError(ShredlineError):
    pass


@dataclass(frozen=True)
class Outcome:
    certificate: Path
    already_done: bool


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fault_point(step: str) -> None:
    """Fault injection for the crash tests: SHREDLINE_FAULT_AFTER=<step> dies right after it
    (`keys:destroyed`: inside the keys step, once the destruction committed)."""
    if os.environ.get("SHREDLINE_FAULT_AFTER") == step:
        os._exit(FAULT_EXIT)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


def certificate_paths(settings: Settings, tenant: str, generation: int) -> tuple[Path, Path]:
    folder = settings.data_dir / "certificates"
    return folder / f"{tenant}.g{generation}.json", folder / f"{tenant}.g{generation}.txt"


class Termination:
    def __init__(self, settings: Settings, conn: Connection, keys: Keys, trail: Trail, say: Callable[[str], None]):
        self.settings, self.conn, self.keys, self.trail, self.say = settings, conn, keys, trail, say
        self.prefix = settings.topic_prefix

    def tenant_row(self, tenant: str) -> TenantRow:
        row = self.keys.store.tenant(tenant)
        if row is None or tenant.startswith("~"):
            raise UnknownTenant(tenant)
        return row

    def run(self, tenant: str, operator: str, reason: str) -> Outcome:
        row = self.tenant_row(tenant)
        store = self.keys.store
        saved = store.termination(tenant, row.generation)
        fresh = {"tenant": tenant, "generation": row.generation, "operator": operator, "reason": reason, "steps": {}}
        state: dict[str, Any] = json.loads(saved.progress) if saved is not None and saved.progress else fresh
        cert_json, _txt = certificate_paths(self.settings, tenant, row.generation)
        if problem := progress_contradiction(state, row, store.destroyed_keys(tenant, row.generation)):
            # Never certified, never "already done": set aside, audited, and the termination starts over.
            self.trail.record("tenant.terminate.progress_refused", tenant, None, {"problem": problem})
            self.say(
                f"warning: the termination progress of {tenant} in the key store does not hold ({problem}; was "
                "the store written by hand?): it is set aside, audited, and the termination starts from the beginning"
            )
            state = fresh
        if "certificate" in state["steps"]:
            return Outcome(cert_json, already_done=True)
        state["steps"].pop("verify", None)  # always checked again right before the certificate
        if state["steps"]:
            self.say(f"resuming the termination of {tenant} started by {state['operator']}")
            self.trail.record("tenant.terminate.resume", tenant, None, {"done": ",".join(state["steps"])})
        for number, step in enumerate(STEPS, 1):
            if step in state["steps"]:
                continue
            started = time.monotonic()
            result = getattr(self, f"_{step}")(tenant, row.generation, state)
            state["steps"][step] = {"at": _now(), **result}
            store.save_termination(
                tenant, row.generation, json.dumps(state, sort_keys=True), drop_probes=step == "certificate"
            )
            took = time.monotonic() - started
            self.say(f"  {number}/{len(STEPS)} {step}: {result.get('summary', 'done')} ({took:.1f} s)")
            _fault_point(step)
        return Outcome(cert_json, already_done=False)

    # -- the steps; each returns what the progress file and certificate keep -------------------
    def _intent(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        details = {"reason": state["reason"], "generation": str(generation)}
        # Durable in the outbox before the keys step and relayed by it, in order, right after the
        # fence: relaying here would make the fence wait on the relay lock, which a worker's relay
        # can hold for a few hundred ms (the tenant's data would flow on meanwhile).
        self.trail.record("tenant.terminate.intent", tenant, None, details, relay=False)
        return {"summary": "recorded in the audit trail"}

    def _keys(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        # At most the master version that wrapped the root: what must be destroyed for residue to be
        # useless (a rotation in between only moves the root up, and the keyring's current is read after).
        before = self.keys.store.tenant(tenant)
        wrapped_under = max((before.master_version if before else None) or 0, self._keyring().current)
        # The probes are kept in the store by the destroying transaction, so verify (on any host) can
        # always check the destruction.
        result = self.keys.destroy_tenant(tenant, state["reason"], witness=lambda p: p.dump())
        _fault_point("keys:destroyed")  # a crash between the destruction and the rotation
        self.trail.flush()  # the store's own record of the destruction
        counts = dict(result.by_scope)
        version, master = self._rotate_master()
        details = {k: str(v) for k, v in counts.items()} | {"master_version": str(version)}
        self.trail.record("tenant.terminate.keys", tenant, None, details)
        if result.already_terminated:
            done = "already fenced; nothing left to destroy"
        else:
            done = f"fenced; root key and {sum(counts.values())} data keys destroyed"
        return {"summary": f"{done}; {master}", **counts, "master_version": version, "wrapped_under": wrapped_under}

    def _keyring(self) -> MasterKeyring:
        """The keyring as this host loads it now (the file may have been rotated by another process)."""
        env = self.settings.master_key.reveal() if self.settings.master_key else None
        return load_keyring(env, self.settings.master_key_path, create=False)

    def _rotate_master(self) -> tuple[int | None, str]:
        """Destroy the master version that wrapped the destroyed root (every root is re-wrapped under
        a new one first), so no copy of the old wrapped root can ever be opened: docs/key-residue.md.
        A keyring given in SHREDLINE_MASTER_KEY cannot be rotated from here; the step says so."""
        if self.settings.master_key is not None:
            return None, "master key NOT rotated: it comes from SHREDLINE_MASTER_KEY; rotate it where it is kept"
        rotation = rotate(self.settings.master_key_path, self.keys)
        self.trail.flush()  # the store's record of the re-wrap
        retired = ", ".join(f"v{v}" for v in rotation.retired) or "nothing"
        return rotation.version, f"master key {retired} destroyed, roots re-wrapped under v{rotation.version}"

    def _announce(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        announce(
            self.conn,
            self.prefix,
            "TERMINATED",
            tenant,
            state["operator"],
            generation=max(generation, 1),
            reason=state["reason"],
        )
        self.trail.record("tenant.terminate.announce", tenant)
        return {"summary": "TERMINATED on control.tenants"}

    def _trim(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        topics = [topic_name(self.prefix, t) for t in INGEST]
        trimmed = IngestTrimmer(self.conn, worker_group(self.settings), topics).trim()
        markers = [Record(t, None, partition=p, headers=[(MARKER_HEADER, b"1")]) for t, p in trimmed]
        if markers:
            produce_and_wait(self.conn, markers, "segment-roll markers")
        # What the worker had not processed stays until it is (then dropped) or retention; counted
        # from the envelopes' clear tenant, after the keys step, so none of it can be opened now.
        backlog = unprocessed(
            self.conn, worker_group(self.settings), topics, tenant, topic_name(self.prefix, Group.BACKLOG)
        )
        counts = {
            "partitions": len(trimmed),
            "unprocessed_sealed": backlog.sealed,
            "unprocessed_plaintext": backlog.plaintext,
        }
        self.trail.record("tenant.terminate.trim", tenant, None, {k: str(v) for k, v in counts.items()})
        left = f"{backlog.sealed} unprocessed sealed to its destroyed ingest key"
        if backlog.plaintext:
            left += f", {backlog.plaintext} unprocessed IN PLAINTEXT (unsealed producer) until retention"
        return {"summary": f"processed ingest records deleted in {len(trimmed)} partitions; {left}", **counts}

    def _verify(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        sampled, readable = self._try_buffer_sample(tenant)
        counts = next((c for c in self.keys.store.counts() if c.tenant == tenant), None)
        row = self.keys.store.tenant(tenant)
        remaining = 0 if counts is None else counts.conversation_keys + counts.contact_keys + counts.retired_keys
        root_left = row is not None and row.root_wrapped is not None
        probes = self._probes(tenant, generation)
        residue = settle(self.keys.store, probes, RESIDUE_WAIT_S)
        elsewhere, unreadable = self._scan_other_files(probes)
        rotated_to = state["steps"]["keys"].get("master_version")
        checks = {
            "buffer_records_sampled": sampled,
            "buffer_records_readable": readable,
            "data_keys_remaining": remaining,
            "root_key_remaining": root_left,
            "key_store_residue": residue.windows,
            "other_files_residue": sum(elsewhere.values()) + len(unreadable),
            "master_key_rotated": rotated_to is not None,
            "key_store_files_scanned": self.keys.store.local,
        }
        self.trail.record("tenant.terminate.verify", tenant, None, {k: str(v) for k, v in checks.items()})
        if readable or remaining or root_left or row is None or row.state != TERMINATED:
            raise TerminationError(f"terminate {tenant}: verification failed: {checks}; re-run to retry")
        if residue.found:
            where = f"bytes of the destroyed keys remain in {', '.join(sorted(residue.found))}"
            if residue.blocker is None:
                raise TerminationError(f"terminate {tenant}: keys: {where} with nothing in the way (a bug: report it)")
            raise TerminationError(
                f"terminate {tenant}: keys: {residue.blocker}; {where}; "
                "no certificate until they are gone: re-run when it ends"
            )
        if elsewhere or unreadable:
            where = ", ".join(sorted(elsewhere)) or "nothing readable"
            cannot = f"; cannot read {', '.join(sorted(unreadable))} to check it" if unreadable else ""
            raise TerminationError(
                f"terminate {tenant}: keys: bytes of the destroyed keys remain outside the key store, in {where}"
                f" (a copy of it?){cannot}; no certificate until they are gone: move or delete them, then re-run"
            )
        if not self.keys.store.local:
            self._check_unscannable_store(tenant, state)
        if rotated_to is not None:
            path = self.settings.master_key_path
            if older := [v for v in load_keyring(None, path, create=False).versions if v < rotated_to]:
                raise TerminationError(
                    f"terminate {tenant}: keys: master key versions {older} are back in {path} after the rotation"
                )
        return {
            "summary": f"{sampled} sampled buffer records unreadable, no key or key residue left in any file checked",
            **checks,
        }

    def _check_unscannable_store(self, tenant: str, state: dict[str, Any]) -> None:
        """A store on a server (PostgreSQL): its files (old row versions until vacuum, the WAL, base
        backups) cannot be scanned from here and may keep the destroyed root wrapped. That residue is
        useless only once every master version that may have wrapped it is destroyed: certify then."""
        bound = state["steps"]["keys"].get("wrapped_under")
        alive = [v for v in self._keyring().versions if bound is None or v <= bound]
        if alive:
            raise TerminationError(
                f"terminate {tenant}: keys: the key store is a server whose files this host cannot scan, and master "
                f"key version(s) {', '.join(f'v{v}' for v in alive)} that may have wrapped the destroyed root still "
                "exist: its old row versions or WAL could be opened with them; no certificate until they are "
                "destroyed: rotate the master key (a key file, not SHREDLINE_MASTER_KEY), then re-run"
            )

    def _scan_other_files(self, probes: Probes) -> tuple[dict[str, int], list[str]]:
        """Every other file of the data dir and of the key store's folder (a copy of the store made
        by a backup tool or an operator sits there), once the store's own files are clean. Not the
        broker's storage nor the jar cache: large, and neither ever holds a key."""
        settings = self.settings
        store_files = [settings.key_store_path.with_name(settings.key_store_path.name + s) for s in self._STORE]
        roots = [settings.data_dir]
        if not settings.key_store_path.resolve().is_relative_to(settings.data_dir.resolve()):
            roots.append(settings.key_store_path.parent)
        skip = [settings.kafka_dir, settings.jar_cache, *store_files]
        return scan_tree(roots, probes, skip)

    _STORE = ("", "-wal", "-shm", "-journal")

    def _probes(self, tenant: str, generation: int) -> Probes:
        record = self.keys.store.termination(tenant, generation)
        try:
            if record is None or record.probes is None:
                raise ProbesInvalid("missing")
            return Probes.load(record.probes)
        except ProbesInvalid:
            raise TerminationError(
                f"terminate {tenant}: verify: the probes of the destroyed keys (kept by the keys step in the key "
                "store) are missing or damaged; the key store cannot be checked for residue"
            ) from None

    def _try_buffer_sample(self, tenant: str) -> tuple[int, int]:
        """Try to open up to SAMPLE of the tenant's newest buffer records; returns (tried, opened)."""
        sampled = readable = 0
        consumer = Consumer(
            self.conn.confluent(
                **{
                    "group.id": topic_name(self.prefix, Group.VERIFY),
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        try:
            for logical, scope in ((Role.BUFFER_MESSAGES, "conversation"), (Role.BUFFER_CONTACTS, "contact")):
                topic = topic_name(self.prefix, logical)
                for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                    low, high = watermarks(consumer, topic, partition)
                    if high <= low or sampled >= SAMPLE:
                        continue
                    start = max(low, high - SAMPLE_TAIL)
                    consumer.assign([TopicPartition(topic, partition, start)])
                    # consume(n) waits for n records or the timeout: ask for exactly what is there
                    while batch := consumer.consume(high - start, 2.0):
                        start = (batch[-1].offset() or 0) + 1
                        for msg in batch:
                            if msg.error() is not None or not msg.value() or sampled >= SAMPLE:
                                continue
                            try:
                                _r, env = decode(msg.value() or b"", expect="sealed_envelope")
                            except DecodeError:
                                continue
                            if env["tenant"] != tenant:
                                continue
                            sampled += 1
                            sealed = Sealed(
                                tenant, scope, env["record_id"], env["key_id"], env["nonce"], env["ciphertext"]
                            )
                            with contextlib.suppress(KeystoreError):  # destroyed, fenced: unreadable
                                self.keys.open(sealed, topic)
                                readable += 1
                        if start >= high:
                            break
        finally:
            consumer.close()
        return sampled, readable

    def _certificate(self, tenant: str, generation: int, state: dict[str, Any]) -> dict[str, Any]:
        store = self.keys.store
        destroyed = store.destroyed_keys(tenant, generation)
        digests = sorted(key_digest(k) for k, _scope in destroyed)
        now = state["steps"]["keys"]
        accepted = store.acceptances().get(tenant, set())
        policy = next((p.version for p in reversed(store.policies()) if p.version in accepted), None)
        row = store.tenant(tenant)
        terminated_at = row.terminated_at if row and row.terminated_at else dt.datetime.now(dt.UTC).timestamp()
        p = self.prefix
        head = self.trail.head()  # every step's record is on the chain before the certificate names its head
        backlog, ingest_effect = backlog_claims(state["steps"]["trim"])
        body = {
            "id": str(uuid.uuid4()),
            "tenant": tenant,
            "generation": generation,
            "terminated_at": dt.datetime.fromtimestamp(terminated_at, dt.UTC).isoformat(timespec="seconds"),
            "issued_at": _now(),
            "operator": state["operator"],
            "reason": state["reason"],
            "policy_version": policy,
            "keys_destroyed": {  # by this termination; the digests list every key the generation had
                "root": 1,
                "conversation": now["conversation"],
                "contact": now["contact"],
                "before_termination": len(destroyed) - now["conversation"] - now["contact"],
            },
            "key_id_digests": digests,
            "key_id_digests_sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest(),
            "topics_affected": {
                topic_name(p, Role.BUFFER_MESSAGES): "sealed records unreadable (keys destroyed)",
                topic_name(p, Role.BUFFER_CONTACTS): "sealed records unreadable (keys destroyed)",
                **{topic_name(p, t): ingest_effect for t in INGEST},
                topic_name(p, Role.CONTROL_TENANTS): "TERMINATED announced; every worker evicts the tenant",
                topic_name(p, Role.METRICS_USAGE): "anonymous aggregates kept (no personal data)",
                topic_name(p, Role.LOGS_EXECUTIONS): "redacted log lines kept (no personal data)",
            },
            "verification": {k: v for k, v in state["steps"]["verify"].items() if k not in {"at", "summary"}},
            "audit_head": {"seq": head.seq, "hash": head.hash.hex()},  # the trail reached at least this far
            "ingest_backlog": backlog,
        }
        signer = self.trail.signer
        document = certificate.sign(body, signer)
        cert_json, cert_txt = certificate_paths(self.settings, tenant, generation)
        data = certificate.dump(document)
        _write_atomic(cert_json, data.decode("ascii"))
        _write_atomic(cert_txt, certificate.render_text(document["certificate"]))
        digest = hashlib.sha256(data).hexdigest()
        self.trail.record("tenant.terminate.certificate", tenant, None, {"id": body["id"], "sha256": digest})
        return {"summary": f"signed certificate {cert_json}", "path": str(cert_json), "sha256": digest}


def progress_contradiction(state: dict[str, Any], row: TenantRow, destroyed: list[tuple[str, str]]) -> str | None:
    """What in a termination's recorded progress (`state`, as saved in the key store) the store
    itself contradicts, or None. Progress is a claim whoever can write the store could have
    made: a step recorded as done is believed only as far as the store bears it out (the `keys`
    step: the tenant terminated, its root gone, at least as many keys of each scope recorded as
    destroyed as it claims). `destroyed` is the store's (key id, scope) of the generation."""
    steps = state.get("steps", {})
    if state.get("tenant", row.tenant) != row.tenant or state.get("generation", row.generation) != row.generation:
        return "it names another tenant or generation"
    if "keys" not in steps:
        return None
    if row.state != TERMINATED or row.root_wrapped is not None:
        return f"its keys step is recorded as done, but the tenant is {row.state} with its root key in the store"
    for scope in ("conversation", "contact"):
        claimed, recorded = int(steps["keys"].get(scope, 0)), sum(s == scope for _k, s in destroyed)
        if claimed > recorded:
            return f"it claims {claimed} {scope} keys destroyed where the store records {recorded}"
    return None


def backlog_claims(trim: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The certificate's `ingest_backlog` and what it says of the ingest topics, from the trim
    step's counts. It claims the backlog unreadable only when none of it was plaintext; a trim
    step recorded before sealed ingest counted nothing, and the certificate says so."""
    sealed, plaintext = trim.get("unprocessed_sealed"), trim.get("unprocessed_plaintext")
    if sealed is None or plaintext is None:
        return {"counted": False}, "processed records deleted; unprocessed ones not counted; late ones dropped"
    backlog = {
        "counted": True,
        "unprocessed_sealed": sealed,
        "unprocessed_plaintext": plaintext,
        "ingest_private_key": "derived from the tenant root key; destroyed with it",
    }
    effect = f"processed records deleted; {sealed} unprocessed sealed to the destroyed ingest key (unreadable)"
    if plaintext:
        effect += f"; {plaintext} unprocessed IN PLAINTEXT until retention (unsealed producer)"
    return backlog, effect + "; late ones dropped"
