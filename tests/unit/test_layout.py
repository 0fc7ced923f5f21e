"""The layout's rules, checked on the source tree and on a built wheel.

- Everything installs and imports under one name, `shredline` (the folders' bare names are
  taken on PyPI: `analytics` is Segment's client).
- The pure core (`keystore`, `processors`, `analytics`, `schemas`) never imports the
  Kafka-facing `shredline.streams`.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import shredline.streams

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("streams", "processors", "analytics", "schemas", "keystore")
CORE = ("keystore", "processors", "analytics", "schemas")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, function-local ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_the_core_never_imports_streams() -> None:
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files(*CORE)
        for line, module in imported_modules(path)
        if module == "shredline.streams" or module.startswith("shredline.streams.")
    ]
    assert offending == []


def test_no_module_imports_a_bare_top_level_name() -> None:
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files(*FOLDERS, "tests", "bench")
        for line, module in imported_modules(path)
        if module.split(".")[0] in FOLDERS
    ]
    assert offending == []


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """Positive control: the import walker sees top-level, aliased and function-local imports."""
    sample = tmp_path / "sample.py"
    sample.write_text("import streams.cli as c\ndef f():\n    from shredline.streams.catalog import topic_name\n")
    assert [m for _, m in imported_modules(sample)] == ["streams.cli", "shredline.streams.catalog"]


def test_every_package_folder_is_listed_for_installation() -> None:
    tool = PYPROJECT["tool"]["setuptools"]
    folder_of = {name: folder for name, folder in tool["package-dir"].items()}
    assert sorted(folder_of.values()) == sorted(FOLDERS)
    on_disk = set()
    for name, folder in folder_of.items():
        # modules, and the schemas' folders of .avsc files (setuptools warns of a data folder it is not told of)
        for marker in [*(REPO / folder).rglob("__init__.py"), *(REPO / folder).rglob("*.avsc")]:
            relative = marker.parent.relative_to(REPO / folder)
            on_disk.add(".".join([name, *relative.parts]))
    assert sorted(tool["packages"]) == sorted(on_disk)


def test_mypy_reads_the_installed_link_tree() -> None:
    """mypy's path names the strict editable install's link tree, whose name carries the version."""
    link_tree = Path(shredline.streams.__file__).parents[2]
    configured = PYPROJECT["tool"]["mypy"]["mypy_path"].replace("$MYPY_CONFIG_FILE_DIR", str(REPO))
    assert link_tree == Path(configured), "re-run `make install`, or update mypy_path after a version change"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources, as a fresh clone would have them (setuptools writes into build/).
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "__pycache__", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("shredline-*.whl")
    return built


def test_the_wheel_holds_only_the_shredline_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"shredline", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not any(n.startswith("shredline/__init__") for n in names)  # a PEP 420 namespace
    assert "shredline/schemas/message_event/v1.avsc" in names
    assert "shredline/streams/py.typed" in names


def test_installed_wheel_imports_only_under_shredline(wheel: Path, tmp_path: Path) -> None:
    """Install into a new venv whose only other path is this venv's dependencies (not its .pth files)."""
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    site = next((target / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "confluent_kafka").exists())
    (site / "dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"  # not the repository: its folders would import by their bare names
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=120)

    python = str(target / "bin" / "python")
    for bare in FOLDERS:
        result = run(python, "-c", f"import {bare}")
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, bare
    sdk = run(python, "-c", "from shredline.streams.ingest.sdk import Publisher; print(Publisher.__name__)")
    assert sdk.returncode == 0 and sdk.stdout.strip() == "Publisher", sdk.stderr
    located = run(python, "-c", "import shredline.streams.cli as m; print(m.__file__)")
    assert located.stdout.strip().startswith(str(target)), located.stdout
    helped = run(str(target / "bin" / "shredline"), "--help")
    assert helped.returncode == 0 and "tenant" in helped.stdout, helped.stderr
