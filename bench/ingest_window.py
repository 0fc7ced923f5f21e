"""What rests on the broker's disk after publishing: plaintext at rest, and the ingest window.

1. **Plaintext at rest.** With no worker running, publishes N events that each carry a unique
   random canary (message body, contact name, execution contact name), sealed as the SDK does,
   and scans every segment file of every topic of that prefix for every canary, twice: the raw
   bytes, and the records as Kafka's `DumpLogSegments` decodes them (lz4 batches decompressed;
   a raw scan alone misses most plaintext, since lz4 folds repeats). Baseline: the same events
   published unsealed, as producers did before sealed ingest (same producer settings, lz4
   included), scanned the same way. Expected: 0 sealed; every canary unsealed (decoded).
2. **Ingest window.** Then starts the worker on the sealed prefix and polls (a) the ingest
   topics' log start offsets, to see when the processed records were trimmed (unreadable
   through Kafka), and (b) the ingest partitions' segment files, to see when no file holding
   any of those records is left on disk. Baseline: the catalog's retention backstop (what the
   window would be with no trimming). With sealed ingest this is how long *ciphertext* lives.

Needs the local broker (`shredline kafka up`) because it reads its files.

    python -m bench.ingest_window [--events 1000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.results import Figure, save
from bench.sealing import given_keys, publish_plaintext, tenant_keys
from shredline.processors.roles import Role
from shredline.streams.acl import default_principals
from shredline.streams.catalog import CATALOG, topic_name
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import Connection, client_environment
from shredline.streams.launcher.broker import Launcher
from shredline.streams.settings import load_settings

INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)
CANARY_FIELD = {"message": "body", "contact": "name", "execution": "contact_name"}


def with_canaries(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Each event carrying a personal text field gets a unique random canary in it (random, so lz4
    cannot fold one into another); returns the events and the canaries."""
    out, canaries = [], []
    for event in events:
        field = CANARY_FIELD[str(event["type"])]
        if event["type"] == "contact" and event["op"] == "DELETE":
            out.append(event)
            continue
        canary = f"zq9{secrets.token_hex(12)}"
        out.append({**event, field: f"{canary} {event.get(field) or ''}".strip()})
        canaries.append(canary.encode())
    return out, canaries


