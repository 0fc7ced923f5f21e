"""A decoded, ASCII-folded view of a text, with every view position mapped back to the original.

Redaction looks for personal data in what a log line *says*, not in how it was escaped or
accented, then replaces the original characters. The view undoes, in one pass:

- percent-encoding (RFC 3986; runs of ``%XX`` decoded as UTF-8, else as Windows-1252, the legacy
  form encoding): ``ana%40example.com``, ``Jos%E9``; encoded twice too, as in a URL carried in
  another URL's query (``%2540`` is ``%40`` is ``@``);
- JSON string escapes (RFC 8259 §7): ``\\u00e9`` (surrogate pairs too), ``\\n``, ``\\"``, ``\\\\``;
  ``\\\\u00e9`` too, a JSON document carried as a string in another one;
- byte escapes as Python, C and JavaScript print them (``b'Jos\\xc3\\xa9'``, ``\\x40``), decoded
  like percent-encoding;
- MIME quoted-printable and RFC 2047 "Q" words, for the bytes that need it: runs of ``=XX`` that
  decode as UTF-8 non-ASCII text (``Jos=C3=A9``; ``=3D``-style escapes of ASCII are left alone,
  since ``key=40`` is far likelier in a log than an escaped ``@``);
- HTML character references (HTML5 named, decimal and hex): ``&eacute;``, ``&#64;``, ``&#x40;``;
- accents, compatibility forms and other scripts, folded to ASCII by `anyascii` per character
  (``ã`` and NFD ``a`` + U+0303 both give ``a``; U+2019 gives ``'``; Arabic-Indic ``٣`` gives ``3``).

Case is kept (``É`` gives ``E``), so callers can still tell a capitalised word. ``+`` is not
read as a space (it is part of phone numbers and e-mail local parts); matchers treat it as a
separator where that makes sense. `span(i, j)` maps a view slice back to the original slice
that produced it; a character made from several original ones (``%C3%A9``) maps to all of them.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from anyascii import anyascii

_SPECIAL = re.compile(
    r"(?P<pct>(?:%(?:25)*[0-9A-Fa-f]{2})+)"
    r"|(?P<uni>(?:\\{1,7}u[0-9A-Fa-f]{4})+)"
    r"|(?P<hex>(?:\\{1,7}x[0-9A-Fa-f]{2})+)"
    r"|(?P<qp>(?:=[C-Fc-f][0-9A-Fa-f](?:=[89ABab][0-9A-Fa-f]){1,3})+)"
    r"|(?P<esc>\\[nrt\"\\/])"
    r"|(?P<ent>&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});)"
    r"|(?P<wide>[^\x00-\x7f]+)"
)
_JSON_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "/": "/"}
_fold_cache: dict[str, str] = {}


def fold_char(char: str) -> str:
    """One character as ASCII (possibly empty or several characters), case kept; cached."""
    folded = _fold_cache.get(char)
    if folded is None:
        folded = char if char.isascii() else anyascii(char)
        if len(_fold_cache) < 65_536:
            _fold_cache[char] = folded
    return folded


def fold(text: str) -> str:
    """`text` decoded and folded to ASCII, without the position map."""
    return TextView.of(text).text


def _decode(kind: str, raw: str) -> str:
    """The text an escape sequence stands for; the raw text when it does not decode cleanly."""
    if kind in ("pct", "hex"):  # each %XX (or %25XX, encoded again), or \xXX, is one byte
        data = bytes(int(unit[-2:], 16) for unit in re.split(r"%|\\+x", raw)[1:])
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")
    if kind == "qp":
        try:
            return bytes.fromhex(raw.replace("=", "")).decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if kind == "uni":
        units = bytes.fromhex(re.sub(r"\\+u", "", raw))
        try:
            return units.decode("utf-16-be")  # pairs surrogates; a lone one fails
        except UnicodeDecodeError:
            return raw
    if kind == "esc":
        return _JSON_ESCAPES[raw[1]]
    if kind == "ent":
        return html.unescape(raw)
    return raw


def _append(out: list[str], starts: list[int], ends: list[int], folded: str, a: int, b: int) -> None:
    """View text `folded` made from original [a, b); what folds to nothing (a combining accent,
    a zero-width space) joins the character before it, so a match never leaves it behind."""
    if not folded:
        if ends and ends[-1] == a:
            ends[-1] = b
        return
    out.append(folded)
    starts.extend([a] * len(folded))
    ends.extend([b] * len(folded))


@dataclass(frozen=True)
class TextView:
    """`text` is the view; `starts[i]`/`ends[i]` the original slice behind view character i
    (both None when the view is the original itself)."""

    text: str
    starts: list[int] | None = None
    ends: list[int] | None = None

    @classmethod
    def of(cls, original: str) -> TextView:
        if _SPECIAL.search(original) is None:
            return cls(original)
        out: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        at = 0
        for match in _SPECIAL.finditer(original):
            a, b = match.span()
            if at < a:  # a plain ASCII run maps one to one
                out.append(original[at:a])
                starts.extend(range(at, a))
                ends.extend(range(at + 1, a + 1))
            kind = match.lastgroup or ""
            if kind == "wide":
                for offset, char in enumerate(match.group()):
                    _append(out, starts, ends, fold_char(char), a + offset, a + offset + 1)
            else:
                _append(out, starts, ends, "".join(fold_char(c) for c in _decode(kind, match.group())), a, b)
            at = b
        if at < len(original):
            out.append(original[at:])
            starts.extend(range(at, len(original)))
            ends.extend(range(at + 1, len(original) + 1))
        return cls("".join(out), starts, ends)

    def span(self, i: int, j: int) -> tuple[int, int]:
        """The original slice behind the view slice [i, j) (j > i)."""
        if self.starts is None or self.ends is None:
            return i, j
        return self.starts[i], self.ends[j - 1]
