"""`shredline topics apply`: the topic catalog onto the broker."""

from __future__ import annotations

import argparse

from shredline.streams.console import Commands
from shredline.streams.settings import Settings


def _topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.kafka.admin import apply_catalog
    from shredline.streams.kafka.connection import resolve_connection

    changes = apply_catalog(resolve_connection(settings), settings.topic_prefix, settings.replication_factor)
    if not changes:
        print("topics: nothing to change")
        return 0
    width = max(len(c.topic) for c in changes)
    print(f"{'TOPIC':<{width}}  {'ACTION':<10}  DETAIL")
    for c in changes:
        print(f"{c.topic:<{width}}  {c.kind:<10}  {c.detail}")
    return 0


def register(sub: Commands) -> None:
    topics = sub.add_parser("topics", help="topic catalog")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_sub.add_parser("apply", help="create missing topics and fix drifted configs").set_defaults(run=_topics_apply)
