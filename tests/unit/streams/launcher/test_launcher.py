"""Pure parts of the launcher: Java detection, broker properties, ports, TLS material."""

from __future__ import annotations

import base64
import datetime as dt
import socket
import stat
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from shredline.streams.acl import AccessRole, principal_of_subject
from shredline.streams.errors import LauncherError
from shredline.streams.kafka.connection import role_cert, role_key
from shredline.streams.launcher import broker, jars
from shredline.streams.launcher import broker as broker_module
from shredline.streams.launcher.broker import java_major, kafka_cluster_id, pick_port, server_properties
from shredline.streams.launcher.certs import TlsFiles, ensure_tls


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25" 2025-09-16', 25),
        ('java version "1.8.0_402"', 8),
        ("garbage", None),
    ],
)
def test_java_major(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_missing_java_or_maven_names_the_docker_alternative(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(broker.shutil, "which", lambda _name: None)
    with pytest.raises(LauncherError, match="docker compose up"):
        broker.check_java()
    monkeypatch.setattr(jars.shutil, "which", lambda _name: None)
    with pytest.raises(LauncherError, match="docker compose up"):
        jars.ensure_jars(tmp_path / "empty-cache", progress=lambda _m: None)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_properties_have_no_plaintext_listener_and_short_retention_checks(tmp_path: Path) -> None:
    props = _props(
        server_properties(log_dir=str(tmp_path), tls=TlsFiles.under(tmp_path), port=19093, controller_port=19094)
    )
    assert props["listener.security.protocol.map"] == "SSL:SSL,CONTROLLER:SSL"
    assert "PLAINTEXT" not in props["listeners"]
    assert props["ssl.client.auth"] == "required"
    assert props["ssl.keystore.type"] == "PEM" and "ssl.keystore.password" not in props
    assert props["log.retention.check.interval.ms"] == "10000"
    assert props["log.segment.delete.delay.ms"] == "1000"
    assert props["auto.create.topics.enable"] == "false"


def test_properties_enforce_acls_with_only_the_broker_and_admin_as_super_users(tmp_path: Path) -> None:
    props = _props(
        server_properties(log_dir=str(tmp_path), tls=TlsFiles.under(tmp_path), port=19093, controller_port=19094)
    )
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:shredline-broker;User:admin"
    assert props["ssl.principal.mapping.rules"] == "RULE:^CN=([^,]+).*$/$1/,DEFAULT"


def test_pick_port_keeps_a_free_preferred_port_and_avoids_a_taken_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        chosen = pick_port(busy, set())
        assert chosen != busy
        assert pick_port(chosen, set()) == chosen
        assert pick_port(chosen, {chosen}) != chosen


def test_tls_material_is_pkcs8_private_and_reused(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")
    role_keys = [role_key(files.credentials, r) for r in AccessRole]
    for key_file in (*role_keys, files.broker_keystore):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert b"ENCRYPTED" not in key_file.read_bytes()
    assert stat.S_IMODE(files.credentials.stat().st_mode) == 0o700
    leaf = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    leaf.verify_directly_issued_by(ca)
    # One certificate per role, CN = the role, signed by the same CA; the broker maps it to User:<role>.
    for role in AccessRole:
        cert = x509.load_pem_x509_certificates(role_cert(files.credentials, role).read_bytes())[0]
        cert.verify_directly_issued_by(ca)
        assert principal_of_subject(cert.subject.rfc4514_string()) == f"User:{role.value}"
    # The CA key is never written: only the files clients and broker need exist.
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(files.all())

    before = {p: p.read_bytes() for p in files.all()}
    assert ensure_tls(tmp_path / "tls") == files
    assert {p: p.read_bytes() for p in files.all()} == before


def test_tls_material_is_renewed_before_it_expires(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")
    old = files.ca.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    ensure_tls(tmp_path / "tls", now=later)
    assert files.ca.read_bytes() != old


def test_maven_gets_absolute_paths_even_for_a_relative_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Maven resolves a relative -DoutputDirectory against the pom's folder: the jars must land in our cache."""
    seen: list[list[str]] = []

    def fake_mvn(cmd: list[str], **_kw: object) -> object:
        seen.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        out.mkdir(parents=True)
        (out / "kafka_2.13-4.1.1.jar").write_bytes(b"jar")
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jars.shutil, "which", lambda _name: "/usr/bin/mvn")
    monkeypatch.setattr(jars.subprocess, "run", fake_mvn)
    classpath = jars.ensure_jars(Path(".shredline/cache"), progress=lambda _m: None)
    assert classpath == [tmp_path / ".shredline/cache/kafka-4.1.1/kafka_2.13-4.1.1.jar"]
    cmd = seen[0]
    assert Path(cmd[cmd.index("-f") + 1]).is_absolute()
    assert Path(next(a for a in cmd if a.startswith("-DoutputDirectory=")).split("=", 1)[1]).is_absolute()


def test_compose_properties_add_a_tls_listener_advertised_under_the_service_name(tmp_path: Path) -> None:
    """Containers on the Compose network reach the broker as `kafka:9092`; the host as localhost:9093."""
    props = _props(
        server_properties(
            log_dir=str(tmp_path),
            tls=TlsFiles.under(tmp_path),
            port=9093,
            controller_port=9094,
            bind="0.0.0.0",  # noqa: S104 - only a string under test
            host="localhost",
            compose_listener=("kafka", 9092),
        )
    )
    assert props["listeners"] == "SSL://0.0.0.0:9093,COMPOSE://0.0.0.0:9092,CONTROLLER://localhost:9094"
    assert props["advertised.listeners"] == "SSL://localhost:9093,COMPOSE://kafka:9092"
    assert props["listener.security.protocol.map"] == "SSL:SSL,COMPOSE:SSL,CONTROLLER:SSL"
    assert props["inter.broker.listener.name"] == "SSL"


def _dns_names(files: TlsFiles) -> set[str]:
    leaf = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())[0]
    return set(
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def test_tls_material_is_renewed_when_the_broker_certificate_lacks_a_name(tmp_path: Path) -> None:
    """A data dir made for the local broker, then asked for Compose: the broker certificate must
    also name `kafka`, or containers fail hostname verification; the local broker accepts either."""
    files = ensure_tls(tmp_path / "tls")
    assert _dns_names(files) == {"localhost"}
    old = files.ca.read_bytes()
    ensure_tls(tmp_path / "tls", hosts=("localhost", "kafka"))
    assert _dns_names(files) == {"localhost", "kafka"} and files.ca.read_bytes() != old
    renewed = files.ca.read_bytes()
    ensure_tls(tmp_path / "tls")  # a superset is current for the local broker
    assert files.ca.read_bytes() == renewed


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leading "-" (bytes 0xF8..0xFB in URL-safe base64) reads as an option to the storage tool."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(broker_module.uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert len(cluster_id) == 22
