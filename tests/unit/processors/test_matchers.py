"""The contact's name and phone matchers, compiled nothing per contact, against the patterns that
were compiled per contact before (compiled_reference.py): the same spans on every line, for
names and numbers of every shape; and what the compiled ones got wrong (a name that crashed
them, one that made them backtrack for seconds)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shredline.processors import names, phones
from shredline.processors.redact import redact
from shredline.processors.textview import fold
from tests.unit.processors import compiled_reference
from tests.unit.processors.test_redaction import labelled_set
from tests.unit.processors.test_redaction_labelled import load

# Words people put in names: accents, apostrophes (both kinds), hyphens, umlauts, particles and
# titles, initials, digits, and characters that mean something in a regular expression.
NAME_WORDS = [
    "José", "Conceição", "Maria", "da", "Souza", "Sean", "O'Brien", "O\u2019Brien-Teste", "D'Almeida", "Jean-Pierre",
    "Björn", "Müller", "Dr.", "Sra.", "van", "der", "Li", "Bo", "Ana", "Anabela", "M.", "C.", "(Zé)", "J.R.",
    "Ann+e", "[Lu]", "Rosa*", "Will", "Nuñez", "Zoë", "42", "x-", "'Ana'", "-", "--", "A.B.C", "Mc?Gee", "Ñ|ñ",
]  # fmt: skip
# Pieces of log lines around them: separators of every kind the matchers treat specially, words
# of context (greetings, name fields, street words), case and escape variants.
TEXT_BITS = [
    " ", "  ", "-", "'", "\u2019", ",", ", ", ".", "+", "_", "/", "(", ")", "=", ":", "\"", "\t", "88", "1234", "12345",
    "oi ", "Dear ", "nome=", '"first_name":"', "Rua ", "Sr. ", "the ", "status ", "ok", "WILL RETRY",
    "Jos%C3%A9", "Jos\\u00e9", "&eacute;", "e\u0301", "M.", "C.", "Z.",
]  # fmt: skip


def _case(word: str, how: int) -> str:
    return (word, word.lower(), word.upper(), word.capitalize())[how]


name_strategy = st.lists(st.sampled_from(NAME_WORDS), min_size=1, max_size=4).map(" ".join)


@st.composite
def line_with(draw: st.DrawFn, name: str) -> str:
    """A line made of the name's words (in any case and order, accents or not) and other bits."""
    words = [w for w in name.split() if w] + [fold(w) for w in name.split() if w]
    bits = st.one_of(
        st.tuples(st.sampled_from(words), st.integers(0, 3)).map(lambda t: _case(*t)),
        st.sampled_from(TEXT_BITS),
        st.text(alphabet="abcAB 9-.'", max_size=4),
    )
    return "".join(draw(st.lists(bits, max_size=14)))


def _compiled_patterns_handle(name: str) -> bool:
    """Not a name the compiled patterns failed on (test_names_the_compiled_patterns_could_not_handle)."""
    words = names.spellings(name)
    parts = names.parts_of(words)
    return (
        all(p.strip("'-") for p in parts)
        and any(w.strip("'-") for spelling in words for w in spelling)
        and (not parts or any(p[0].isalpha() for p in parts))
    )


@settings(max_examples=2500)
@given(st.data(), name_strategy)
def test_names_are_found_where_the_compiled_patterns_found_them(data: st.DataObject, name: str) -> None:
    assume(_compiled_patterns_handle(name))
    view = fold(data.draw(line_with(name)))
    assert list(names.matcher(name).find(view)) == list(compiled_reference.name_matcher(name).find(view))


BR, BR_LANDLINE, MX, US, ES, PT, AR = (
    "+5511987654321", "+551133334444", "+525512345678", "+12015550123", "+34612345678", "+351912345678",
    "+5491123456789",
)  # fmt: skip
SEPARATORS = ["", "", " ", "-", ".", "(", ")", "/", "+", "  ", " - ", "    ", "\t", "_", ",", ":"]


@st.composite
def line_with_number(draw: st.DrawFn, phone: str) -> str:
    """A line with the number written some way a person or a system writes it, among other digits."""
    digits = phone[1:]
    written = draw(st.sampled_from([digits, digits[2:], digits[-8:], "0" + digits[2:], "01" + digits[2:], digits[:-1]]))
    if phone == BR:
        written = draw(st.sampled_from([written, "55119" + digits[5:], "11" + digits[5:]]))
    if phone == MX:
        written = draw(st.sampled_from([written, "521" + digits[2:]]))
    pieces = [draw(st.sampled_from(["", "", "+", "00", "(", "(+", "+ ", "tel "]))]
    for digit in written:
        pieces += [digit, draw(st.sampled_from(SEPARATORS))]
    before = draw(st.text(alphabet="ab +(0123456789", max_size=5))
    after = draw(st.text(alphabet="ab )0123456789.", max_size=5))
    return before + "".join(pieces) + after


