"""`SHREDLINE_KEY_STORE` as a URL: read strictly, the way libpq reads it, or refused in one line
naming `key_store` and the reason; no secret in any message, `str` or `repr`; a typo never turns
it into a SQLite path; an unverified connection across hosts is said once."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from shredline.keystore.dburl import DatabaseUrl, DatabaseUrlError, transport_warning
from shredline.streams.errors import ConfigError
from shredline.streams.settings import load_settings

SECRET = "SECRET"


def _refused(value: str, reason: str) -> None:
    """The settings' one line for `value`, checked to name `key_store` and `reason` and no secret."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"SHREDLINE_KEY_STORE": value})
    message = str(caught.value)
    assert message.startswith("key_store: ") and reason in message, message
    assert "\n" not in message and SECRET not in message and SECRET not in repr(caught.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        # what libpq would have echoed, or split elsewhere than a URL parser
        ("postgresql://shredline:pa%SECRET@127.0.0.1:5432/postgres", "malformed %-escape in the user:password part"),
        ("postgresql://shredline:pa%00SECRET@127.0.0.1:5432/postgres", "%00 is not allowed"),
        ("postgresql://shredline:pa%ffSECRET@127.0.0.1:5432/postgres", "not UTF-8"),
        ("postgresql://shredline:p@SECRETtail@127.0.0.1:5432/postgres", "more than one '@' before the host"),
        ("postgresql://shredline:123/45SECRET@127.0.0.1:5432/postgres", "'@' after the host"),
        ("postgresql://shredline:pa?SECRET@127.0.0.1:5432/postgres", "'@' after the host"),
        ("postgresql://shredline:pa#SECRET@127.0.0.1:5432/postgres", "'#' in the URL"),
        ("postgresql://shredline:pa SECRET@127.0.0.1:5432/postgres", "space or control character"),
        ("postgresql://shredline:pa%SECRET@[::1]:5432/postgres", "malformed %-escape"),
        # secrets in the query
        ("postgresql://shredline@h/db?password=SECRET", "user:password part, not in its query"),
        ("postgresql://shredline@h/db?pass%77ord=SECRET", "user:password part, not in its query"),
        ("postgresql://shredline@h/db?sslpassword=%SECRET", "malformed %-escape in query parameter sslpassword"),
        ("postgresql://shredline@h/db?sslpassword=a=SECRET", "not key=value"),
        ("postgresql://shredline@h/db?SECRET", "not key=value"),
        # typos that once made a SQLite path
        ("postgresql:/shredline:SECRET@127.0.0.1:5432/postgres", "expected '//' after 'postgresql:'"),
        (" postgresql://shredline:SECRET@127.0.0.1:5432/postgres", "space or line break before or after"),
        ("postgresql://shredline:SECRET@127.0.0.1:5432/postgres\n", "space or line break before or after"),
        ("postgresq://shredline:SECRET@127.0.0.1:5432/postgres", "unsupported scheme 'postgresq'; use postgresql://"),
        ("shredline:SECRET@127.0.0.1:5432/postgres", "unsupported scheme 'shredline'"),
        ("mysql://a:SECRET@h/d", "unsupported scheme 'mysql'; use postgresql://… or a SQLite file path"),
        ("./keys//SECRET://x", "no scheme before '://'"),
        # the rest of the shape
        ("postgresql://a:SECRET@/d", "no host"),
        ("postgresql://a:SECRET@h:5432", "no database"),
        ("postgresql://a:SECRET@h:5432/", "no database"),
        ("postgresql://a:SECRET@h:port/d", "a host that is not host[:port]"),
        ("postgresql://a:SECRET@::1:5432/d", "a host that is not host[:port]"),
        ("postgresql://a:SECRET@h:70000/d", "a port that is not a number from 1 to 65535"),
        ("postgresql://a:SECRET@h/d?sslmode=sometimes", "sslmode must be one of"),
    ],
)
def test_a_malformed_or_ambiguous_value_is_refused_in_one_line_without_the_secret(value: str, reason: str) -> None:
    _refused(value, reason)
    with pytest.raises(DatabaseUrlError):
        DatabaseUrl(value)


