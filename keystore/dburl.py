"""A PostgreSQL connection URL that never shows its secrets (`SHREDLINE_KEY_STORE=postgresql://…`).

Shape: `postgresql://[user[:password]@]host[:port][,host[:port]…]/database[?key=value&…]`, a host
being a name, an IPv4 address or `[an IPv6 address]`; query parameters are libpq's
(`sslmode=verify-full`, `sslrootcert=…`, `sslcert=…`, `sslkey=…`, `sslpassword=…`,
`connect_timeout=…`). The URL is parsed strictly, the way libpq will read it: a character that
libpq and a URL parser would split differently (an unencoded `@`, `/`, `?` or `#` in the password,
a malformed `%` escape, a space) is refused with `DatabaseUrlError`, whose message names the part
and the reason and never carries a secret.

`str`, `repr` and every message built from it show `postgresql://user:***@host:port/db?…` (and
`sslpassword=***`); only `reveal()` (handed to the driver and nowhere else) gives the secrets,
and `scrub()` takes them out of any text the driver sends back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

SCHEMES = ("postgresql", "postgres")
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
_VERIFIED = frozenset({"verify-ca", "verify-full"})  # the server's certificate checked: encrypted and authenticated
# libpq's secret options (its `dispchar` "*"), besides `password`, which belongs in user:password
SECRET_PARAMS = frozenset({"sslpassword", "oauth_client_secret"})
_FORM = "postgresql://user:password@host:port/database"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
_HOST = re.compile(r"(?:\[(?P<v6>[^\[\]]+)\]|(?P<name>[^\[\]:]+))(?::(?P<port>[0-9]{1,5}))?")
MASK = "***"


class DatabaseUrlError(ValueError):
    """A malformed or refused URL; the message names the part and the reason, never a secret."""


class DatabaseUrl:
    """A validated `postgresql://` URL (user, password, hosts, database, libpq parameters).

    `hosts` are the URL's host names or addresses, %-decoded, without IPv6 brackets; `params` are
    its query parameters, %-decoded (the last of a repeated one, as libpq does; `ssl=true` read as
    `sslmode=require`), secret ones' values shown as `***`. Raises `DatabaseUrlError`."""

    __slots__ = ("_secrets", "_value", "hosts", "masked", "params")

    def __init__(self, value: str) -> None:
        if value != value.strip():
            raise DatabaseUrlError("space or line break before or after the URL: remove it")
        if re.search(r"[\x00-\x20\x7f]", value):
            raise DatabaseUrlError("space or control character in the URL: percent-encode it (a space is %20)")
        scheme = _scheme(value)
        if scheme is None:
            if "://" in value:
                raise DatabaseUrlError(f"no scheme before '://'; use {SCHEMES[0]}://… or a SQLite file path")
            raise DatabaseUrlError(f"not a URL of the form {_FORM}")
        if scheme not in SCHEMES:
            raise DatabaseUrlError(f"unsupported scheme {scheme!r}; use {SCHEMES[0]}://… or a SQLite file path")
        rest = value[len(scheme) + 1 :]
        if not rest.startswith("//"):
            raise DatabaseUrlError(f"expected '//' after '{scheme}:' ({_FORM})")
        rest = rest[2:]
        if "#" in rest:
            raise DatabaseUrlError("'#' in the URL (libpq reads no fragment): percent-encode it as %23")
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        if "@" in tail:
            raise DatabaseUrlError(
                "'@' after the host: percent-encode '/', '?' and '@' in the user:password part "
                "(%2F, %3F, %40) and '@' anywhere else (%40)"
            )
        userinfo, at, hostlist = authority.rpartition("@")
        if "@" in userinfo:
            raise DatabaseUrlError("more than one '@' before the host: percent-encode '@' in the user:password part")
        user, colon, password = userinfo.partition(":")
        _decode(user, "the user:password part")
        secrets = [userinfo, password, _decode(password, "the user:password part")] if colon else []
        self.hosts = _hosts(hostlist)
        path, question, query = tail.partition("?")
        if not _decode(path[1:], "the database name"):
            raise DatabaseUrlError(f"no database in the URL ({_FORM})")
        params: dict[str, str] = {}
        shown = []
        for item in query.split("&") if query else []:
            if item.count("=") != 1:
                raise DatabaseUrlError("a query parameter that is not key=value (write an '=' in a value as %3D)")
            raw_key, raw = item.split("=")
            key = _decode(raw_key, "a query parameter's name")
            if key == "password":
                raise DatabaseUrlError("put the password in the URL's user:password part, not in its query")
            decoded = _decode(raw, f"query parameter {key}")
            if key in SECRET_PARAMS:
                secrets += [raw, decoded]
                raw = decoded = MASK
            if key == "ssl" and decoded == "true":  # libpq's JDBC spelling
                key, decoded = "sslmode", "require"
            if key == "sslmode" and decoded not in _SSLMODES:
                raise DatabaseUrlError(f"sslmode must be one of {', '.join(sorted(_SSLMODES))}")
            params[key] = decoded
            shown.append(f"{raw_key}={raw}")
        self.params: Mapping[str, str] = params
        self._value = value
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        credentials = f"{user}{':' + MASK if colon else ''}{at}"
        self.masked = f"{scheme}://{credentials}{hostlist}{path}{question}{'&'.join(shown)}"

    @staticmethod
    def looks_like(value: str) -> bool:
        """Is `value` meant as a database URL rather than a file path? Yes when it contains `://`,
        or starts (spaces aside, which the URL then refuses) with a scheme and a colon, a single
        letter excepted (a Windows drive, `C:\\keys.sqlite`)."""
        scheme = _scheme(value.strip())
        return "://" in value or (scheme is not None and len(scheme) > 1)

    def reveal(self) -> str:
        """The URL with its secrets: for the driver only."""
        return self._value

    def scrub(self, text: str) -> str:
        """`text` (a driver's message) with the URL shown masked and every secret replaced by
        `***`: the password as written and %-decoded, the user:password part, secret parameters."""
        text = text.replace(self._value, self.masked)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseUrl) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def transport_warning(url: DatabaseUrl) -> str | None:
    """One line to log when traffic to the store is neither verified nor kept on this machine:
    sslmode other than verify-ca/verify-full (none given is libpq's `prefer`) to a host that is not
    loopback or a unix socket (every host, `host=` and `hostaddr=` counted); else None."""
    sslmode = url.params.get("sslmode")
    if sslmode in _VERIFIED:
        return None
    hosts = [*url.hosts, *_listed(url.params.get("host")), *_listed(url.params.get("hostaddr"))]
    if all(_on_this_machine(host) for host in hosts):
        return None
    return (
        f"key store {url}: sslmode={sslmode or 'prefer (the default)'}: traffic to the key store is not "
        "verified and may not be encrypted; use sslmode=verify-full (with sslrootcert=…) across hosts"
    )


