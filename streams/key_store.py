"""Build the key hierarchy from settings: the one place that knows where keys live.

`SHREDLINE_KEY_STORE` selects the backend: a file path (default `<data_dir>/keys.sqlite`) is the
embedded SQLite store for one host; a `postgresql://` URL is the PostgreSQL store that several
hosts share.
"""

from __future__ import annotations

from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.keystore.store import AuditHead, KeyStore
from shredline.streams.settings import Settings


def open_store(settings: Settings, actor: str = "shredline", busy_timeout_s: float = 10.0) -> KeyStore:
    """The configured key store (created on first use). Raises `KeyStoreUnavailable` in one line
    (the URL's password masked) when it cannot be reached."""
    url = settings.key_store_url
    if url is not None:
        from shredline.keystore.postgres_store import PostgresKeyStore  # psycopg only where it is used

        return PostgresKeyStore(url, busy_timeout_s=busy_timeout_s, actor=actor)
    from shredline.keystore.sqlite_store import SqliteKeyStore

    return SqliteKeyStore(settings.key_store_path, busy_timeout_s=busy_timeout_s, actor=actor)


def store_exists(settings: Settings) -> bool:
    """Is there a key store to read? A configured server always is; a SQLite file once created."""
    return settings.key_store_url is not None or settings.key_store_path.exists()


def open_keys(settings: Settings, actor: str = "shredline", busy_timeout_s: float = 10.0) -> Keys:
    """A master key is created only on first *local* use: the default file, and no SQLite key store
    yet. A configured key file that is missing is an error, never silently replaced; so is a missing
    key with a PostgreSQL store, which other hosts share (each must use the same keyring). `actor` is
    who the audit records of this process's key changes name (an operator, or a service such as the
    worker). `busy_timeout_s` is how long a call waits for another process's lock before raising
    `KeyStoreUnavailable`; the worker keeps it short, since the wait blocks its event loop."""
    first_local_use = settings.master_key_file is None and not store_exists(settings)
    env_value = settings.master_key.reveal() if settings.master_key else None
    master = load_keyring(env_value, settings.master_key_path, create=first_local_use)
    return Keys(
        open_store(settings, actor, busy_timeout_s),
        master,
        staleness_s=settings.key_cache_staleness_s,
        reload_master=lambda: load_keyring(env_value, settings.master_key_path, create=False),
    )


def audit_anchor(settings: Settings) -> AuditHead | None:
    """The audit chain head anchored in the key store; None when there is no key store here (an
    auditor's machine) or it never relayed. Needs no master key: the head is not secret."""
    if not store_exists(settings):
        return None
    store = open_store(settings)
    try:
        return store.audit_head()
    finally:
        store.close()
