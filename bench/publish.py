"""Publish throughput: `publish_lines` + SDK (parse, validate, encode, produce) against a bare
confluent-kafka producer sending the very same encoded bytes and keys, with the same producer
settings, to the same broker, in the same run.

    python -m bench.publish [--events 50000] [--rounds 3]

Uses SHREDLINE_BOOTSTRAP when set, else the local broker of SHREDLINE_DATA_DIR (started if needed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time

from confluent_kafka import Producer

from bench.results import Figure, save
from shredline.processors.validation import validate
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.generate import default_start, generate
from shredline.streams.ingest.publish import publish_lines
from shredline.streams.ingest.sdk import PRODUCER_DEFAULTS, Publisher
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.settings import load_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = load_settings(os.environ)
    conn = connect_or_launch(settings, lambda m: print(m, file=sys.stderr))
    prefix = f"bench{int(time.time())}"
    apply_catalog(conn, prefix, settings.replication_factor)

    span = dt.timedelta(days=7)
    now = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    events = list(generate(3, args.events, 1, default_start(now, span), span))
    generate_s = time.perf_counter() - t0
    lines = [json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events]
    valid = [validate(e, now) for e in events]
    encoded = [(topic_name(prefix, v.role), v.key, encode(v.record, v.value)) for v in valid]

    def bare() -> float:
        producer = Producer(conn.confluent(**PRODUCER_DEFAULTS))
        start = time.perf_counter()
        for topic, key, value in encoded:
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.5)
            producer.poll(0)
        assert producer.flush(60) == 0
        return time.perf_counter() - start

    def sdk() -> float:
        start = time.perf_counter()
        with Publisher(conn, prefix) as publisher:
            summary = publish_lines(lines, publisher, reject=print, progress=lambda _m: None)
        assert summary.published == len(lines) and publisher.delivered == len(lines)
        return time.perf_counter() - start

    bare_s, sdk_s = [], []
    for _ in range(args.rounds):  # alternate, so drift on the machine hits both alike
        bare_s.append(bare())
        sdk_s.append(sdk())
    bare_rate = len(lines) / statistics.median(bare_s)
    sdk_rate = len(lines) / statistics.median(sdk_s)
    result = {
        "events": len(lines),
        "rounds": args.rounds,
        "bare_producer_events_per_s": round(bare_rate),
        "publish_events_per_s": round(sdk_rate),
        "publish_vs_bare": round(sdk_rate / bare_rate, 3),
        "generate_events_per_s": round(len(events) / generate_s),
        "mean_record_bytes": round(sum(len(v) for _t, _k, v in encoded) / len(encoded)),
        "when": now.isoformat(timespec="seconds"),
    }
    print(f"{'measure':<34}{'events/s':>12}{'ratio':>8}")
    print(f"{'bare confluent producer (baseline)':<34}{bare_rate:>12,.0f}{1:>8.2f}")
    print(f"{'shredline publish (SDK)':<34}{sdk_rate:>12,.0f}{sdk_rate / bare_rate:>8.2f}")
    print(f"{'generate (for reference)':<34}{result['generate_events_per_s']:>12,}")
    save(
        "publish",
        [
            Figure(
                "shredline publish (validate, encode, produce)",
                sdk_rate,
                "bare confluent producer, same bytes",
                bare_rate,
                "events/s",
            )
        ],
        **result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
