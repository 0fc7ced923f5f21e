"""A PostgreSQL connection URL that never shows its password (`SHREDLINE_KEY_STORE=postgresql://…`).

`str`, `repr` and every message built from it show `postgresql://user:***@host:port/db?…`; only
`reveal()` (handed to the driver and nowhere else) gives the password. Query parameters are
libpq's (`sslmode=verify-full`, `sslrootcert=…`, `sslcert=…`, `sslkey=…`, `connect_timeout=…`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

SCHEMES = ("postgresql", "postgres")
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


class DatabaseUrlError(ValueError):
    """A malformed URL; the message names the part and never carries the password."""


class DatabaseUrl:
    """A validated `postgresql://` URL (user, password, host[:port], database, libpq parameters)."""

    __slots__ = ("_value", "masked")

    def __init__(self, value: str) -> None:
        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise DatabaseUrlError("not a URL of the form postgresql://user:password@host:port/database") from None
        if parts.scheme not in SCHEMES:
            raise DatabaseUrlError(f"expected a {SCHEMES[0]}:// URL, got {parts.scheme or 'no'} scheme")
        if not parts.hostname:
            raise DatabaseUrlError("no host in the URL (postgresql://user:password@host:port/database)")
        if not parts.path.strip("/"):
            raise DatabaseUrlError("no database in the URL (postgresql://user:password@host:port/database)")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if "password" in params:
            raise DatabaseUrlError("put the password in the URL's user:password part, not in its query")
        if "sslmode" in params and params["sslmode"] not in _SSLMODES:
            raise DatabaseUrlError(f"sslmode must be one of {', '.join(sorted(_SSLMODES))}")
        self._value = value
        user = parts.username or ""
        secret = ":***" if parts.password is not None else ""
        where = f"{parts.hostname}{f':{port}' if port else ''}"
        query = f"?{parts.query}" if parts.query else ""
        self.masked = f"{parts.scheme}://{f'{user}{secret}@' if user or secret else ''}{where}{parts.path}{query}"

    @staticmethod
    def looks_like(value: str) -> bool:
        """Is `value` meant as a database URL (rather than a file path)?"""
        return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value) is not None

    def reveal(self) -> str:
        """The URL with its password: for the driver only."""
        return self._value

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseUrl) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
