"""The worker: the split and control loops, and a Faust app for its timers.

Built by `build_app` (no module-level app) and run by `run_worker`. The split runs on its own
thread, from the worker's start, as a plain confluent-kafka consumer in the worker's group
(`SplitLoop`: batches of up to 500 records, one key-store transaction each, outputs through one
producer (`Outputs`) acknowledged before the batch's offsets are committed). At-least-once: a
crash re-processes at most the batch in hand, and every effect tolerates that (sealing again is
harmless, `buffer read` shows an event once, key destruction is idempotent). The split is not a
Faust agent because Faust's acknowledgements cannot be held across a batch: its recovery
re-delivers offsets and resets its committed offsets under a batch in flight, and a restarted
worker then stopped committing (docs/performance.md, Worker). The Faust app (its own group,
`shredline-worker-timers`, no streams) runs the janitor, trimmer, audit relay, heartbeat and the
release of free heap memory (`heap`); the
control loop (`control_loop.py`) evicts terminated tenants on a thread of its own, so neither a
batch nor the app's start-up delays it.

Memory stays flat: the split holds one batch at a time, no copy of the buffer is kept
(`buffer read` reads `buffer.messages` itself), caches are bounded, and the C heap's free pages go
back to the OS every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Protocol

import faust

from shredline.keystore.errors import KeyStoreUnavailable
from shredline.keystore.keys import Keys
from shredline.processors.roles import Role
from shredline.schemas.errors import ShredlineError
from shredline.streams.catalog import CATALOG, MARKER_HEADER, topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.trim import INGEST, IngestTrimmer, timers_app_id, worker_group
from shredline.streams.operations.audit import Trail
from shredline.streams.processing.control_loop import ControlLoop
from shredline.streams.processing.heap import RELEASE_EVERY_S, release_free_memory
from shredline.streams.processing.outputs import Outputs
from shredline.streams.processing.repeats import quiet_repeats
from shredline.streams.processing.split_loop import SplitLoop
from shredline.streams.processing.splitter import Splitter
from shredline.streams.processing.supervise import STALLED, stalled
from shredline.streams.settings import Settings

log = logging.getLogger("shredline.worker")


class Loop(Protocol):
    """A loop the worker runs on a thread of its own until `stop` is set; `progress_at` is when it
    last moved on, in `time.monotonic()` seconds (the watchdog exits the worker when that is more
    than STALL_S ago)."""

    def run(self, stop: threading.Event) -> None: ...
    @property
    def progress_at(self) -> float: ...


JANITOR_EVERY_S = 30.0
TRIM_EVERY_S = 10.0
AUDIT_EVERY_S = 5.0
HEARTBEAT_S = 5.0
LOOP_STOP_S = 20.0  # how long a clean stop waits for a loop's batch in hand (then it is redone)
STALL_S = 90.0  # > Faust's longest normal pause (a rebalance)


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
    )


def build_app(settings: Settings, conn: Connection, keys: Keys, trail: Trail) -> tuple[faust.App, list[Loop]]:
    """The Faust app (timers) and the loops that `run_worker` runs beside it, each on a thread of
    its own from the start: the split and control."""
    prefix = settings.topic_prefix
    app = faust_app(settings, conn, timers_app_id(settings))
    outputs = Outputs(conn, prefix)
    splitter = Splitter(keys, prefix, outputs.send, allow_plaintext=settings.allow_plaintext_ingest)
    if settings.allow_plaintext_ingest:
        log.warning(
            "MIGRATION SWITCH ON (allow_plaintext_ingest): plaintext ingest events are processed instead of "
            "dead-lettered as `not sealed`; plaintext personal data may rest on the ingest topics until trimmed. "
            "Turn it off once every producer seals."
        )

    split_loop = SplitLoop(conn, worker_group(settings), {topic_name(prefix, r): r for r in INGEST}, splitter)

    @app.timer(interval=JANITOR_EVERY_S)
    async def janitor() -> None:
        loop = asyncio.get_running_loop()
        try:  # off the event loop: the store may be busy with a batch or another process
            expired = await loop.run_in_executor(None, keys.expire)
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
            log.warning("audit relay failed, will retry: %s", safe_reason(exc))
            return
        if sent:
            log.info("audit: %d records appended", sent)

    trimmer = IngestTrimmer(conn, worker_group(settings), [topic_name(prefix, t) for t in INGEST])

    @app.timer(interval=TRIM_EVERY_S)
    async def trim() -> None:
        trimmed = await asyncio.get_running_loop().run_in_executor(None, trimmer.trim)
        for topic, partition in trimmed:
            await app.topic(topic, key_serializer="raw", value_serializer="raw").send(
                key=None, value=b"", partition=partition, headers=[(MARKER_HEADER, b"1")]
            )

    @app.timer(interval=RELEASE_EVERY_S)
    async def release_memory() -> None:
        """Free heap pages back to the OS, so RSS follows the live data (`heap`)."""
        release_free_memory()

    control_partitions = next(spec.partitions for spec in CATALOG if spec.role == Role.CONTROL_TENANTS)
    control = ControlLoop(
        conn, topic_name(prefix, Role.CONTROL_TENANTS), control_partitions, worker_group(settings), keys
    )
    return app, [split_loop, control]


def run_worker(settings: Settings, conn: Connection, keys: Keys, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; Faust's worker commits and closes cleanly on either, then the
    audit outbox is relayed once more, so every key change of this run is on audit.events when
    the process exits. The split loop runs on its own thread from the start (it does not wait for
    the Faust app's group), and is stopped after the app, finishing and committing the batch in
    hand. A watchdog thread exits the process with STALLED when the app's heartbeat timer stops
    running or a loop stops moving on (`Loop.progress_at`) for STALL_S, and so does a loop that
    fails (see `shredline.streams.processing.supervise`, which restarts it: nothing it had not
    finished was committed, so nothing is lost)."""
    trail = Trail(conn, keys, settings)
    app, loops = build_app(settings, conn, keys, trail)
    beat = {"at": time.monotonic()}
    stop = threading.Event()  # set once Faust has stopped: the loops finish, the watchdog stands down

    @app.timer(interval=HEARTBEAT_S)
    async def heartbeat() -> None:
        beat["at"] = time.monotonic()

    # It runs only once the app has joined its group: the stall line names what most often keeps it out.
    heartbeat_timer = (
        f"the Faust app's heartbeat timer (it runs once the app joins group {timers_app_id(settings)}, "
        "which a worker the broker refuses that group never does: shredline acl apply)"
    )

    def watchdog() -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            last = {heartbeat_timer: beat["at"], **{type(loop).__name__: loop.progress_at for loop in loops}}
            late = stalled(time.monotonic(), last, STALL_S, stopping=stop.is_set())
            if late is not None:
                log.error("worker stalled: %s has not moved on for %.0f s; exiting to be restarted", *late)
                logging.shutdown()
                os._exit(STALLED)

    def run(loop: Loop) -> None:
        try:
            loop.run(stop)
        except BaseException as exc:
            log.critical("%s failed (%s); exiting to be restarted", type(loop).__name__, safe_reason(exc))
            logging.shutdown()
            os._exit(STALLED)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    # Daemon threads: a loop stuck on an unreachable broker or a locked store must not keep the
    # process from exiting; what it had not committed is processed again after the restart.
    threads = [threading.Thread(target=run, args=(loop,), name=type(loop).__name__, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()  # exits through SystemExit once every agent has stopped
    finally:
        stop.set()
        deadline = time.monotonic() + LOOP_STOP_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not finish its batch within %.0f s; exiting without it", thread.name, LOOP_STOP_S)
        relay_before_exit(trail)


def safe_reason(exc: BaseException) -> str:
    """What a log line may say of `exc`: our own errors' messages (which name no secret and no
    person, e.g. a stale keyring's missing version), else only the exception's type."""
    return str(exc) if isinstance(exc, ShredlineError) else type(exc).__name__


def relay_before_exit(trail: Trail) -> None:
    """The last relay, after the agents stopped (no key changes can follow it). A failure leaves
    the records in the key store's outbox, where the next relay of any process finds them."""
    try:
        sent = trail.flush()
    except Exception as exc:
        log.warning("audit: the last relay failed (%s); the records stay in the outbox", type(exc).__name__)
        return
    log.info("audit: %d records appended before exit", sent)
