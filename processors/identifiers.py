"""Personal identifiers people type into chats, found by shape and confirmed by `python-stdnum`.

Each finder takes candidates by pattern and keeps only those whose check digits (or, for the
US SSN, which has none, the SSA's assignment rules) hold, so random numbers are rarely hit:

| label | document | check (stdnum module) |
|---|---|---|
| ``[CPF]`` | Brazilian taxpayer id (shapes below) | two mod-11 digits (`stdnum.br.cpf`) |
| ``[DNI]`` | Spanish national id, 8 digits (dots allowed) + letter | mod-23 letter (`stdnum.es.dni`) |
| ``[NIE]`` | Spanish foreigner id, X/Y/Z + 7 digits + letter | mod-23 letter (`stdnum.es.nie`) |
| ``[CURP]`` | Mexican population id, 18 characters | check digit, date and state (`stdnum.mx.curp`) |
| ``[SSN]`` | US Social Security number, ``123-45-6789`` (9 digits after "SSN") | SSA rules (`stdnum.us.ssn`) |
| ``[CARD]`` | payment card, 13-19 digits, issuer prefix 2-6 | Luhn (ISO/IEC 7812, `stdnum.luhn`) |
| ``[IBAN]`` | international bank account, ISO 13616 | mod-97 and country format (`stdnum.iban`) |

Shapes: a CPF is ``123.456.789-09``, ``123456789-09`` or 11 digits, and after the word CPF any
spacing or dots (``CPF: 123 456 789 09``); a DNI after the word DNI or NIF may have 7 digits (its
leading 0 dropped); cards are grouped 4-4-4-4(-3), 4-6-5 (Amex) or 4-6-4 (Diners), or not at
all; an IBAN may be in either case and grouped by spaces or dashes in any way (the Spanish
``ES60 0049 1500 05 1234567892``): its head is found, and the longest run of groups after it
that is a valid IBAN is taken, so the word after it is never swallowed.

Bare 11-digit CPFs that are valid phone numbers of the contact's country, and 13-14 digit card
numbers that are valid phone numbers anywhere, are left to the phone finder (a phone is
likelier), unless the word CPF stands before them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import phonenumbers
from stdnum import iban, luhn
from stdnum.br import cpf
from stdnum.es import dni, nie
from stdnum.mx import curp
from stdnum.us import ssn

CPF, DNI, NIE, CURP, SSN, CARD, IBAN = "[CPF]", "[DNI]", "[NIE]", "[CURP]", "[SSN]", "[CARD]", "[IBAN]"


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _is_phone(digits: str, region: str) -> bool:
    for candidate, where in ((digits, region), ("+" + digits, None)):
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, where)):
                return True
        except phonenumbers.NumberParseException:
            pass
    return False


def _is_phone_here(digits: str, region: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(digits, region)))
    except phonenumbers.NumberParseException:
        return False


# The document's name just before a number ("CPF: ", "meu cpf e ", "DNI n. "; text is folded).
_THEN = r"[^A-Za-z0-9]{0,6}(?:(?:e|eh|es|is|no|n|numero|number)\b[^A-Za-z0-9]{0,3}){0,2}$"
_CPF_CUE = re.compile(r"\bcpf\b" + _THEN, re.IGNORECASE)
_DNI_CUE = re.compile(r"\b(?:dni|nif)\b" + _THEN, re.IGNORECASE)


def _cpf(raw: str, region: str, before: str) -> bool:
    digits = _digits(raw)
    if not cpf.is_valid(digits) or len(set(digits)) == 1:
        return False
    if re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}", raw) or _CPF_CUE.search(before):
        return True
    return bool(re.fullmatch(r"\d{9}-?\d{2}", raw)) and not _is_phone_here(digits, region)


def _dni(raw: str, _region: str, before: str) -> bool:
    compact = re.sub(r"[\s.-]", "", raw).upper()
    if len(compact) == 8:  # 7 digits: an old DNI written without its leading zero
        return bool(_DNI_CUE.search(before)) and dni.is_valid("0" + compact)
    return bool(dni.is_valid(compact))


def _iban(raw: str, _region: str, _before: str) -> bool:
    return bool(iban.is_valid(raw.upper()))


def _card(raw: str, region: str, _before: str) -> bool:
    digits = _digits(raw)
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not luhn.is_valid(digits):
        return False
    return len(digits) >= 15 or not _is_phone(digits, region)


Check = Callable[[str, str, str], bool]  # (candidate, contact's region, the text before it)
_FINDERS: list[tuple[str, re.Pattern[str], Check]] = [
    (
        CURP,
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d(?![A-Za-z0-9])", re.IGNORECASE),
        lambda raw, _r, _b: curp.is_valid(raw.upper()),
    ),
    (CPF, re.compile(r"(?<![\d.,/-])\d{3}[.\s]?\d{3}[.\s]?\d{3}[-./\s]?\d{2}(?![\d-]|[.,]\d)"), _cpf),
    (
        NIE,
        re.compile(r"(?<![A-Za-z0-9])[XYZ][ -]?\d{7}[ -]?[A-Z](?![A-Za-z0-9])", re.IGNORECASE),
        lambda raw, _r, _b: nie.is_valid(raw.upper()),
    ),
    (
        DNI,
        re.compile(r"(?<![A-Za-z0-9.-])\d{1,2}\.?\d{3}\.?\d{3}[ -]?[A-Z](?![A-Za-z0-9])", re.IGNORECASE),
        _dni,
    ),
    (
        SSN,
        re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])|(?<=ssn)[\s:#=-]*\d{9}(?!\d)", re.IGNORECASE),
        lambda raw, _r, _b: ssn.is_valid(_digits(raw)),
    ),
    (
        CARD,
        re.compile(
            r"(?<![\d.-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -]?)\d{6}\2\d{4,5}|\d{13,19})"
            r"(?![\d-]|\.\d)"
        ),
        _card,
    ),
]
# An IBAN's head (country, check digits); the rest is taken in chunks, however grouped, and the
# longest run of chunks that is a valid IBAN is the one (so a word after it is never swallowed).
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")
_IBAN_CHUNK = re.compile(r"[ -]?[A-Za-z0-9]{1,30}")


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for head in _IBAN_HEAD.finditer(text):
        ends, length, at = [], 4, head.end()
        while length < 34 and (chunk := _IBAN_CHUNK.match(text, at)):
            at = chunk.end()
            length += len(chunk.group().lstrip(" -"))
            if length > 34:
                break
            if length >= 15 and (at == len(text) or not text[at].isalnum()):
                ends.append(at)
        for end in reversed(ends):
            if _iban(text[head.start() : end], "", ""):
                yield head.start(), end
                break


def find(text: str, region: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, label) of every identifier in `text` (ASCII-folded); may overlap each other."""
    for start, end in _ibans(text):
        yield start, end, IBAN
    for label, pattern, check in _FINDERS:
        for match in pattern.finditer(text):
            start, end = match.span()
            raw = match.group()
            stripped = raw.lstrip(" :#=-")
            start += len(raw) - len(stripped)
            if check(stripped, region, text[max(0, start - 32) : start]):
                yield start, end, label
