"""Sample values for schemas: every field filled, from the schema alone (for any version)."""

from __future__ import annotations

import datetime as dt
from typing import Any

WHEN = dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)


def sample(schema: Any, canary: str = "sample") -> Any:
    """A value that exercises every field of `schema` (fastavro parsed or raw JSON form)."""
    if isinstance(schema, str):
        return {
            "string": canary,
            "long": 7,
            "int": 3,
            "boolean": True,
            "bytes": canary.encode(),
            "double": 1.5,
            "float": 0.5,
            "null": None,
        }[schema]
    if isinstance(schema, list):
        return sample(next(s for s in schema if s != "null"), canary)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: sample(f["type"], canary) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "map":
        return {"k": sample(schema["values"], canary)}
    if kind == "array":
        return [sample(schema["items"], canary)]
    if schema.get("logicalType") == "timestamp-millis":
        return WHEN
    return sample(kind, canary)