@pytest.mark.parametrize(
    ("value", "password", "shown"),
    [
        ("postgresql://app:SECRET@db.example:5433/keys", "SECRET", "postgresql://app:***@db.example:5433/keys"),
        ("postgresql://app:SECRET@[::1]:5432/keys", "SECRET", "postgresql://app:***@[::1]:5432/keys"),
        ("postgresql://app:SECRET@[::1]/keys", "SECRET", "postgresql://app:***@[::1]/keys"),
        ("postgresql://app:SECRET@h/keys?", "SECRET", "postgresql://app:***@h/keys?"),
        ("postgres://app:SE:CR:ET@h/keys", "SE:CR:ET", "postgres://app:***@h/keys"),
        ("postgresql://app:p%40SECRET%2F%3F%23%25@h/keys", "p@SECRET/?#%", "postgresql://app:***@h/keys"),
        ("postgresql://app:SECRETäöü€@h/keys", "SECRETäöü€", "postgresql://app:***@h/keys"),
        ("postgresql://app:SECRET%C3%A4@h/keys", "SECRETä", "postgresql://app:***@h/keys"),
        ("postgresql://app:SECRET@h1:5432,h2:5433/keys", "SECRET", "postgresql://app:***@h1:5432,h2:5433/keys"),
        (
            "postgresql://app:SECRET@h/keys?sslmode=verify-full&sslpassword=SECRET3&sslkey=/k.pem",
            "SECRET",
            "postgresql://app:***@h/keys?sslmode=verify-full&sslpassword=***&sslkey=/k.pem",
        ),
    ],
)
def test_an_accepted_url_reads_as_libpq_reads_it_and_shows_no_secret(value: str, password: str, shown: str) -> None:
    url = DatabaseUrl(value)
    settings = load_settings({"SHREDLINE_KEY_STORE": value})
    assert settings.key_store_url == url
    libpq = conninfo_to_dict(url.reveal())  # libpq's own parser
    assert libpq["password"] == password and libpq["user"] == "app" and libpq["dbname"] == "keys"
    assert ",".join(url.hosts) == libpq["host"]
    for text in (str(url), repr(url), url.masked, f"{url}", repr(url.params), repr(settings)):
        assert SECRET not in text and password not in text
    assert str(url) == shown and repr(url) == f"DatabaseUrl({shown!r})"
    assert url == DatabaseUrl(value) and hash(url) == hash(DatabaseUrl(value)) and url.reveal() == value


def test_the_scrubber_takes_every_form_of_every_secret_out_of_a_drivers_message() -> None:
    raw = "p%40SECRET%3Aä"
    url = DatabaseUrl(f"postgresql://app:{raw}@[::1]:5432/keys?sslpassword=SECRET3%21")
    decoded = conninfo_to_dict(url.reveal())["password"]
    assert decoded == "p@SECRET:ä"
    message = (
        f"connection to {url.reveal()} failed; password {decoded!r} or {raw}, userinfo app:{raw}, "
        "sslpassword SECRET3! or SECRET3%21"
    )
    scrubbed = url.scrub(message)
    assert SECRET not in scrubbed and decoded not in scrubbed and raw not in scrubbed
    assert "postgresql://app:***@[::1]:5432/keys?sslpassword=***" in scrubbed


def test_plain_paths_stay_sqlite_files_and_anything_url_shaped_is_a_url() -> None:
    for path in ("/var/lib/shredline/keys.sqlite", "keys.sqlite", "./a:b.sqlite", "C:\\keys.sqlite", "d:keys"):
        assert not DatabaseUrl.looks_like(path)
        settings = load_settings({"SHREDLINE_KEY_STORE": path})
        assert settings.key_store_url is None and settings.key_store_path == Path(path)
    for url in ("postgresql:/x", " postgresql://x", "x+y.z-w:anything", "C://x", "/a/b://c", "pg:"):
        assert DatabaseUrl.looks_like(url), url


@pytest.mark.parametrize(
    ("query", "host", "warned"),
    [
        ("", "db.internal", True),
        ("?sslmode=disable", "db.internal", True),
        ("?sslmode=allow", "10.0.0.7", True),
        ("?sslmode=prefer", "[2001:db8::1]", True),
        ("?sslmode=require", "db.internal", True),
        ("?ssl=true", "db.internal", True),
        ("?sslmode=verify-ca", "db.internal", False),
        ("?sslmode=verify-full", "db.internal", False),
        ("?ssl=true&sslmode=verify-full", "db.internal", False),
        ("?sslmode=verify-full&sslmode=require", "db.internal", True),  # the last one counts, as in libpq
        ("", "127.0.0.1", False),
        ("?sslmode=disable", "localhost", False),
        ("", "[::1]", False),
        ("", "127.0.0.1,[::1]:5433", False),
        ("", "127.0.0.1,db.internal", True),
        ("?host=/var/run/postgresql", "localhost", False),
        ("?host=%2Fvar%2Frun%2Fpostgresql", "localhost", False),
        ("?host=db.internal", "localhost", True),
        ("?hostaddr=10.0.0.7", "localhost", True),
        ("?hostaddr=127.0.0.1", "localhost", False),
    ],
)
def test_an_unverified_connection_to_another_machine_is_warned_about(query: str, host: str, warned: bool) -> None:
    url = DatabaseUrl(f"postgresql://app:SECRET@{host}/keys{query}")
    warning = transport_warning(url)
    assert (warning is not None) == warned
    if warning is not None:
        assert "\n" not in warning and SECRET not in warning and "sslmode=verify-full" in warning
        assert "not verified" in warning and str(url) in warning
