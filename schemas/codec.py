"""Avro single-object encoding: `C3 01`, the writer schema's CRC-64-AVRO fingerprint, the body.

Bytes carry their own schema identity, so a reader resolves the writer's version among every
version kept in `schemas/` and reads into the current one: producers and consumers upgrade
independently. Errors never include the bytes or any decoded value.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from shredline.schemas import Registry, SchemaVersion, registry
from shredline.schemas.errors import ShredlineError

MARKER = b"\xc3\x01"
HEADER_LEN = len(MARKER) + 8


class DecodeError(ShredlineError):
    """Bytes that are not a record we can read; the reason is safe to log and dead-letter."""

    def __init__(self, reason: str, fingerprint: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fingerprint = fingerprint


def encode(record: str, value: dict[str, Any], reg: Registry | None = None, *, canonical: bool = False) -> bytes:
    """Encode with the current version of `record`. `canonical` writes every map's entries in key
    order: the one byte form that `decode(..., canonical=True)` accepts."""
    version = (reg or registry()).current(record)
    out = io.BytesIO()
    out.write(MARKER)
    out.write(version.fingerprint)
    schemaless_writer(out, version.parsed, _sorted_maps(value) if canonical else value)
    return out.getvalue()


def _sorted_maps(value: Any) -> Any:
    """`value` with every dict's entries in key order (Avro writes a map in the dict's order; a
    record's fields are written in schema order whatever the dict's, so sorting those is harmless)."""
    if isinstance(value, dict):
        return {k: _sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def writer_of(data: bytes, reg: Registry | None = None) -> SchemaVersion:
    """The schema version that wrote `data`, from its header."""
    if len(data) < HEADER_LEN or data[:2] != MARKER:
        raise DecodeError("not Avro single-object encoded (missing C3 01 header)")
    fp = data[2:HEADER_LEN]
    version = (reg or registry()).by_fingerprint(fp)
    if version is None:
        raise DecodeError("unknown schema fingerprint", fp)
    return version


def decode(
    data: bytes, expect: str | None = None, reg: Registry | None = None, *, canonical: bool = False
) -> tuple[str, dict[str, Any]]:
    """Read `data` into the current version of its record; `expect` rejects other records.

    `canonical` also requires `data` to be the one encoding of what was read, as `encode(...,
    canonical=True)` writes it (no duplicate map keys, map entries in key order, no over-long
    varints, one block per map or array): for records that are hashed or signed, where two byte
    forms of one record would let a reader see something the hash does not cover, or let a
    signed record be re-encoded into bytes its writer never produced.
    """
    reg = reg or registry()
    writer = writer_of(data, reg)
    if expect is not None and writer.record != expect:
        raise DecodeError(f"expected {expect}, got {writer.record}", writer.fingerprint)
    if canonical:
        written = _read_body(data, writer, writer)
        again = io.BytesIO()
        schemaless_writer(again, writer.parsed, _sorted_maps(written))
        if again.getvalue() != data[HEADER_LEN:]:
            raise DecodeError(f"{writer.label} body is not in its canonical encoding", writer.fingerprint)
    return writer.record, _read_body(data, writer, reg.current(writer.record))


def _read_body(data: bytes, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    try:
        value = schemaless_reader(buf, writer.parsed, reader.parsed)
    except Exception:  # fastavro raises many types, some quoting the data: report none of it
        raise DecodeError(f"malformed {writer.label} body", writer.fingerprint) from None
    if buf.tell() != len(data):
        raise DecodeError(f"trailing bytes after {writer.label} body", writer.fingerprint)
    if not isinstance(value, dict):
        raise DecodeError(f"malformed {writer.label} body", writer.fingerprint)
    return value
