"""The operator's commands: `tenant`, `policy`, `keys`, `audit`, `certificate`, `buffer`.

Every one that changes or reads personal data goes through an audited `Session`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shredline.keystore.ingest import Kem
from shredline.schemas.errors import ShredlineError
from shredline.streams.console import Commands, duration_s, print_table, progress
from shredline.streams.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from shredline.keystore.store import AuditHead


def _keys_report(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import Session

    counts = Session(settings, "keys report", online=False).keys.report()
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
    print_table(header, rows)
    return 0


def _keys_rotate_master(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.keystore.master import rotate
    from shredline.streams.operations.operators import Session

    if settings.master_key is not None:
        raise ShredlineError("master_key: rotation needs a key file; SHREDLINE_MASTER_KEY is set")
    keys = Session(settings, "keys rotate-master", online=False).keys
    rotation = rotate(settings.master_key_path, keys)
    print(
        f"re-wrapped {rotation.roots} tenant root keys under master key v{rotation.version}; "
        f"retired {', '.join(f'v{v}' for v in rotation.retired) or 'nothing'}"
    )
    return 0


def _keys_expire(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import Session

    print(f"destroyed {len(Session(settings, 'keys expire', online=False).keys.expire())} expired conversation keys")
    return 0


def _tenant_provision(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.catalog import MAX_BUFFER_TTL_MS
    from shredline.streams.operations.operators import Session
    from shredline.streams.operations.tenants import provision

    if args.buffer_ttl * 1000 > MAX_BUFFER_TTL_MS:
        raise ShredlineError(f"buffer-ttl: at most {MAX_BUFFER_TTL_MS // 86_400_000}d (the buffer topics' retention)")
    ops = Session(settings, "tenant provision")
    generation = provision(
        ops.keys, ops.conn, ops.trail, args.tenant, args.buffer_ttl, reprovision=args.reprovision_terminated
    )
    print(f"provisioned {args.tenant} (generation {generation}, buffer TTL {args.buffer_ttl}s)")
    return 0


def _tenant_public_key(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.keystore.errors import TenantTerminated
    from shredline.streams.operations.operators import Session
    from shredline.streams.operations.tenants import announce_ingest_keys

    ops = Session(settings, "tenant public-key", online=args.announce)
    try:
        if args.announce:
            public = announce_ingest_keys(ops.keys, ops.conn, ops.trail, args.tenant)
            progress(f"announced on control.tenants: INGEST_KEY for {args.tenant} (generation {public[0].generation})")
        else:
            public = ops.keys.ingest_public_keys(args.tenant)
    except TenantTerminated:
        raise ShredlineError(f"tenant: {args.tenant} is terminated (no ingest public key)") from None
    for key in public:
        if args.kem is None or key.kem.value == args.kem:
            print(key.text())
    return 0


def _tenant_terminate(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import Session
    from shredline.streams.operations.termination import Termination

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
            "  so every buffered message and contact of the tenant, and its unprocessed (sealed) ingest\n"
            "  records, become unreadable everywhere.\n"
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
    from shredline.streams.operations.operators import Session

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
    print_table(header, rows)
    return 0


def _tenant_accept_policy(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from shredline.streams.operations.operators import Session
    from shredline.streams.operations.tenants import announce

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

    from shredline.keystore.store import Policy
    from shredline.streams.operations.operators import Session
    from shredline.streams.operations.tenants import announce

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
    from shredline.streams.acl import AccessRole
    from shredline.streams.kafka.connection import resolve_connection
    from shredline.streams.key_store import audit_anchor
    from shredline.streams.operations.audit import iter_positioned, verify

    public = _public_key(settings, args)
    anchors: dict[str, AuditHead] = {}
    for path in args.certificate:
        anchors[f"certificate {path.name}"] = _certificate_head(path, public)
    anchor = audit_anchor(settings)  # read before the topic, which only grows after it
    if anchor is not None:
        anchors["the key store's anchor"] = anchor
    verdict = verify(
        iter_positioned(resolve_connection(settings, AccessRole.OPERATOR), settings.topic_prefix), public, anchors
    )
    if not verdict.ok:
        for n, finding in enumerate(verdict.findings[:10]):
            where = "" if finding.offset is None else f" at offset {finding.offset}"
            print(f"{'audit trail BROKEN' if n == 0 else '  also'}{where}: {finding.reason}")
        if len(verdict.findings) > 10:
            print(f"  and {len(verdict.findings) - 10} more")
        print(f"({verdict.summary})")
        return 1
    reached = " and ".join(f"{name} (seq {head.seq})" for name, head in anchors.items())
    against = f"; reaches {reached}" if anchors else ""
    cut = "" if anchor is not None else "; no key store anchor here, so a cut tail shows only against --certificate"
    print(f"audit trail intact: {verdict.summary}{against}{cut}")
    return 0


def _read_certificate(path: Path, public: Ed25519PublicKey) -> dict[str, Any]:
    """A certificate file's body, once it is in its one byte form and its signature verifies."""
    from shredline.streams.operations.certificate import load, verify

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ShredlineError(f"certificate: cannot read {path} ({exc.strerror})") from None
    return verify(load(data), public)


