"""Key hierarchy costs, each against a baseline measured in the same run:

- seal and open of a 300-byte message with a cached key, vs. bare AESGCM on the same messages;
- data-key creations per second, vs. a bare SQLite insert with the same durability pragmas; and
  on the PostgreSQL store (a throwaway server from Debian's packages, fsync on), vs. a bare
  PostgreSQL insert and vs. the SQLite store;
- time from tenant destruction to a worker (another process, key cached) refusing to open,
  vs. the configured staleness bound.

    python -m bench.keystore [--messages 100000] [--creations 2000] [--runs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.results import Figure, save
from shredline.keystore.dburl import DatabaseUrl
from shredline.keystore.errors import KeyDestroyed
from shredline.keystore.keys import DEFAULT_STALENESS_S, Keys, Sealed
from shredline.keystore.master import load_keyring
from shredline.keystore.postgres_store import PostgresKeyStore
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.keystore.store import CONVERSATION, KeyStore
from shredline.streams.launcher.postgres import running_postgres

TOPIC = "buffer.messages"
PARALLEL = 4  # processes creating keys at once in the parallel measurement


def open_keys(directory: Path, store: KeyStore | None = None) -> Keys:
    """Keys on `store` (by default a SQLite store in `directory`), the keyring in `directory`."""
    return Keys(
        store if store is not None else SqliteKeyStore(directory / "keys.sqlite"),
        load_keyring(None, directory / "master.key", create=True),
    )


def per_op_us(fn: object, count: int) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / count * 1e6


def seal_open(directory: Path, messages: int) -> dict[str, float]:
    keys = open_keys(directory)
    keys.provision("bench")
    payloads = [os.urandom(300) for _ in range(1000)]
    conversations = [f"conv-{i}" for i in range(100)]
    for c in conversations:  # warm the cache: this measures the cached path
        keys.seal("bench", CONVERSATION, c, TOPIC, b"warm")
    work = [(conversations[i % 100], payloads[i % 1000]) for i in range(messages)]
    sealed: list[Sealed] = []

    def ours_seal() -> None:
        sealed.extend(keys.seal("bench", CONVERSATION, c, TOPIC, p) for c, p in work)

    def ours_open() -> None:
        for s in sealed:
            keys.open(s, TOPIC)

    bare = AESGCM(os.urandom(32))
    aad = b"x" * 90  # about the size of our associated data
    bare_sealed: list[tuple[bytes, bytes]] = []

    def bare_seal() -> None:
        for _c, p in work:
            nonce = os.urandom(12)
            bare_sealed.append((nonce, bare.encrypt(nonce, p, aad)))

    def bare_open() -> None:
        for nonce, ct in bare_sealed:
            bare.decrypt(nonce, ct, aad)

    out = {
        "bare_seal_us": per_op_us(bare_seal, messages),
        "seal_us": per_op_us(ours_seal, messages),
        "bare_open_us": per_op_us(bare_open, messages),
        "open_us": per_op_us(ours_open, messages),
    }
    keys.store.close()
    return out


def creation_rate(keys: Keys, count: int, tenant: str = "create", provision: bool = True) -> float:
    """Data keys created per second, one new conversation each (a durable commit each)."""
    if provision:
        keys.provision(tenant)
    start = time.perf_counter()
    for i in range(count):
        keys.sealing_key(tenant, CONVERSATION, f"new-{os.getpid()}-{i}")
    rate = count / (time.perf_counter() - start)
    keys.store.close()
    return rate


def _open_store(where: str) -> KeyStore:
    return PostgresKeyStore(DatabaseUrl(where)) if DatabaseUrl.looks_like(where) else SqliteKeyStore(Path(where))


def _create_in_process(where: str, directory: str, count: int, go: Any, done: Any) -> None:
    keys = open_keys(Path(directory), _open_store(where))
    done.put("ready")
    go.wait()
    done.put(creation_rate(keys, count, "parallel", provision=False))


def parallel_creations(where: str, directory: Path, processes: int, count: int) -> float:
    """Data keys created per second by `processes` processes at once on one store (a path or URL),
    each creating `count`: what several workers (or hosts) get together."""
    keys = open_keys(directory, _open_store(where))
    keys.provision("parallel")
    keys.store.close()
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_create_in_process, args=(where, str(directory), count, go, done)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:  # every child imported and connected before the start signal
        assert done.get(timeout=120) == "ready"
    start = time.perf_counter()
    go.set()
    for _ in children:
        done.get(timeout=600)
    elapsed = time.perf_counter() - start
    for child in children:
        child.join(timeout=60)
    return processes * count / elapsed


def bare_rate(count: int, insert: Callable[[int], None]) -> float:
    start = time.perf_counter()
    for i in range(count):
        insert(i)
    return count / (time.perf_counter() - start)


def postgres_creations(directory: Path, count: int) -> dict[str, float]:
    """The PostgreSQL store against a bare insert with a commit each, on one server (fsync on)."""
    with running_postgres(durable=True) as server:
        ours = creation_rate(open_keys(directory, PostgresKeyStore(server.url())), count)
        parallel = parallel_creations(server.url().reveal(), directory, PARALLEL, count // PARALLEL)
        with contextlib.closing(psycopg.connect(server.url().reveal(), autocommit=True)) as db:
            db.execute("CREATE TABLE k (id TEXT PRIMARY KEY, wrapped BYTEA)")

            def insert(i: int) -> None:
                db.execute("INSERT INTO k VALUES (%s, %s)", (f"id-{i}", os.urandom(48)))

            bare = bare_rate(count, insert)
    return {"pg_bare_inserts_per_s": bare, "pg_creations_per_s": ours, "pg_parallel_creations_per_s": parallel}


def creations(directory: Path, count: int) -> dict[str, float]:
    ours = creation_rate(open_keys(directory), count)
    parallel = parallel_creations(str(directory / "keys.sqlite"), directory, PARALLEL, count // PARALLEL)

    db = sqlite3.connect(directory / "bare.sqlite", isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("CREATE TABLE k (id TEXT PRIMARY KEY, wrapped BLOB)")

    def insert(i: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO k VALUES (?, ?)", (f"id-{i}", os.urandom(48)))
        db.execute("COMMIT")

    bare = bare_rate(count, insert)
    return {"bare_inserts_per_s": bare, "creations_per_s": ours, "parallel_creations_per_s": parallel}


def _worker(directory: str, jobs: multiprocessing.Queue, done: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    keys = open_keys(Path(directory))
    while (job := jobs.get()) is not None:
        sealed = Sealed(*job)
        keys.open(sealed, TOPIC)
        done.put(("cached", time.time()))
        while True:
            try:
                keys.open(sealed, TOPIC)
            except KeyDestroyed:
                done.put(("refused", time.time()))
                break
            time.sleep(0.001)


def shred_latency(directory: Path, runs: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    jobs, done = ctx.Queue(), ctx.Queue()
    operator = open_keys(directory)
    worker = ctx.Process(target=_worker, args=(str(directory), jobs, done))
    worker.start()
    latencies = []
    for run in range(runs):
        tenant = f"shred-{run}"
        operator.provision(tenant)
        s = operator.seal(tenant, CONVERSATION, "conv", TOPIC, b"x" * 300)
        jobs.put((s.tenant, s.scope, s.record_id, s.key_id, s.nonce, s.ciphertext))
        assert done.get(timeout=30)[0] == "cached"
        destroyed_at = time.time()
        operator.destroy_tenant(tenant, "bench")
        kind, refused_at = done.get(timeout=30)
        assert kind == "refused"
        latencies.append(refused_at - destroyed_at)
    jobs.put(None)
    worker.join(timeout=30)
    latencies.sort()
    return {
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_s": latencies[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--creations", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for name in ("seal", "create", "shred"):
            (base / name).mkdir()
        so = seal_open(base / "seal", args.messages)
        cr = creations(base / "create", args.creations)
        (base / "pg").mkdir()
        pg = postgres_creations(base / "pg", args.creations)
        sh = shred_latency(base / "shred", args.runs)

    rows = [
        ("seal 300 B, cached key (us/msg)", so["seal_us"], so["bare_seal_us"], "bare AESGCM encrypt"),
        ("open 300 B, cached key (us/msg)", so["open_us"], so["bare_open_us"], "bare AESGCM decrypt"),
        ("data-key creations per second", cr["creations_per_s"], cr["bare_inserts_per_s"], "bare SQLite insert/s"),
        (
            "data-key creations/s, PostgreSQL store",
            pg["pg_creations_per_s"],
            pg["pg_bare_inserts_per_s"],
            "bare PostgreSQL insert/s",
        ),
        (
            "data-key creations/s, PostgreSQL vs SQLite",
            pg["pg_creations_per_s"],
            cr["creations_per_s"],
            "SQLite store creations/s",
        ),
        (
            f"creations/s, {PARALLEL} processes at once, PostgreSQL",
            pg["pg_parallel_creations_per_s"],
            cr["parallel_creations_per_s"],
            f"SQLite store, {PARALLEL} processes",
        ),
        ("destroy -> cached worker refuses, p50 (s)", sh["p50_s"], DEFAULT_STALENESS_S, "staleness bound"),
        ("destroy -> cached worker refuses, p99 (s)", sh["p99_s"], DEFAULT_STALENESS_S, "staleness bound"),
    ]
    print(f"{'measure':<44}{'ours':>12}{'baseline':>12}{'ratio':>8}  baseline is")
    for name, ours, base_value, what in rows:
        print(f"{name:<44}{ours:>12.3f}{base_value:>12.3f}{ours / base_value:>8.2f}  {what}")
    result = {
        **so,
        **cr,
        **pg,
        **{f"shred_{k}": v for k, v in sh.items()},
        "staleness_s": DEFAULT_STALENESS_S,
        "messages": args.messages,
        "creations": args.creations,
        "runs": args.runs,
    }
    units = ("us", "us", "/s", "/s", "/s", "/s", "s", "s")
    save("keystore", [Figure(n, o, w, b, u) for (n, o, b, w), u in zip(rows, units, strict=True)], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
