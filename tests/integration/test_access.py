"""Least privilege on a real broker (StandardAuthorizer, one certificate per role): the matrix of
who may produce, consume and delete records on every topic, `acl apply`, operators identified by
their certificate, the admin-only allow-list, and the whole pipeline run with role certificates."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from shredline.streams.acl import FAUST_TOPICS, AccessRole, Group, bindings, default_principals
from shredline.streams.catalog import CATALOG, topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.acls import describe_owned
from shredline.streams.kafka.admin import admin_client, apply_catalog
from shredline.streams.kafka.connection import Connection, client_environment, role_cert, role_key
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import Launcher
from shredline.streams.operations.audit import read_trail, record_hash
from shredline.streams.settings import Settings
from tests.conftest import Broker, wait_for, wait_worker_caught_up
from tests.integration.test_worker import Worker, cli

pytestmark = pytest.mark.kafka
UPSTREAM, WORKER, SINK = AccessRole.UPSTREAM, AccessRole.WORKER, AccessRole.SINK
OPERATOR, ADMIN = AccessRole.OPERATOR, AccessRole.ADMIN
FAUST = "a Faust topic of the worker's timers app"
INGEST = ("ingest.messages", "ingest.contacts", "ingest.executions")

#: What each role may do on each topic: p = produce, c = consume, d = delete records. Written out
#: here, not derived from the table, so the table cannot vouch for itself. Admin is a super user.
ALLOWED: dict[AccessRole, dict[str, str]] = {
    UPSTREAM: {**dict.fromkeys(INGEST, "p"), "control.tenants": "c"},
    WORKER: {
        **dict.fromkeys(INGEST, "pcd"),  # split, segment-roll markers, trim
        "buffer.messages": "p",  # sealed messages; `buffer read` (operators) reads them
        "buffer.contacts": "p",
        "metrics.usage": "p",
        "logs.executions": "p",
        "deadletter.ingest": "p",
        "control.tenants": "c",
        "audit.events": "pc",
        FAUST: "pc",
    },
    SINK: dict.fromkeys(("metrics.usage", "logs.executions", "control.tenants", "audit.events"), "c"),
    OPERATOR: {
        **dict.fromkeys(INGEST, "pcd"),  # termination: count the sealed backlog, trim, markers
        "buffer.messages": "c",  # buffer read, termination's verify samples
        "buffer.contacts": "c",
        "control.tenants": "p",
        "audit.events": "pc",
    },
    ADMIN: dict.fromkeys([*(s.role.value for s in CATALOG), FAUST], "pcd"),
}
#: The consumer group each role reads with (DESCRIBE granted); admin may use any.
HOME_GROUP = {
    UPSTREAM: Group.UPSTREAM,
    WORKER: Group.AUDIT_READER,
    SINK: Group.SINK,
    OPERATOR: Group.VERIFY,
    ADMIN: Group.VERIFY,
}
REFUSED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def can_produce(conn: Connection, topic: str) -> bool:
    """One record with the idempotent producer every Shredline writer uses (acks=all). Without
    WRITE on any topic the broker refuses even the producer id (a fatal error; the record is purged)."""
    delivered: list[KafkaError | None] = []
    fatal: list[KafkaError] = []
    producer = Producer(
        conn.confluent(**{"enable.idempotence": True, "acks": "all", "log_level": 0, "error_cb": fatal.append})
    )
    try:
        producer.produce(topic, b"matrix", key=b"k", on_delivery=lambda err, _m: delivered.append(err))
        producer.flush(30)
    except (KafkaException, SystemError) as exc:  # the fatal error, raised (see kafka/produce.py)
        fatal.append((exc if isinstance(exc, KafkaException) else exc.__cause__).args[0])  # type: ignore[union-attr]
    err = delivered[0] if delivered else None
    if not delivered or (err is not None and err.code() == KafkaError._PURGE_QUEUE):
        err = next(e for e in fatal if e.fatal())
    if err is not None:
        assert err.code() in REFUSED, err
    return err is None


def can_consume(conn: Connection, topic: str, group: str) -> bool:
    """Reads the seeded record from the start, or is told the topic is not authorised."""
    consumer = Consumer(conn.confluent(**{"group.id": group, "enable.auto.commit": False, "log_level": 0}))
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        if meta.error is not None:  # not even DESCRIBE: the broker leaves the topic out
            assert meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, meta.error
            return False
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in consumer.consume(10, 0.5):
                err = msg.error()
                if err is None:
                    return True
                assert err.code() in REFUSED, err
                return False
        raise AssertionError(f"{topic}: no verdict on consume")
    finally:
        consumer.close()


def can_delete_records(conn: Connection, topic: str) -> bool:
    """DeleteRecords below offset 0: deletes nothing, but the broker checks DELETE first. Without
    DESCRIBE (which DELETE implies) the broker hides the topic and the client finds no leader."""
    admin = admin_client(conn)  # keep a reference: a collected client never completes its futures
    meta = admin.list_topics(topic, timeout=30).topics[topic]
    if meta.error is not None:
        assert meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, meta.error
        return False
    future = admin.delete_records([TopicPartition(topic, 0, 0)])
    try:
        next(iter(future.values())).result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.POLICY_VIOLATION:  # authorised; but a compacted topic cannot
            return True
        assert exc.args[0].code() in REFUSED, exc
        return False
    return True


def test_every_role_may_do_exactly_its_cells_on_every_topic(broker: Broker, topic_prefix: str) -> None:
    if broker.connection.credentials is None:
        pytest.skip("one certificate for every role: nothing to tell apart")
    apply_catalog(broker.connection, topic_prefix, 1)
    topics = {spec.role.value: topic_name(topic_prefix, spec.role) for spec in CATALOG}
    topics[FAUST] = topic_name(topic_prefix, f"{FAUST_TOPICS}__assignor-__leader")  # Faust creates it; here, admin
    from confluent_kafka.admin import NewTopic

    admin = admin_client(broker.connection)
    admin.create_topics([NewTopic(topics[FAUST], 1, 1)])[topics[FAUST]].result(timeout=30)
    produce_and_wait(broker.connection, [Record(t, b"seed", key=b"k", partition=0) for t in topics.values()], "seeds")
    broker.grant(topic_prefix)

    def cells(role: AccessRole) -> dict[str, str]:
        conn, group = broker.role(role), topic_name(topic_prefix, HOME_GROUP[role])
        out = {}
        for logical, topic in topics.items():
            done = "p" if can_produce(conn, topic) else ""
            done += "c" if can_consume(conn, topic, group) else ""
            done += "d" if can_delete_records(conn, topic) else ""
            if done:
                out[logical] = done
        return out

    with ThreadPoolExecutor(len(AccessRole)) as pool:  # roles in parallel; each one's cells in order
        seen = dict(zip(AccessRole, pool.map(cells, AccessRole), strict=True))
    assert seen == ALLOWED


def test_a_forged_audit_record_is_refused_to_every_role_but_the_relays(broker: Broker, topic_prefix: str) -> None:
    """The deletion-evidence forgery: a well-formed audit record appended with a certificate that is
    not the relay's (worker, operator) is refused by the broker, and the trail stays empty."""
    if broker.connection.credentials is None:
        pytest.skip("one certificate for every role")
    apply_catalog(broker.connection, topic_prefix, 1)
    broker.grant(topic_prefix)
    forged = {
        "seq": 0,
        "at": dt.datetime.now(dt.UTC),
        "actor": "mallory",
        "action": "tenant.terminate.certificate",
        "tenant": "acme",
        "subject": None,
        "details": {},
        "prev_hash": bytes(32),
        "signature": None,
    }
    forged["hash"] = record_hash(forged)
    record = Record(topic_name(topic_prefix, Role.AUDIT_EVENTS), encode("audit_event", forged), partition=0)
    for role in (UPSTREAM, SINK):
        with pytest.raises(
            KafkaOperationError, match=r"^forgery: not written \(.*(TOPIC|CLUSTER)_AUTHORIZATION_FAILED"
        ):
            produce_and_wait(broker.role(role), [record], "forgery")
    assert read_trail(broker.connection, topic_prefix) == []


