"""TLS material for the local broker: a throwaway CA, a broker certificate and one client
certificate per access role (`CN=<role>`, so the broker's principal is `User:<role>`).

The CA's private key is never written to disk: once the leaf certificates are signed nobody can
mint another, so a stolen data dir grants access to this broker only through the role keys that
are already there. Everything is PEM with PKCS#8 keys, which both Kafka's PEM keystore and
librdkafka read without a password. Private keys are 0600, their directories 0700.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shredline.streams.acl import AccessRole
from shredline.streams.kafka.connection import role_cert, role_key
from shredline.streams.private import make_private_dir

VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=7)
HOSTS = ("localhost",)
IPS = ("127.0.0.1", "::1")
#: The broker's name on the Docker Compose network (the service name in docker-compose.yml).
COMPOSE_HOST = "kafka"


BROKER_CN = "shredline-broker"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # CA certificate, the trust anchor for clients and broker
    broker_keystore: Path  # broker key (PKCS#8) + certificate chain, Kafka's PEM keystore
    credentials: Path  # one `<role>.pem` / `<role>.key` pair per access role, beside the broker's folder

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        """The broker's files in `directory` (all a broker container mounts), the roles' beside it."""
        return cls(directory / "ca.pem", directory / "broker.pem", directory.parent / "credentials")

    def all(self) -> tuple[Path, ...]:
        roles = [f(self.credentials, r) for r in AccessRole for f in (role_cert, role_key)]
        return (self.ca, self.broker_keystore, *roles)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shredline local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    usages: list[x509.ObjectIdentifier],
    now: dt.datetime,
    hosts: tuple[str, ...] = HOSTS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def broker_hosts(files: TlsFiles) -> set[str]:
    """The DNS names the broker certificate is valid for."""
    certs = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())
    return set(
        certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def is_current(files: TlsFiles, now: dt.datetime, hosts: tuple[str, ...] = HOSTS) -> bool:
    """True when every file exists and the broker certificate names `hosts` and is not about to expire."""
    if not all(p.exists() for p in files.all()):
        return False
    certs = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())
    return certs[0].not_valid_after_utc > now + RENEW_BEFORE and set(hosts) <= broker_hosts(files)


def ensure_tls(directory: Path, now: dt.datetime | None = None, hosts: tuple[str, ...] = HOSTS) -> TlsFiles:
    """Create the CA, broker and client material unless a current set is already there. `hosts`
    are the names the broker certificate must carry (the Compose variant adds the service name)."""
    now = now or dt.datetime.now(dt.UTC)
    files = TlsFiles.under(directory)
    if is_current(files, now, hosts):
        return files
    for folder in (directory, files.credentials):
        make_private_dir(folder)
        os.chmod(folder, 0o700)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Shredline local CA"))
        .issuer_name(_name("Shredline local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    # The broker also connects to itself (inter-broker and controller traffic), so it is a client too.
    broker_key, broker_cert = _leaf(
        ca_key, ca_cert, BROKER_CN, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], now, hosts
    )
    _write(files.ca, ca_pem, 0o644)
    _write(
        files.broker_keystore,
        _key_pem(broker_key) + broker_cert.public_bytes(serialization.Encoding.PEM) + ca_pem,
        0o600,
    )
    for role in AccessRole:
        key, cert = _leaf(ca_key, ca_cert, role.value, [ExtendedKeyUsageOID.CLIENT_AUTH], now)
        _write(role_cert(files.credentials, role), cert.public_bytes(serialization.Encoding.PEM) + ca_pem, 0o644)
        _write(role_key(files.credentials, role), _key_pem(key), 0o600)
    return files
