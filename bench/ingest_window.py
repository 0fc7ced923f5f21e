"""How long plaintext personal data rests on the broker's disk: the ingest window.

Publishes events carrying a unique canary, runs the worker, and polls (1) the ingest topics'
log start offsets, to see when the processed records were trimmed (unreadable through Kafka),
and (2) the raw segment files in the local broker's log dirs, to see when the canary bytes are
gone from disk. Baseline: the catalog's retention backstop (what the window would be with no
trimming). Needs the local broker (`shredline kafka up`) because it reads its files.

    python -m bench.ingest_window [--events 200] [--timeout 600]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.results import Figure, save
from shredline.processors.roles import Role
from shredline.streams.acl import default_principals
from shredline.streams.catalog import CATALOG, topic_name
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import client_environment
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import Launcher
from shredline.streams.settings import load_settings

INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    settings = load_settings(os.environ)
    state = Launcher(settings).running()
    if state is None:
        print("needs the local broker: run `shredline kafka up` first", file=sys.stderr)
        return 2
    conn = state.connection()
    log_dirs = [
        Path(line.split("=", 1)[1])
        for line in (settings.kafka_dir / "server.properties").read_text().splitlines()
        if line.startswith("log.dirs=")
    ]
    prefix = f"window{int(time.time())}"
    apply_catalog(conn, prefix, 1)
    apply_acls(conn, prefix, default_principals())  # the children run as their roles
    canary = f"zq9-window-canary-{uuid.uuid4().hex[:12]}"
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    events = [
        {**e, "body": f"{canary} {e['body']}"} if e["type"] == "message" else e
        for e in generate(2, args.events, 9, start, dt.timedelta(hours=1))
    ]

    data_dir = Path(tempfile.mkdtemp(prefix=f"shredline-window-{prefix}-"))
    env = client_environment(conn, data_dir, prefix, os.environ)
    keys = open_keys(load_settings(env))
    for tenant in sorted({str(e["tenant"]) for e in events}):
        keys.provision(tenant)

    with Publisher(conn, prefix) as publisher:
        for event in events:
            publisher.publish(event)
    published_at = time.monotonic()
    ends = _ends(conn, prefix)
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
            if trimmed_s is not None and not _on_disk(log_dirs, prefix, canary.encode()):
                on_disk_s = now
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    backstop = {int(s.configs["retention.ms"]) + int(s.configs["segment.ms"]) for s in CATALOG if s.role in INGEST}
    baseline_s = max(backstop) / 1000 + 10 + 1
    print(f"{'measure':<48}{'seconds':>10}{'ratio':>8}")
    print(f"{'retention backstop (no trimming; baseline)':<48}{baseline_s:>10.0f}{1:>8.2f}")
    for name, value in (
        ("publish -> trimmed (not readable via Kafka)", trimmed_s),
        ("publish -> canary bytes gone from broker disk", on_disk_s),
    ):
        shown = f"{value:>10.0f}{value / baseline_s:>8.3f}" if value is not None else f"{'> timeout':>10}"
        print(f"{name:<48}{shown}")
    save(
        "ingest_window",
        [
            Figure(f"publish -> {label}", value, "retention backstop without trimming", baseline_s, "s")
            for label, value in (("unreadable via Kafka", trimmed_s), ("gone from broker disk", on_disk_s))
            if value is not None
        ],
        events=len(events),
    )
    return 0 if on_disk_s is not None else 1


def _ends(conn: object, prefix: str) -> dict[tuple[str, int], int]:
    consumer = Consumer(conn.confluent(**{"group.id": "window", "log_level": 3}))  # type: ignore[attr-defined]
    try:
        out = {}
        for logical in INGEST:
            topic = topic_name(prefix, logical)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        return out
    finally:
        consumer.close()


def _all_trimmed(conn: object, ends: dict[tuple[str, int], int]) -> bool:
    consumer = Consumer(conn.confluent(**{"group.id": "window", "log_level": 3}))  # type: ignore[attr-defined]
    try:
        return all(
            consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[0] >= end
            for (t, p), end in ends.items()
            if end > 0
        )
    finally:
        consumer.close()


def _on_disk(log_dirs: list[Path], prefix: str, canary: bytes) -> bool:
    for log_dir in log_dirs:
        for folder in log_dir.glob(f"{prefix}.ingest.*"):
            for segment in folder.glob("*.log"):
                try:
                    if canary in segment.read_bytes():
                        return True
                except FileNotFoundError:
                    continue
    return False


if __name__ == "__main__":
    sys.exit(main())
