"""A Faust app that forwards every ingest record unchanged: the worker's baseline.

Same Faust settings as the worker (TLS, raw serializers, acks=all, commit cadence); only the
work per record differs. Run by `bench.worker` as `python -m bench.passthrough`.
"""

from __future__ import annotations

import os
from dataclasses import replace

import faust

from shredline.processors.roles import Role
from shredline.streams.acl import AccessRole
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import resolve_connection
from shredline.streams.processing.app import faust_app
from shredline.streams.settings import load_settings

OUT = "passthrough.out"


def main() -> None:
    settings = load_settings(os.environ)
    conn = resolve_connection(settings, AccessRole.ADMIN)  # a baseline outside the ACL table
    app = faust_app(
        replace(settings, data_dir=settings.data_dir / "passthrough"),
        conn,
        topic_name(settings.topic_prefix, "bench-passthrough"),
    )
    out = app.topic(topic_name(settings.topic_prefix, OUT), key_serializer="raw", value_serializer="raw")
    for logical in (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS):
        source = app.topic(topic_name(settings.topic_prefix, logical), key_serializer="raw", value_serializer="raw")

        async def forward(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                await out.send(key=event.message.key, value=event.message.value)

        app.agent(source, name=f"forward-{logical}")(forward)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
