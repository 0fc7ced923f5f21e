"""The Faust worker: thin agents around `Splitter`, the buffer view, control, janitor, trimmer.

Built by `build_app` (no module-level app). At-least-once: Faust flushes the producer before it
commits offsets, so an event's outputs are durable before its offset is; a crash re-processes
at most the uncommitted tail, and every effect tolerates that (sealing again is harmless, the
buffer view skips events it already holds, key destruction is idempotent).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import threading
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from shredline.keystore.errors import KeyStoreUnavailable
from shredline.keystore.keys import Keys
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode
from shredline.streams.catalog import CATALOG, MARKER_HEADER, PURGE_HEADER, topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.trim import INGEST, IngestTrimmer, app_id
from shredline.streams.operations.audit import Trail
from shredline.streams.processing.repeats import quiet_repeats
from shredline.streams.processing.splitter import Splitter
from shredline.streams.processing.supervise import STALLED
from shredline.streams.settings import Settings

log = logging.getLogger("shredline.worker")
VIEW_DEPTH = 50  # messages kept per conversation in the buffer view
VIEW_TABLE = "buffer-view"
JANITOR_EVERY_S = 30.0
TRIM_EVERY_S = 10.0
AUDIT_EVERY_S = 5.0
HEARTBEAT_S = 5.0
STALL_S = 90.0  # > Faust's longest normal pause (a rebalance with table recovery)


def view_changelog(settings: Settings) -> str:
    """Faust's changelog topic of the buffer view (ciphertext only), which `buffer read` reads
    (named in the ACL table too: `shredline.streams.acl.VIEW_CHANGELOG`)."""
    return f"{app_id(settings)}-{VIEW_TABLE}-changelog"


def add_to_view(current: dict[str, Any] | None, tenant: str, envelope: bytes, event_ref: str | None) -> dict[str, Any]:
    """The view entry with `envelope` appended (once per event), trimmed to the newest VIEW_DEPTH."""
    entry = current or {"tenant": tenant, "envelopes": [], "refs": []}
    if event_ref is not None and event_ref in entry["refs"]:
        return entry
    entry["envelopes"] = [*entry["envelopes"], base64.b64encode(envelope).decode()][-VIEW_DEPTH:]
    entry["refs"] = [*entry["refs"], event_ref or ""][-VIEW_DEPTH:]
    return entry


def faust_app(settings: Settings, conn: Connection, name: str) -> faust.App:
    """A Faust app with our transport settings: TLS, raw bytes, acks=all, 1 s commits."""
    # mode sets the root logger to DEBUG whatever --loglevel says, and Faust formats a debug record
    # per send: that alone cost ~10% of throughput. Library chatter is never needed below INFO.
    for library in ("faust", "mode", "aiokafka"):
        logging.getLogger(library).setLevel(logging.INFO)
    quiet_repeats()  # a reconnect loop logs ~12k lines/s while the broker is down
    (settings.data_dir / "worker").parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return faust.App(
        name,
        broker=";".join(f"kafka://{b.strip()}" for b in conn.bootstrap.split(",")),
        broker_credentials=faust.SSLCredentials(conn.ssl_context()),
        datadir=str(settings.data_dir / "worker"),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=6,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        # 50 ms batches: +1.7x throughput over 5 ms (with the log fix above), for at most 50 ms more latency
        producer_linger=0.05,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=30.0,
    )


def build_app(settings: Settings, conn: Connection, keys: Keys, trail: Trail) -> faust.App:
    prefix = settings.topic_prefix
    app = faust_app(settings, conn, app_id(settings))
    topics = {
        spec.role: app.topic(
            topic_name(prefix, spec.role),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partitions,
        )
        for spec in CATALOG
    }

    async def send(role: Role, key: bytes | None, value: bytes | None) -> None:
        await topics[role].send(key=key, value=value)

    splitter = Splitter(keys, prefix, send, allow_plaintext=settings.allow_plaintext_ingest)
    if settings.allow_plaintext_ingest:
        log.warning(
            "MIGRATION SWITCH ON (allow_plaintext_ingest): plaintext ingest events are processed instead of "
            "dead-lettered as `not sealed`; plaintext personal data may rest on the ingest topics until trimmed. "
            "Turn it off once every producer seals."
        )

    def split_agent(role: Role) -> None:
        async def split(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                if message.headers and any(k == MARKER_HEADER for k, _ in message.headers):
                    continue
                when = dt.datetime.fromtimestamp(message.timestamp, dt.UTC) if message.timestamp else None
                await splitter.handle(role, message.partition, message.offset, message.value, when)

        app.agent(topics[role], name=f"split-{role}")(split)

    for role in INGEST:
        split_agent(role)

    view = app.Table(
        VIEW_TABLE,
        default=None,
        partitions=6,
        # Recovery decodes keys with the serializer Faust derives from key_type (JSON unless bytes),
        # not the schema's: without this a restarted worker could not rebuild the view, and stalled.
        key_type=bytes,
        schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
        extra_topic_configs={"message.timestamp.type": "LogAppendTime"},
    )

    partitioner = DefaultPartitioner()
    view_partitions = list(range(next(s.partitions for s in CATALOG if s.role == Role.BUFFER_MESSAGES)))

    @app.agent(topics[Role.BUFFER_MESSAGES], name="buffer-view")
    async def buffer_view(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            value = event.message.value
            purge = dict(event.message.headers or []).get(PURGE_HEADER)
            if purge is not None:
                # A termination: drop the tenant's entries that live in this partition (the
                # changelog tombstone must go to the partition the entry belongs to).
                tenant, here = purge.decode(), event.message.partition
                doomed = [
                    k
                    for k, v in list(view.items())
                    if v and v.get("tenant") == tenant and partitioner(k, view_partitions, view_partitions) == here
                ]
                for key in doomed:
                    del view[key]
                log.info("buffer view: purged %d conversations of a terminated tenant", len(doomed))
                continue
            try:
                _record, envelope = decode(value, expect="sealed_envelope")
                key = event.message.key
                view[key] = add_to_view(view.get(key), envelope["tenant"], value, envelope["event_ref"])
            except Exception as exc:  # the view is derived data: log and go on, never crash the agent
                log.warning("buffer view: skipped a record (%s)", type(exc).__name__)

    @app.task
    async def control() -> None:
        """Every worker reads every control event (no consumer group): termination evicts at once."""
        consumer = AIOKafkaConsumer(
            topic_name(prefix, Role.CONTROL_TENANTS),
            bootstrap_servers=conn.bootstrap.split(","),
            security_protocol="SSL",
            ssl_context=conn.ssl_context(),
            group_id=None,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            async for message in consumer:
                try:
                    _record, event = decode(message.value, expect="tenant_control")
                except DecodeError as exc:
                    log.warning("control: skipped a record: %s", exc.reason)
                    continue
                log.info("control: %s %s", event["kind"], event["tenant"])
                if event["kind"] == "TERMINATED":
                    keys.evict_tenant(event["tenant"])
        finally:
            await consumer.stop()

    @app.timer(interval=JANITOR_EVERY_S)
    async def janitor() -> None:
        try:
            expired = keys.expire()
        except KeyStoreUnavailable:
            log.warning("janitor: key store unavailable; expiry waits for the next run")
            expired = []
        if expired:
            log.info("janitor: destroyed %d expired conversation keys", len(expired))
        log.info(
            "progress: %(processed)d processed, %(dropped)d dropped (terminated), %(dead)d dead-lettered",
            splitter.counts,
        )
        if splitter.counts["plaintext"]:
            log.warning("migration switch: %d plaintext ingest events processed so far", splitter.counts["plaintext"])

    @app.timer(interval=AUDIT_EVERY_S)
    async def relay_audit() -> None:
        """Key creations and destructions reach audit.events within seconds; a failed relay
        leaves them in the key store's outbox for the next one."""
        try:
            sent = await asyncio.get_running_loop().run_in_executor(None, trail.flush)
        except Exception as exc:
            log.warning("audit relay failed, will retry: %s", type(exc).__name__)
            return
        if sent:
            log.info("audit: %d records appended", sent)

    trimmer = IngestTrimmer(conn, app_id(settings), [topic_name(prefix, t) for t in INGEST])

    @app.timer(interval=TRIM_EVERY_S)
    async def trim() -> None:
        trimmed = await asyncio.get_running_loop().run_in_executor(None, trimmer.trim)
        for topic, partition in trimmed:
            await app.topic(topic, key_serializer="raw", value_serializer="raw").send(
                key=None, value=b"", partition=partition, headers=[(MARKER_HEADER, b"1")]
            )

    return app


