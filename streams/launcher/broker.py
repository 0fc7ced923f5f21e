"""Start, stop and inspect one local KRaft node (broker + controller) that speaks only TLS.

State lives under `<data_dir>/kafka/`: `tls/` (CA, broker keystore), `credentials/` (one
certificate per access role), `storage/`, `server.properties`, `broker.log` and `state.json`.
The state file records the pid *and* its start time, so `down` never signals a process that
merely reuses the pid, and every other command finds the broker (bootstrap address, CA, the
credentials directory) without flags.

The broker enforces least privilege: KRaft's `StandardAuthorizer`, nothing allowed without an
ACL, the certificate's CN as the principal, and only the broker itself and `admin` as super
users (the broker must be one: it forwards admin requests to the controller). `shredline acl
apply` grants the other roles what `shredline.streams.acl` says.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shredline.streams.acl import PRINCIPAL_MAPPING_RULES, AccessRole, principal_of_subject
from shredline.streams.errors import KafkaOperationError, LauncherError
from shredline.streams.kafka.admin import wait_until_ready
from shredline.streams.kafka.connection import STATE_FILE, Connection, read_state, resolve_connection
from shredline.streams.launcher.certs import BROKER_CN, COMPOSE_HOST, HOSTS, TlsFiles, ensure_tls
from shredline.streams.launcher.jars import KAFKA_VERSION, ensure_jars
from shredline.streams.private import make_private_dir
from shredline.streams.settings import Settings

DEFAULT_PORT = 9093
DEFAULT_CONTROLLER_PORT = 9094
COMPOSE_PORT = 9092  # the broker's listener for containers on the Compose network (`kafka:9092`)
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
NO_JAVA = (
    "Java 17+ is needed for the local broker{found}: install a JDK 17 or newer, "
    "or run Kafka with `docker compose up -d kafka` and set SHREDLINE_BOOTSTRAP"
)

Progress = Callable[[str], None]


def kafka_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes in URL-safe base64 without padding (22 chars),
    never starting with "-", as Kafka's own `Uuid.randomUuid()` ensures: the storage tool's argument
    parser would take such an id for an option ("argument --cluster-id/-t: expected one argument"),
    which failed one start in 64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class BrokerState:
    pid: int
    start_ticks: int
    bootstrap: str
    port: int
    controller_port: int
    ca: str
    credentials: str  # directory of `<role>.pem` / `<role>.key`
    kafka_version: str
    log: str

    def connection(self, role: AccessRole = AccessRole.ADMIN) -> Connection:
        """This broker as `role` (by default `admin`, its super user)."""
        return Connection(self.bootstrap, Path(self.ca), credentials=Path(self.credentials)).for_role(role)


def java_major(version_output: str) -> int | None:
    """The major version from `java -version` output (`1.8.0_x` counts as 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LauncherError(NO_JAVA.format(found=" but `java` is not on PATH"))
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major(out.stderr + out.stdout)
    if major is None or major < 17:
        raise LauncherError(NO_JAVA.format(found=f" (found Java {major or 'of unknown version'})"))
    return java


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, avoid: set[int]) -> int:
    """`preferred` when it is free (0 means any); otherwise a free port the OS hands out."""
    if preferred and preferred not in avoid and port_is_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (Linux), which tells a live process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


#: The broker (KRaft: it forwards admin requests to the controller, so it must be one) and admin.
SUPER_USERS = f"{principal_of_subject('CN=' + BROKER_CN)};{principal_of_subject('CN=' + AccessRole.ADMIN.value)}"


