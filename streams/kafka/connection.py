"""How to reach the broker over TLS: from settings, or from the local launcher's state file.

Every client (confluent-kafka, aiokafka, Faust) is configured from one `Connection`, so there
is exactly one place that decides TLS; there is no plaintext mode.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shredline.streams.errors import ConfigError
from shredline.streams.settings import Secret, Settings

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Connection:
    bootstrap: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_password: Secret | None = None

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
        conf.update(extra)
        return conf

    def ssl_context(self) -> ssl.SSLContext:
        """For aiokafka and Faust: verifies the broker, presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None and self.key is not None:
            password = self.key_password.reveal() if self.key_password else None
            context.load_cert_chain(str(self.cert), str(self.key), password=password)
        return context


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


def resolve_connection(settings: Settings) -> Connection:
    """An explicit `bootstrap` setting wins; otherwise the broker `shredline kafka up` started."""
    if settings.bootstrap is not None:
        return Connection(
            settings.bootstrap, settings.tls_ca, settings.tls_cert, settings.tls_key, settings.tls_key_password
        )
    state = read_state(settings.kafka_dir)
    if state is None or "bootstrap" not in state:
        raise ConfigError("bootstrap: no broker known; run `shredline kafka up` or set SHREDLINE_BOOTSTRAP")
    return Connection(state["bootstrap"], Path(state["ca"]), Path(state["client_cert"]), Path(state["client_key"]))


def client_environment(conn: Connection, data_dir: Path, prefix: str, base: Mapping[str, str]) -> dict[str, str]:
    """Environment for a child `shredline` process on this broker with a data dir of its own.

    Every inherited `SHREDLINE_*` variable is dropped first, so the child sees exactly this."""
    env = {k: v for k, v in base.items() if not k.startswith("SHREDLINE_")}
    env.update(
        {"SHREDLINE_BOOTSTRAP": conn.bootstrap, "SHREDLINE_DATA_DIR": str(data_dir), "SHREDLINE_TOPIC_PREFIX": prefix}
    )
    for name, value in (("TLS_CA", conn.ca), ("TLS_CERT", conn.cert), ("TLS_KEY", conn.key)):
        if value is not None:
            env[f"SHREDLINE_{name}"] = str(value)
    if conn.key_password is not None:
        env["SHREDLINE_TLS_KEY_PASSWORD"] = conn.key_password.reveal()
    return env
