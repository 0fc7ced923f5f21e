"""Worker throughput against two baselines on the same input, same broker, same run:

- a Faust passthrough app (same settings, forwards each ingest record unchanged);
- a bare confluent-kafka consume -> produce loop;

and the cost of opening sealed ingest: the worker on the same events sealed with X25519, sealed
with the hybrid ML-KEM-768 + X25519, and unsealed (plaintext, with the migration switch on).

Each run gets its own topic prefix and key store with the same events published beforehand;
throughput is counted from the first output record until every output has caught up: all usage
metrics written AND the split's group committed to the end of every ingest topic (the end time
is the later of the last metric's and the last buffer.messages record's broker timestamp; the
passthrough's, its last output's). Start-up and rebalancing are excluded. Each round runs the
passthrough and every worker input once, interleaved; the best round of each is kept.

    python -m bench.worker [--events 20000] [--kems x25519] [--profile DIR]

`--profile DIR` runs every worker under `py-spy record --native` and leaves the last one's
collapsed stacks in DIR/worker.raw (`python -m bench.top DIR/worker.raw` prints the top ten).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.results import Figure, save
from bench.sealing import given_keys, publish_plaintext, tenant_keys
from shredline.keystore.ingest import Kem
from shredline.processors.anonymise import metric_count
from shredline.processors.roles import Role
from shredline.processors.validation import validate
from shredline.schemas.codec import encode
from shredline.streams.acl import default_principals
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.generate import generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog, consumer_lag, record_counts
from shredline.streams.kafka.connection import Connection, client_environment
from shredline.streams.kafka.trim import worker_group
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.processing.splitter import Splitter
from shredline.streams.settings import Settings, load_settings

INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)
SPLIT_BATCH = 500  # as the worker's batches at most
SPY = ("record", "--native", "--rate", "100", "--format", "raw")


def counter(conn: Connection, topic: str) -> Callable[[], int]:
    return lambda: record_counts(conn, topic)[0]


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def last_append_s(conn: Connection, topic: str) -> float:
    """Epoch seconds of the newest record's timestamp over the topic's partitions (0 if empty)."""
    consumer = Consumer(conn.confluent(**{"group.id": "shredline-bench-last", "log_level": 3}))
    try:
        newest = 0.0
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high == 0:
                continue
            consumer.assign([TopicPartition(topic, p, high - 1)])
            msg = consumer.poll(10)
            assert msg is not None and not msg.error(), f"cannot read the last record of {topic}[{p}]"
            newest = max(newest, msg.timestamp()[1] / 1000)
        return newest
    finally:
        consumer.close()


def rate(
    progress: Callable[[], int],
    target: int,
    pid: int,
    timeout_s: float = 900,
    caught_up: Callable[[], bool] = lambda: True,
    ended_at: Callable[[], float] | None = None,
) -> tuple[float, float]:
    """Outputs/s and CPU seconds per output of process `pid`, from the first output seen until
    `target` outputs and `caught_up()`; `ended_at()` (epoch s), if given, says when the work
    really ended (a caught-up check sees it only after the group's next commit). CPU per output
    holds up on a shared machine, where wall time does not."""
    deadline = time.monotonic() + timeout_s
    while (first := progress()) == 0:
        assert time.monotonic() < deadline, "no output"
        time.sleep(0.05)
    t0, wall0, c0, cpu0 = time.monotonic(), time.time(), first, cpu_s(pid)
    while (n := progress()) < target or not caught_up():
        assert time.monotonic() < deadline, f"stalled at {n} of {target}"
        time.sleep(0.1)
    cpu = cpu_s(pid) - cpu0
    took = (ended_at() - wall0) if ended_at else time.monotonic() - t0
    return (n - c0) / took, cpu / (n - c0)


def env_for(conn: Connection, prefix: str, data_dir: Path) -> dict[str, str]:
    return client_environment(conn, data_dir, prefix, os.environ)


def splitter_cpu_us(events: list[dict[str, Any]], kem: Kem | None) -> float:
    """CPU µs per event of `Splitter.handle_batch` alone, in batches of SPLIT_BATCH (real keys on
    SQLite, outputs discarded), on the events sealed to `kem` or plaintext (kem None, migration
    switch on): the worker's own work without Kafka or Faust in the measurement."""
    now = dt.datetime.now(dt.UTC)
    keys = tenant_keys(Path(tempfile.mkdtemp(prefix="shredline-bench-splitter-")), {str(e["tenant"]) for e in events})

    def discard(_outputs: list[tuple[Role, bytes | None, bytes | None]]) -> dict[int, str]:
        return {}  # every output written, none refused

    splitter = Splitter(keys, "bench", discard, allow_plaintext=kem is None)
    records = []
    for event in events:
        valid = validate(event, now)
        inner = encode(valid.record, valid.value)
        if kem is not None:
            key = keys.ingest_key(str(valid.value["tenant"]), kem).public
            sealed = {"tenant": key.tenant, "generation": key.generation, "kem": kem.value}
            inner = encode("sealed_ingest", {**sealed, "ciphertext": key.seal(inner, topic_name("bench", valid.role))})
        records.append((valid.role, inner))

    started = time.process_time()
    for start in range(0, len(records), SPLIT_BATCH):
        batch = [(role, 0, start + i, value, None) for i, (role, value) in enumerate(records[start:][:SPLIT_BATCH])]
        assert set(splitter.handle_batch(batch)) == {"processed"}
    return (time.process_time() - started) / len(records) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per input, interleaved; best kept")
    parser.add_argument(
        "--kems", nargs="+", default=["plaintext", *(k.value.lower() for k in Kem)], help="worker inputs to run"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the sealed X25519 worker into this folder")
    args = parser.parse_args()
    if "x25519" not in args.kems:
        parser.error("--kems: must include x25519 (the worker compared with the passthrough)")
    settings = load_settings(os.environ)
    conn = connect_or_launch(settings, lambda m: print(m, file=sys.stderr))
    stamp = int(time.time())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    events = list(generate(3, args.events, 4, start, dt.timedelta(days=1)))
    metrics_expected = sum(map(metric_count, events))
    admin = AdminClient(conn.confluent(log_level=3))

    tenants = {str(e["tenant"]) for e in events}

    def prepared(name: str, kem: Kem | None = Kem.X25519) -> tuple[str, Path]:
        """A prefix with the events published: sealed to `kem` with the keys of a fresh key store
        in the returned data dir, or plaintext (kem None)."""
        prefix = f"bench{stamp}{name}"
        data = Path(tempfile.mkdtemp(prefix=f"shredline-bench-{prefix}-"))
        apply_catalog(conn, prefix, 1)
        apply_acls(conn, prefix, default_principals())  # the children run as their roles
        admin.create_topics([NewTopic(topic_name(prefix, "passthrough.out"), 6, 1)])
        time.sleep(1)
        keys = tenant_keys(data, tenants)
        if kem is None:
            publish_plaintext(conn, prefix, events, dt.datetime.now(dt.UTC))
        else:
            with Publisher(conn, prefix, keys=given_keys(keys, tenants), kem=kem) as publisher:
                for event in events:
                    publisher.publish(event)
        return prefix, data

    def run(
        cmd: list[str], env: dict[str, str], progress: Callable[[], int], target: int, **until: Any
    ) -> tuple[float, float]:
        profiling = args.profile is not None and "worker" in cmd
        if profiling:  # py-spy starts the worker (attaching to a running process fails in this sandbox)
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = str(Path(sys.executable).with_name("py-spy"))
            cmd = [spy, *SPY, "-o", str(args.profile / "worker.raw"), "--", *cmd]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = proc.pid
        if profiling:  # the worker is py-spy's child: measure its CPU, not py-spy's
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            while not children.read_text().split():
                time.sleep(0.05)
            pid = int(children.read_text().split()[0])
        try:
            return rate(progress, target, pid, **until)
        finally:
            if profiling:
                os.kill(pid, signal.SIGTERM)  # py-spy writes its profile when the worker exits
            else:
                proc.terminate()
            proc.wait(timeout=60)

    def passthrough_rate(name: str) -> tuple[float, float]:
        """Events/s and CPU s per event of the passthrough, timed as the worker is: until its last
        output's broker timestamp."""
        prefix, data = prepared(name)
        out = topic_name(prefix, "passthrough.out")
        return run(
            [sys.executable, "-m", "bench.passthrough"],
            env_for(conn, prefix, data),
            counter(conn, out),
            len(events),
            ended_at=lambda: last_append_s(conn, out),
        )

    def worker_rate(name: str, kem: Kem | None) -> tuple[float, float]:
        """Events/s and CPU µs per event of the worker process itself (run unsupervised, so its
        pid is the one doing the work), counted until every output has caught up."""
        prefix, data = prepared(name, kem)
        env = env_for(conn, prefix, data)
        if kem is None:
            env["SHREDLINE_ALLOW_PLAINTEXT_INGEST"] = "true"
        cmd = [sys.executable, "-m", "shredline.streams.cli", "worker", "--unsupervised", "--loglevel", "warning"]
        settings = Settings(topic_prefix=prefix)
        metrics, buffer = topic_name(prefix, Role.METRICS_USAGE), topic_name(prefix, Role.BUFFER_MESSAGES)
        ingest = [topic_name(prefix, r) for r in INGEST]
        outputs, cpu_per_output = run(
            cmd,
            env,
            counter(conn, metrics),
            metrics_expected,
            caught_up=lambda: consumer_lag(conn, worker_group(settings), ingest) == 0,
            ended_at=lambda: max(last_append_s(conn, metrics), last_append_s(conn, buffer)),
        )
        per_event = metrics_expected / len(events)
        return outputs / per_event, cpu_per_output * per_event * 1e6

    # Interleaved rounds, best of each kept: other load on the machine only ever slows a run down.
    inputs: dict[str, Kem | None] = {"plaintext": None, **{k.value.lower(): k for k in Kem}}
    chosen = {inputs[name]: name for name in args.kems}
    runs: dict[Kem | None, list[tuple[float, float]]] = {kem: [] for kem in chosen}
    passthrough_runs: list[tuple[float, float]] = []
    for round_ in range(args.rounds):
        passthrough_runs.append(passthrough_rate(f"f{round_}"))  # f: not the first letter of an input
        for kem, runs_of in runs.items():
            runs_of.append(worker_rate(f"{chosen[kem][:1]}{round_}", kem))
    best = {kem: (max(r for r, _c in rs), min(c for _r, c in rs)) for kem, rs in runs.items()}
    passthrough, passthrough_cpu_s = max(r for r, _c in passthrough_runs), min(c for _r, c in passthrough_runs)
    worker, worker_cpu = best[Kem.X25519]

    sample = events[:3000]
    splitter_us = {kem: min(splitter_cpu_us(sample, kem) for _ in range(2)) for kem in chosen}

    prefix, _data = prepared("b")
    consumer = Consumer(
        conn.confluent(
            **{
                "group.id": f"{prefix}-bare",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "log_level": 3,
            }
        )
    )
    producer = Producer(conn.confluent(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5, "log_level": 3}))
    consumer.subscribe([topic_name(prefix, t) for t in INGEST])
    out_topic = topic_name(prefix, "passthrough.out")
    done = 0
    t0 = None
    while done < len(events):
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error():
                continue
            t0 = t0 or time.monotonic()
            producer.produce(out_topic, key=msg.key(), value=msg.value())
            producer.poll(0)
            done += 1
    producer.flush(60)
    bare = done / (time.monotonic() - (t0 or time.monotonic()))
    consumer.close()

    passthrough_cpu = passthrough_cpu_s * 1e6
    label = {None: "plaintext input (switch on)", Kem.X25519: "sealed X25519", Kem.MLKEM768_X25519: "sealed hybrid"}
    print(f"{'pipeline':<48}{'events/s':>10}{'CPU us/event':>14}{'vs Faust passthrough':>22}{'vs bare loop':>14}")
    print(f"{'bare confluent-kafka consume->produce':<48}{bare:>10,.0f}{'':>14}{bare / passthrough:>22.2f}{1:>14.2f}")
    print(f"{'Faust passthrough agent':<48}{passthrough:>10,.0f}{passthrough_cpu:>14,.0f}{1:>22.2f}")
    for kem, (value, cpu) in best.items():
        name = f"shredline worker, {label[kem]}"
        print(f"{name:<48}{value:>10,.0f}{cpu:>14,.0f}{value / passthrough:>22.2f}{value / bare:>14.2f}")
    print(f"{'Splitter.handle_batch alone, CPU per event':<48}{'us':>10}")
    for kem, value in splitter_us.items():
        print(f"{label[kem]:<48}{value:>10,.0f}")
    figures = [
        Figure("worker (open, split, seal, anonymise)", worker, "Faust passthrough agent", passthrough, "events/s"),
        Figure("worker CPU per event, sealed X25519", worker_cpu, "Faust passthrough agent", passthrough_cpu, "us"),
        Figure("worker (open, split, seal, anonymise)", worker, "bare confluent consume->produce", bare, "events/s"),
    ]
    if None in best:
        plain, plain_cpu = best[None]
        figures += [
            Figure(f"worker, {label[k]}", r, "worker, plaintext input", plain, "events/s")
            for k, (r, _c) in best.items()
            if k
        ]
        figures += [
            Figure(f"worker CPU per event, {label[k]}", c, "plaintext input", plain_cpu, "us")
            for k, (_r, c) in best.items()
            if k
        ]
    save(
        "worker",
        figures,
        **{
            "events": len(events),
            "rounds": args.rounds,
            "counted_until": "metrics complete and the split committed to the end of ingest",
            "bare_events_per_s": round(bare),
            "passthrough_events_per_s": round(passthrough),
            "passthrough_cpu_us_per_event": round(passthrough_cpu),
            "worker_vs_passthrough": round(worker / passthrough, 3),
            "worker_vs_bare": round(worker / bare, 3),
            "events_per_s": {chosen[k]: round(r) for k, (r, _c) in best.items()},
            "cpu_us_per_event": {chosen[k]: round(c) for k, (_r, c) in best.items()},
            "splitter_cpu_us_per_event": {chosen[k]: round(v) for k, v in splitter_us.items()},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
