"""Validation of upstream events beyond what Avro types can say.

Input is one JSON object (a line of `shredline publish`, or a dict given to the SDK) with a
`type` of `message`, `contact` or `execution`; output is the Avro-ready record, its topic and
its Kafka key. Every error is `field: reason` with a fixed reason text: **no message ever
quotes the value it rejects**, because the value may be a person's phone, name or words.

Bounds (also in each field's `doc` in `schemas/`): ids 1-128 of ``A-Z a-z 0-9 . _ : -``;
tenants 2-63 of ``a-z 0-9 -``; slugs 1-64 of ``a-z 0-9 . _ -``; body 4096 characters; log
and error text 8192; names 256; e-mails 254 (RFC 5321); at most 50 contact attributes with
keys of 1-64 and values of at most 1024 characters; times from 2020 to 5 minutes ahead.

Identifiers are ASCII: phone numbers are NFKC-normalised (full-width digits become 0-9) and
then must be ASCII, or are rejected ("not ASCII"); ids, tenants and slugs allow ASCII only.
Phones are returned in their canonical E.164 form (`processors.phones.canonical_e164`: the
legacy Brazilian and Mexican mobile forms WhatsApp sends are rewritten), so one person is one
contact. E-mail addresses follow RFC 5321/6531 (`email-validator`: internationalised local
parts and IDNA domains are accepted) and are returned normalised (NFC, domain lower-cased).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import email_validator

from shredline.processors.phones import canonical_e164
from shredline.processors.roles import Role
from shredline.schemas.errors import ShredlineError

MAX_ID = 128
MAX_BODY = 4096
MAX_TEXT = 8192
MAX_NAME = 256
MAX_EMAIL = 254
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE = 1024
MAX_ATTACHMENTS = 32
MAX_DURATION_MS = 86_400_000
EARLIEST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ATTRIBUTE_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SAFE_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TooLargeNumber:
    """Stands in for a JSON number no field can hold (more than 20 digits, or not finite), so a
    parser can pass it on and validation names the field it was given for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TooLargeNumber()"


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidEvent(ShredlineError):
    """An event failed validation; `errors` lists every problem, none quoting a value."""

    exit_code = 1

    def __init__(self, errors: list[FieldError]) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")
        self.errors = tuple(errors)

    @classmethod
    def one(cls, field: str, reason: str) -> InvalidEvent:
        return cls([FieldError(field, reason)])


@dataclass(frozen=True)
class ValidEvent:
    type: str  # message | contact | execution
    record: str  # schema folder, e.g. message_event
    role: Role  # the ingest stream it goes to
    key: bytes  # tenant + conversation (or contact, or execution): keeps one conversation ordered
    value: dict[str, Any]


class _Bad(Exception):
    """A check failed; carries only the fixed reason text."""


Check = Callable[[Any, dt.datetime], Any]