def _scheme(value: str) -> str | None:
    """The scheme `value` starts with (the text before its first colon, if scheme-shaped)."""
    match = _SCHEME.match(value)
    return match[0][:-1] if match else None


def _decode(raw: str, where: str) -> str:
    """`raw` %-decoded as libpq does. Raises `DatabaseUrlError` naming `where` (never the text) for
    a malformed escape, `%00` or bytes that are not UTF-8."""
    if _BAD_ESCAPE.search(raw):
        raise DatabaseUrlError(f"malformed %-escape in {where} (write a literal % as %25; %00 is not allowed)")
    try:
        return unquote_to_bytes(raw).decode()
    except UnicodeDecodeError:
        raise DatabaseUrlError(f"{where} is not UTF-8 once %-decoded") from None


def _hosts(hostlist: str) -> tuple[str, ...]:
    """`host[:port][,host[:port]…]` as %-decoded hosts (no brackets). Raises `DatabaseUrlError`."""
    if not hostlist:
        raise DatabaseUrlError(f"no host in the URL ({_FORM})")
    hosts = []
    for entry in hostlist.split(","):
        match = _HOST.fullmatch(entry)
        if match is None:
            raise DatabaseUrlError("a host that is not host[:port] or [IPv6 address][:port]")
        if match["port"] is not None and not 0 < int(match["port"]) < 65536:
            raise DatabaseUrlError("a port that is not a number from 1 to 65535")
        hosts.append(_decode(match["v6"] or match["name"], "the host"))
    return tuple(hosts)


def _listed(value: str | None) -> list[str]:
    """A libpq comma-separated list (`host=a,b`), empty entries dropped."""
    return [item for item in (value or "").split(",") if item]


def _on_this_machine(host: str) -> bool:
    """A unix socket directory (`/…`, or `@…` abstract), `localhost` or a loopback address."""
    if host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False
