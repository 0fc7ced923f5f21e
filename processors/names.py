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

Nothing is compiled per contact (``re.compile`` of a name's two patterns took 0.5-0.9 ms, more
than the rest of a line's redaction): a part, or the whole name, is literal pieces (lower case)
with runs of separators between them; a line is searched with `str.find` for each first piece,
and each place found is checked in Python. That finds what the case-insensitive pattern
``(?<![A-Za-z0-9])(?:A1|A2|...)(?![A-Za-z0-9])`` of the same alternatives finds: leftmost first,
the first alternative that matches there, no overlaps, runs of separators greedy then shorter
(tests/unit/processors/test_matchers.py checks it against the patterns it replaced). Three
differences, all for odd names: a part made only of apostrophes and hyphens (``--``) finds
nothing (the pattern matched empty strings, and redaction failed); a name none of whose parts
begins with a letter (``42 99``) is found (its pattern did not compile); and each place is tried
once per run of separators, so a name like ``Ana - - - - Souza`` cannot make the search backtrack
exponentially (the pattern took 13 s on one line for 12 dashes, twice as long for each more).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
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
_WORD = re.compile(r"[A-Za-z]{2,}")
_ELIDED = re.compile(r"^(?:d|l|dell|all)'(?=[a-z]{2})")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
# What a word of a name is made of: letters, combining marks, digits (Unicode general categories
# L, M, N), apostrophes and hyphens. Anything else in a contact name stands between its words.
_IN_A_WORD = "'\u2019\u02bc-\u2010\u2011"
_INITIAL = re.compile(r"(?<![A-Za-z0-9])[A-Z]\.")
_ALNUM = frozenset(string.ascii_letters + string.digits)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True)
class _Run:
    """`low` to `high` characters, each one of `chars` or (if `space`) whitespace: as many as there
    are first, then fewer (a regular expression's greedy ``[...]{low,high}``)."""

    chars: str
    space: bool
    low: int
    high: int

    def available(self, text: str, at: int) -> int:
        """How many of the characters from text[at] it can take (at most `high`)."""
        n = 0
        while n < self.high and at + n < len(text) and self.takes(text[at + n]):
            n += 1
        return n

    def takes(self, char: str) -> bool:
        return char in self.chars or (self.space and char.isspace())


_JOINER = _Run("'-", True, 0, 1)  # inside a part: O'Brien, OBrien, O Brien, O-Brien
_SPACING = _Run(",.+_/-", True, 1, 3)  # between the words of the whole name: Conceicao, Jose
_USER_DIGITS = _Run("0123456789", False, 0, 4)  # after two parts run together: mariasouza88
Item = str | _Run  # a literal in lower case, or a run of separators
Seq = tuple[Item, ...]
Memo = dict[tuple[int, int], int | None]


def _items(part: str) -> Seq:
    """A part as literals, apostrophes and hyphens optional or spaced: O'Brien, OBrien, O Brien."""
    return tuple(_JOINER if p in ("'", "-") else p for p in re.split(r"(['\-])", part) if p)


def _end(seq: Seq, k: int, text: str, at: int, memo: Memo) -> int | None:
    """Where seq[k:] read from text[at] ends, just before a character that is not a letter or digit
    (or at the end of `text`); the first such end in a regular expression's order, or None.
    `memo` holds the answers for (k, at) already worked out for this `seq` and `text`, so a name
    with many runs tries each place once instead of backtracking exponentially."""
    while k < len(seq):
        item = seq[k]
        if isinstance(item, str):
            if not text.startswith(item, at):
                return None
            at += len(item)
            k += 1
            continue
        if (k, at) not in memo:
            ends = (_end(seq, k + 1, text, at + n, memo) for n in range(item.available(text, at), item.low - 1, -1))
            memo[k, at] = next((end for end in ends if end is not None), None)
        return memo[k, at]
    return at if at == len(text) or text[at] not in _ALNUM else None


