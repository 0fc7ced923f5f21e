"""Errors of the Kafka-facing layer, under the root in `shredline.schemas.errors`.

Messages are written for the operator and must never carry personal data or secrets.
"""

from __future__ import annotations

from shredline.schemas.errors import ShredlineError


class ConfigError(ShredlineError):
    """A setting is missing or invalid; the message names the setting and the reason."""

    exit_code = 2


class LauncherError(ShredlineError):
    """The local Kafka launcher could not do what was asked."""


class KafkaOperationError(ShredlineError):
    """A Kafka call failed; keeps Kafka's own error code so callers can branch on it."""

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable
