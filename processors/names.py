"""Finding a known contact's name in a log line, however it is written, without eating words.

Works on the ASCII-folded view (`processors.textview`), so ``José Conceição``, ``Jose Conceicao``,
NFD forms, ``O(U+2019)Brien`` and ``O'Brien`` are the same to it. The name is split into parts (titles
such as Dr./Sra. and particles such as da/del/van are not parts). Then:

- the whole name, or two or more of its parts next to each other in any order (``Conceicao,
  Jose``, ``jose.conceicao``, ``Jose+Conceicao``; particles may stand between), is a name;
- a single part is a name when it is **capitalised** (``Li replied``, ``ask Rosa``) or follows
  a **greeting or title** (``oi li``, ``hola bo``, ``Sr. rosa``); a single part written in lower
  case elsewhere is an ordinary word (``the agent will retry; status rosa=ok`` for Will Rosa).

Parts of one letter (initials) are never matched alone. What this misses, by design: a lone
lower-case part (``falei com conceição``); what it over-matches: a capitalised ordinary word
that is also a part of the contact's name (``Will retry`` for Will Rosa). Both are measured by
the hand-written set in tests/unit/processors/.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from shredline.processors.textview import fold

_TITLES = "dr dra sr sra srta sres mr mrs ms mx miss sir madam prof profa don dona senhor senhora senor senora lic ing"
_PARTICLES = "da das de del della der di do dos du e la las le los van von y bin ibn"
TITLES, PARTICLES = frozenset(_TITLES.split(" ")), frozenset(_PARTICLES.split(" "))
GREETINGS = (
    "hi|hello|hey|dear|thanks|thank you|oi|ola|bom dia|boa tarde|boa noite|prezado|prezada|caro|cara|"
    "obrigado|obrigada|hola|buenos dias|buenas tardes|buenas noches|estimado|estimada|querido|querida|gracias"
)
_AFTER_GREETING = re.compile(
    rf"(?:^|[^A-Za-z0-9])(?:{GREETINGS}|{'|'.join(sorted(TITLES))})\.?[\s,:;!-]{{0,3}}$", re.IGNORECASE
)
# "Rua Conceicao", "Calle Pena": a street or place named after someone is not the contact.
_AFTER_PLACE_WORD = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:rua|r|avenida|av|travessa|alameda|praca|largo|rodovia|estrada|bairro|calle|c|plaza|"
    r"paseo|camino|colonia|col|street|st|avenue|ave|road|rd|boulevard|blvd|lane|square)\.?\s{1,3}$",
    re.IGNORECASE,
)
_GAP = re.compile(rf"(?:[\s,.+_/-]|\b(?:{'|'.join(sorted(PARTICLES))})\b){{1,12}}", re.IGNORECASE)
_BOUNDARY_L, _BOUNDARY_R = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"


def _part_regex(part: str) -> str:
    """A part, with apostrophes and hyphens optional or spaced: O'Brien, OBrien, O Brien."""
    pieces = re.split(r"(['\-])", part)
    return "".join(r"['\s-]?" if p in ("'", "-") else re.escape(p) for p in pieces if p)


@dataclass(frozen=True)
class NameMatcher:
    parts: re.Pattern[str] | None
    whole: re.Pattern[str] | None

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of `text` (an ASCII-folded view) where the name stands, by the rules above."""
        if self.whole is not None:
            yield from (m.span() for m in self.whole.finditer(text))
        if self.parts is None:
            return
        hits = [m.span() for m in self.parts.finditer(text)]
        i = 0
        while i < len(hits):
            j = i
            while j + 1 < len(hits) and _GAP.fullmatch(text, hits[j][1], hits[j + 1][0]):
                j += 1
            start, end = hits[i][0], hits[j][1]
            if j > i or _single_is_name(text, start, end):
                yield start, end
            i = j + 1


def _single_is_name(text: str, start: int, end: int) -> bool:
    word = text[start:end]
    before = text[max(0, start - 24) : start]
    if _AFTER_PLACE_WORD.search(before):
        return False
    if word[0].isupper():
        return True
    return bool(_AFTER_GREETING.search(before))


@functools.lru_cache(maxsize=4096)
def matcher(name: str) -> NameMatcher:
    """The compiled matcher for one contact name (cached per name)."""
    tokens = [t.strip(".,;:") for t in fold(name).split()]
    tokens = [t for t in tokens if t]
    parts: set[str] = set()
    for token in tokens:
        low = token.lower()
        if low in TITLES or low in PARTICLES or len(token) < 2:
            continue
        parts.add(low)
        parts.update(p for p in re.split(r"-", low) if len(p) >= 2 and p not in PARTICLES)
    whole = None
    if len(tokens) > 1:
        gap = r"[\s,.+_/-]{1,3}"
        whole = re.compile(_BOUNDARY_L + gap.join(_part_regex(t.lower()) for t in tokens) + _BOUNDARY_R, re.IGNORECASE)
    if not parts:
        return NameMatcher(None, whole)
    alternatives = "|".join(_part_regex(p) for p in sorted(parts, key=len, reverse=True))
    return NameMatcher(re.compile(rf"{_BOUNDARY_L}(?:{alternatives}){_BOUNDARY_R}", re.IGNORECASE), whole)