@dataclass(frozen=True)
class _Alternatives:
    """Finds what the case-insensitive ``(?<![A-Za-z0-9])(?:S1|S2|...)(?![A-Za-z0-9])`` of `seqs` finds,
    without compiling it: leftmost first, the first of `seqs` that matches there, no overlaps.
    `anchors` maps each seq's first literal to (its index in `seqs`, how many characters the runs
    before that literal may take): where a match can start is found with `str.find`."""

    seqs: tuple[Seq, ...]
    anchors: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]

    @classmethod
    def of(cls, seqs: list[Seq]) -> _Alternatives | None:
        """The alternatives in the order given; a seq without a literal matches nothing (it could
        only match punctuation, or nothing at all). None when no seq is left."""
        kept = tuple(seq for seq in seqs if any(isinstance(item, str) for item in seq))
        anchors: dict[str, list[tuple[int, int]]] = {}
        for index, seq in enumerate(kept):
            first = next(i for i, item in enumerate(seq) if isinstance(item, str))
            lead = sum(item.high for item in seq[:first] if isinstance(item, _Run))
            anchors.setdefault(str(seq[first]), []).append((index, lead))
        return cls(kept, tuple((a, tuple(uses)) for a, uses in anchors.items())) if kept else None

    def starts(self, low: str) -> dict[int, list[int]]:
        """Where in `low` (lower-case ASCII) a match may start, with the seqs to try there."""
        tries: dict[int, list[int]] = {}
        for anchor, uses in self.anchors:
            at = low.find(anchor)
            while at >= 0:
                for index, lead in uses:
                    for start in range(max(0, at - lead), at + 1):
                        tries.setdefault(start, []).append(index)
                at = low.find(anchor, at + 1)
        return tries

    def scan(
        self, low: str, tries: dict[int, list[int]], initials: frozenset[int] = frozenset()
    ) -> Iterator[tuple[int, int, bool]]:
        """(start, end, is an initial) of each match in `low`, from `starts(low)`; an initial (a
        capital and a dot, found by the caller at the `initials` positions) is tried first."""
        memos: dict[int, Memo] = {}
        after = 0
        for start in sorted(tries.keys() | initials):
            if start < after or (start and low[start - 1] in _ALNUM):
                continue
            if start in initials:
                after = start + 2
                yield start, after, True
                continue
            for index in sorted(set(tries[start])):
                end = _end(self.seqs[index], 0, low, start, memos.setdefault(index, {}))
                if end is not None:
                    after = end
                    yield start, end, False
                    break


@dataclass(frozen=True)
class NameMatcher:
    """One contact's name, ready to be looked for in lines (`matcher`)."""

    parts: _Alternatives | None  # each part alone, longest first
    initials: str  # the capitals that, with a dot, stand for a part (M. for Maria)
    whole: _Alternatives | None  # the whole name in order, or two parts run together

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of `text` (an ASCII-folded view) where the name stands, by the rules above."""
        low = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
        if self.whole is not None:
            yield from ((start, end) for start, end, _ in self.whole.scan(low, self.whole.starts(low)))
        if self.parts is None or not (tries := self.parts.starts(low)):
            return  # initials alone are never a name
        initials = frozenset(m.start() for m in _INITIAL.finditer(text) if m.group()[0] in self.initials)
        yield from named_runs(text, list(self.parts.scan(low, tries, initials)))


def named_runs(text: str, hits: list[tuple[int, int, bool]]) -> Iterator[tuple[int, int]]:
    """The spans of `text` that name the contact, from where its parts and initials stand in it
    ((start, end, is an initial), in order, not overlapping): runs of them joined by separators
    and particles, that hold a part and are more than one, or one part that is a name alone."""
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


def _words_only(name: str) -> str:
    """`name` with every character that is not part of a word (`_IN_A_WORD`) made a space, before
    folding: ``🌸Ana🌸`` (an emoji would fold to ``:cherry_blossom:``), ``(Ana)``, ``"Ana"``,
    ``Ana!``, ``Ana_Souza``, ``ana.souza``, ``@ana``, ``Ana*``, a zero-width space."""
    return "".join(c if c in _IN_A_WORD or unicodedata.category(c)[0] in "LMN" else " " for c in name)


def spellings(name: str) -> list[list[str]]:
    """The words of `name` (`_words_only`), ASCII-folded, without apostrophes or hyphens around
    them: as written, then with German umlauts written out if that differs (``Müller``,
    ``Mueller``)."""
    variants = dict.fromkeys((name, name.translate(_UMLAUTS)))
    return [[w for w in (t.strip(_IN_A_WORD) for t in fold(_words_only(v)).split()) if w] for v in variants]


def parts_of(words: list[list[str]]) -> list[str]:
    """The parts of a name's `spellings`, lower case, longest first: its words but titles,
    particles and initials, each piece of a hyphenated word, and a word without its elided
    particle (``almeida`` for ``d'almeida``)."""
    parts: set[str] = set()
    for word in (w for spelling in words for w in spelling):
        low = word.lower()
        if low in TITLES or low in PARTICLES or len(word) < 2:
            continue
        parts.add(low)
        parts.update(p for p in low.split("-") if len(p) >= 2 and p not in PARTICLES)
        if elided := _ELIDED.match(low):
            parts.add(low[elided.end() :])
    return sorted(parts, key=lambda p: (-len(p), p))


def user_names(parts: list[str]) -> list[str]:
    """Two different parts of 3+ letters run together, as in a user name (``mariasouza``)."""
    long_parts = sorted(p for p in parts if len(p) >= 3 and "'" not in p and "-" not in p)
    return [a + b for a in long_parts for b in long_parts if a != b]


@functools.lru_cache(maxsize=4096)
def matcher(name: str) -> NameMatcher:
    """The matcher for one contact name (cached per name; building one costs 20-40 us)."""
    words = spellings(name)
    parts = parts_of(words)
    wholes: list[Seq] = [
        tuple(item for w in spelling for item in (_SPACING, *_items(w.lower())))[1:]
        for spelling in words
        if len(spelling) > 1
    ]
    whole = _Alternatives.of(wholes + [(joined, _USER_DIGITS) for joined in user_names(parts)])
    initials = "".join(sorted({p[0].upper() for p in parts if p[0].isalpha()}))
    return NameMatcher(_Alternatives.of([_items(p) for p in parts]), initials, whole)
