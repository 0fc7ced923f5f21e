"""Phone numbers as WhatsApp and SMS really carry them: one canonical E.164 form per person.

`canonical_e164` is the validation rule; `find` and `known` are what redaction uses.
The numbering plans are `phonenumbers`' (Google's libphonenumber metadata). On top of them,
two legacy forms that WhatsApp still sends, and that the current plans call invalid, are
rewritten to today's form, so one person is one contact whichever form arrives:

- **Brazil** (+55): mobile numbers got a ninth digit (a leading 9) in 2012-2016 (Anatel); many
  WhatsApp ids still lack it. +55, a 2-digit area code, then 8 digits starting 6-9 becomes
  +55, the area code, 9, the 8 digits (``+553187654321`` → ``+5531987654321``), if that is a
  valid mobile number.
- **Mexico** (+52): until 2019 (IFT) mobiles were dialled from abroad as +52 1 and ten digits;
  WhatsApp ids still carry the 1 (``+5215512345678`` → ``+525512345678``). In text, the old
  national mobile prefixes 044/045 before ten digits are read the same way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberFormat

DEFAULT_REGION = "US"
_BR_OLD_MOBILE = re.compile(r"^55(\d\d)([6-9]\d{7})$")
_MX_OLD_MOBILE = re.compile(r"^521(\d{10})$")


def _valid(number: PhoneNumber) -> bool:
    return bool(phonenumbers.is_valid_number(number))


def _e164(number: PhoneNumber) -> str:
    return str(phonenumbers.format_number(number, PhoneNumberFormat.E164))


def _legacy_fix(digits: str) -> str | None:
    """Today's E.164 for a legacy Brazilian or Mexican mobile (country code + digits), or None."""
    if br := _BR_OLD_MOBILE.match(digits):
        candidate = f"+55{br[1]}9{br[2]}"
    elif mx := _MX_OLD_MOBILE.match(digits):
        candidate = f"+52{mx[1]}"
    else:
        return None
    try:
        fixed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    return _e164(fixed) if _valid(fixed) else None


def canonical_e164(text: str) -> str | None:
    """`+` and 2-15 ASCII digits → the canonical valid E.164 form, or None if not a valid number.

    Valid means valid in its country's current numbering plan, after the legacy rewrites above.
    """
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if _valid(number):
        return _e164(number)
    return _legacy_fix(f"{number.country_code}{number.national_number}")


# Words that say the number next to them is an id, an amount or a measure, not a phone.
_ID_BEFORE = re.compile(
    r"(?:\b(?:order|orders|pedido|pedidos|orden|ordem|ticket|tickets|chamado|protocolo|invoice|fatura|factura|nota|"
    r"nf|nfe|build|version|versao|release|id|ids|ref|referencia|reference|tracking|rastreio|guia|codigo|code|job|"
    r"batch|run|tx|txn|transaction|transacao|transaccion|sku|cep|zip|postal|cp|serial|lote|item|case|caso|issue|"
    r"incident|po|cupom|cupon|coupon|boleto|account|conta|cuenta|folio|expediente|eur|usd|brl|mxn|gbp|total|valor|"
    r"amount|importe|monto|price|preco|precio|cpf|cnpj|rg|dni|nie|nif|ssn|curp|rfc|documento|doc|"
    # times: epoch seconds look like numbers of some plans (ts=1764340330 is a legacy BR mobile)
    r"ts|timestamp|epoch|unix|iat|exp|nbf|[a-z]+_(?:at|ts|time))\b"
    # "pedido numero 123", "order no. 123", "Pedido nº 123" (nº folds to "no")
    r"(?:[\s:=#.-]*(?:numero|number|num|nro|nr|no|n\.o|n)\b\.?)?"
    r"|#|\bn\.o\b|\bno\.|\bnro\b|\bnum\.|r\$|\$|EUR|£)[\s:=#.-]*$",
    re.IGNORECASE,
)
_UNIT_AFTER = re.compile(
    r"^\s*(?:ms|s|sec|secs|seconds|segundos|min|mins|minutes|minutos|h|hs|hrs|hours|horas|kb|mb|gb|tb|bytes|"
    r"%|tokens|reais|pesos|euros|dolares|dollars|usd|brl|mxn|eur|x)\b",
    re.IGNORECASE,
)
_NOT_A_PHONE_SHAPE = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # ISO date
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"  # day-month-year
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # IPv4 address
    r"|\d{1,3}(?:[.,]\d{3})+(?:[.,]\d{1,2})?"  # amount with thousands separators
    r"|\d+[.,]\d{1,2}"  # decimal
    r"|\d{3}\.\d{3}\.\d{3}-\d{2}"  # CPF-shaped (right check digits or not)
    r"|(?=(?:\d+\.)*\d{1,2}(?!\d))\d+(?:\.\d+){2,})$"  # version: a component of 1-2 digits
)
# An id code: digits glued to letters ("INV-2026-000123", "PED_11987654", "A0012345").
_GLUED_TO_LETTERS = re.compile(r"([A-Za-z][A-Za-z0-9]*)[-_]?$")
_NUMBER_CONTINUES = re.compile(r"^[.,:/]\d")
# A phone-ish word nearby: a number in the national format without an area code is kept otherwise.
_PHONE_CUE = re.compile(
    r"\b(?:tel|tels|telf|tlf|tfno|telefone|telefono|fone|phone|mobile|cel|celular|movil|fixo|fijo|landline|whats|"
    r"whatsapp|wa|zap|pix|sms|ligar|liga|llamar|call|called|calling|ring|numero|number|contato|contacto|contact)\b",
    re.IGNORECASE,
)
# Where the operation's contacts live: a number next to a phone word, written without a country
# code, is also tried in these regions when the contact's own region does not know it.
MARKETS = ("BR", "MX", "ES", "US", "AR", "CO", "PT")
# Legacy forms the numbering plans no longer know, found by pattern and then checked.
_LEGACY = re.compile(
    r"(?<![\w+])(?:\+\s?52|00\s?52)[\s.-]?1[\s.-]?((?:\(?\d\)?[\s.-]?){9}\d)(?!\d)"  # +52 1 and ten digits
    r"|(?<![\w+])04[45][\s.-]?((?:\d[\s.-]?){9}\d)(?!\d)"  # Mexico's old national mobile prefixes
)


