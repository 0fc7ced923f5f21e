"""Build the key hierarchy from settings: the one place that knows where keys live."""

from __future__ import annotations

from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.keystore.store import AuditHead
from shredline.streams.settings import Settings


def open_keys(settings: Settings, actor: str = "shredline", busy_timeout_s: float = 10.0) -> Keys:
    """A master key is created only on first *local* use: the default file, and no key store yet.
    A configured key file that is missing is an error, never silently replaced. `actor` is who the
    audit records of this process's key changes name (an operator, or a service such as the worker).
    `busy_timeout_s` is how long a call waits for another process's write lock before raising
    `KeyStoreUnavailable`; the worker keeps it short, since the wait blocks its event loop."""
    first_local_use = settings.master_key_file is None and not settings.key_store_path.exists()
    env_value = settings.master_key.reveal() if settings.master_key else None
    master = load_keyring(env_value, settings.master_key_path, create=first_local_use)
    return Keys(
        SqliteKeyStore(settings.key_store_path, busy_timeout_s=busy_timeout_s, actor=actor),
        master,
        staleness_s=settings.key_cache_staleness_s,
        reload_master=lambda: load_keyring(env_value, settings.master_key_path, create=False),
    )


def audit_anchor(settings: Settings) -> AuditHead | None:
    """The audit chain head anchored in this host's key store; None when there is no key store
    here (an auditor's machine) or it never relayed. Needs no master key: the head is not secret."""
    if not settings.key_store_path.exists():
        return None
    store = SqliteKeyStore(settings.key_store_path)
    try:
        return store.audit_head()
    finally:
        store.close()