def server_properties(
    *,
    log_dir: str,
    tls: TlsFiles,
    port: int,
    controller_port: int,
    bind: str = "127.0.0.1",
    host: str = "127.0.0.1",
    compose_listener: tuple[str, int] | None = None,
) -> str:
    """One combined broker+controller; TLS with client certificates on every listener.

    `bind` is the client listener's address and `host` the name clients and the node itself
    use; the Docker Compose variant binds 0.0.0.0 and advertises `localhost` (for clients on
    the host, through the published port), plus `compose_listener` (name, port): a second TLS
    listener advertised under the broker's service name, for the containers on the Compose
    network (to them `localhost` is themselves).
    """
    listeners = [f"SSL://{bind}:{port}", f"CONTROLLER://{host}:{controller_port}"]
    advertised = [f"SSL://{host}:{port}"]
    protocols = ["SSL:SSL", "CONTROLLER:SSL"]
    if compose_listener is not None:
        name, compose_port = compose_listener
        listeners.insert(1, f"COMPOSE://{bind}:{compose_port}")
        advertised.append(f"COMPOSE://{name}:{compose_port}")
        protocols.insert(1, "COMPOSE:SSL")
    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": "SSL",
        "controller.listener.names": "CONTROLLER",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "ssl.client.auth": "required",
        "ssl.endpoint.identification.algorithm": "https",
        # Least privilege: nothing without an ACL; principals are `User:<CN>`.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING_RULES,
        "super.users": SUPER_USERS,
        "log.dirs": log_dir,
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Short-retention topics must really shrink: check often, unlink soon after.
        "log.retention.check.interval.ms": "10000",
        "log.segment.delete.delay.ms": "1000",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