def as_role(env: dict[str, str], credentials: Path | None, role: AccessRole) -> dict[str, str]:
    """`env` with one role's certificate set explicitly, as a user holding only that one would run."""
    assert credentials is not None
    return {
        **env,
        "SHREDLINE_TLS_CERT": str(role_cert(credentials, role)),
        "SHREDLINE_TLS_KEY": str(role_key(credentials, role)),
    }


def _acl_env(broker: Broker, prefix: str, data_dir: Path) -> dict[str, str]:
    """Like `client_env`, but without granting the prefix first."""
    return client_environment(broker.connection, data_dir, prefix, os.environ)


def test_acl_apply_creates_then_has_nothing_to_do_and_removes_what_the_table_does_not_say(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    if broker.connection.credentials is None:
        pytest.skip("needs the admin credentials")
    env = _acl_env(broker, topic_prefix, tmp_path)
    started = time.monotonic()
    first = cli(env, "acl", "apply")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    desired = bindings(topic_prefix, default_principals())
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["ACTION", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME"]
    assert len(lines) - 1 == len(desired) and all(line.startswith("create") for line in lines[1:])
    print(f"acl apply: {len(desired)} bindings in {took:.2f} s (process start included)")

    again = cli(env, "acl", "apply")
    assert again.returncode == 0 and again.stdout.strip() == "acl: nothing to change"

    admin = admin_client(broker.connection)
    audit = topic_name(topic_prefix, Role.AUDIT_EVENTS)
    elsewhere = f"{topic_prefix}x.audit.events"  # another environment's topic: not ours
    extra = [
        AclBinding(ResourceType.TOPIC, name, ResourcePatternType.LITERAL, "User:mallory", "*", AclOperation.WRITE, p)
        for name, p in ((audit, AclPermissionType.ALLOW), (elsewhere, AclPermissionType.ALLOW))
    ]
    for fut in admin.create_acls(extra).values():
        fut.result(timeout=30)
    wait_for(lambda: len(describe_owned(admin, topic_prefix)) == len(desired) + 1, 30, "the stale binding to show")
    listed = cli(env, "acl", "list")
    assert listed.returncode == 1  # the broker holds a binding the table does not say
    assert any(
        line.split()[:2] == ["-", "User:mallory"] and "not in the table" in line for line in listed.stdout.splitlines()
    )
    fixed = cli(env, "acl", "apply")
    assert fixed.stdout.splitlines()[1:] == [f"delete  User:mallory  WRITE      topic     {audit}"]
    listed = cli(env, "acl", "list")
    assert listed.returncode == 0 and " missing" not in listed.stdout
    assert [b.principal for b in describe_owned(admin, f"{topic_prefix}x")] == ["User:mallory"]

    as_operator = as_role(env, broker.connection.credentials, OPERATOR)
    refused = cli(as_operator, "acl", "apply")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "shredline: error: creating ACLs: refused by the broker (CLUSTER_AUTHORIZATION_FAILED for User:operator)"
    ]


def provisioned_acme(broker: Broker, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a prefix with its catalog, ACLs and tenant `acme` (skips with one
    certificate for every role: there is nothing to tell apart)."""
    if broker.connection.credentials is None:
        pytest.skip("one certificate for every role")
    apply_catalog(broker.connection, topic_prefix, 1)
    env = broker.client_env(topic_prefix, tmp_path)
    assert cli(env, "tenant", "provision", "acme").returncode == 0
    return env


def test_an_operator_command_with_the_upstream_certificate_is_refused_and_audited(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    env = provisioned_acme(broker, topic_prefix, tmp_path)
    as_upstream = as_role(env, broker.connection.credentials, UPSTREAM)
    refused = cli(as_upstream, "tenant", "terminate", "acme", "--reason", "x", "--yes")
    assert refused.returncode == 77
    assert refused.stderr.splitlines() == [
        "shredline: error: tenant terminate: User:upstream is refused: operator commands need the operator "
        "certificate (User:operator); the attempt was audited"
    ]
    assert open_keys(Settings(data_dir=tmp_path)).store.tenant("acme").state == "active"  # type: ignore[union-attr]
    # The refusal waits in the outbox (upstream cannot write the trail); the next relay carries it.
    assert cli(env, "tenant", "provision", "other").returncode == 0
    trail = read_trail(broker.connection, topic_prefix)
    refusals = [r for r in trail if r["action"] == "operator.refused"]
    assert [(r["actor"], r["details"]["command"]) for r in refusals] == [("User:upstream", "tenant terminate")]
    commands = [(r["actor"], r["details"]["command"]) for r in trail if r["action"] == "operator.command"]
    assert commands == [("User:operator", "tenant provision")] * 2
    provisioned = next(r for r in trail if r["action"] == "tenant.provision")
    assert provisioned["actor"] == "User:operator"


def test_a_buffer_read_the_broker_refuses_fails_in_one_line_and_never_reads_as_empty(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    env = provisioned_acme(broker, topic_prefix, tmp_path)
    as_operator = as_role(env, broker.connection.credentials, OPERATOR)
    allowed = cli(as_operator, "buffer", "read", "acme", "conv-1", "--purpose", "control")
    assert allowed.returncode == 0, allowed.stderr  # the same read, allowed: nothing held yet
    buffer = topic_name(topic_prefix, Role.BUFFER_MESSAGES)
    revoke = AclBindingFilter(
        ResourceType.TOPIC,
        buffer,
        ResourcePatternType.LITERAL,
        "User:operator",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    admin = admin_client(broker.connection)
    for fut in admin.delete_acls([revoke]).values():
        assert fut.result(timeout=30)  # one binding deleted

    def read() -> subprocess.CompletedProcess[str]:
        return cli(as_operator, "buffer", "read", "acme", "conv-1", "--purpose", "refused")

    # The controller has committed the deletion; the broker's authorizer applies it a moment later.
    wait_for(lambda: read().returncode != 0, 30, "the broker to enforce the revoked READ")
    refused = read()
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"shredline: error: buffer read: {buffer}: refused by the broker (TOPIC_AUTHORIZATION_FAILED for User:operator)"
    ]


def test_the_allow_list_is_changed_by_admin_only_and_the_broker_follows_it(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    if broker.connection.credentials is None:
        pytest.skip("one certificate for every role")
    apply_catalog(broker.connection, topic_prefix, 1)
    env = broker.client_env(topic_prefix, tmp_path)
    credentials = broker.connection.credentials
    as_operator = as_role(env, credentials, OPERATOR)
    denied = cli(as_operator, "operators", "allow", "User:operator")
    assert denied.returncode == 77
    assert "User:operator is refused: admin commands need the admin certificate (User:admin)" in denied.stderr
    assert cli(env, "operators", "list").stdout.startswith("no allow-list")

    allowed = cli(env, "operators", "allow", "User:alice")  # run as admin: the command needs that role
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "User:alice allowed; operators: User:alice"
    assert cli(env, "operators", "list").stdout.split() == ["User:alice"]
    # The operator certificate is no operator now: refused by the command and by the broker.
    refused = cli(env, "tenant", "provision", "acme")
    assert refused.returncode == 77 and "User:operator is refused: not on the operator allow-list" in refused.stderr
    control = topic_name(topic_prefix, Role.CONTROL_TENANTS)
    with pytest.raises(Exception, match="TOPIC_AUTHORIZATION_FAILED"):
        produce_and_wait(broker.role(OPERATOR), [Record(control, b"x")], "control by a revoked operator")
    granted = {b.principal for b in describe_owned(admin_client(broker.connection), topic_prefix)}
    assert "User:alice" in granted and "User:operator" not in granted

    revoked = cli(env, "operators", "revoke", "User:alice")
    assert revoked.returncode == 0 and "no allow-list" in revoked.stdout
    assert cli(env, "tenant", "provision", "acme").returncode == 0
    actions = [(r["actor"], r["action"]) for r in read_trail(broker.connection, topic_prefix)]
    assert ("User:admin", "operators.allow") in actions and ("User:admin", "operators.revoke") in actions
    assert ("User:operator", "operator.refused") in actions


def test_kafka_credentials_prints_each_roles_settings(broker: Broker) -> None:
    if broker.settings.bootstrap:
        pytest.skip("external broker: the launcher is not in charge")
    shell = cli(broker.env(), "kafka", "credentials", "sink")
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[0] == "# sink: the broker sees User:sink"
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines[1:])
    credentials = broker.connection.credentials
    assert credentials is not None
    assert exports["SHREDLINE_TLS_CERT"] == str(role_cert(credentials, SINK))
    assert exports["SHREDLINE_TLS_KEY"] == str(role_key(credentials, SINK))
    assert exports["SHREDLINE_BOOTSTRAP"] == broker.connection.bootstrap
    as_json = json.loads(cli(broker.env(), "kafka", "credentials", "operator", "--json").stdout)
    assert as_json["principal"] == "User:operator"
    assert as_json["SHREDLINE_TLS_KEY"] == str(role_key(credentials, OPERATOR))


def _denials(broker: Broker, prefix: str) -> list[str]:
    """The broker's authorizer log lines refusing anything under `prefix`."""
    state = Launcher(broker.settings).running()
    assert state is not None
    text = Path(state.log).read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if " is Denied " in line and f":{prefix}." in line]


@pytest.mark.timeout(600)
def test_the_pipeline_runs_end_to_end_with_role_certificates_only(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    """Every command a child process with the credentials directory only (no shared certificate):
    admin applies, upstream publishes, the worker and the sink run, every operator command works,
    and the broker refuses nothing on the way."""
    if broker.settings.bootstrap:
        pytest.skip("external broker: its log is not ours to read")
    env = _acl_env(broker, topic_prefix, tmp_path)
    assert "SHREDLINE_TLS_CERT" not in env and env["SHREDLINE_TLS_CREDENTIALS"]

    def ok(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "shredline.streams.cli", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result

    ok("topics", "apply")
    ok("acl", "apply")
    events = ok("generate", "--tenants", "2", "--events", "300", "--seed", "7", "--days", "1").stdout
    tenants = sorted({json.loads(line)["tenant"] for line in events.splitlines()})
    for tenant in tenants:
        ok("tenant", "provision", tenant)
    ok("publish", "-", stdin=events)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_worker_caught_up(broker.connection, topic_prefix, 240, "the worker")
        messages = [e for line in events.splitlines() if (e := json.loads(line))["type"] == "message"]
        closed = {e["conversation_id"] for e in messages if e["closes_conversation"]}
        tenant, conversation = next(
            (e["tenant"], e["conversation_id"]) for e in messages if e["conversation_id"] not in closed
        )
        read = ("buffer", "read", tenant, conversation, "--purpose", "e2e")
        wait_for(lambda: bool(ok(*read).stdout), 60, "the conversation on the buffer")
        policy = tmp_path / "policy.txt"
        policy.write_text("names, phones and messages, only to run your workflows\n")
        ok("policy", "publish", "2026-12", str(policy))
        ok("tenant", "accept-policy", tenants[0], "2026-12")
        ok("tenant", "list")
        ok("keys", "report")
        ok("keys", "expire")
        ok("keys", "rotate-master")
        ok("tenant", "terminate", tenants[0], "--reason", "e2e", "--yes")
        ok("sink", "--until-idle", "2")
        assert "tenants" in ok("analytics", "sql", "SELECT count(*) AS tenants FROM tenants").stdout
        ok("certificate", "verify", str(tmp_path / "certificates" / f"{tenants[0]}.g1.json"))
        wait_for(lambda: "intact" in ok("audit", "verify").stdout, 30, "the trail")
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert _denials(broker, topic_prefix) == []
    trail = read_trail(broker.connection, topic_prefix)
    operators = {r["actor"] for r in trail if r["action"] in {"operator.command", "tenant.provision", "policy.publish"}}
    assert operators == {"User:operator"}  # who the certificate says, never a name the caller typed


def test_the_demo_runs_with_role_certificates_only(broker: Broker, tmp_path: Path) -> None:
    if broker.settings.bootstrap:
        pytest.skip("external broker: its log is not ours to read")
    env = _acl_env(broker, "", tmp_path)  # the demo applies its own prefix's topics and ACLs, as admin
    env.pop("SHREDLINE_TOPIC_PREFIX")
    result = subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "demo"], env=env, capture_output=True, text=True, timeout=500
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1. User:operator provisioned tenants" in result.stdout
    assert "9. audit trail intact" in result.stdout
    prefix = next(
        line.split("prefix ")[1].split(";")[0] for line in result.stderr.splitlines() if "under prefix" in line
    )
    assert _denials(broker, prefix) == []
