"""`shredline demo`: the whole story so far on the local broker, start to finish.

A TLS broker comes up and, as `admin`, the topic catalog and the ACL table are applied; every
step after that runs as the role its job needs, with that role's certificate (the operator
provisions, reads and terminates; upstream publishes; the worker and the sink run as themselves).
Three tenants are provisioned; synthetic events (Faker names, `example.*` e-mails) are
validated, sealed to each tenant's ingest public key and published; the worker opens them and
splits them into sealed buffers, anonymised metrics and redacted logs, and trims the ingest
topics; one conversation is read back (audited); the sink loads the metrics into the encrypted
warehouse and an analyst query runs over the suppressed views; one tenant is terminated and its
conversations read as deleted; its aggregates stay. Each run uses a fresh topic prefix and key
store, so it can be run again and again on the same broker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shredline.analytics.query import render, run_query
from shredline.analytics.report import gather, render_html
from shredline.analytics.sink import run_sink
from shredline.analytics.warehouse import Warehouse
from shredline.processors.anonymise import metric_count
from shredline.processors.roles import Role
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import AccessRole
from shredline.streams.catalog import topic_name
from shredline.streams.ingest.generate import default_start, generate
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog, record_counts
from shredline.streams.kafka.connection import client_environment
from shredline.streams.kafka.produce import partitions_of
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.operations.audit import Trail, read_positioned, verify
from shredline.streams.operations.buffer_read import READ_DEPTH, Deleted, conversation_envelopes, read_conversation
from shredline.streams.operations.operators import role_principals
from shredline.streams.operations.signing import provider_key
from shredline.streams.operations.tenants import provision
from shredline.streams.operations.termination import Termination
from shredline.streams.private import check_private
from shredline.streams.reporting.feed import KafkaSinkSource
from shredline.streams.settings import Settings

Progress = Callable[[str], None]


def run_demo(base: Settings, progress: Progress) -> int:
    admin = connect_or_launch(base, progress)
    operator, upstream = admin.for_role(AccessRole.OPERATOR), admin.for_role(AccessRole.UPSTREAM)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    settings = replace(
        base,
        topic_prefix=f"demo-{stamp}",
        data_dir=base.data_dir / "demo-runs" / stamp,
        master_key_file=None,
        key_store=None,
    )
    prefix = settings.topic_prefix
    check_private(settings)  # creates the run's data dir owner-only, as every command expects it
    apply_catalog(admin, prefix, settings.replication_factor)
    granted = apply_acls(admin, prefix, role_principals(settings))
    progress(f"topics and {len(granted.create)} ACLs applied under prefix {prefix}; keys in {settings.data_dir}")

    identity = operator.principal()
    keys = open_keys(settings, actor=identity)
    trail = Trail(operator, keys, settings)
    span = dt.timedelta(days=1)
    events = list(generate(3, 600, seed=1, start=default_start(dt.datetime.now(dt.UTC), span), span=span))
    tenants = sorted({str(e["tenant"]) for e in events})
    for tenant in tenants:
        provision(keys, operator, trail, tenant, 86_400)
    print(f"1. {identity} provisioned tenants {', '.join(tenants)} (a root key each, wrapped by the master key)")

    with Publisher(upstream, prefix) as publisher:
        for event in events:
            publisher.publish(event)
    kinds = Counter(str(e["type"]) for e in events)
    print(
        f"2. upstream published {publisher.delivered} synthetic events over TLS: "
        + ", ".join(f"{n} {k}s" for k, n in sorted(kinds.items()))
    )
    print(
        f"   ingest records are sealed with the tenant's public key (HPKE {settings.ingest_kem.value}, RFC 9180) "
        "before they leave the SDK: Kafka stores ciphertext only"
    )

    expected = sum(map(metric_count, events))
    log_path = settings.data_dir / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "shredline.streams.cli", "worker", "--loglevel", "warning"],
            env=client_environment(admin, settings.data_dir, prefix, os.environ),  # it picks the worker role
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        metrics = topic_name(prefix, Role.METRICS_USAGE)
        while record_counts(admin, metrics)[1] < expected:
            if worker.poll() is not None:
                raise ShredlineError(f"the worker stopped (exit {worker.returncode}); see {log_path}")
            if time.monotonic() - started > 300:
                raise ShredlineError(f"the worker did not finish in 5 minutes; see {log_path}")
            time.sleep(1)
        print(
            f"3. worker split them in {time.monotonic() - started:.0f}s (start-up included): sealed buffers, "
            f"{expected} anonymised metrics, redacted logs"
        )

        open_conversation = _an_open_conversation(events)
        tenant, conversation = open_conversation
        want = sum(e["type"] == "message" and e["conversation_id"] == conversation for e in events)
        record_id = keys.pseudonym(tenant, "conversation", conversation).encode()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the metrics can land before the last batch's buffer records
            if len(conversation_envelopes(operator, prefix, record_id)) >= min(want, READ_DEPTH):
                break
            time.sleep(1)
        messages = read_conversation(settings, operator, trail, tenant, conversation, purpose="demo")
        print(f"4. buffer read {tenant} {conversation} (audited): {len(messages)} messages")
        for m in messages[:4]:
            print(f"     {m['direction']:<8} {m['body']}")

        deadline = time.monotonic() + 120
        ingest = topic_name(prefix, Role.INGEST_MESSAGES)
        # What stays readable once everything is trimmed: the payload-less segment-roll marker the
        # worker appends after each trim, at most one per partition.
        markers = len(partitions_of(admin, ingest))
        while record_counts(admin, ingest)[0] > markers and time.monotonic() < deadline:
            time.sleep(2)
        readable, ever = record_counts(admin, ingest)
        print(f"5. ingest trimmed: {ever - readable} of {ever} sealed message records already deleted from the broker")

        warehouse = Warehouse(settings.data_dir / "analytics.duckdb", keys.service_secret("duckdb"))
        try:
            loaded = run_sink(KafkaSinkSource(admin.for_role(AccessRole.SINK), prefix), warehouse, until_idle_s=2)
            snapshot = warehouse.analyst_snapshot(5)
            columns, rows = run_query(
                snapshot,
                "SELECT tenant, sum(messages) AS messages FROM messages_daily WHERE channel = 'ALL' GROUP BY tenant "
                "ORDER BY tenant",
            )
        finally:
            warehouse.close()
        print(
            f"6. sink loaded {loaded.facts} facts into the encrypted DuckDB warehouse; an analyst sees "
            "(small cells suppressed):"
        )
        print("\n".join("     " + line for line in render(columns, rows, "table").splitlines()))
        report = settings.data_dir / "report.html"
        report.write_text(render_html(gather(snapshot), None, dt.datetime.now(dt.UTC), 5), encoding="utf-8")
        print(f"   the same as charts: {report} (`shredline analytics report`)")

        print(f"7. terminating {tenant}:")
        outcome = Termination(settings, operator, keys, trail, print).run(tenant, identity, "demo: contract ended")
        body = json.loads(outcome.certificate.read_text(encoding="utf-8"))["certificate"]
        destroyed = body["keys_destroyed"]
        print(
            f"   certificate {outcome.certificate.name}: root key, {destroyed['conversation']} conversation and "
            f"{destroyed['contact']} contact keys destroyed; signed by {body['signer']}"
        )
        try:
            read_conversation(settings, operator, trail, tenant, conversation, purpose="demo")
            print("   (unexpected: still readable)")
            return 1
        except Deleted as exc:
            print(f"   buffer read {tenant} {conversation} -> {exc}")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    counts = {c.tenant: c for c in keys.report()}
    print(
        "8. keys now: "
        + "; ".join(
            f"{t} {c.state} ({c.conversation_keys} live conversation keys, {c.destroyed_keys} destroyed)"
            for t, c in counts.items()
        )
    )
    trail.flush()  # the worker's last key records, if it stopped before relaying them
    anchor = keys.store.audit_head()
    verdict = verify(
        read_positioned(operator, prefix), provider_key(keys).public_key(), {"the key store": anchor} if anchor else {}
    )
    state = "intact" if verdict.ok else f"BROKEN: {verdict.findings[0].reason}"
    print(f"9. audit trail {state}: {verdict.summary}")
    progress("the broker keeps running; stop it with `shredline kafka down`")
    return 0 if verdict.ok else 1


def _an_open_conversation(events: list[dict[str, Any]]) -> tuple[str, str]:
    closed = {e["conversation_id"] for e in events if e["type"] == "message" and e["closes_conversation"]}
    turns = Counter(
        (str(e["tenant"]), str(e["conversation_id"]))
        for e in events
        if e["type"] == "message" and e["conversation_id"] not in closed
    )
    return turns.most_common(1)[0][0]
