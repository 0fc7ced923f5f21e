"""`shredline generate` and `shredline publish`: getting events in."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from shredline.schemas.errors import ShredlineError
from shredline.streams.console import Commands, positive, progress, utc_time
from shredline.streams.settings import Settings


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from shredline.streams.ingest.generate import default_start, generate

    span = dt.timedelta(days=args.days)
    start = args.start or default_start(dt.datetime.now(dt.UTC), span)
    out = sys.stdout
    for event in generate(args.tenants, args.events, args.seed, start, span):
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()
    return 0


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.ingest.publish import publish_lines, read_lines
    from shredline.streams.ingest.sdk import Publisher

    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ShredlineError(f"file: cannot open {args.file} ({exc.strerror})") from None
    with source, Publisher.from_settings(settings) as publisher:
        summary = publish_lines(read_lines(source), publisher, reject=progress, progress=progress)
    print(
        f"published {summary.published}, rejected {summary.rejected} in {summary.seconds:.1f}s "
        f"({summary.rate:.0f} events/s)"
    )
    return 1 if summary.rejected else 0


def register(sub: Commands) -> None:
    gen = sub.add_parser("generate", help="realistic synthetic events as JSON lines on stdout")
    gen.add_argument("--tenants", type=positive, default=3)
    gen.add_argument("--events", type=positive, default=1000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--days", type=positive, default=7, help="span of event times (default 7)")
    gen.add_argument("--start", type=utc_time, help="first event time, ISO-8601 (default: midnight UTC, DAYS ago)")
    gen.set_defaults(run=_generate)

    pub = sub.add_parser("publish", help="validate JSON lines and publish them to the ingest topics")
    pub.add_argument("file", help="JSON lines file, or - for stdin")
    pub.set_defaults(run=_publish)
