"""Operator commands: who runs them, whether they may, and the audit record of every attempt.

The operator is `SHREDLINE_OPERATOR` (default: the OS user); the authorised ones are
`SHREDLINE_OPERATORS` / `operators = [...]` (default: only the OS user). Every operator
command leaves an `operator.command` record naming the operator and the command; anyone else
gets an `operator.refused` record and exit 77. Offline commands (key rotation) leave their
records in the key store's outbox, relayed by the next online command or the worker.
"""

from __future__ import annotations

from shredline.keystore.keys import Keys
from shredline.schemas.errors import ShredlineError
from shredline.streams.kafka.connection import Connection, resolve_connection
from shredline.streams.key_store import open_keys
from shredline.streams.operations.audit import Trail
from shredline.streams.settings import Settings


class Refused(ShredlineError):
    exit_code = 77  # EX_NOPERM


class Session:
    def __init__(self, settings: Settings, command: str, *, online: bool = True) -> None:
        self.settings = settings
        self.operator = settings.operator_name
        self.keys: Keys = open_keys(settings, actor=self.operator)
        self._conn = resolve_connection(settings) if online else None
        self._trail = Trail(self._conn, self.keys, settings) if self._conn else None
        allowed = self.operator in settings.authorised_operators
        action = "operator.command" if allowed else "operator.refused"
        self.keys.store.record(action, None, None, {"command": command})
        if self._trail is not None:
            self._trail.flush()
        if not allowed:
            raise Refused(
                f"{command}: operator {self.operator!r} is not authorised (see SHREDLINE_OPERATORS); "
                "the attempt was audited"
            )

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise AssertionError("an offline session has no broker connection")
        return self._conn

    @property
    def trail(self) -> Trail:
        if self._trail is None:
            raise AssertionError("an offline session has no audit trail connection")
        return self._trail
