"""Termination latency against a running worker: from the start of a termination until the worker
refuses the tenant's data (the first DROPPED_TERMINATED metric for it), over N runs, against the
baseline of the same pipeline's ordinary event latency (publish → metric) in the same run.

Each run provisions a fresh tenant, streams its messages every 20 ms, and terminates it while
they flow. The termination is the operator command's code path (`Termination.run`, all six
steps; the worker refuses once the `keys` step has fenced the tenant).

    python -m bench.termination [--runs 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.results import Figure, save
from bench.timing import percentile, wait
from shredline.processors.roles import Role
from shredline.schemas.codec import decode
from shredline.streams.acl import default_principals
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.directory import NoIngestKey
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import client_environment
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.operations.audit import Trail
from shredline.streams.operations.tenants import provision
from shredline.streams.operations.termination import Termination
from shredline.streams.settings import load_settings

INTERVAL_S = 0.02


class Stream(threading.Thread):
    """Publishes one message for `tenant` every INTERVAL_S, remembering when each was sent."""

    def __init__(self, publisher: Publisher, tenant: str) -> None:
        super().__init__(daemon=True)
        self.publisher, self.tenant = publisher, tenant
        self.sent: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            event_id = f"{self.tenant}-{i}"
            try:
                self.publish(event_id, i)
            except NoIngestKey:
                if i == 0:  # provisioned a moment ago: the SDK has not read its key on control yet
                    time.sleep(INTERVAL_S)
                    continue
                return  # the SDK heard of the termination too: nothing more to seal to
            self.publisher.flush()
            self.sent[event_id] = time.monotonic()
            i += 1
            time.sleep(INTERVAL_S)

    def publish(self, event_id: str, i: int) -> None:
        self.publisher.publish(
            {
                "type": "message",
                "event_id": event_id,
                "tenant": self.tenant,
                "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                "channel": "WHATSAPP",
                "direction": "INBOUND",
                "conversation_id": f"{self.tenant}-c{i % 5}",
                "contact_phone": "+5511900000000",
                "body": "ping",
            }
        )


class Watcher(threading.Thread):
    """Reads metrics.usage as it is written: when each tenant's MESSAGE facts and its first
    DROPPED_TERMINATED fact arrived."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(daemon=True)
        self.consumer = consumer
        self.messages: dict[str, list[float]] = {}
        self.refused: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(100, 0.05):
                m = decode(msg.value() or b"")[1]
                if m["kind"] == "MESSAGE":
                    self.messages.setdefault(m["tenant"], []).append(time.monotonic())
                elif m["kind"] == "DROPPED_TERMINATED":
                    self.refused.setdefault(m["tenant"], time.monotonic())


def flowing(watcher: Watcher, tenant: str, at_least: int = 10) -> bool:
    return len(watcher.messages.get(tenant, ())) >= at_least


def refused(watcher: Watcher, tenant: str) -> bool:
    return tenant in watcher.refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    base = load_settings(os.environ)
    conn = connect_or_launch(base, lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(
            base, topic_prefix=f"benchterm{int(time.time())}", data_dir=Path(tmp), key_store=None, master_key_file=None
        )
        apply_catalog(conn, settings.topic_prefix, 1)
        apply_acls(conn, settings.topic_prefix, default_principals())  # the children run as their roles
        keys = open_keys(settings, actor="bench")
        trail = Trail(conn, keys, settings)
        env = client_environment(conn, settings.data_dir, settings.topic_prefix, os.environ)
        worker = subprocess.Popen(
            [sys.executable, "-m", "shredline.streams.cli", "worker", "--loglevel", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        metrics = topic_name(settings.topic_prefix, Role.METRICS_USAGE)
        consumer = Consumer(conn.confluent(**{"group.id": "bench-termination", "fetch.wait.max.ms": 5, "log_level": 3}))
        partitions = consumer.list_topics(metrics, timeout=10).topics[metrics].partitions
        consumer.assign([TopicPartition(metrics, p, 0) for p in partitions])
        watcher = Watcher(consumer)
        watcher.start()
        refusal: list[float] = []
        command: list[float] = []
        try:
            with Publisher(conn, settings.topic_prefix) as publisher:
                for run in range(args.runs):
                    tenant = f"lat-{run}"
                    provision(keys, conn, trail, tenant, 86_400)
                    stream = Stream(publisher, tenant)
                    stream.start()
                    wait(partial(flowing, watcher, tenant), f"{tenant} flowing")
                    started = time.monotonic()
                    Termination(settings, conn, keys, trail, lambda _m: None).run(tenant, "bench", "latency run")
                    command.append(time.monotonic() - started)
                    wait(partial(refused, watcher, tenant), f"the worker to refuse {tenant}")
                    stream.stop.set()
                    stream.join()
                    refusal.append(watcher.refused[tenant] - started)
                    print(
                        f"  run {run + 1}: worker refused after {refusal[-1] * 1000:.0f} ms; "
                        f"command took {command[-1]:.2f} s",
                        flush=True,
                    )
                # Baseline: ordinary publish -> metric latency of a steady stream, same pipeline.
                provision(keys, conn, trail, "steady", 86_400)
                stream = Stream(publisher, "steady")
                stream.start()
                wait(partial(flowing, watcher, "steady", 200), "the steady stream")
                stream.stop.set()
                stream.join()
                sent = [stream.sent[f"steady-{i}"] for i in range(200)]
                lags = [a - s for a, s in zip(sorted(watcher.messages["steady"]), sent, strict=False)]
        finally:
            watcher.stop.set()
            watcher.join()
            consumer.close()
            worker.terminate()
            worker.wait(timeout=60)
    p50, p99 = percentile(refusal, 0.5), percentile(refusal, 0.99)
    base50 = statistics.median(lags)
    print(f"termination start -> worker refuses, {len(refusal)} runs: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(
        f"termination command, all six steps: p50 {percentile(command, 0.5):.2f} s, "
        f"p99 {percentile(command, 0.99):.2f} s"
    )
    print(f"baseline: ordinary publish -> metric latency p50 {base50 * 1000:.0f} ms; refusal p50 = {p50 / base50:.1f}x")
    save(
        "termination",
        [
            Figure("termination -> worker refuses, p50", p50, "ordinary publish->metric p50", base50, "s"),
            Figure("termination -> worker refuses, p99", p99, "ordinary publish->metric p50", base50, "s"),
        ],
        **{
            "runs": len(refusal),
            "refusal_p50_s": round(p50, 3),
            "refusal_p99_s": round(p99, 3),
            "command_p50_s": round(percentile(command, 0.5), 3),
            "command_p99_s": round(percentile(command, 0.99), 3),
            "ordinary_latency_p50_s": round(base50, 3),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
