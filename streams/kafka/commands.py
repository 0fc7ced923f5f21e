"""`shredline topics apply` and `shredline acl apply / list`: the topic catalog and the ACL table
onto the broker (both with the `admin` certificate)."""

from __future__ import annotations

import argparse

from shredline.streams.acl import AccessRole, Binding, Pattern, bindings, role_of
from shredline.streams.console import Commands, print_table
from shredline.streams.settings import Settings


def _topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.kafka.admin import apply_catalog
    from shredline.streams.kafka.connection import resolve_connection

    conn = resolve_connection(settings, AccessRole.ADMIN)
    changes = apply_catalog(conn, settings.topic_prefix, settings.replication_factor)
    if not changes:
        print("topics: nothing to change")
        return 0
    width = max(len(c.topic) for c in changes)
    print(f"{'TOPIC':<{width}}  {'ACTION':<10}  DETAIL")
    for c in changes:
        print(f"{c.topic:<{width}}  {c.kind:<10}  {c.detail}")
    return 0


def _acl_apply(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.kafka.acls import apply_acls
    from shredline.streams.kafka.connection import resolve_connection
    from shredline.streams.operations.operators import role_principals

    principals = role_principals(settings)
    changes = apply_acls(resolve_connection(settings, AccessRole.ADMIN), settings.topic_prefix, principals)
    if not changes:
        print("acl: nothing to change")
        return 0
    rows = [("create", *_columns(b)) for b in changes.create] + [("delete", *_columns(b)) for b in changes.delete]
    print_table(("ACTION", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME"), rows)
    return 0


def _acl_list(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.operations.operators import role_principals

    principals = role_principals(settings)
    desired = bindings(settings.topic_prefix, principals)
    state = dict.fromkeys(desired, "")
    if not args.offline:
        from shredline.streams.kafka.acls import describe_owned
        from shredline.streams.kafka.admin import admin_client
        from shredline.streams.kafka.connection import resolve_connection

        found = set(describe_owned(admin_client(resolve_connection(settings, AccessRole.ADMIN)), settings.topic_prefix))
        state = {b: "ok" if b in found else "missing" for b in desired}
        state.update({b: "not in the table" for b in found - desired})
    order = list(AccessRole)

    def key(b: Binding) -> tuple[int, Binding]:
        role = role_of(b.principal, principals)
        return (order.index(role) if role else len(order), b)

    rows = []
    for b in sorted(state, key=key):
        role = role_of(b.principal, principals)
        rows.append((role.value if role else "-", *_columns(b), *([] if args.offline else [state[b]])))
    header = ("ROLE", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME", *([] if args.offline else ["STATE"]))
    print_table(header, rows)
    print(f"admin ({principals[AccessRole.ADMIN][0]}) is a super user of the broker and needs no binding")
    return 1 if any(s in {"missing", "not in the table"} for s in state.values()) else 0


def _columns(b: Binding) -> tuple[str, str, str, str]:
    """PRINCIPAL, OPERATION, RESOURCE, NAME (a prefixed pattern ends in `*`)."""
    verb = b.op if b.permission == "ALLOW" else f"{b.permission} {b.op}"
    name = b.name + ("*" if b.pattern == Pattern.PREFIXED else "") + ("" if b.host == "*" else f" from {b.host}")
    return b.principal, verb, b.resource.lower(), name


def register(sub: Commands) -> None:
    topics = sub.add_parser("topics", help="topic catalog")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_sub.add_parser("apply", help="create missing topics and fix drifted configs").set_defaults(run=_topics_apply)

    acl = sub.add_parser("acl", help="who may do what on the broker (the ACL table)")
    acl_sub = acl.add_subparsers(dest="action", required=True, metavar="ACTION")
    acl_sub.add_parser("apply", help="create missing ACLs, delete ours not in the table (admin)").set_defaults(
        run=_acl_apply
    )
    listing = acl_sub.add_parser("list", help="the table's ACLs per role, and whether the broker has them")
    listing.add_argument("--offline", action="store_true", help="only the table: what to grant on your own cluster")
    listing.set_defaults(run=_acl_list)