def canaries_on_disk(launcher: Launcher, prefix: str, canaries: list[bytes]) -> dict[str, int]:
    """Canaries found in the raw bytes of the segment files under `prefix` (and how many files
    hold one, of how many), and in the records as DumpLogSegments decodes them."""
    raw: set[bytes] = set()
    files = launcher.segment_files(prefix)
    holding = 0
    for segment in files:
        try:
            data = segment.read_bytes()
        except FileNotFoundError:
            continue
        here = {c for c in canaries if c in data}
        holding += bool(here)
        raw |= here
    decoded = launcher.decoded_segments(prefix)
    return {
        "raw": len(raw),
        "files_holding": holding,
        "files": len(files),
        "decoded": sum(c in decoded for c in canaries),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    settings = load_settings(os.environ)
    launcher = Launcher(settings)
    state = launcher.running()
    if state is None:
        print("needs the local broker: run `shredline kafka up` first", file=sys.stderr)
        return 2
    conn = state.connection()
    stamp = int(time.time())
    sealed_prefix, plain_prefix = f"window{stamp}s", f"window{stamp}p"
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    events, canaries = with_canaries(list(generate(2, args.events, 9, start, dt.timedelta(hours=1))))
    tenants = {str(e["tenant"]) for e in events}

    # 1. Plaintext at rest, no worker: sealed as the SDK does, and unsealed as the baseline.
    data_dir = Path(tempfile.mkdtemp(prefix=f"shredline-window-{sealed_prefix}-"))
    keys = tenant_keys(data_dir, tenants)
    for prefix in (sealed_prefix, plain_prefix):
        apply_catalog(conn, prefix, 1)
        apply_acls(conn, prefix, default_principals())  # the worker child runs as its role
    with Publisher(conn, sealed_prefix, keys=given_keys(keys, tenants)) as publisher:
        for event in events:
            publisher.publish(event)
    publish_plaintext(conn, plain_prefix, events, dt.datetime.now(dt.UTC))
    plain = canaries_on_disk(launcher, plain_prefix, canaries)
    sealed = canaries_on_disk(launcher, sealed_prefix, canaries)
    print(f"{len(canaries)} canary-bearing events, worker stopped:", file=sys.stderr)
    for label, hits in (("sealed", sealed), ("unsealed", plain)):
        print(
            f"  {label:<9} {hits['decoded']} canaries in the decoded records; raw bytes: {hits['raw']}, "
            f"in {hits['files_holding']} of {hits['files']} segment files",
            file=sys.stderr,
        )

    # 2. The ingest window: the worker processes the sealed prefix and trims it.
    ends = _ends(conn, sealed_prefix)
    env = client_environment(conn, data_dir, sealed_prefix, os.environ)
    published_at = time.monotonic()  # as if published now: the worker starts at once, as before sealed ingest
    worker = subprocess.Popen(
        [sys.executable, "-m", "shredline.streams.cli", "worker", "--loglevel", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trimmed_s = on_disk_s = None
    try:
        while time.monotonic() - published_at < args.timeout and on_disk_s is None:
            now = time.monotonic() - published_at
            if trimmed_s is None and _all_trimmed(conn, ends):
                trimmed_s = now
                print(f"  trimmed (unreadable through Kafka) after {now:.0f}s", file=sys.stderr)
            if trimmed_s is not None and not _records_on_disk(launcher, sealed_prefix, ends):
                on_disk_s = now
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    backstop = {int(s.configs["retention.ms"]) + int(s.configs["segment.ms"]) for s in CATALOG if s.role in INGEST}
    baseline_s = max(backstop) / 1000 + 10 + 1
    print(f"{'measure':<56}{'value':>10}{'baseline':>10}")
    print(
        f"{'canaries on disk (decoded records), sealed vs unsealed':<56}{sealed['decoded']:>10}{plain['decoded']:>10}"
    )
    print(f"{'canaries on disk (raw bytes), sealed vs unsealed':<56}{sealed['raw']:>10}{plain['raw']:>10}")
    for name, value in (
        ("publish -> trimmed (s; baseline: retention backstop)", trimmed_s),
        ("publish -> ciphertext gone from broker disk (s)", on_disk_s),
    ):
        shown = f"{value:>10.0f}" if value is not None else f"{'> timeout':>10}"
        print(f"{name:<56}{shown}{baseline_s:>10.0f}")
    save(
        "ingest_window",
        [
            Figure("canaries on broker disk, sealed", sealed["decoded"], "same unsealed", plain["decoded"], "canaries"),
            *[
                Figure(f"publish -> {label}", value, "retention backstop without trimming", baseline_s, "s")
                for label, value in (("unreadable via Kafka", trimmed_s), ("gone from broker disk", on_disk_s))
                if value is not None
            ],
        ],
        events=len(events),
        canary_events=len(canaries),
        sealed=sealed,
        unsealed=plain,
    )
    return 0 if on_disk_s is not None and sealed["decoded"] == sealed["raw"] == 0 < plain["decoded"] else 1


def _ends(conn: Connection, prefix: str) -> dict[tuple[str, int], int]:
    consumer = Consumer(conn.confluent(**{"group.id": "window", "log_level": 3}))
    try:
        out = {}
        for logical in INGEST:
            topic = topic_name(prefix, logical)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        return out
    finally:
        consumer.close()


def _all_trimmed(conn: Connection, ends: dict[tuple[str, int], int]) -> bool:
    consumer = Consumer(conn.confluent(**{"group.id": "window", "log_level": 3}))
    try:
        return all(
            consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[0] >= end
            for (t, p), end in ends.items()
            if end > 0
        )
    finally:
        consumer.close()


def _records_on_disk(launcher: Launcher, prefix: str, ends: dict[tuple[str, int], int]) -> bool:
    """Is a segment file holding any of the published records (offsets below `ends`) still on
    disk? A segment file is named by its first offset, so one that starts below the end of its
    partition's published records holds some of them."""
    for segment in launcher.segment_files(prefix):
        topic, _, partition = segment.parent.name.rpartition("-")
        end = ends.get((topic, int(partition)), 0)
        if end > 0 and int(segment.stem) < end and segment.exists():
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
