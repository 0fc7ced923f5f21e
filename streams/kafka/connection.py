"""How to reach the broker over TLS, as which access role: from settings, or from the local
launcher's state file.

Every client (confluent-kafka, aiokafka, Faust) is configured from one `Connection`, so there
is exactly one place that decides TLS; there is no plaintext mode. Each command asks for the
role its job needs (`resolve_connection(settings, AccessRole.WORKER)`); the certificate comes
from, in order: `SHREDLINE_TLS_CERT`/`_KEY` (one certificate for everything, e.g. your own
cluster's), a credentials directory (`SHREDLINE_TLS_CREDENTIALS`, one `<role>.pem`/`<role>.key`
pair per role), or the local broker's credentials (`shredline kafka up` issues them).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from shredline.streams.acl import AccessRole, principal_of_subject
from shredline.streams.errors import ConfigError
from shredline.streams.settings import Secret, Settings

STATE_FILE = "state.json"
#: Where every confluent-kafka client logs (its `logger` setting) instead of librdkafka writing to
#: stderr itself, so the worker's repeat filter applies: while the broker is down each client
#: wrote a "Connect ... failed" line every 50 ms.
LIBRDKAFKA_LOG = logging.getLogger("shredline.librdkafka")


def role_cert(credentials: Path, role: AccessRole) -> Path:
    """A role's certificate chain in a credentials directory: `<role>.pem`."""
    return credentials / f"{role.value}.pem"


def role_key(credentials: Path, role: AccessRole) -> Path:
    """A role's private key (PKCS#8 PEM, mode 0600) in a credentials directory: `<role>.key`."""
    return credentials / f"{role.value}.key"


@dataclass(frozen=True)
class Connection:
    bootstrap: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_password: Secret | None = None
    credentials: Path | None = None  # the per-role certificates this one came from, if any

    def for_role(self, role: AccessRole) -> Connection:
        """The same broker as `role`: its certificate from the credentials directory; unchanged
        when this connection has one certificate for everything."""
        if self.credentials is None:
            return self
        return replace(
            self, cert=role_cert(self.credentials, role), key=role_key(self.credentials, role), key_password=None
        )

    def principal(self) -> str:
        """Who the broker takes this client for (see `certificate_principal`)."""
        return certificate_principal(self.cert)

    def confluent(self, **extra: Any) -> dict[str, Any]:
        """A librdkafka config. It holds the revealed key password: never log it."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SSL",
            "ssl.endpoint.identification.algorithm": "https",
        }
        if self.ca is not None:
            conf["ssl.ca.location"] = str(self.ca)
        if self.cert is not None and self.key is not None:
            conf["ssl.certificate.location"] = str(self.cert)
            conf["ssl.key.location"] = str(self.key)
        if self.key_password is not None:
            conf["ssl.key.password"] = self.key_password.reveal()
        conf["logger"] = LIBRDKAFKA_LOG
        conf.update(extra)
        return conf

    def ssl_context(self) -> ssl.SSLContext:
        """For aiokafka and Faust: verifies the broker, presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None and self.key is not None:
            password = self.key_password.reveal() if self.key_password else None
            context.load_cert_chain(str(self.cert), str(self.key), password=password)
        return context


def certificate_principal(cert: Path | None) -> str:
    """`User:<CN>` of a PEM certificate (its first one), as the broker's
    `ssl.principal.mapping.rules` derive it. Raises ConfigError without a readable certificate."""
    if cert is None:
        raise ConfigError(
            "tls_cert: no client certificate to tell who you are; set SHREDLINE_TLS_CERT or "
            "SHREDLINE_TLS_CREDENTIALS, or run `shredline kafka up`"
        )
    try:
        first = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM certificate"
        raise ConfigError(f"tls_cert: cannot read {cert} ({reason})") from None
    return principal_of_subject(first.subject.rfc4514_string())


def role_certificate(settings: Settings, role: AccessRole) -> Path | None:
    """The certificate `role` presents, found as `resolve_connection` finds it but without needing
    a broker (offline commands still say who runs them); None when there is none."""
    if settings.tls_cert is not None:
        return settings.tls_cert
    credentials = settings.tls_credentials
    if credentials is None and settings.bootstrap is None:
        state = read_state(settings.kafka_dir) or {}
        credentials = Path(state["credentials"]) if "credentials" in state else None
    return role_cert(credentials, role) if credentials is not None else None


def read_state(kafka_dir: Path) -> dict[str, Any] | None:
    """The local launcher's record of the broker it started, or None."""
    path = kafka_dir / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise ConfigError(f"kafka state: {path} is not valid JSON; remove it and run `shredline kafka up`") from None
    return data


def resolve_connection(settings: Settings, role: AccessRole) -> Connection:
    """The broker, as `role`. An explicit `bootstrap` setting wins over the local broker
    `shredline kafka up` started; an explicit certificate wins over per-role credentials."""
    if settings.bootstrap is not None:
        bootstrap, ca, credentials = settings.bootstrap, settings.tls_ca, settings.tls_credentials
    else:
        state = read_state(settings.kafka_dir)
        if state is None or "bootstrap" not in state or "credentials" not in state:
            raise ConfigError("bootstrap: no broker known; run `shredline kafka up` or set SHREDLINE_BOOTSTRAP")
        bootstrap, ca = state["bootstrap"], Path(state["ca"])
        credentials = settings.tls_credentials or Path(state["credentials"])
    if settings.tls_cert is not None:
        return Connection(bootstrap, ca, settings.tls_cert, settings.tls_key, settings.tls_key_password)
    return Connection(bootstrap, ca, credentials=credentials).for_role(role)


def client_environment(conn: Connection, data_dir: Path, prefix: str, base: Mapping[str, str]) -> dict[str, str]:
    """Environment for a child `shredline` process on this broker with a data dir of its own.

    Every inherited `SHREDLINE_*` variable is dropped first, so the child sees exactly this. With
    per-role credentials the child gets their directory and picks its own role's certificate;
    otherwise it gets `conn`'s certificate."""
    env = {k: v for k, v in base.items() if not k.startswith("SHREDLINE_")}
    env.update(
        {"SHREDLINE_BOOTSTRAP": conn.bootstrap, "SHREDLINE_DATA_DIR": str(data_dir), "SHREDLINE_TOPIC_PREFIX": prefix}
    )
    if conn.ca is not None:
        env["SHREDLINE_TLS_CA"] = str(conn.ca)
    if conn.credentials is not None:
        env["SHREDLINE_TLS_CREDENTIALS"] = str(conn.credentials)
        return env
    for name, value in (("TLS_CERT", conn.cert), ("TLS_KEY", conn.key)):
        if value is not None:
            env[f"SHREDLINE_{name}"] = str(value)
    if conn.key_password is not None:
        env["SHREDLINE_TLS_KEY_PASSWORD"] = conn.key_password.reveal()
    return env
