"""Finding a known contact's name in a log line, however it is written, without eating words.

Works on the ASCII-folded view (`processors.textview`), so ``José Conceição``, ``Jose Conceicao``,
NFD forms, ``O(U+2019)Brien`` and ``O'Brien`` are the same to it. The name is split into parts (titles
such as Dr./Sra. and particles such as da/del/van are not parts). Then:

- the whole name, or two or more of its parts next to each other in any order (``Conceicao,
  Jose``, ``jose.conceicao``, ``Jose+Conceicao``; particles may stand between), is a name; so is
  a part next to the capital initial of another (``M. da C. Souza``, ``Lucia F. Pena``), and two
  parts run together as in a user name (``mariasouza``, ``MariaSouza92``; parts of 3+ letters);
- a single part is a name when it is **capitalised** (``Li replied``, ``ask Rosa``; an all-caps
  part only in a line that is not mostly in capitals, so ``Status: WILL RETRY`` is not) or follows
  a **greeting or title** (``oi li``, ``hola bo``, ``Sr. rosa``) or is the value of a name field
  (``"first_name":"jose"``, ``nome=jose``, ``cliente: rosa``); a single part written in lower
  case elsewhere is an ordinary word (``the agent will retry; status rosa=ok`` for Will Rosa).

Parts are also known by their other usual spellings: without an elided particle (``Almeida`` for
``D'Almeida``) and with German umlauts written out (``Mueller`` for ``Müller``). Initials are
never matched alone. What this misses, by design: a lone
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
# A field that holds a name, in key=value, JSON or query form: "first_name":"jose", nome=jose.
_AFTER_NAME_KEY = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:[a-z]+_)?(?:name|nome|nombre|firstname|lastname|surname|sobrenome|apellidos?|"
    r"cliente|client|customer|contato|contacto|contact)[\"']?\s?[:=]\s?[\"']?$",
    re.IGNORECASE,
)
# "Rua Conceicao", "Calle Pena": a street or place named after someone is not the contact.
_AFTER_PLACE_WORD = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:rua|r|avenida|av|travessa|alameda|praca|largo|rodovia|estrada|bairro|calle|c|plaza|"
    r"paseo|camino|colonia|col|street|st|avenue|ave|road|rd|boulevard|blvd|lane|square)\.?\s{1,3}$",
    re.IGNORECASE,
)
_GAP = re.compile(rf"(?:[\s,.+_/-]|\b(?:{'|'.join(sorted(PARTICLES))})\b){{1,12}}", re.IGNORECASE)
_BOUNDARY_L, _BOUNDARY_R = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"
_WORD = re.compile(r"[A-Za-z]{2,}")
_ELIDED = re.compile(r"^(?:d|l|dell|all)'(?=[a-z]{2})")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def _part_regex(part: str) -> str:
    """A part, with apostrophes and hyphens optional or spaced: O'Brien, OBrien, O Brien."""
    pieces = re.split(r"(['\-])", part)
    return "".join(r"['\s-]?" if p in ("'", "-") else re.escape(p) for p in pieces if p)


@dataclass(frozen=True)
class NameMatcher:
    parts: re.Pattern[str] | None  # a part, or (group "initial") the capital initial of one
    whole: re.Pattern[str] | None  # the whole name in order, or two parts run together

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of `text` (an ASCII-folded view) where the name stands, by the rules above."""
        if self.whole is not None:
            yield from (m.span() for m in self.whole.finditer(text))
        if self.parts is None:
            return
        hits = [(*m.span(), m["initial"] is not None) for m in self.parts.finditer(text)]
        i = 0
        while i < len(hits):
            j = i
            while j + 1 < len(hits) and _GAP.fullmatch(text, hits[j][1], hits[j + 1][0]):
                j += 1
            run = hits[i : j + 1]
            parts = [h for h in run if not h[2]]
            if parts and (len(run) > 1 or _single_is_name(text, run[0][0], run[0][1])):
                yield run[0][0], run[-1][1]
            i = j + 1


def _shouting(text: str) -> bool:
    """Is the line mostly written in capitals (then a capitalised word says nothing)?"""
    words = _WORD.findall(text)
    return sum(1 for w in words if w.isupper()) * 2 > len(words)


def _single_is_name(text: str, start: int, end: int) -> bool:
    word = text[start:end]
    before = text[max(0, start - 24) : start]
    if _AFTER_PLACE_WORD.search(before):
        return False
    if word[0].isupper() and not (word.isupper() and len(word) > 1 and _shouting(text)):
        return True
    return bool(_AFTER_GREETING.search(before) or _AFTER_NAME_KEY.search(before))


@functools.lru_cache(maxsize=4096)
def matcher(name: str) -> NameMatcher:
    """The compiled matcher for one contact name (cached per name)."""
    spellings = [[t.strip(".,;:") for t in fold(variant).split()] for variant in {name, name.translate(_UMLAUTS)}]
    parts: set[str] = set()
    for tokens in spellings:
        for token in filter(None, tokens):
            low = token.lower()
            if low in TITLES or low in PARTICLES or len(token) < 2:
                continue
            parts.add(low)
            parts.update(p for p in re.split(r"-", low) if len(p) >= 2 and p not in PARTICLES)
            if elided := _ELIDED.match(low):
                parts.add(low[elided.end() :])
    wholes = []
    gap = r"[\s,.+_/-]{1,3}"
    for tokens in spellings:
        tokens = [t for t in tokens if t]
        if len(tokens) > 1:
            wholes.append(gap.join(_part_regex(t.lower()) for t in tokens))
    long_parts = sorted(p for p in parts if len(p) >= 3 and "'" not in p and "-" not in p)
    joined = [re.escape(a + b) for a in long_parts for b in long_parts if a != b]
    alternatives = [f"{_BOUNDARY_L}(?:{'|'.join(wholes)}){_BOUNDARY_R}"] if wholes else []
    if joined:  # a user name: two parts run together, perhaps digits after
        alternatives.append(rf"{_BOUNDARY_L}(?:{'|'.join(joined)})\d{{0,4}}{_BOUNDARY_R}")
    whole = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
    if not parts:
        return NameMatcher(None, whole)
    initials = "".join(sorted({p[0].upper() for p in parts if p[0].isalpha()}))
    words = "|".join(_part_regex(p) for p in sorted(parts, key=len, reverse=True))
    return NameMatcher(
        re.compile(rf"{_BOUNDARY_L}(?:(?P<initial>(?-i:[{initials}])\.)|(?:{words}){_BOUNDARY_R})", re.IGNORECASE),
        whole,
    )
