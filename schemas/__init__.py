"""The Avro contracts: `<record>/v<N>.avsc`, every version kept, the highest one current.

Loading is pure file reading; `Registry` answers "which schema wrote these bytes" (by
CRC-64-AVRO fingerprint of the parsing canonical form) and "what is the current version".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    record: str  # folder name, e.g. "message_event"
    version: int
    parsed: Any  # fastavro's parsed schema
    fingerprint: bytes  # 8 bytes, little-endian, as the single-object header carries it

    @property
    def label(self) -> str:
        return f"{self.record} v{self.version}"


class Registry:
    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_fp = {v.fingerprint: v for v in versions}
        if len(self._by_fp) != len(versions):
            raise ValueError("two schema versions share a fingerprint: a version was added without a change")
        self._by_record: dict[str, list[SchemaVersion]] = {}
        for v in sorted(versions, key=lambda v: (v.record, v.version)):
            self._by_record.setdefault(v.record, []).append(v)

    def records(self) -> list[str]:
        return sorted(self._by_record)

    def versions(self, record: str) -> list[SchemaVersion]:
        return list(self._by_record[record])

    def current(self, record: str) -> SchemaVersion:
        return self._by_record[record][-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)


def load_version(path: Path, record: str, version: int) -> SchemaVersion:
    raw = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_schema(raw)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaVersion(record, version, parsed, fp)


def load_registry(directory: Path = SCHEMA_DIR) -> Registry:
    versions = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for file in folder.glob("v*.avsc"):
            match = _VERSION_FILE.fullmatch(file.name)
            if match:
                versions.append(load_version(file, folder.name, int(match.group(1))))
    return Registry(versions)


@cache
def registry() -> Registry:
    """The repository's contracts, loaded once per process."""
    return load_registry()
