"""The evolution check: every schema reads data written with each of its earlier versions."""

from __future__ import annotations

import io
import json

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import schemaless_reader, schemaless_writer

from shredline.schemas import SCHEMA_DIR, registry
from tests.unit.samples import sample

PAIRS = [(record, old.version) for record in registry().records() for old in registry().versions(record)]


def _raw(record: str, version: int) -> dict[str, object]:
    return json.loads((SCHEMA_DIR / record / f"v{version}.avsc").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("record", "version"), PAIRS)
def test_current_version_reads_every_earlier_version(record: str, version: int) -> None:
    current = registry().current(record)
    checker = ReaderWriterCompatibilityChecker()
    result = checker.get_compatibility(
        avro.schema.parse(json.dumps(_raw(record, current.version))),
        avro.schema.parse(json.dumps(_raw(record, version))),
    )
    assert result.compatibility is SchemaCompatibilityType.compatible, result.messages

    old = registry().versions(record)[version - 1]
    buf = io.BytesIO()
    schemaless_writer(buf, old.parsed, sample(old.parsed))
    buf.seek(0)
    read = schemaless_reader(buf, old.parsed, current.parsed)
    assert set(read) == {f["name"] for f in current.parsed["fields"]}


def test_versions_are_numbered_from_one_without_gaps() -> None:
    for record in registry().records():
        assert [v.version for v in registry().versions(record)] == list(
            range(1, len(registry().versions(record)) + 1)
        ), record


def _walk(node: object, where: str) -> list[str]:
    """Every field without a doc, and every enum without a default."""
    problems = []
    if isinstance(node, dict):
        if node.get("type") == "record":
            for field in node["fields"]:
                if not str(field.get("doc", "")).strip():
                    problems.append(f"{where}.{field['name']}: no doc")
                problems += _walk(field["type"], f"{where}.{field['name']}")
        elif node.get("type") == "enum" and node.get("default") not in node["symbols"]:
            problems.append(f"{where}: enum without a default")
        elif node.get("type") in {"map", "array"}:
            problems += _walk(node.get("values", node.get("items")), where)
    elif isinstance(node, list):
        for branch in node:
            problems += _walk(branch, where)
    return problems


@pytest.mark.parametrize(("record", "version"), PAIRS)
def test_every_field_has_a_doc_and_every_enum_can_grow(record: str, version: int) -> None:
    assert _walk(_raw(record, version), record) == []
