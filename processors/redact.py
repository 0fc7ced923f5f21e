"""Redaction of free text (execution log lines and errors) before it is kept, forever.

`redact(text, name=, phone=, email=)` returns the text with every personal value replaced by a
typed placeholder, so the log stays useful: ``[NAME]``, ``[PHONE]``, ``[EMAIL]``, and the
identifiers of `processors.identifiers` (``[CPF]``, ``[DNI]``, ``[NIE]``, ``[CURP]``,
``[SSN]``, ``[CARD]``, ``[IBAN]``).

Everything is searched in one decoded, ASCII-folded view of the line (`processors.textview`:
percent-encoding, JSON escapes, HTML entities, accents, NFD, typographic apostrophes), and the
spans found there replace the *original* characters, escapes included. Finders, strongest first
(where two overlap the stronger wins, then the longer):

1. any e-mail address (internationalised ones too: RFC 6531 local parts and IDN domains fold to
   ASCII in the view, so the whole address goes, not just its ASCII tail), obfuscated ones too
   (``ana [at] example [dot] com``, ``ana(arroba)exemplo.com.br``, ``ana arroba exemplo ponto com``);
2. the event's own contact phone, however written (`processors.phones.known`);
3. identifiers confirmed by their check digits (`processors.identifiers`);
4. the contact's name, by the context rules of `processors.names`;
5. any other phone number (`processors.phones.find`: valid in its country's plan, or legacy,
   and not a date, amount, id, duration, address or version).

The contact's name and phone are looked for without compiling a pattern per contact (`str.find`
for their pieces, then a check in Python; built once per name and number and cached); a line
without special characters is searched as it is (no view is built).
"""

from __future__ import annotations

import re

from shredline.processors import identifiers, names, phones
from shredline.processors.textview import TextView

NAME, PHONE, EMAIL = "[NAME]", "[PHONE]", "[EMAIL]"
LABELS = (
    NAME,
    PHONE,
    EMAIL,
    identifiers.CPF,
    identifiers.DNI,
    identifiers.NIE,
    identifiers.CURP,
    identifiers.SSN,
    identifiers.CARD,
    identifiers.IBAN,
)
DEFAULT_REGION = phones.DEFAULT_REGION
# dot-atom local part (RFC 5322) without the characters that delimit it in logs (= ? / & ! # ...),
# then a dotted LDH domain (RFC 1035) with a letter TLD or an IDNA A-label (xn--). "[at]", "(at)",
# "(arroba)" and "(dot)", "[ponto]", "(punto)" in brackets are the usual ways people hide an
# address from scrapers; spoken out in words ("ana arroba exemplo ponto com", "ana at example
# dot com") too, when the words cannot be ordinary prose: "arroba", or "at" with a spoken dot,
# and a common top-level domain at the end.
_AT = r"(?:@|\s?[\[(]\s?(?:at|arroba)\s?[\])]\s?)"
_DOT = r"(?:\.|\s?[\[(]\s?(?:dot|ponto|punto)\s?[\])]\s?)"
_SPOKEN_DOT = r"(?:\.|\s(?:dot|ponto|punto)\s)"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._+-])[A-Za-z0-9_+-]+(?:{_SPOKEN_DOT}[A-Za-z0-9_+-]+)*\s(?P<at>arroba|at)\s"
    rf"(?:[A-Za-z0-9-]+{_SPOKEN_DOT})+(?:com|net|org|edu|gov|info|io|br|es|mx|ar|co|pt|us|uk|de|fr|it)(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
_SPOKEN_WORD = re.compile(r"\s(?:dot|ponto|punto)\s", re.IGNORECASE)
_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._'+-])[A-Za-z0-9_+-][A-Za-z0-9._'+-]*{_AT}"
    rf"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?{_DOT})+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})(?![A-Za-z0-9-])",
    re.IGNORECASE,
)

_DIGIT = re.compile(r"\d")  # the view is ASCII: 0-9
Span = tuple[int, int, str]  # start, end in the original text, placeholder


def find(text: str, *, name: str | None = None, phone: str | None = None) -> list[Span]:
    """The spans `redact` replaces, in the original text's positions, sorted, non-overlapping."""
    view = TextView.of(text)
    folded = view.text
    found: list[tuple[int, int, int, str]] = []  # rank, start, end, label (view positions)
    found += [(0, *m.span(), EMAIL) for m in _EMAIL.finditer(folded)]
    if " " in folded:
        found += [
            (0, *m.span(), EMAIL)
            for m in _SPOKEN_EMAIL.finditer(folded)
            if m["at"].lower() == "arroba" or _SPOKEN_WORD.search(folded, m.end("at"), m.end())
        ]
    known = phones.known(phone) if phone else None
    if known is not None:
        for start, end in known.find(folded):
            start += folded.startswith("(", start) and ")" not in folded[start:end]
            found.append((1, start, end, PHONE))
    region = known.region if known is not None else DEFAULT_REGION
    if _DIGIT.search(folded):
        found += [(2, s, e, label) for s, e, label in identifiers.find(folded, region)]
        found += [(4, s, e, PHONE) for s, e in phones.find(folded, region)]
    if name:
        found += [(3, s, e, NAME) for s, e in names.matcher(name).find(folded)]
    taken: list[tuple[int, int, str]] = []
    for _rank, start, end, label in sorted(found, key=lambda f: (f[0], f[1] - f[2])):
        overlaps = [t for t in taken if start < t[1] and end > t[0]]
        if not overlaps:
            taken.append((start, end, label))
        elif all(t[2] == label for t in overlaps):  # two finders saw one phone: the union
            for t in overlaps:
                taken.remove(t)
            taken.append((min(start, *(t[0] for t in overlaps)), max(end, *(t[1] for t in overlaps)), label))
    spans: list[Span] = []
    for start, end, label in sorted((*view.span(s, e), label) for s, e, label in taken):
        if spans and start < spans[-1][1]:  # two finds inside one escape sequence: one placeholder
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]), spans[-1][2])
        else:
            spans.append((start, end, label))
    return spans


def redact(text: str, *, name: str | None = None, phone: str | None = None, email: str | None = None) -> str:
    """`text` with personal data replaced by placeholders.

    `name`, `phone` (E.164) and `email` are the event's own contact values: the name and phone
    are looked for however they are written; the phone's country is the region for numbers
    written without a country code (US when unknown). Any e-mail address is redacted, so
    `email` needs no special search; it is accepted for symmetry with the event's fields.
    """
    del email  # every address is found by pattern, the contact's own included
    out: list[str] = []
    at = 0
    for start, end, label in find(text, name=name, phone=phone):
        out.append(text[at:start])
        out.append(label)
        at = end
    out.append(text[at:])
    return "".join(out)