def _certificate_head(path: Path, public: Ed25519PublicKey) -> AuditHead:
    """The audit head a certificate carries, once its signature verifies."""
    from shredline.keystore.store import AuditHead

    body = _read_certificate(path, public)
    try:
        return AuditHead(int(body["audit_head"]["seq"]), bytes.fromhex(body["audit_head"]["hash"]))
    except (KeyError, TypeError, ValueError):
        raise ShredlineError(f"certificate {path.name}: carries no audit head (issued before they had one)") from None


def _certificate_verify(settings: Settings, args: argparse.Namespace) -> int:
    body = _read_certificate(args.file, _public_key(settings, args))
    keys = body["keys_destroyed"]
    print(
        f"certificate valid: tenant {body['tenant']} terminated {body['terminated_at']} by {body['operator']}; "
        f"{keys['conversation']} conversation + {keys['contact']} contact keys and the root key destroyed"
    )
    return 0


def _buffer_read(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from shredline.streams.operations.buffer_read import read_conversation
    from shredline.streams.operations.operators import Session

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


def _operators_change(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import change_allow_list

    allowed = args.action == "allow"
    changed, listed = change_allow_list(settings, args.principal, allowed)
    state = ("allowed" if allowed else "revoked") if changed else ("already allowed" if allowed else "was not listed")
    print(f"{args.principal} {state}; operators: {', '.join(listed) or 'no allow-list (the operator role)'}")
    return 0


def _operators_list(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import allow_list

    listed = allow_list(settings)
    operator = settings.principal_format.format(role="operator")
    print("\n".join(listed) if listed else f"no allow-list: the operator role's principal ({operator}) operates")
    return 0


def _public_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-key", type=Path, help="provider public key (default <data_dir>/provider-signing.pub)")


def _public_key(settings: Settings, args: argparse.Namespace) -> Ed25519PublicKey:
    from shredline.streams.operations.signing import PUBLIC_KEY_FILE, load_public_key

    return load_public_key(args.public_key or settings.data_dir / PUBLIC_KEY_FILE)


def register(sub: Commands) -> None:
    keys = sub.add_parser("keys", help="the key hierarchy")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    keys_sub.add_parser("report", help="keys per tenant and state").set_defaults(run=_keys_report)
    keys_sub.add_parser(
        "rotate-master", help="new master key version; re-wrap every tenant root; retire the old versions"
    ).set_defaults(run=_keys_rotate_master)
    keys_sub.add_parser("expire", help="destroy conversation keys past their TTL now").set_defaults(run=_keys_expire)

    tenant = sub.add_parser("tenant", help="tenant lifecycle")
    tenant_sub = tenant.add_subparsers(dest="action", required=True, metavar="ACTION")
    prov = tenant_sub.add_parser("provision", help="create the tenant's root key")
    prov.add_argument("tenant")
    prov.add_argument("--buffer-ttl", type=duration_s, default=86_400, help="conversation key TTL (default 24h)")
    prov.add_argument(
        "--reprovision-terminated",
        action="store_true",
        help="bring back a terminated tenant id with a new key generation (its old data stays unreadable)",
    )
    prov.set_defaults(run=_tenant_provision)
    pub = tenant_sub.add_parser(
        "public-key", help="the tenant's ingest public keys (HPKE), one line each, for upstream to seal to"
    )
    pub.add_argument("tenant")
    pub.add_argument("--kem", choices=[k.value for k in Kem], help="only this KEM's key (default: all)")
    pub.add_argument(
        "--announce",
        action="store_true",
        help="also announce them on control.tenants (INGEST_KEY), e.g. for a tenant provisioned before sealed ingest",
    )
    pub.set_defaults(run=_tenant_public_key)
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
    averify = audit_sub.add_parser(
        "verify", help="walk the chain; name every record the provider did not write, every gap, a cut tail"
    )
    averify.add_argument(
        "--certificate",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a deletion certificate whose audit head must be on the chain (repeatable)",
    )
    _public_key_option(averify)
    averify.set_defaults(run=_audit_verify)

    cert = sub.add_parser("certificate", help="deletion certificates")
    cert_sub = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    cverify = cert_sub.add_parser("verify", help="check a certificate's signature")
    cverify.add_argument("file", type=Path)
    _public_key_option(cverify)
    cverify.set_defaults(run=_certificate_verify)

    operators = sub.add_parser("operators", help="the operator allow-list (changed by admin only)")
    operators_sub = operators.add_subparsers(dest="action", required=True, metavar="ACTION")
    for verb, text in (("allow", "add an operator principal"), ("revoke", "remove an operator principal")):
        change = operators_sub.add_parser(verb, help=f"{text}; the broker's ACLs follow (admin certificate)")
        change.add_argument("principal", help="User:<certificate CN>")
        change.set_defaults(run=_operators_change)
    operators_sub.add_parser("list", help="the allow-listed operator principals").set_defaults(run=_operators_list)

    buffer = sub.add_parser("buffer", help="the encrypted chat buffer")
    buffer_sub = buffer.add_subparsers(dest="action", required=True, metavar="ACTION")
    read = buffer_sub.add_parser("read", help="decrypt a conversation's recent messages (audited)")
    read.add_argument("tenant")
    read.add_argument("conversation")
    read.add_argument("--purpose", default="support", help="why it is read; recorded in the audit trail")
    read.set_defaults(run=_buffer_read)
