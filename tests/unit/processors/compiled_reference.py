"""The contact's name and phone patterns as redaction compiled them per contact until 697a15b:
the reference the compile-free matchers of `processors.names` and `processors.phones` are
checked against (test_matchers.py), and bench.redaction's baseline.

The pattern text is built exactly as it was; the words, parts and phone forms come from the
same functions (`names.spellings`, `names.parts_of`, `names.user_names`,
`phones.national_forms`). Two orders that were left to Python's string hashing, and so changed
from one process to the next, are fixed here as the new code fixes them: parts of the same
length in alphabetical order, and the spelling as written before the one with umlauts written
out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers

from shredline.processors import names, phones

_BOUNDARY_L, _BOUNDARY_R = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"
_SEP = r"[\s.()\-/+]{0,3}"


def _part_regex(part: str) -> str:
    """A part, with apostrophes and hyphens optional or spaced: O'Brien, OBrien, O Brien."""
    pieces = re.split(r"(['\-])", part)
    return "".join(r"['\s-]?" if p in ("'", "-") else re.escape(p) for p in pieces if p)


@dataclass(frozen=True)
class CompiledNameMatcher:
    parts: re.Pattern[str] | None  # a part, or (group "initial") the capital initial of one
    whole: re.Pattern[str] | None  # the whole name in order, or two parts run together

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """As `names.NameMatcher.find`."""
        if self.whole is not None:
            yield from (m.span() for m in self.whole.finditer(text))
        if self.parts is not None:
            yield from names.named_runs(
                text, [(*m.span(), m["initial"] is not None) for m in self.parts.finditer(text)]
            )


@functools.lru_cache(maxsize=4096)
def name_matcher(name: str) -> CompiledNameMatcher:
    """`names.matcher` as it was: two patterns compiled per name."""
    words = names.spellings(name)
    parts = names.parts_of(words)
    gap = r"[\s,.+_/-]{1,3}"
    wholes = [gap.join(_part_regex(w.lower()) for w in spelling) for spelling in words if len(spelling) > 1]
    joined = [re.escape(j) for j in names.user_names(parts)]
    alternatives = [f"{_BOUNDARY_L}(?:{'|'.join(wholes)}){_BOUNDARY_R}"] if wholes else []
    if joined:
        alternatives.append(rf"{_BOUNDARY_L}(?:{'|'.join(joined)})\d{{0,4}}{_BOUNDARY_R}")
    whole = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
    if not parts:
        return CompiledNameMatcher(None, whole)
    initials = "".join(sorted({p[0].upper() for p in parts if p[0].isalpha()}))
    words_alternation = "|".join(_part_regex(p) for p in parts)
    return CompiledNameMatcher(
        re.compile(
            rf"{_BOUNDARY_L}(?:(?P<initial>(?-i:[{initials}])\.)|(?:{words_alternation}){_BOUNDARY_R})",
            re.IGNORECASE,
        ),
        whole,
    )


@dataclass(frozen=True)
class CompiledPhone:
    phone: str
    pattern: re.Pattern[str]

    @property
    def region(self) -> str:
        """Parsed again on every call, as `phones.region_of` did."""
        number = phonenumbers.parse(self.phone, None)
        return phonenumbers.region_code_for_number(number) or phones.DEFAULT_REGION

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """As `phones.KnownPhone.find`."""
        return (m.span() for m in self.pattern.finditer(text))


def _flexible(digits: str) -> str:
    return _SEP.join(digits)


@functools.lru_cache(maxsize=4096)
def known_phone(phone: str) -> CompiledPhone | None:
    """`phones.known_pattern` as it was: one pattern compiled per number."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    cc, nsn = str(number.country_code), str(number.national_number)
    forms = phones.national_forms(cc, nsn)
    alternatives = [rf"(?:(?:\+|00){_SEP})?{_flexible(cc)}{_SEP}{_flexible(f)}" for f in sorted(forms)]
    alternatives += [rf"(?:0{_SEP}(?:\d\d{_SEP})?)?{_flexible(f)}" for f in sorted(forms)]
    if len(nsn) > 8:
        alternatives.append(_flexible(nsn[-8:]))
    alternatives.sort(key=len, reverse=True)
    return CompiledPhone(phone, re.compile(rf"(?<![\d+])\(?(?:{'|'.join(alternatives)})(?!\d)"))
