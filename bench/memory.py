"""Worker memory against volume: peak RSS of one worker process while it works through N events,
for each N given, against the same worker's RSS when idle after start-up (same run, same broker).
If memory did not grow with volume, the peaks would match whatever N: the last line gives the
largest N's peak against the smallest's.

    python -m bench.memory [--events 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.results import Figure, save
from shredline.streams.acl import default_principals
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import NoIngestKey
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog, consumer_lag
from shredline.streams.kafka.connection import Connection, client_environment
from shredline.streams.kafka.trim import INGEST, worker_group
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.operations.audit import Trail
from shredline.streams.operations.tenants import provision
from shredline.streams.settings import Settings, load_settings

IDLE_S = 20


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def publish_when_known(publisher: Publisher, event: dict[str, object], within_s: float = 30.0) -> None:
    """Publish `event`, waiting for the SDK to read the key of a tenant provisioned a moment ago."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            publisher.publish(event)
            return
        except NoIngestKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(conn: Connection, base: Settings, events_n: int, tmp: Path) -> tuple[int, int, float]:
    """(idle RSS KiB, peak RSS KiB, seconds to process) for one worker on N events."""
    settings = replace(
        base, topic_prefix=f"benchmem{events_n}x{int(time.time())}", data_dir=tmp, key_store=None, master_key_file=None
    )
    apply_catalog(conn, settings.topic_prefix, 1)
    apply_acls(conn, settings.topic_prefix, default_principals())  # the children run as their roles
    keys = open_keys(settings, actor="bench")
    trail = Trail(conn, keys, settings)
    env = client_environment(conn, settings.data_dir, settings.topic_prefix, os.environ)
    worker = subprocess.Popen(
        [sys.executable, "-m", "shredline.streams.cli", "worker", "--unsupervised", "--loglevel", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(IDLE_S)
        idle = rss_kib(worker.pid)
        started = time.monotonic()
        provisioned: set[str] = set()
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        with Publisher(conn, settings.topic_prefix) as publisher:
            for event in generate(3, events_n, 9, start, dt.timedelta(days=1)):
                if event["tenant"] not in provisioned:  # before its first event is published
                    provision(keys, conn, trail, str(event["tenant"]), 86_400)
                    provisioned.add(str(event["tenant"]))
                publish_when_known(publisher, event)
        topics = [topic_name(settings.topic_prefix, t) for t in INGEST]
        while (lag := consumer_lag(conn, worker_group(settings), topics)) > 0:
            print(f"  {events_n:,} events: {lag:,} to go, RSS {rss_kib(worker.pid) / 1024:.0f} MiB", flush=True)
            time.sleep(10)
        took = time.monotonic() - started
        peak = rss_kib(worker.pid, "VmHWM")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return idle, peak, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    base = load_settings(os.environ)
    conn = connect_or_launch(base, lambda m: print(m, file=sys.stderr))
    figures = []
    details = {}
    for n in args.events:
        with tempfile.TemporaryDirectory() as tmp:
            idle, peak, took = run(conn, base, n, Path(tmp))
        print(f"{n:>10,} events: idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, {n / took:,.0f} events/s")
        figures.append(
            Figure(f"worker peak RSS over {n:,} events", peak / 1024, "same worker idle", idle / 1024, "MiB")
        )
        details[str(n)] = {"idle_kib": idle, "peak_kib": peak, "seconds": round(took, 1)}
    peaks = {int(n): run["peak_kib"] / 1024 for n, run in details.items()}
    least, most = min(peaks), max(peaks)
    if most > least:  # the goal: peak RSS does not grow with the events processed
        ratio = peaks[most] / peaks[least]
        print(f"peak at {most:,} events / peak at {least:,} events: {ratio:.2f}x")
        figures.append(
            Figure(f"worker peak RSS at {most:,} events", peaks[most], f"its peak at {least:,}", peaks[least], "MiB")
        )
    save("memory", figures, runs=details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
