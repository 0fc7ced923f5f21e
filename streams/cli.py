"""The `shredline` command: settings are built here, once, and handed down."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import ShredlineError
from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    import duckdb
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _kafka_up(settings: Settings, args: argparse.Namespace) -> int:
    from streams.launcher.broker import Launcher

    state, started = Launcher(settings, progress).up(args.port, args.controller_port)
    print(f"{'started' if started else 'already running'}: Apache Kafka {state.kafka_version} (pid {state.pid})")
    print(f"bootstrap: {state.bootstrap} (TLS, client certificate required)")
    print(f"ca:        {state.ca}")
    print(f"client:    {state.client_cert} / {state.client_key}")
    return 0


def _kafka_down(settings: Settings, args: argparse.Namespace) -> int:
    from streams.launcher.broker import Launcher

    stopped = Launcher(settings, progress).down()
    print(f"stopped broker (pid {stopped.pid})" if stopped else f"no broker of {settings.data_dir} is running")
    return 0


def _kafka_status(settings: Settings, args: argparse.Namespace) -> int:
    from streams.launcher.broker import Launcher

    launcher = Launcher(settings, progress)
    state = launcher.running()
    if state is None:
        print(f"stopped (data dir {settings.data_dir})")
        return 3
    print(f"running: Apache Kafka {state.kafka_version}, pid {state.pid}")
    print(f"bootstrap: {state.bootstrap}  controller: 127.0.0.1:{state.controller_port}")
    print(f"ca: {state.ca}")
    print(f"log: {state.log}")
    return 0


def _kafka_compose(settings: Settings, args: argparse.Namespace) -> int:
    from streams.launcher.broker import Launcher

    props = Launcher(settings, progress).prepare_compose()
    tls = settings.kafka_dir / "tls"
    print(f"wrote {props} and TLS files in {tls}; now: docker compose up -d kafka")
    print(
        f"export SHREDLINE_BOOTSTRAP=localhost:9093 SHREDLINE_TLS_CA={tls / 'ca.pem'} "
        f"SHREDLINE_TLS_CERT={tls / 'client.pem'} SHREDLINE_TLS_KEY={tls / 'client.key'}"
    )
    return 0


def _topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka.admin import apply_catalog
    from streams.kafka.connection import resolve_connection

    changes = apply_catalog(resolve_connection(settings), settings.topic_prefix, settings.replication_factor)
    if not changes:
        print("topics: nothing to change")
        return 0
    width = max(len(c.topic) for c in changes)
    print(f"{'TOPIC':<{width}}  {'ACTION':<10}  DETAIL")
    for c in changes:
        print(f"{c.topic:<{width}}  {c.kind:<10}  {c.detail}")
    return 0


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from streams.generate import default_start, generate

    span = dt.timedelta(days=args.days)
    start = args.start or default_start(dt.datetime.now(dt.UTC), span)
    out = sys.stdout
    for event in generate(args.tenants, args.events, args.seed, start, span):
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()
    return 0


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from streams.publish import publish_lines
    from streams.sdk import Publisher

    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ShredlineError(f"file: cannot open {args.file} ({exc.strerror})") from None
    with source, Publisher.from_settings(settings) as publisher:
        summary = publish_lines(source, publisher, reject=progress, progress=progress)
    print(
        f"published {summary.published}, rejected {summary.rejected} in {summary.seconds:.1f}s "
        f"({summary.rate:.0f} events/s)"
    )
    return 1 if summary.rejected else 0


def _keys_report(settings: Settings, args: argparse.Namespace) -> int:
    from streams.keys import open_keys

    counts = open_keys(settings).report()
    if not counts:
        print("no tenants")
        return 0
    header = ("TENANT", "STATE", "GEN", "TTL", "CONVERSATION KEYS", "CONTACT KEYS", "RETIRED", "DESTROYED")
    rows = [
        (
            c.tenant,
            c.state,
            str(c.generation),
            f"{c.buffer_ttl_s // 3600}h",
            str(c.conversation_keys),
            str(c.contact_keys),
            str(c.retired_keys),
            str(c.destroyed_keys),
        )
        for c in counts
    ]
    _print_table(header, rows)
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _keys_rotate_master(settings: Settings, args: argparse.Namespace) -> int:
    from keystore.master import add_version, load_keyring, retire_versions_below
    from streams.operators import Session

    if settings.master_key is not None:
        raise ShredlineError("master_key: rotation needs a key file; SHREDLINE_MASTER_KEY is set")
    keys = Session(settings, "keys rotate-master", online=False).keys
    path = settings.master_key_path
    version = add_version(path)
    count = keys.rotate_master(load_keyring(None, path, create=False))
    retired = retire_versions_below(path, version)
    print(
        f"re-wrapped {count} tenant root keys under master key v{version}; "
        f"retired {', '.join(f'v{v}' for v in retired) or 'nothing'}"
    )
    return 0


def _keys_expire(settings: Settings, args: argparse.Namespace) -> int:
    from streams.operators import Session

    print(f"destroyed {len(Session(settings, 'keys expire', online=False).keys.expire())} expired conversation keys")
    return 0


def _duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError("expected a duration such as 90s, 30m, 24h or 7d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("expected a positive duration")
    return value


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka.admin import apply_catalog
    from streams.kafka.connection import resolve_connection
    from streams.keys import open_keys
    from streams.supervise import supervise
    from streams.worker import run_worker

    conn = resolve_connection(settings)
    apply_catalog(conn, settings.topic_prefix, settings.replication_factor)
    if not args.unsupervised:
        options = ["--config", str(args.config)] if args.config else []
        return supervise(
            [sys.executable, "-m", "streams.cli", *options, "worker", "--unsupervised", "--loglevel", args.loglevel],
            progress,
        )
    # A locked key store must not block the event loop (heartbeats would stop): fail fast, retry async.
    run_worker(settings, conn, open_keys(settings, actor="worker", busy_timeout_s=0.5), loglevel=args.loglevel)
    return 0


def _tenant_provision(settings: Settings, args: argparse.Namespace) -> int:
    from streams.catalog import MAX_BUFFER_TTL_MS
    from streams.operators import Session
    from streams.tenants import provision

    if args.buffer_ttl * 1000 > MAX_BUFFER_TTL_MS:
        raise ShredlineError(f"buffer-ttl: at most {MAX_BUFFER_TTL_MS // 86_400_000}d (the buffer topics' retention)")
    ops = Session(settings, "tenant provision")
    generation = provision(
        ops.keys, ops.conn, ops.trail, args.tenant, args.buffer_ttl, reprovision=args.reprovision_terminated
    )
    print(f"provisioned {args.tenant} (generation {generation}, buffer TTL {args.buffer_ttl}s)")
    return 0


def _tenant_terminate(settings: Settings, args: argparse.Namespace) -> int:
    from streams.operators import Session
    from streams.termination import Termination

    ops = Session(settings, "tenant terminate")
    termination = Termination(settings, ops.conn, ops.keys, ops.trail, progress)
    row = termination.tenant_row(args.tenant)
    if row.state != "terminated" and not args.yes:
        counts = next(c for c in ops.keys.report() if c.tenant == args.tenant)
        if not sys.stdin.isatty():
            raise ShredlineError("terminate: refusing without --yes when there is no terminal to confirm on")
        print(
            f"This destroys, irreversibly, for tenant {args.tenant} (generation {row.generation}):\n"
            f"  the tenant root key, {counts.conversation_keys} conversation keys, {counts.contact_keys} contact keys "
            f"and {counts.retired_keys} retired keys;\n"
            "  so every buffered message and contact of the tenant becomes unreadable everywhere.\n"
            "Anonymous aggregates are kept. A signed deletion certificate is written at the end."
        )
        if input("Type the tenant id to confirm: ").strip() != args.tenant:
            print("not confirmed; nothing changed")
            return 1
    outcome = termination.run(args.tenant, ops.operator, args.reason)
    if outcome.already_done:
        print(f"{args.tenant} is already terminated; nothing changed. Certificate: {outcome.certificate}")
    else:
        print(
            f"terminated {args.tenant}. Certificate: {outcome.certificate} "
            f"(readable: {outcome.certificate.with_suffix('.txt').name})"
        )
    return 0


def _tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    from streams.operators import Session

    ops = Session(settings, "tenant list", online=False)
    store = ops.keys.store
    policies = [p.version for p in store.policies()]
    accepted = store.acceptances()
    header = ("TENANT", "STATE", "GEN", "BUFFER TTL", "LIVE KEYS", "DESTROYED", "POLICY ACCEPTED")
    rows = []
    for c in ops.keys.report():
        latest = policies[-1] if policies else None
        mine = [v for v in policies if v in accepted.get(c.tenant, set())]
        if latest is None:
            policy = "-"
        elif latest in mine:
            policy = latest
        else:
            policy = (
                f"{mine[-1] if mine else 'none'} (NOT {latest})"
                if c.state == "active"
                else (mine[-1] if mine else "none")
            )
        live = c.conversation_keys + c.contact_keys + c.retired_keys
        rows.append(
            (
                c.tenant,
                c.state,
                str(c.generation),
                f"{c.buffer_ttl_s // 3600}h",
                str(live),
                str(c.destroyed_keys),
                policy,
            )
        )
    _print_table(header, rows)
    return 0


def _tenant_accept_policy(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from streams.operators import Session
    from streams.tenants import announce

    ops = Session(settings, "tenant accept-policy")
    if ops.keys.store.accept_policy(args.tenant, args.version, time.time()):
        ops.trail.flush()
        announce(
            ops.conn, settings.topic_prefix, "POLICY_ACCEPTED", args.tenant, ops.operator, policy_version=args.version
        )
        print(f"{args.tenant} accepted policy {args.version}")
    else:
        print(f"{args.tenant} had already accepted policy {args.version}; nothing changed")
    return 0


def _policy_publish(settings: Settings, args: argparse.Namespace) -> int:
    import hashlib
    import time

    from keystore.store import Policy
    from streams.operators import Session
    from streams.tenants import announce

    try:
        text = args.file.read_bytes()
    except OSError as exc:
        raise ShredlineError(f"policy: cannot read {args.file} ({exc.strerror})") from None
    if not text.strip():
        raise ShredlineError(f"policy: {args.file} is empty")
    ops = Session(settings, "policy publish")
    policy = Policy(args.version, hashlib.sha256(text).hexdigest(), time.time(), ops.operator)
    new = ops.keys.store.publish_policy(policy)
    ops.trail.flush()
    active = [c.tenant for c in ops.keys.report() if c.state == "active"]
    for tenant in active:  # re-announcing on a re-run is harmless: notifications are idempotent
        announce(ops.conn, settings.topic_prefix, "POLICY_PUBLISHED", tenant, ops.operator, policy_version=args.version)
    state = "published" if new else "was already published; notified again"
    print(f"policy {args.version} ({policy.sha256[:12]}) {state}: {len(active)} active tenants notified")
    return 0


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from streams.audit import read_trail, verify
    from streams.kafka.connection import resolve_connection

    public = _public_key(settings, args)
    records = read_trail(resolve_connection(settings), settings.topic_prefix)
    verdict = verify(records, public)
    if not verdict.ok:
        print(f"audit trail BROKEN at record {verdict.bad_seq}: {verdict.reason}")
        print(f"({verdict.bad_seq} records before it verified, {verdict.checkpoints} signed checkpoints)")
        return 1
    tail = f"; the last {verdict.unsigned_tail} await their checkpoint" if verdict.unsigned_tail else ""
    print(f"audit trail intact: {verdict.records} records, {verdict.checkpoints} signed checkpoints{tail}")
    return 0


def _certificate_verify(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from streams.certificate import CertificateInvalid, verify

    public = _public_key(settings, args)
    try:
        document = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ShredlineError(f"certificate: cannot read {args.file} ({exc.strerror})") from None
    except ValueError:
        raise CertificateInvalid() from None
    body = verify(document, public)
    keys = body["keys_destroyed"]
    print(
        f"certificate valid: tenant {body['tenant']} terminated {body['terminated_at']} by {body['operator']}; "
        f"{keys['conversation']} conversation + {keys['contact']} contact keys and the root key destroyed"
    )
    return 0


def _buffer_read(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from streams.buffer_read import read_conversation
    from streams.operators import Session

    ops = Session(settings, "buffer read")
    messages = read_conversation(settings, ops.conn, ops.trail, args.tenant, args.conversation, purpose=args.purpose)
    for m in messages:
        print(
            json.dumps(
                {
                    "at": m["occurred_at"].isoformat(),
                    "direction": m["direction"],
                    "channel": m["channel"],
                    "body": m["body"],
                },
                ensure_ascii=False,
            )
        )
    progress(f"{len(messages)} messages (this read was audited)")
    return 0


def _sink(settings: Settings, args: argparse.Namespace) -> int:
    from analytics.sink import run_sink
    from analytics.warehouse import Warehouse
    from streams.kafka.connection import resolve_connection
    from streams.keys import open_keys

    keys = open_keys(settings, actor="sink")
    warehouse = Warehouse(settings.data_dir / "analytics.duckdb", keys.service_secret("duckdb"))
    try:
        stats = run_sink(
            resolve_connection(settings),
            settings.topic_prefix,
            warehouse,
            batch_size=args.batch_size,
            until_idle_s=args.until_idle,
            progress=progress,
        )
    finally:
        warehouse.close()
    print(
        f"sink: {stats.facts} facts loaded, {stats.duplicates} duplicates skipped, {stats.logs} log lines, "
        f"{stats.skipped} undecodable records skipped"
    )
    return 0


def _analyst_snapshot(settings: Settings, k: int, since: dt.date | None = None) -> duckdb.DuckDBPyConnection:
    from analytics.warehouse import Warehouse
    from streams.keys import open_keys

    path = settings.data_dir / "analytics.duckdb"
    if not path.exists():
        raise ShredlineError(f"analytics: no warehouse at {path}; run `shredline sink` first")
    warehouse = Warehouse(path, open_keys(settings, actor="analyst").service_secret("duckdb"))
    try:
        return warehouse.analyst_snapshot(k, since)
    finally:
        warehouse.close()


def _public_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-key", type=Path, help="provider public key (default <data_dir>/provider-signing.pub)")


def _public_key(settings: Settings, args: argparse.Namespace) -> Ed25519PublicKey:
    from streams.signing import PUBLIC_KEY_FILE, load_public_key

    return load_public_key(args.public_key or settings.data_dir / PUBLIC_KEY_FILE)


def _k_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=_positive, default=5, help="suppress cells counting fewer than K (default 5)")


def _analytics_sql(settings: Settings, args: argparse.Namespace) -> int:
    from analytics.query import render, run_query

    columns, rows = run_query(_analyst_snapshot(settings, args.k), args.sql)
    print(render(columns, rows, args.format))
    return 0


def _analytics_report(settings: Settings, args: argparse.Namespace) -> int:
    from analytics.report import gather, render_html

    now = dt.datetime.now(dt.UTC)
    since = (now - dt.timedelta(seconds=args.since)).date() if args.since else None
    data = gather(_analyst_snapshot(settings, args.k, since))
    out: Path = args.out
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(render_html(data, since, now, args.k), encoding="utf-8")
    partial.replace(out)  # whole or not at all
    days = len(data.volume)
    print(f"report: {out} ({days} days, {len(data.workflows)} workflows, {len(data.tenants)} tenants)")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(settings, progress)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def _utc_time(text: str) -> object:
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO-8601 time such as 2026-11-01T00:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shredline", description="Compliance pipeline: crypto-shredding on Apache Kafka."
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $SHREDLINE_CONFIG)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors (may quote data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="local Apache Kafka (KRaft, TLS) for development and tests")
    kafka_sub = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = kafka_sub.add_parser("up", help="start the local broker (idempotent)")
    up.add_argument(
        "--port", type=int, default=9093, help="client TLS port; a free one is picked if taken (default 9093)"
    )
    up.add_argument("--controller-port", type=int, default=9094, help="KRaft controller port (default 9094)")
    up.set_defaults(run=_kafka_up)
    kafka_sub.add_parser("down", help="stop the broker this data dir started").set_defaults(run=_kafka_down)
    kafka_sub.add_parser("compose", help="write TLS files and server.properties for docker compose").set_defaults(
        run=_kafka_compose
    )
    kafka_sub.add_parser("status", help="say what runs where (exit 3 when stopped)").set_defaults(run=_kafka_status)

    topics = sub.add_parser("topics", help="topic catalog")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_sub.add_parser("apply", help="create missing topics and fix drifted configs").set_defaults(run=_topics_apply)

    gen = sub.add_parser("generate", help="realistic synthetic events as JSON lines on stdout")
    gen.add_argument("--tenants", type=_positive, default=3)
    gen.add_argument("--events", type=_positive, default=1000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--days", type=_positive, default=7, help="span of event times (default 7)")
    gen.add_argument("--start", type=_utc_time, help="first event time, ISO-8601 (default: midnight UTC, DAYS ago)")
    gen.set_defaults(run=_generate)

    pub = sub.add_parser("publish", help="validate JSON lines and publish them to the ingest topics")
    pub.add_argument("file", help="JSON lines file, or - for stdin")
    pub.set_defaults(run=_publish)

    keys = sub.add_parser("keys", help="the key hierarchy")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    keys_sub.add_parser("report", help="keys per tenant and state").set_defaults(run=_keys_report)
    keys_sub.add_parser(
        "rotate-master", help="new master key version; re-wrap every tenant root; retire the old versions"
    ).set_defaults(run=_keys_rotate_master)
    keys_sub.add_parser("expire", help="destroy conversation keys past their TTL now").set_defaults(run=_keys_expire)

    worker = sub.add_parser("worker", help="run the stream processors until SIGTERM")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.add_argument("--unsupervised", action="store_true", help=argparse.SUPPRESS)  # the supervised child
    worker.set_defaults(run=_worker)

    sink = sub.add_parser("sink", help="load metrics and redacted logs into the encrypted DuckDB warehouse")
    sink.add_argument("--until-idle", type=float, metavar="SECONDS", help="exit once caught up and idle that long")
    sink.add_argument("--batch-size", type=_positive, default=5000)
    sink.set_defaults(run=_sink)

    analytics = sub.add_parser("analytics", help="query the anonymised aggregates")
    analytics_sub = analytics.add_subparsers(dest="action", required=True, metavar="ACTION")
    sql = analytics_sub.add_parser("sql", help="one read-only SELECT over the suppressed views")
    sql.add_argument("sql")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _k_option(sql)
    sql.set_defaults(run=_analytics_sql)
    report = analytics_sub.add_parser("report", help="a self-contained HTML report with charts")
    report.add_argument("--since", type=_duration_s, metavar="DURATION", help="only the last DURATION, e.g. 7d")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="where to write (default report.html)")
    _k_option(report)
    report.set_defaults(run=_analytics_report)

    tenant = sub.add_parser("tenant", help="tenant lifecycle")
    tenant_sub = tenant.add_subparsers(dest="action", required=True, metavar="ACTION")
    prov = tenant_sub.add_parser("provision", help="create the tenant's root key")
    prov.add_argument("tenant")
    prov.add_argument("--buffer-ttl", type=_duration_s, default=86_400, help="conversation key TTL (default 24h)")
    prov.add_argument(
        "--reprovision-terminated",
        action="store_true",
        help="bring back a terminated tenant id with a new key generation (its old data stays unreadable)",
    )
    prov.set_defaults(run=_tenant_provision)
    term = tenant_sub.add_parser("terminate", help="shred the tenant: destroy its keys, verify, certify")
    term.add_argument("tenant")
    term.add_argument("--reason", required=True)
    term.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    term.set_defaults(run=_tenant_terminate)
    tenant_sub.add_parser("list", help="tenants: state, keys, buffer TTL, policy accepted").set_defaults(
        run=_tenant_list
    )
    accept = tenant_sub.add_parser("accept-policy", help="record that the tenant accepted a policy version")
    accept.add_argument("tenant")
    accept.add_argument("version")
    accept.set_defaults(run=_tenant_accept_policy)

    policy = sub.add_parser("policy", help="data policy versions")
    policy_sub = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = policy_sub.add_parser("publish", help="record a new policy version and notify every active tenant")
    publish.add_argument("version")
    publish.add_argument("file", type=Path)
    publish.set_defaults(run=_policy_publish)

    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    averify = audit_sub.add_parser("verify", help="walk the chain and name the first bad record")
    _public_key_option(averify)
    averify.set_defaults(run=_audit_verify)

    cert = sub.add_parser("certificate", help="deletion certificates")
    cert_sub = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    cverify = cert_sub.add_parser("verify", help="check a certificate's signature")
    cverify.add_argument("file", type=Path)
    _public_key_option(cverify)
    cverify.set_defaults(run=_certificate_verify)

    buffer = sub.add_parser("buffer", help="the encrypted chat buffer")
    buffer_sub = buffer.add_subparsers(dest="action", required=True, metavar="ACTION")
    read = buffer_sub.add_parser("read", help="decrypt a conversation's recent messages (audited)")
    read.add_argument("tenant")
    read.add_argument("conversation")
    read.add_argument("--purpose", default="support", help="why it is read; recorded in the audit trail")
    read.set_defaults(run=_buffer_read)

    sub.add_parser("demo", help="the whole story on a local broker").set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, args.config)
        code: int = args.run(settings, args)
        return code
    except ShredlineError as exc:
        print(f"shredline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `shredline generate | head`: the reader is done, so are we
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("shredline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A library's message may quote the data it choked on: show only where it happened.
        if args.debug:
            raise
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"shredline: internal error: {type(exc).__name__} at {where} (rerun with --debug)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