@settings(max_examples=2500)
@given(st.data(), st.sampled_from([BR, BR_LANDLINE, MX, US, ES, PT, AR]))
def test_a_known_number_is_found_where_the_compiled_pattern_found_it(data: st.DataObject, phone: str) -> None:
    line = fold(data.draw(line_with_number(phone)))
    known, reference = phones.known(phone), compiled_reference.known_phone(phone)
    assert known is not None and reference is not None
    assert list(known.find(line)) == list(reference.find(line))
    assert known.region == reference.region


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # anything but letters, marks, digits, apostrophes and hyphens stands between the words of
        # a name (characters that mean something in a pattern are not special): each word is found
        ("Ana (Zé) Souza", "Ana (Zé) Souza called; (ze) ok", "[NAME] ([NAME]) [NAME] called; (ze) ok"),
        ("J.R. Smith", "J.R. Smith and JR Smith and J.R. ok", "[NAME] and JR [NAME] and J.R. ok"),
        ("Ann+e Rosa*", "Ann+e wrote, Annxe did not, Rosa* too", "[NAME]+e wrote, Annxe did not, [NAME]* too"),
        ("Mc?Gee", "McGee, Mc?Gee", "McGee, [NAME]?[NAME]"),
        # what a contact name carries around its words: emoji, brackets, quotes, handles, underscores
        ("🌸Marisol Quintanilha🌸", "MARISOL QUINTANILHA ligou, Marisol!", "[NAME] ligou, [NAME]!"),
        ("(Marisol)", "Hi Marisol, booking confirmed", "Hi [NAME], booking confirmed"),
        ("Marisol!", "Marisol Quintanilha confirmed", "[NAME] Quintanilha confirmed"),
        ('"Marisol Quintanilha"', "marisol quintanilha paid", "[NAME] paid"),
        ("Marisol_Quintanilha", "Quintanilha, Marisol: ok", "[NAME]: ok"),
        ("@marisol.quintanilha", "from Marisol Quintanilha", "from [NAME]"),
        ("«Marisol» ™", "Marisol wrote", "[NAME] wrote"),
        ("Marisol\u200bQuintanilha", "Quintanilha here", "[NAME] here"),
        ("~Ana~ *Souza*", "ana souza and Souza", "[NAME] and [NAME]"),
        ("[Ana] 🇧🇷", "oi Ana", "oi [NAME]"),
        # accents and case, either way round
        ("JOSÉ CONCEIÇÃO", "jose conceicao confirmou", "[NAME] confirmou"),
        ("jose conceicao", "JOSÉ CONCEIÇÃO confirmou", "[NAME] confirmou"),
        ("Zoë Nuñez", "Zoe Nunez said ZOË NUÑEZ", "[NAME] said [NAME]"),
        # names inside one another: the longer part wins where both fit
        ("Ana Anabela", "Anabela and Ana, anabelaana7", "[NAME] and [NAME], [NAME]"),
        ("Bo Bob", "Bob said Bo", "[NAME] said [NAME]"),
        # parts that are only apostrophes and hyphens name nobody (the compiled pattern matched
        # empty strings there and redaction failed); the rest of the name is still found
        ("Ana -- Souza", "Ana -- Souza called, then Ana, ok", "[NAME] called, then [NAME], ok"),
        ("- '", "a - b, x", "a - b, x"),
        # a name without an initial to match (the compiled pattern did not compile)
        ("42 99", "call 42 99 ok", "call [NAME] ok"),
    ],
)
def test_names_with_unusual_characters(name: str, text: str, expected: str) -> None:
    assert redact(text, name=name) == expected


def test_names_the_compiled_patterns_could_not_handle() -> None:
    # (a word of hyphens made a part that matched empty strings: IndexError; spellings drops it now)
    with pytest.raises(re.error):  # no part begins with a letter: an empty class of initials
        compiled_reference.name_matcher("42 99")
    # (and a name of punctuation only matched its punctuation; it has no words now)
    assert list(names.matcher("Ana -- Souza").find("hello world, ok")) == []
    assert set(names.matcher("42 99").find("call 42 99 ok")) == {(5, 10)}  # whole, and two parts
    assert list(names.matcher("- '").find("a - b, x")) == []


def test_a_name_full_of_separators_is_searched_in_linear_time() -> None:
    name = "Ana" + " -" * 40 + " Souza"
    line = "Ana" + " -" * 40 + " x, and Ana" + " -" * 40 + " Souza"
    started = time.perf_counter()
    assert redact(line, name=name).endswith("and [NAME]" + " -" * 40 + " [NAME]")  # hyphens separate words
    assert time.perf_counter() - started < 0.5  # the compiled pattern: 13 s with 12 dashes, doubling with each


@pytest.mark.parametrize(
    ("phone", "text", "expected"),
    [
        (BR, "ligar (011) 98765-4321 ou 0 11 98765 4321", "ligar [PHONE] ou [PHONE]"),
        (BR, "whatsapp antigo 0055 11 8765-4321.", "whatsapp antigo [PHONE]."),
        (BR, "+55 (11) 9 8765 4321, id 119876543210", "[PHONE], id 119876543210"),
        (MX, "+52 1 55 1234 5678 y 044 55 1234 5678", "[PHONE] y [PHONE]"),
        (US, "(201) 555-0123 / 201.555.0123 / 2015550123x", "[PHONE] / [PHONE] / [PHONE]x"),
        (ES, "ref 34612345678, tel 612-34-56-78", "ref [PHONE], tel [PHONE]"),
    ],
)
def test_a_known_number_however_it_is_written(phone: str, text: str, expected: str) -> None:
    assert redact(text, phone=phone) == expected


def test_every_labelled_line_is_redacted_as_with_the_compiled_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [(c.text, c.contact) for c in load()] + [(text, known) for text, _label, known in labelled_set(100)]
    now = [redact(text, **known) for text, known in lines]
    monkeypatch.setattr(names, "matcher", compiled_reference.name_matcher)
    monkeypatch.setattr(phones, "known", compiled_reference.known_phone)
    assert [redact(text, **known) for text, known in lines] == now
