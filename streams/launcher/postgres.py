"""Start and stop a throwaway PostgreSQL server from the distribution's packages (Debian's
`postgresql`), for tests, CI and benchmarks: `initdb` into a fresh directory, a free port on
127.0.0.1, scram-sha-256 with a random password, stopped (and its directory removed) at the end.

Like the Kafka launcher, it runs the server the project ships against, not a mock. PostgreSQL
refuses to run as root, so under root the server runs as the `postgres` system user (which the
package creates) in a directory owned by it. Nothing here is for production: a real deployment
points `SHREDLINE_KEY_STORE` at a server it runs itself, with TLS (`sslmode=verify-full`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from shredline.keystore.dburl import DatabaseUrl
from shredline.streams.errors import LauncherError
from shredline.streams.launcher.broker import pick_port
from shredline.streams.launcher.certs import ensure_tls

START_TIMEOUT_S = 60
SUPERUSER = "shredline"
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found{where}: install Debian's "
    "`postgresql` package (apt-get install postgresql), or set SHREDLINE_PG_BINDIR"
)


def server_bindir(environ: dict[str, str] | None = None) -> Path:
    """Where initdb/pg_ctl/postgres are: SHREDLINE_PG_BINDIR, else the newest
    /usr/lib/postgresql/<major>/bin (Debian keeps them off PATH), else PATH. Raises LauncherError."""
    env = os.environ if environ is None else environ
    if env.get("SHREDLINE_PG_BINDIR"):
        candidates = [Path(env["SHREDLINE_PG_BINDIR"])]
    else:
        debian = Path("/usr/lib/postgresql")
        versions = sorted(
            (p for p in debian.glob("*/bin") if p.parent.name.isdigit()), key=lambda p: int(p.parent.name)
        )
        on_path = shutil.which("pg_ctl")
        candidates = [*reversed(versions), *([Path(on_path).resolve().parent] if on_path else [])]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    where = f" in {candidates[0]}" if env.get("SHREDLINE_PG_BINDIR") else ""
    raise LauncherError(MISSING.format(where=where))


@dataclass(frozen=True)
class PostgresServer:
    """A running server: `url` reaches its `postgres` database as the superuser."""

    data_dir: Path  # the cluster's directory (base/, pg_wal/, ...): what residue scans read
    port: int
    password: str
    ca: Path | None = None  # with TLS: the CA that signed the server's certificate (localhost, 127.0.0.1)

    def url(self, database: str = "postgres", options: str | None = None) -> DatabaseUrl:
        """As the superuser; `options` are libpq's (e.g. `-csearch_path=<schema>`)."""
        query = f"?{urlencode({'options': options})}" if options else ""
        return DatabaseUrl(f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}{query}")

    def __repr__(self) -> str:
        return f"PostgresServer(data_dir={str(self.data_dir)!r}, port={self.port})"


def _runner() -> tuple[str | None, int | None]:
    """(user, uid) to run the server as: None under a normal user, `postgres` under root."""
    if os.geteuid() != 0:
        return None, None
    try:
        return "postgres", pwd.getpwnam("postgres").pw_uid
    except KeyError:
        raise LauncherError(
            "PostgreSQL cannot run as root and there is no `postgres` user: install Debian's `postgresql` package"
        ) from None


def _run(args: list[str], user: str | None, what: str) -> None:
    done = subprocess.run(args, user=user, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LauncherError(f"postgres: {what} failed: {detail[-1] if detail else f'exit {done.returncode}'}")


def _server_tls(folder: Path, uid: int | None) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate chain, server key) for localhost and 127.0.0.1, made by
    the broker's TLS code (`certs.ensure_tls`: the CA key is never written); the key owned by the
    server's user, 0600, as PostgreSQL demands."""
    files = ensure_tls(folder)
    pem = files.broker_keystore.read_text(encoding="ascii")
    end = "-----END PRIVATE KEY-----\n"
    key, chain = pem[: pem.index(end) + len(end)], pem[pem.index(end) + len(end) :]
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_text(chain, encoding="ascii")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key)
    if uid is not None:
        for path in (folder, cert_path, key_path):
            os.chown(path, uid, -1)
    return files.ca, cert_path, key_path


@contextlib.contextmanager
def running_postgres(
    parent: Path | None = None, *, durable: bool = True, tls: bool = False
) -> Iterator[PostgresServer]:
    """A fresh server for the block; stopped (fast shutdown) and its directory removed after.
    `durable=False` turns fsync off (tests: the files' contents are the same, only a crash of the
    machine could lose them). `tls` also serves TLS with a throwaway CA (`PostgresServer.ca`), so
    clients can use `sslmode=verify-full`. Raises LauncherError (one line) when the binaries are
    missing or the server does not start."""
    bindir = server_bindir()
    user, uid = _runner()
    base = Path(tempfile.mkdtemp(prefix="shredline-pg-", dir=parent))
    data, sockets = base / "data", base / "run"
    password = secrets.token_urlsafe(18)
    started = False
    try:
        sockets.mkdir(mode=0o700)
        pwfile = base / "pw"
        pwfile.write_text(password + "\n", encoding="utf-8")
        if uid is not None:  # the server's user owns its directories (mkdtemp made them 0700)
            for path in (base, sockets, pwfile):
                os.chown(path, uid, -1)
        _run(
            [
                str(bindir / "initdb"),
                "-D", str(data),
                "-U", SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E", "UTF8",
                "--no-instructions",
            ],
            user,
            "initdb",
        )  # fmt: skip
        pwfile.unlink()
        port = pick_port(0, set())
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not durable:
            options += " -c fsync=off"
        ca = None
        if tls:
            ca, cert, key = _server_tls(base / "tls", uid)
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        log = base / "server.log"
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
             "start"],
            user,
            "start",
        )  # fmt: skip
        started = True
        yield PostgresServer(data, port, password, ca)
    finally:
        if started:
            with contextlib.suppress(LauncherError, subprocess.TimeoutExpired):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user, "stop")
        shutil.rmtree(base, ignore_errors=True)
