"""Redaction of free text (execution log lines and errors) before it is kept.

Order matters: first the event's own known contact values (full name and its longer parts,
phone in any formatting, e-mail), then any phone number `phonenumbers` finds (in the contact's
region, so numbers written without a country code are found too), then any e-mail address.
Each is replaced by a typed placeholder so the log stays useful: `[NAME]`, `[PHONE]`, `[EMAIL]`.
"""

from __future__ import annotations

import re

import phonenumbers

NAME, PHONE, EMAIL = "[NAME]", "[PHONE]", "[EMAIL]"
DEFAULT_REGION = "US"
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MIN_NAME_PART = 3
_NAME_TITLES = {"dr", "dra", "sr", "sra", "mr", "mrs", "ms", "miss", "prof", "srta", "don", "doña"}


def _name_parts(name: str) -> list[str]:
    """The full name, then its parts long enough not to be ordinary words, longest first."""
    parts = [p.strip(".,") for p in name.split()]
    keep = [p for p in parts if len(p) >= _MIN_NAME_PART and p.lower().strip(".") not in _NAME_TITLES]
    return sorted({name, *keep}, key=len, reverse=True)


def _region_of(phone: str | None) -> str:
    if phone:
        try:
            return phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or DEFAULT_REGION
        except phonenumbers.NumberParseException:
            pass
    return DEFAULT_REGION


def redact(text: str, *, name: str | None = None, phone: str | None = None, email: str | None = None) -> str:
    if email:
        text = re.sub(re.escape(email), EMAIL, text, flags=re.IGNORECASE)
    if name:
        for part in _name_parts(name):
            text = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", NAME, text, flags=re.IGNORECASE)
    region = _region_of(phone)
    matches = list(phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE))
    for match in reversed(matches):
        start = match.start
        if match.raw_string.startswith("(") and ")" not in match.raw_string:
            start += 1  # "(2015550123)": the bracket is punctuation around the number, keep it
        text = text[:start] + PHONE + text[match.end :]
    return _EMAIL.sub(EMAIL, text)
