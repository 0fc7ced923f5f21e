"""Personal identifiers people type into chats, found by shape and confirmed by `python-stdnum`.

Each finder takes candidates by pattern and keeps only those whose check digits (or, for the
US SSN, which has none, the SSA's assignment rules) hold, so random numbers are rarely hit:

| label | document | check (stdnum module) |
|---|---|---|
| ``[CPF]`` | Brazilian taxpayer id, ``123.456.789-09`` or 11 digits | two mod-11 digits (`stdnum.br.cpf`) |
| ``[DNI]`` | Spanish national id, 8 digits (dots allowed) + letter | mod-23 letter (`stdnum.es.dni`) |
| ``[NIE]`` | Spanish foreigner id, X/Y/Z + 7 digits + letter | mod-23 letter (`stdnum.es.nie`) |
| ``[CURP]`` | Mexican population id, 18 characters | check digit, date and state (`stdnum.mx.curp`) |
| ``[SSN]`` | US Social Security number, ``123-45-6789`` (9 digits after "SSN") | SSA rules (`stdnum.us.ssn`) |
| ``[CARD]`` | payment card, 13-19 digits, issuer prefix 2-6 | Luhn (ISO/IEC 7812, `stdnum.luhn`) |
| ``[IBAN]`` | international bank account, ISO 13616 | mod-97 and country format (`stdnum.iban`) |

Bare 11-digit CPFs and 13-14 digit card numbers that are also valid phone numbers are left to
the phone finder (a phone is likelier).
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


def _cpf(raw: str, region: str) -> bool:
    digits = _digits(raw)
    if not cpf.is_valid(digits) or len(set(digits)) == 1:
        return False
    return bool(re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}", raw)) or not _is_phone(digits, region)


def _card(raw: str, region: str) -> bool:
    digits = _digits(raw)
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not luhn.is_valid(digits):
        return False
    return len(digits) >= 15 or not _is_phone(digits, region)


_FINDERS: list[tuple[str, re.Pattern[str], Callable[[str, str], bool]]] = [
    (
        IBAN,
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"),
        lambda raw, _r: iban.is_valid(raw),
    ),
    (
        CURP,
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d(?![A-Za-z0-9])", re.IGNORECASE),
        lambda raw, _r: curp.is_valid(raw.upper()),
    ),
    (CPF, re.compile(r"(?<![\d.-])\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?![\d-]|\.\d)"), _cpf),
    (
        NIE,
        re.compile(r"(?<![A-Za-z0-9])[XYZ][ -]?\d{7}[ -]?[A-Z](?![A-Za-z0-9])", re.IGNORECASE),
        lambda raw, _r: nie.is_valid(raw.upper()),
    ),
    (
        DNI,
        re.compile(r"(?<![A-Za-z0-9.-])\d{2}\.?\d{3}\.?\d{3}[ -]?[A-Z](?![A-Za-z0-9])", re.IGNORECASE),
        lambda raw, _r: dni.is_valid(raw.upper().replace(".", "")),
    ),
    (
        SSN,
        re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])|(?<=ssn)[\s:#=-]*\d{9}(?!\d)", re.IGNORECASE),
        lambda raw, _r: ssn.is_valid(_digits(raw)),
    ),
    (
        CARD,
        re.compile(r"(?<![\d.-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}|\d{4}([ -]?)\d{6}\2\d{5}|\d{13,19})(?![\d-]|\.\d)"),
        _card,
    ),
]


def find(text: str, region: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, label) of every identifier in `text` (ASCII-folded); may overlap each other."""
    for label, pattern, check in _FINDERS:
        for match in pattern.finditer(text):
            start, end = match.span()
            raw = match.group()
            stripped = raw.lstrip(" :#=-")
            if check(stripped, region):
                yield start + len(raw) - len(stripped), end, label
