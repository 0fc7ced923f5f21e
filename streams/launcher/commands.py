"""`shredline kafka up / down / status / compose / credentials`: the local broker."""

from __future__ import annotations

import argparse
import json
import shlex

from shredline.streams.acl import AccessRole
from shredline.streams.console import Commands, progress
from shredline.streams.settings import Settings


def _kafka_up(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.launcher.broker import Launcher

    state, started = Launcher(settings, progress).up(args.port, args.controller_port)
    print(f"{'started' if started else 'already running'}: Apache Kafka {state.kafka_version} (pid {state.pid})")
    print(f"bootstrap: {state.bootstrap} (TLS, client certificate required)")
    print(f"ca:        {state.ca}")
    print(f"roles:     {', '.join(r.value for r in AccessRole)} (certificates in {state.credentials})")
    print("then:      shredline topics apply && shredline acl apply   (as admin; commands pick their role)")
    return 0


def _kafka_down(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.launcher.broker import Launcher

    stopped = Launcher(settings, progress).down()
    print(f"stopped broker (pid {stopped.pid})" if stopped else f"no broker of {settings.data_dir} is running")
    return 0


def _kafka_status(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.launcher.broker import Launcher

    launcher = Launcher(settings, progress)
    state = launcher.running()
    if state is None:
        print(f"stopped (data dir {settings.data_dir})")
        return 3
    print(f"running: Apache Kafka {state.kafka_version}, pid {state.pid}")
    print(f"bootstrap: {state.bootstrap}  controller: 127.0.0.1:{state.controller_port}")
    print(f"ca: {state.ca}")
    print(f"log: {state.log}")
    return 0


def _kafka_compose(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.launcher.broker import Launcher

    props = Launcher(settings, progress).prepare_compose()
    tls = settings.kafka_dir / "tls"
    print(f"wrote {props} and TLS files in {tls}; now: docker compose up -d kafka")
    print(
        f"export SHREDLINE_BOOTSTRAP=localhost:9093 SHREDLINE_TLS_CA={tls / 'ca.pem'} "
        f"SHREDLINE_TLS_CREDENTIALS={settings.kafka_dir / 'credentials'}"
    )
    return 0


def _kafka_credentials(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.kafka.connection import resolve_connection

    conn = resolve_connection(settings, AccessRole(args.role))
    values = {
        "SHREDLINE_BOOTSTRAP": conn.bootstrap,
        "SHREDLINE_TLS_CA": str(conn.ca) if conn.ca else None,
        "SHREDLINE_TLS_CERT": str(conn.cert) if conn.cert else None,
        "SHREDLINE_TLS_KEY": str(conn.key) if conn.key else None,
    }
    settled = {k: v for k, v in values.items() if v is not None}
    if args.json:
        print(json.dumps({**settled, "principal": conn.principal()}, indent=2))
    else:
        print(f"# {args.role}: the broker sees {conn.principal()}")
        print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in settled.items()))
    return 0


def register(sub: Commands) -> None:
    kafka = sub.add_parser("kafka", help="local Apache Kafka (KRaft, TLS) for development and tests")
    kafka_sub = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = kafka_sub.add_parser("up", help="start the local broker (idempotent)")
    up.add_argument(
        "--port", type=int, default=9093, help="client TLS port; a free one is picked if taken (default 9093)"
    )
    up.add_argument("--controller-port", type=int, default=9094, help="KRaft controller port (default 9094)")
    up.set_defaults(run=_kafka_up)
    kafka_sub.add_parser("down", help="stop the broker this data dir started").set_defaults(run=_kafka_down)
    kafka_sub.add_parser("compose", help="write TLS files and server.properties for docker compose").set_defaults(
        run=_kafka_compose
    )
    kafka_sub.add_parser("status", help="say what runs where (exit 3 when stopped)").set_defaults(run=_kafka_status)
    creds = kafka_sub.add_parser("credentials", help="the settings that connect as ROLE (shell export lines)")
    creds.add_argument("role", choices=[r.value for r in AccessRole])
    creds.add_argument("--json", action="store_true", help="a JSON object instead")
    creds.set_defaults(run=_kafka_credentials)
