"""The root of Shredline's typed errors, so the CLI can turn any of them into one clear line.

It lives in the lowest layer (the contracts), so the pure core (`keystore`, `processors`,
`analytics`) and the Kafka-facing `shredline.streams` all derive from it without importing
upwards. Messages are written for the operator and never carry personal data or secrets.
"""

from __future__ import annotations


class ShredlineError(Exception):
    """Root of every error Shredline raises on purpose; its message is one safe line.

    `exit_code` is the process exit status the CLI uses for it (1; 2 for configuration).
    """

    exit_code = 1