# WhatsApp ids (the Cloud API's wa_id, a webhook's "from") and wa.me links: E.164 digits without
# the "+". Read as international when they start with a market's country code and are valid there.
_BARE_INTERNATIONAL = re.compile(r"(?<![\w+.,-])\d{11,15}(?![\w-]|[.,]\d)")
_MARKET_CODES = tuple(str(phonenumbers.country_code_for_region(region)) for region in MARKETS)
_EXTENSION = re.compile(r"[\s,;]*(?:ext|extension|ramal|x|anexo)[.=]?\s*\d{1,6}$", re.IGNORECASE)


def _trim(match: phonenumbers.PhoneNumberMatch) -> tuple[int, int]:
    """The number itself: not an unmatched opening bracket before it, nor an extension after it."""
    start, end, raw = match.start, match.end, match.raw_string
    if raw.startswith("(") and ")" not in raw:
        start += 1  # "(2015550123)": the bracket is punctuation around the number
    extension = _EXTENSION.search(raw)
    if extension:
        end -= len(extension.group())
    return start, end


def _glued_id(text: str, start: int) -> bool:
    glued = _GLUED_TO_LETTERS.search(text, max(0, start - 24), start)
    return glued is not None and not _PHONE_CUE.fullmatch(glued.group(1))


def _not_a_phone(text: str, start: int, end: int) -> bool:
    raw = text[start:end]
    return bool(
        _glued_id(text, start)
        or _NOT_A_PHONE_SHAPE.match(raw)
        or _ID_BEFORE.search(text[max(0, start - 24) : start])
        or _UNIT_AFTER.match(text[end : end + 12])
        or _NUMBER_CONTINUES.match(text[end : end + 2])
        or (start > 0 and text[start - 1] in ".,:/" and start > 1 and text[start - 2].isdigit())
    )


def find(text: str, region: str) -> Iterator[tuple[int, int]]:
    """Spans of `text` (ASCII digits) that are phone numbers: valid in the plan of their country
    (numbers without a country code are read in `region`), or in a legacy form above, or next to
    a phone word (then possible numbers too, and valid ones in any of `MARKETS`), or a WhatsApp
    id (E.164 digits of a market without the "+": ``wa_id=5215512345678``). Dates, times,
    amounts, ids after an id word (order, ticket, build, invoice, #...), durations, IP addresses,
    versions and postal codes are not."""
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        start, end = _trim(match)
        if _not_a_phone(text, start, end):
            continue
        number = match.number
        valid = _valid(number) or _legacy_fix(f"{number.country_code}{number.national_number}") is not None
        if valid or _PHONE_CUE.search(text[max(0, start - 30) : start]):
            yield start, end
    if _PHONE_CUE.search(text):
        for other in MARKETS:
            if other != region:
                yield from _cued_in(text, other)
    for bare in _BARE_INTERNATIONAL.finditer(text):
        digits = bare.group()
        if digits.startswith(_MARKET_CODES) and canonical_e164("+" + digits) and not _not_a_phone(text, *bare.span()):
            yield bare.span()
    for legacy in _LEGACY.finditer(text):
        digits = re.sub(r"\D", "", legacy.group(1) or legacy.group(2))
        before = text[max(0, legacy.start() - 24) : legacy.start()]
        if canonical_e164(f"+52{digits}") and not _ID_BEFORE.search(before):
            yield legacy.span()


def _cued_in(text: str, region: str) -> Iterator[tuple[int, int]]:
    """Numbers valid in `region` that follow a phone word (the contact's region did not know them)."""
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        start, end = _trim(match)
        if _PHONE_CUE.search(text[max(0, start - 30) : start]) and not _not_a_phone(text, start, end):
            yield start, end


_SEPARATORS = ".()-/+"  # and whitespace: up to 3 of them may stand between two digits ("+" from form encoding)
_NOT_DIGITS = re.compile(r"\D+")
_NUMBER_START = re.compile(r"(?<![\d+])[(+\d]")