# Every refused request, with principal, operation and resource (allowed ones are DEBUG).
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
"""


class Launcher:
    """The local broker of one data dir."""

    def __init__(self, settings: Settings, progress: Progress = lambda _msg: None) -> None:
        self.settings = settings
        self.dir = settings.kafka_dir
        self.progress = progress

    # -- state -------------------------------------------------------------------------------
    def state(self) -> BrokerState | None:
        raw = read_state(self.dir)
        if raw is None or "pid" not in raw:
            return None
        try:
            return BrokerState(**{k: v for k, v in raw.items() if k in BrokerState.__dataclass_fields__})
        except TypeError:  # a state file of an older layout (one shared client certificate): start anew
            return None

    def _stop_older_layout(self) -> None:
        """A broker this data dir started before per-role certificates and ACLs: it has no authorizer
        and its certificates are about to be replaced, so it is stopped before a new one starts."""
        raw = read_state(self.dir) or {}
        pid, ticks = raw.get("pid"), raw.get("start_ticks")
        if self.state() is None and isinstance(pid, int) and ticks and process_start_ticks(pid) == ticks:
            self.progress(f"stopping the broker of an older layout (pid {pid}, one shared certificate, no ACLs)")
            self._stop(pid)

    def running(self) -> BrokerState | None:
        """The recorded broker, if the process recorded is still the one we started."""
        state = self.state()
        if state is not None and process_start_ticks(state.pid) == state.start_ticks:
            return state
        return None

    def segment_files(self, topic_prefix: str) -> list[Path]:
        """The segment files (`*.log`, record data as the broker stores it) of every partition of
        every topic under `topic_prefix`, for checks of what rests on this broker's disk."""
        props = self.dir / "server.properties"
        lines = props.read_text(encoding="utf-8").splitlines() if props.exists() else []
        dirs = [Path(d) for line in lines if line.startswith("log.dirs=") for d in line.split("=", 1)[1].split(",")]
        return sorted(f for d in dirs for f in d.glob(f"{topic_prefix}.*/*.log"))

    def decoded_segments(self, topic_prefix: str) -> bytes:
        """Every record in `segment_files(topic_prefix)` as Kafka's own `DumpLogSegments` prints
        it (batches decompressed, keys and payloads as text): what is on disk, whatever the
        producer's compression, for scans of it. Raises `LauncherError` if the tool fails."""
        files = [str(f) for f in self.segment_files(topic_prefix) if f.exists()]
        if not files:
            return b""
        classpath = os.pathsep.join(str(j.resolve()) for j in ensure_jars(self.settings.jar_cache, self.progress))
        tool = "kafka.tools.DumpLogSegments"
        dump = subprocess.run(
            [check_java(), "-cp", classpath, tool, "--files", ",".join(files), "--print-data-log", "--deep-iteration"],
            capture_output=True,
            check=False,
        )
        if dump.returncode != 0:
            detail = dump.stderr.decode(errors="replace").strip().splitlines()
            raise LauncherError(f"DumpLogSegments failed: {detail[-1] if detail else 'no output'}")
        return dump.stdout

    def _write_state(self, state: BrokerState) -> None:
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / STATE_FILE)

    # -- commands ----------------------------------------------------------------------------
    def up(self, port: int = DEFAULT_PORT, controller_port: int = DEFAULT_CONTROLLER_PORT) -> tuple[BrokerState, bool]:
        """Start the broker unless it already runs; returns the state and whether it was started now."""
        current = self.running()
        if current is not None:
            wait_until_ready(current.connection(), timeout_s=READY_TIMEOUT_S)
            return current, False

        self._stop_older_layout()
        java = check_java()
        jars = ensure_jars(self.settings.jar_cache, self.progress)
        make_private_dir(self.dir)
        tls = ensure_tls(self.dir / "tls")

        previous = self.state()
        if previous is not None:  # keep the ports clients already know, when still free
            port, controller_port = previous.port, previous.controller_port
        port = pick_port(port, set())
        controller_port = pick_port(controller_port, {port})

        props = self.dir / "server.properties"
        props.write_text(
            server_properties(
                log_dir=str((self.dir / "storage").resolve()),
                tls=TlsFiles.under((self.dir / "tls").resolve()),
                port=port,
                controller_port=controller_port,
            ),
            encoding="utf-8",
        )
        (self.dir / "log4j2.properties").write_text(LOG4J2, encoding="utf-8")
        classpath = os.pathsep.join(str(j.resolve()) for j in jars)
        jvm = [
            java,
            "-Xms256m",
            "-Xmx768m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.dir / 'log4j2.properties').resolve()}",
            "-cp",
            classpath,
        ]

        storage = self.dir / "storage"
        if not (storage / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            self.progress("formatting KRaft storage...")
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                detail = (fmt.stderr or fmt.stdout).strip().splitlines()
                raise LauncherError(f"formatting Kafka storage failed: {detail[-1] if detail else 'no output'}")

        log_path = self.dir / "broker.log"
        self.progress(f"starting Apache Kafka {KAFKA_VERSION} on 127.0.0.1:{port} (TLS)...")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(props)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ticks = process_start_ticks(proc.pid) or 0
        state = BrokerState(
            pid=proc.pid,
            start_ticks=ticks,
            bootstrap=f"127.0.0.1:{port}",
            port=port,
            controller_port=controller_port,
            ca=str(tls.ca.resolve()),
            credentials=str(tls.credentials.resolve()),
            kafka_version=KAFKA_VERSION,
            log=str(log_path.resolve()),
        )
        self._write_state(state)
        try:
            wait_until_ready(state.connection(), timeout_s=READY_TIMEOUT_S, alive=lambda: proc.poll() is None)
        except KafkaOperationError as exc:
            self._stop(proc.pid)
            raise LauncherError(f"the broker did not become ready ({exc}); see {log_path}") from None
        return state, True

    def prepare_compose(self) -> Path:
        """TLS material and a server.properties for `docker compose up kafka` (paths inside the container):
        the broker certificate also names the Compose service, `kafka`, which containers connect to."""
        ensure_tls(self.dir / "tls", hosts=(*HOSTS, COMPOSE_HOST))
        target = self.dir / "compose" / "server.properties"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            server_properties(
                log_dir="/var/lib/kafka/data",
                tls=TlsFiles.under(Path("/etc/shredline/tls")),
                port=DEFAULT_PORT,
                controller_port=DEFAULT_CONTROLLER_PORT,
                bind="0.0.0.0",  # noqa: S104 - inside the container; compose publishes it on 127.0.0.1 only
                host="localhost",
                compose_listener=(COMPOSE_HOST, COMPOSE_PORT),
            ),
            encoding="utf-8",
        )
        return target

    def down(self) -> BrokerState | None:
        """Stop the broker this data dir started, and nothing else; returns what was stopped."""
        state = self.running()
        if state is None:
            return None
        self._stop(state.pid)
        return state

    def _stop(self, pid: int) -> None:
        ticks = process_start_ticks(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            _reap(pid)
            if process_start_ticks(pid) != ticks:
                return
            time.sleep(0.2)
        self.progress("broker did not stop in time; killing it")
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def connect_or_launch(settings: Settings, progress: Progress, role: AccessRole = AccessRole.ADMIN) -> Connection:
    """The configured broker, or the local one of this data dir (started if needed), as `role`."""
    if settings.bootstrap is not None:
        return resolve_connection(settings, role)
    state, started = Launcher(settings, progress).up()
    progress(f"broker {'started' if started else 'already running'} at {state.bootstrap} (TLS, CA {state.ca})")
    return resolve_connection(settings, role)