def _string(value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise _Bad("expected a string")
    if len(value) > max_len:
        raise _Bad(f"longer than {max_len} characters")
    if not value.isascii():  # (an ASCII string has no surrogate; isascii costs nothing)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("not valid Unicode (lone surrogate)") from None
    if "\x00" in value:
        raise _Bad("contains a NUL character")
    return value


def _pattern(regex: re.Pattern[str], max_len: int, what: str) -> Check:
    def check(value: Any, _now: dt.datetime) -> str:
        text = _string(value, max_len)
        if not regex.fullmatch(text):
            raise _Bad(f"not {what}")
        return text

    return check


def _text(max_len: int) -> Check:
    def check(value: Any, _now: dt.datetime) -> str:
        return _string(value, max_len)

    return check


def _nonempty_text(max_len: int) -> Check:
    def check(value: Any, _now: dt.datetime) -> str:
        text = _string(value, max_len)
        if not text.strip():
            raise _Bad("empty")
        return text

    return check


def _time(value: Any, now: dt.datetime) -> dt.datetime:
    if isinstance(value, bool):
        raise _Bad("expected an ISO-8601 time with zone, or epoch milliseconds")
    if isinstance(value, dt.datetime) and value.tzinfo is not None:  # decoded from Avro
        when = value
    elif isinstance(value, int):
        try:
            when = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise _Bad("epoch milliseconds out of range") from None
    elif isinstance(value, str) and len(value) <= 40:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Bad("not an ISO-8601 time") from None
        if when.tzinfo is None:
            raise _Bad("time has no zone (add Z or +00:00)")
    else:
        raise _Bad("expected an ISO-8601 time with zone, or epoch milliseconds")
    if when < EARLIEST:
        raise _Bad("before 2020-01-01")
    if when > now + MAX_CLOCK_SKEW:
        raise _Bad("more than 5 minutes in the future")
    return when.astimezone(dt.UTC)


def _enum(*symbols: str) -> Check:
    def check(value: Any, _now: dt.datetime) -> str:
        if not isinstance(value, str) or value not in symbols:
            raise _Bad(f"must be one of {', '.join(symbols)}")
        return value

    return check


# Checking a number against its country's plan costs ~100 us, an e-mail address with
# email-validator ~25 us, and the same contact writes many events, so verdicts are cached. Each
# cache is keyed by a keyed digest (the key lives and dies with the process), so it never holds a
# phone number or an address itself: a verdict says whether the value is valid as written (True),
# valid but needs its canonical form computed again (False: a legacy phone form, an address whose
# domain or Unicode form is normalised; rare), or is invalid (None). Each holds at most
# _VERDICTS_MAX verdicts (~100 bytes each) and is emptied when full.
_CACHE_KEY = secrets.token_bytes(16)
_VERDICTS_MAX = 65_536
_phone_verdicts: dict[bytes, bool | None] = {}
_email_verdicts: dict[bytes, bool | None] = {}
_UNSEEN = object()  # not in a verdict cache


def forget_verdicts() -> None:
    """Empty both verdict caches: validation starts cold, as in a new process."""
    _phone_verdicts.clear()
    _email_verdicts.clear()


def _cached(verdicts: dict[bytes, bool | None], text: str, canonical: Callable[[str], str | None]) -> str | None:
    """`canonical(text)` (the value's canonical form, or None if it is invalid), its verdict
    remembered in `verdicts` by the keyed digest of `text`."""
    digest = hashlib.blake2b(text.encode(), key=_CACHE_KEY, digest_size=16).digest()
    verdict = verdicts.get(digest, _UNSEEN)
    if verdict is True:
        return text
    if verdict is None:
        return None
    result = canonical(text)
    if verdict is _UNSEEN:
        if len(verdicts) >= _VERDICTS_MAX:
            verdicts.clear()
        verdicts[digest] = None if result is None else result == text
    return result


def _phone(value: Any, _now: dt.datetime) -> str:
    text = unicodedata.normalize("NFKC", _string(value, 32))
    if not text.isascii():
        raise _Bad("not ASCII (digits must be 0-9)")
    if not _E164.fullmatch(text):
        raise _Bad("not E.164 (+ then 2-15 digits, no spaces)")
    canonical = _cached(_phone_verdicts, text, canonical_e164)
    if canonical is None:
        raise _Bad("not a valid phone number")
    return canonical


def _normalized_email(text: str) -> str | None:
    """The address normalised by email-validator (NFC, the domain in lower case), or None."""
    try:
        return str(email_validator.validate_email(text, check_deliverability=False).normalized)
    except email_validator.EmailNotValidError:
        return None


def _email(value: Any, _now: dt.datetime) -> str:
    normalized = _cached(_email_verdicts, _string(value, MAX_EMAIL), _normalized_email)
    if normalized is None:
        raise _Bad("not a valid e-mail address")
    return normalized


def _bool(value: Any, _now: dt.datetime) -> bool:
    if not isinstance(value, bool):
        raise _Bad("expected true or false")
    return value


def _int(low: int, high: int) -> Check:
    def check(value: Any, _now: dt.datetime) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("expected an integer")
        if not low <= value <= high:
            raise _Bad(f"must be between {low} and {high}")
        return value

    return check


def _attributes(value: Any, _now: dt.datetime) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Bad("expected an object of string values")
    if len(value) > MAX_ATTRIBUTES:
        raise _Bad(f"more than {MAX_ATTRIBUTES} attributes")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ATTRIBUTE_KEY.fullmatch(key):
            raise _Bad("attribute keys must be 1-64 of a-z 0-9 _ . -")
        if not isinstance(item, str):
            raise _Bad("attribute values must be strings (no nesting)")
        out[key] = _string(item, MAX_ATTRIBUTE_VALUE)
    return out


@dataclass(frozen=True)
class _Field:
    name: str
    check: Check
    required: bool = True
    default: Any = None


_ident = _pattern(_ID, MAX_ID, "an id (1-128 of A-Z a-z 0-9 . _ : -)")
_tenant = _pattern(_TENANT, 63, "a tenant slug (2-63 of a-z 0-9 -)")
_slug = _pattern(_SLUG, 64, "a slug (1-64 of a-z 0-9 . _ -)")
_COMMON = (_Field("event_id", _ident), _Field("tenant", _tenant), _Field("occurred_at", _time))

_MESSAGE = (
    *_COMMON,
    _Field("channel", _enum("WHATSAPP", "SMS")),
    _Field("direction", _enum("INBOUND", "OUTBOUND")),
    _Field("conversation_id", _ident),
    _Field("contact_phone", _phone),
    _Field("contact_name", _nonempty_text(MAX_NAME), required=False),
    _Field("contact_email", _email, required=False),
    _Field("body", _text(MAX_BODY)),
    _Field("workflow_id", _slug, required=False),
    _Field("agent_id", _slug, required=False),
    _Field("opens_conversation", _bool, required=False, default=False),
    _Field("closes_conversation", _bool, required=False, default=False),
    _Field("attachment_count", _int(0, MAX_ATTACHMENTS), required=False, default=0),
)
_CONTACT = (
    *_COMMON,
    _Field("op", _enum("UPSERT", "DELETE")),
    _Field("contact_id", _ident),
    _Field("phone", _phone, required=False),
    _Field("name", _nonempty_text(MAX_NAME), required=False),
    _Field("email", _email, required=False),
    _Field("attributes", _attributes, required=False, default={}),
)
_EXECUTION = (
    *_COMMON,
    _Field("workflow_id", _slug),
    _Field("execution_id", _ident),
    _Field("step", _slug, required=False),
    _Field("feature_id", _slug, required=False),
    _Field("status", _enum("STARTED", "SUCCEEDED", "FAILED", "SKIPPED")),
    _Field("duration_ms", _int(0, MAX_DURATION_MS), required=False),
    _Field("log_line", _text(MAX_TEXT), required=False),
    _Field("error", _text(MAX_TEXT), required=False),
    _Field("conversation_id", _ident, required=False),
    _Field("contact_phone", _phone, required=False),
    _Field("contact_name", _nonempty_text(MAX_NAME), required=False),
    _Field("contact_email", _email, required=False),
)


@dataclass(frozen=True)
class _Type:
    record: str
    role: Role
    fields: tuple[_Field, ...]
    key_fields: tuple[str, ...]  # the first present one, after tenant, forms the Kafka key


RECORD_TYPES = {"message_event": "message", "contact_event": "contact", "execution_event": "execution"}
TYPES: dict[str, _Type] = {
    "message": _Type("message_event", Role.INGEST_MESSAGES, _MESSAGE, ("conversation_id",)),
    "contact": _Type("contact_event", Role.INGEST_CONTACTS, _CONTACT, ("contact_id",)),
    "execution": _Type("execution_event", Role.INGEST_EXECUTIONS, _EXECUTION, ("conversation_id", "execution_id")),
}

# The fields each record may carry (and `type`): any other is an unknown field.
_FIELD_NAMES = {spec.record: frozenset({"type", *(f.name for f in spec.fields)}) for spec in TYPES.values()}


def field_label(name: Any) -> str:
    """Names an unknown field only when the name cannot itself be personal data."""
    return name if isinstance(name, str) and _SAFE_FIELD_NAME.fullmatch(name) else "(an unknown field)"


def validate(obj: object, now: dt.datetime) -> ValidEvent:
    """The Avro-ready event, or `InvalidEvent` listing every problem."""
    if not isinstance(obj, Mapping):
        raise InvalidEvent([FieldError("event", "expected a JSON object")])
    kind = obj.get("type")
    spec = TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise InvalidEvent([FieldError("type", f"required, one of {', '.join(TYPES)}")])

    errors: list[FieldError] = []
    value: dict[str, Any] = {}
    for field in spec.fields:
        raw = obj.get(field.name)
        if isinstance(raw, TooLargeNumber):
            errors.append(FieldError(field.name, "number too large"))
            continue
        if raw is None:
            if field.required:
                errors.append(FieldError(field.name, "required"))
            value[field.name] = field.default
            continue
        try:
            value[field.name] = field.check(raw, now)
        except _Bad as bad:
            errors.append(FieldError(field.name, str(bad)))
    if unknown := obj.keys() - _FIELD_NAMES[spec.record]:
        errors.extend(FieldError(field_label(k), "unknown field") for k in obj if k in unknown)

    if not errors and kind == "contact" and value["op"] == "UPSERT" and value["phone"] is None:
        errors.append(FieldError("phone", "required for UPSERT"))
    if errors:
        raise InvalidEvent(errors)
    key_id = next(value[k] for k in spec.key_fields if value.get(k) is not None)
    return ValidEvent(str(kind), spec.record, spec.role, f"{value['tenant']}:{key_id}".encode(), value)