def _separators(text: str, at: int) -> int:
    """How many separators stand from text[at] on, counted up to 4 (more than 3 join no digits)."""
    n = 0
    while n < 4 and at + n < len(text) and (text[at + n] in _SEPARATORS or text[at + n].isspace()):
        n += 1
    return n


def _digits_end(text: str, at: int, digits: str) -> int | None:
    """Where `digits` written from text[at], with up to 3 separators between two of them, end;
    None if they are not written there or a digit follows them."""
    for k, digit in enumerate(digits):
        if k:
            gap = _separators(text, at)
            if gap > 3:
                return None
            at += gap
        if not text.startswith(digit, at):
            return None
        at += 1
    return None if at < len(text) and text[at].isdecimal() else at


@dataclass(frozen=True)
class KnownPhone:
    """One contact's number as redaction looks for it, however it is written (`known`)."""

    region: str  # ISO 3166: where numbers written without a country code are read
    international: tuple[str, ...]  # country code and national number, each form, more digits first
    national: tuple[str, ...]  # the national number's forms (today's, legacy), more digits first
    last8: str | None  # its last 8 digits, when it has more
    tail: str  # the digits every way of writing it ends with

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of `text` (an ASCII-folded view) where the number is written, leftmost first and
        not overlapping; an opening bracket before it is part of the span. Not inside a longer
        number (no digit or "+" before, no digit after). A line whose digits do not contain
        `tail` is passed over without looking further."""
        if self.tail not in _NOT_DIGITS.sub("", text):
            return
        after = 0
        for candidate in _NUMBER_START.finditer(text):
            start = candidate.start()
            if start >= after and (end := self._end(text, start + (text[start] == "("))) is not None:
                after = end
                yield start, end

    def _end(self, text: str, at: int) -> int | None:
        """The end of the first way of writing the number that starts at text[at] (after an opening
        bracket): with its country code (after "+" or "00", if any), then national, then its last
        8 digits; None if none does."""
        begin: int | None = at
        if text.startswith(("+", "00"), at):
            prefix = at + 1 + text.startswith("00", at)
            gap = _separators(text, prefix)
            begin = prefix + gap if gap <= 3 else None
        if begin is not None:
            for digits in self.international:
                if (end := _digits_end(text, begin, digits)) is not None:
                    return end
        for digits in self.national:
            if (end := _national_end(text, at, digits)) is not None:
                return end
        return _digits_end(text, at, self.last8) if self.last8 else None


def _national_end(text: str, at: int, digits: str) -> int | None:
    """Where national `digits` written from text[at] end: after a trunk prefix 0 and perhaps a
    two-digit area code (``0 11 9...``, ``(011) 9...``), else as they are."""
    if text.startswith("0", at) and (gap := _separators(text, at + 1)) <= 3:
        code = at + 1 + gap
        area = text[code : code + 2]
        if len(area) == 2 and area.isdecimal():
            gap = _separators(text, code + 2)
            end = _digits_end(text, code + 2 + gap, digits) if gap <= 3 else None
            if end is not None:
                return end
        if (end := _digits_end(text, code, digits)) is not None:
            return end
    return _digits_end(text, at, digits)


def national_forms(cc: str, nsn: str) -> set[str]:
    """The ways a national number `nsn` of country code `cc` is written: as it is, and a
    Brazilian mobile without its ninth digit or a Mexican mobile with the old 1 before it."""
    forms = {nsn}
    if cc == "55" and len(nsn) == 11 and nsn[2] == "9":
        forms.add(nsn[:2] + nsn[3:])  # without the ninth digit
    if cc == "52" and len(nsn) == 10:
        forms.add("1" + nsn)
    return forms


@functools.lru_cache(maxsize=4096)
def known(phone: str) -> KnownPhone | None:
    r"""How one known E.164 number is looked for in text, however it is written: with or without
    the country code (``+``, ``00``), with a national trunk prefix, any spacing or punctuation
    between digits (up to 3 characters of ``.()-/+`` and whitespace), the legacy form of a
    Brazilian or Mexican mobile, or only its last 8 digits. None if `phone` does not parse.

    Cached per number, and nothing is compiled: it finds what the pattern compiled per number
    before did (0.5-1 ms each), ``(?<![\d+])\(?(?:I|N|L)(?!\d)`` with I the international forms
    (``(?:(?:\+|00)S)?`` then the digits), N the national ones (``(?:0S(?:\d\dS)?)?`` then the
    digits) and L the last 8 digits, more digits first, and ``S`` = ``[\s.()\-/+]{0,3}`` between
    every two digits (tests/unit/processors/test_matchers.py checks it against that pattern)."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    cc, nsn = str(number.country_code), str(number.national_number)
    national = tuple(sorted(national_forms(cc, nsn), key=lambda f: (-len(f), f)))
    return KnownPhone(
        region=phonenumbers.region_code_for_number(number) or DEFAULT_REGION,
        international=tuple(cc + f for f in national),
        national=national,
        last8=nsn[-8:] if len(nsn) > 8 else None,
        tail=nsn[-8:],
    )
