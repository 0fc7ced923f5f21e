"""Key errors. None of them ever carries key material, plaintext or a raw id."""

from __future__ import annotations

from shredline.schemas.errors import ShredlineError


class KeystoreError(ShredlineError):
    """Root of key and envelope errors."""


class InvalidCiphertext(KeystoreError):
    """Tampered, truncated or misplaced ciphertext. Deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("ciphertext cannot be opened")


class KeyDestroyed(KeystoreError):
    """The data was crypto-shredded: its key (or its tenant's root key) no longer exists."""

    def __init__(self, what: str = "key destroyed") -> None:
        super().__init__(what)


class TenantTerminated(KeyDestroyed):
    """The tenant is terminated: its keys are gone and no key can be created for it again."""

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant} is terminated: its data is deleted")
        self.tenant = tenant


class UnknownTenant(KeystoreError):
    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant} is not provisioned")
        self.tenant = tenant


class TenantExists(KeystoreError):
    def __init__(self, tenant: str, state: str) -> None:
        super().__init__(f"tenant {tenant} already exists ({state})")
        self.tenant = tenant
        self.state = state


class MasterKeyError(KeystoreError):
    """The master key is missing or malformed; the message names the source, never the key."""

    exit_code = 2


class KeyStoreUnavailable(KeystoreError):
    """The store could not be reached or stayed locked; retry later. Nothing was written."""


class StaleMasterKey(KeystoreError):
    """A root was wrapped under a master version older than the store's current one (the master key
    was rotated meanwhile); reload the keyring and wrap again."""

    def __init__(self, version: int | None, current: int) -> None:
        super().__init__(f"master_key: the key store's current master version is v{current}, not v{version}")
        self.version = version
        self.current = current
