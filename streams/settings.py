"""One frozen settings object, built once at the edge from `SHREDLINE_*` and an optional TOML file.

Nothing below the CLI reads `os.environ`; code receives a `Settings` instead. Precedence is
environment over TOML file over defaults, so one file can describe an environment and a
variable can still override a single value for one run.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shredline.keystore.dburl import DatabaseUrl, DatabaseUrlError
from shredline.keystore.ingest import Kem
from shredline.streams.errors import ConfigError

ENV_PREFIX = "SHREDLINE_"
CONFIG_ENV = "SHREDLINE_CONFIG"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_BOOTSTRAP_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_PRINCIPAL_FORMAT_RE = re.compile(r"^User:[A-Za-z0-9._@=-]*\{role\}[A-Za-z0-9._@=-]*$")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


class Secret:
    """A string that never shows itself in `repr`, `str`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, validated; `repr` is safe to log."""

    data_dir: Path = Path(".shredline")
    cache_dir: Path | None = None
    bootstrap: str | None = None
    topic_prefix: str = ""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_key_password: Secret | None = field(default=None)
    tls_credentials: Path | None = None  # a directory of `<role>.pem`/`<role>.key`, one pair per access role
    principal_format: str = "User:{role}"  # each role's Kafka principal, for `acl apply`
    replication_factor: int = 1
    master_key: Secret | None = None  # keyring text `v1:<base64>`; else the key file
    master_key_file: Path | None = None  # default <data_dir>/master.key, created on first local use
    # default <data_dir>/keys.sqlite; a `postgresql://` URL selects the PostgreSQL store (several hosts)
    key_store: Path | DatabaseUrl | None = None
    key_cache_staleness_s: float = 1.0
    ingest_kem: Kem = Kem.X25519  # which of a tenant's key pairs producers seal ingest events to
    # Migration switch, off by default: the worker also processes plaintext (unsealed) ingest
    # events instead of dead-lettering them as `not sealed`; it logs a warning at every start.
    allow_plaintext_ingest: bool = False

    def __post_init__(self) -> None:
        if self.topic_prefix and not _PREFIX_RE.fullmatch(self.topic_prefix):
            raise ConfigError("topic_prefix: must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        if self.bootstrap is not None:
            for server in self.bootstrap.split(","):
                if not _BOOTSTRAP_RE.fullmatch(server.strip()):
                    raise ConfigError("bootstrap: expected host:port[,host:port...]")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert: tls_cert and tls_key must be set together")
        if not _PRINCIPAL_FORMAT_RE.fullmatch(self.principal_format):
            raise ConfigError("principal_format: expected `User:<name>` with `{role}` once, e.g. User:prod-{role}")
        if self.replication_factor < 1:
            raise ConfigError("replication_factor: must be at least 1")
        if not 0 <= self.key_cache_staleness_s <= 60:
            raise ConfigError("key_cache_staleness_s: must be between 0 and 60 seconds")

    @property
    def jar_cache(self) -> Path:
        """Where downloaded Kafka jars live; shared by every broker using this data dir."""
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file if self.master_key_file is not None else self.data_dir / "master.key"

    @property
    def key_store_url(self) -> DatabaseUrl | None:
        """The PostgreSQL key store, when one is configured (else the SQLite file is used)."""
        return self.key_store if isinstance(self.key_store, DatabaseUrl) else None

    @property
    def key_store_path(self) -> Path:
        """The SQLite key store file (also where a PostgreSQL store's host keeps nothing: unused then)."""
        return self.key_store if isinstance(self.key_store, Path) else self.data_dir / "keys.sqlite"

    @property
    def kafka_dir(self) -> Path:
        """The local broker's certificates, storage, logs and state file."""
        return self.data_dir / "kafka"


_PATHS = {"data_dir", "cache_dir", "tls_ca", "tls_cert", "tls_key", "tls_credentials", "master_key_file", "key_store"}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a raw env/TOML value into the field's type, naming the field on failure."""
    if raw is None:
        return None
    if name == "key_store" and isinstance(raw, str) and DatabaseUrl.looks_like(raw):
        try:
            return DatabaseUrl(raw)
        except DatabaseUrlError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if name in _PATHS:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{name}: expected a non-empty path")
        return Path(raw).expanduser()
    if name in {"tls_key_password", "master_key"}:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string")
        return Secret(raw)
    if name == "replication_factor":
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer") from None
    if name == "key_cache_staleness_s":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number of seconds") from None
    if name == "ingest_kem":
        if not isinstance(raw, str) or raw.strip().upper() not in Kem.__members__:
            raise ConfigError(f"{name}: must be one of {', '.join(Kem)}")
        return Kem(raw.strip().upper())
    if name == "allow_plaintext_ingest":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(f"{name}: expected true or false")
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string")
    return raw


def load_settings(environ: Mapping[str, str], config_file: Path | None = None) -> Settings:
    """Build settings from a TOML file (explicit, or `SHREDLINE_CONFIG`) overlaid by the environment."""
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for retired in ("operator", "operators"):
        if environ.get(ENV_PREFIX + retired.upper()):
            raise ConfigError(
                f"{retired}: SHREDLINE_{retired.upper()} is no longer read: an operator is who their client "
                "certificate says (see `shredline operators`); unset it"
            )

    path = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    if path is not None:
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config: file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
        unknown = sorted(set(table) - names)
        if unknown:
            raise ConfigError(f"config: unknown setting {unknown[0]!r} in {path}")
        values.update({k: _coerce(k, v) for k, v in table.items()})

    for name in names:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw)
    return Settings(**values)
