"""`shredline worker`: the stream processors, supervised."""

from __future__ import annotations

import argparse
import sys

from shredline.streams.console import Commands, progress
from shredline.streams.settings import Settings


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.acl import AccessRole
    from shredline.streams.kafka.admin import require_catalog
    from shredline.streams.kafka.connection import resolve_connection
    from shredline.streams.key_store import open_keys
    from shredline.streams.processing.app import run_worker
    from shredline.streams.processing.supervise import supervise

    conn = resolve_connection(settings, AccessRole.WORKER)
    require_catalog(conn, settings.topic_prefix)
    if not args.unsupervised:
        options = ["--config", str(args.config)] if args.config else []
        child = [sys.executable, "-m", "shredline.streams.cli", *options, "worker", "--unsupervised"]
        return supervise([*child, "--loglevel", args.loglevel], progress)
    # A locked key store must not block the event loop (heartbeats would stop): fail fast, retry async.
    run_worker(settings, conn, open_keys(settings, actor="worker", busy_timeout_s=0.5), loglevel=args.loglevel)
    return 0


def register(sub: Commands) -> None:
    worker = sub.add_parser("worker", help="run the stream processors until SIGTERM")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.add_argument("--unsupervised", action="store_true", help=argparse.SUPPRESS)  # the supervised child
    worker.set_defaults(run=_worker)