def run_worker(settings: Settings, conn: Connection, keys: Keys, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; Faust's worker commits and closes cleanly on either, then the
    audit outbox is relayed once more, so every key change of this run is on audit.events when
    the process exits. A watchdog thread exits the process with STALLED when the app's heartbeat
    timer stops running (see `shredline.streams.processing.supervise`, which restarts it)."""
    trail = Trail(conn, keys, settings)
    app = build_app(settings, conn, keys, trail)
    beat = {"at": time.monotonic()}

    @app.timer(interval=HEARTBEAT_S)
    async def heartbeat() -> None:
        beat["at"] = time.monotonic()

    def watchdog() -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            silent = time.monotonic() - beat["at"]
            if silent > STALL_S:
                log.error("worker stalled: no heartbeat for %.0f s; exiting to be restarted", silent)
                logging.shutdown()
                os._exit(STALLED)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()  # exits through SystemExit once every agent has stopped
    finally:
        relay_before_exit(trail)


def relay_before_exit(trail: Trail) -> None:
    """The last relay, after the agents stopped (no key changes can follow it). A failure leaves
    the records in the key store's outbox, where the next relay of any process finds them."""
    try:
        sent = trail.flush()
    except Exception as exc:
        log.warning("audit: the last relay failed (%s); the records stay in the outbox", type(exc).__name__)
        return
    log.info("audit: %d records appended before exit", sent)


def view_entry_envelopes(raw: bytes) -> list[bytes]:
    """The envelopes of one buffer-view changelog value, oldest first."""
    entry = json.loads(raw)
    return [base64.b64decode(e) for e in entry.get("envelopes", [])]
