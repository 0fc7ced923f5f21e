"""The ACL table and its planner (pure), and how a connection picks its role's certificate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shredline.processors.roles import Role
from shredline.streams.acl import (
    FAUST_TOPICS,
    GRANTS,
    AccessRole,
    Binding,
    Group,
    Op,
    bindings,
    default_principals,
    owned_patterns,
    plan,
    principal_of_subject,
    principals_with_operators,
)
from shredline.streams.catalog import CATALOG, topic_name
from shredline.streams.errors import ConfigError
from shredline.streams.kafka.connection import client_environment, resolve_connection, role_cert, role_key
from shredline.streams.launcher.certs import ensure_tls
from shredline.streams.settings import Settings

PRINCIPALS = default_principals()


def granted(role: AccessRole, topic: Role, op: Op, prefix: str = "env") -> bool:
    return Binding(f"User:{role.value}", "TOPIC", topic_name(prefix, topic), "LITERAL", op) in bindings(
        prefix, PRINCIPALS
    )


def test_every_grant_names_a_catalog_topic_a_group_or_fausts_topics() -> None:
    known = {s.role.value for s in CATALOG} | {g.value for g in Group} | {FAUST_TOPICS}
    assert {g.name for g in GRANTS} <= known
    assert not [g for g in GRANTS if g.role is AccessRole.ADMIN]  # a super user: no binding


def test_every_binding_lives_under_the_prefix_so_environments_can_share_a_cluster() -> None:
    staging, prod = bindings("staging", PRINCIPALS), bindings("prod", PRINCIPALS)
    assert all(b.name.startswith("staging.") for b in staging)
    assert not {b.name for b in staging} & {b.name for b in prod}
    assert {b.name for b in bindings("", PRINCIPALS)} >= {s.role.value for s in CATALOG}


def test_only_the_relays_roles_may_write_the_audit_trail_and_only_operators_control() -> None:
    writers = {r for r in AccessRole if granted(r, Role.AUDIT_EVENTS, Op.WRITE)}
    assert writers == {AccessRole.WORKER, AccessRole.OPERATOR}
    assert {r for r in AccessRole if granted(r, Role.CONTROL_TENANTS, Op.WRITE)} == {AccessRole.OPERATOR}


def test_upstream_only_publishes_ingest_and_reads_the_control_topic() -> None:
    mine = {b for b in bindings("env", PRINCIPALS) if b.principal == "User:upstream"}
    assert {(b.op, b.name) for b in mine if b.resource == "TOPIC"} == {
        ("WRITE", "env.ingest.messages"),
        ("WRITE", "env.ingest.contacts"),
        ("WRITE", "env.ingest.executions"),
        ("READ", "env.control.tenants"),
    }


def test_the_allow_list_holds_the_operator_role_instead_of_the_default_principal() -> None:
    principals = principals_with_operators(PRINCIPALS, ["User:bob", "User:alice", "User:bob"])
    assert principals[AccessRole.OPERATOR] == ("User:alice", "User:bob")
    operators = {b.principal for b in bindings("env", principals) if b.op == "WRITE" and "control" in b.name}
    assert operators == {"User:alice", "User:bob"}
    assert principals_with_operators(PRINCIPALS, []) == PRINCIPALS


def test_plan_creates_what_is_missing_and_deletes_what_the_table_no_longer_says() -> None:
    desired = bindings("env", PRINCIPALS)
    kept, dropped = sorted(desired)[1:], sorted(desired)[0]
    stale = Binding("User:mallory", "TOPIC", "env.audit.events", "LITERAL", "WRITE")
    deny = Binding("User:worker", "TOPIC", "env.ingest.messages", "LITERAL", "READ", permission="DENY")
    changes = plan(desired, [*kept, stale, deny])
    assert changes.create == (dropped,)
    assert set(changes.delete) == {stale, deny}
    assert not plan(desired, desired)
    assert ("TOPIC", "env.shredline-worker-timers-", "PREFIXED") in owned_patterns("env")
    # what earlier versions granted is still owned, so `acl apply` removes it after an upgrade
    assert ("GROUP", "env.shredline-worker-view", "LITERAL") in owned_patterns("env")
    assert ("TOPIC", "env.shredline-worker-view-buffer-view-changelog", "LITERAL") in owned_patterns("env")
    old = Binding("User:worker", "GROUP", "env.shredline-worker-view", "LITERAL", "READ")
    assert plan(desired, [*desired, old]).delete == (old,)
    assert ("TOPIC", "other.audit.events", "LITERAL") not in owned_patterns("env")


@pytest.mark.parametrize(
    ("subject", "principal"),
    [
        ("CN=worker,O=Shredline local", "User:worker"),
        ("CN=alice", "User:alice"),
        ("O=Acme,CN=bob", "User:O=Acme,CN=bob"),  # Kafka's DEFAULT rule: the whole DN
    ],
)
def test_the_principal_is_the_common_name_as_the_broker_maps_it(subject: str, principal: str) -> None:
    assert principal_of_subject(subject) == principal


def test_the_faust_topics_in_the_table_are_the_ones_the_worker_app_creates() -> None:
    from shredline.streams.kafka.trim import timers_app_id

    assert f"{timers_app_id(Settings(topic_prefix='env'))}-" == topic_name("env", FAUST_TOPICS)


def test_only_operators_read_the_buffer_and_nobody_but_the_worker_writes_it() -> None:
    for topic in (Role.BUFFER_MESSAGES, Role.BUFFER_CONTACTS):
        assert {r for r in AccessRole if granted(r, topic, Op.READ)} == {AccessRole.OPERATOR}
        assert {r for r in AccessRole if granted(r, topic, Op.WRITE)} == {AccessRole.WORKER}


# -- connections: which certificate a command presents -------------------------------------------
def _local_broker(data_dir: Path) -> Path:
    tls = ensure_tls(data_dir / "kafka" / "tls")
    state = {"bootstrap": "127.0.0.1:19093", "ca": str(tls.ca), "credentials": str(tls.credentials)}
    (data_dir / "kafka" / "state.json").write_text(json.dumps(state))
    return tls.credentials


def test_each_role_gets_its_own_certificate_from_the_local_broker(tmp_path: Path) -> None:
    credentials = _local_broker(tmp_path)
    settings = Settings(data_dir=tmp_path)
    for role in AccessRole:
        conn = resolve_connection(settings, role)
        assert (conn.cert, conn.key) == (role_cert(credentials, role), role_key(credentials, role))
        assert conn.principal() == f"User:{role.value}"
    env = client_environment(resolve_connection(settings, AccessRole.ADMIN), tmp_path / "child", "p", {})
    assert env["SHREDLINE_TLS_CREDENTIALS"] == str(credentials)
    assert "SHREDLINE_TLS_CERT" not in env  # the child picks its own role, not admin's


def test_an_explicit_certificate_wins_over_per_role_credentials(tmp_path: Path) -> None:
    credentials = _local_broker(tmp_path)
    own = Settings(
        data_dir=tmp_path,
        bootstrap="kafka.example:9093",
        tls_cert=role_cert(credentials, AccessRole.SINK),
        tls_key=role_key(credentials, AccessRole.SINK),
        tls_credentials=credentials,
    )
    assert resolve_connection(own, AccessRole.OPERATOR).principal() == "User:sink"
    directory = Settings(data_dir=tmp_path, bootstrap="kafka.example:9093", tls_credentials=credentials)
    assert resolve_connection(directory, AccessRole.WORKER).principal() == "User:worker"
    with pytest.raises(ConfigError, match="no client certificate"):
        resolve_connection(Settings(data_dir=tmp_path, bootstrap="kafka.example:9093"), AccessRole.SINK).principal()


def test_an_operator_command_without_a_certificate_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shredline.streams.cli import main

    for name in [n for n in os.environ if n.startswith("SHREDLINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SHREDLINE_DATA_DIR", str(tmp_path / "data"))
    assert main(["tenant", "list"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "shredline: error: tls_cert: no client certificate to tell who you are; set SHREDLINE_TLS_CERT or "
        "SHREDLINE_TLS_CREDENTIALS, or run `shredline kafka up`"
    ]
    monkeypatch.setenv("SHREDLINE_OPERATOR", "alice")  # the honour system is gone, and says so
    assert main(["tenant", "list"]) == 2
    assert "SHREDLINE_OPERATOR is no longer read" in capsys.readouterr().err


def test_the_readmes_table_of_roles_is_the_acl_table() -> None:
    from shredline.streams.acl import describe_role

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8").splitlines()
    for role in AccessRole:
        row = next((line for line in readme if line.startswith(f"| `{role.value}` |")), None)
        assert row is not None, f"README: no row for {role.value}"
        assert row.endswith(f"| {describe_role(role)} |"), f"README: the row of {role.value} drifted from GRANTS"
