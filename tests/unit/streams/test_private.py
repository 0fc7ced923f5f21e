"""Private files: commands refuse to start when the data dir or a secret in it is open to others."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shredline.streams.cli import main
from shredline.streams.errors import ConfigError
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.certs import ensure_tls
from shredline.streams.private import check_private, make_private_dir
from shredline.streams.settings import Settings


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir as the commands leave it: master key, key store (open, so its WAL exists),
    broker and role keys."""
    settings = Settings(data_dir=tmp_path / "data")
    check_private(settings)
    keys = open_keys(settings)
    keys.store.record("test.setup")
    ensure_tls(settings.kafka_dir / "tls")
    yield settings.data_dir
    keys.store.close()


def test_a_missing_data_dir_is_created_owner_only(tmp_path: Path) -> None:
    check_private(Settings(data_dir=tmp_path / "new" / "data"))
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700


def test_what_the_commands_create_is_owner_only_and_passes(data_dir: Path) -> None:
    check_private(Settings(data_dir=data_dir))
    for name in ("master.key", "keys.sqlite", "keys.sqlite-wal"):
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize(
    ("relative", "mode", "setting"),
    [
        (".", 0o755, "data_dir"),
        ("master.key", 0o640, "master_key_file"),
        ("keys.sqlite", 0o644, "key_store"),
        ("keys.sqlite-wal", 0o604, "key_store"),
        ("kafka/tls/broker.pem", 0o640, "kafka"),
        ("kafka/credentials/operator.key", 0o644, "kafka"),
    ],
)
def test_a_secret_open_to_others_is_refused_in_one_line(data_dir: Path, relative: str, mode: int, setting: str) -> None:
    path = data_dir / relative
    path.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        check_private(Settings(data_dir=data_dir))
    message = str(refused.value)
    assert message.startswith(f"{setting}: {path} is open to group or others")  # pathlib drops a "."
    assert f"(mode {mode:04o})" in message and "\n" not in message


def test_a_configured_key_outside_the_data_dir_is_checked_too(data_dir: Path, tmp_path: Path) -> None:
    key, cert = tmp_path / "mine.key", tmp_path / "mine.pem"
    key.write_text("k")
    cert.write_text("c")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"^tls_key: .*mine\.key is open to group or others \(mode 0644\)"):
        check_private(Settings(data_dir=data_dir, tls_cert=cert, tls_key=key))


def test_the_command_line_refuses_to_start_with_exit_2(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("SHREDLINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SHREDLINE_DATA_DIR", str(data_dir))
    (data_dir / "master.key").chmod(0o644)
    assert main(["keys", "report"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"shredline: error: master_key_file: {data_dir / 'master.key'} is open to group or others (mode 0644); "
        f"refusing to start: chmod 600 {data_dir / 'master.key'}"
    ]


def test_a_folder_made_inside_a_missing_data_dir_leaves_the_data_dir_owner_only(tmp_path: Path) -> None:
    """`make test` resolves the Kafka jars into `.shredline/cache` first; `make demo` after it must
    start (it refused when the jar cache had created the data dir 0755)."""
    os.chmod(tmp_path, 0o755)  # noqa: S103 - a parent that is not ours to tighten
    cache = tmp_path / "data" / "cache" / ".kafka-4.1.1.partial"
    make_private_dir(cache)
    for folder in (tmp_path / "data", tmp_path / "data" / "cache", cache):
        assert os.stat(folder).st_mode & 0o777 == 0o700, folder
    assert os.stat(tmp_path).st_mode & 0o777 == 0o755  # what existed is left alone
    check_private(Settings(data_dir=tmp_path / "data"))
    make_private_dir(cache)  # idempotent
