"""Redaction quality on the hand-written labelled set (redaction_set_*.txt), per kind.

Each expected line is its input with some slices replaced by placeholders; aligning the two
gives the labelled slices. A found slice counts as right only if it has the same placeholder
and exactly the same bounds as a labelled one: a partial find (``joã[EMAIL]``) is both a miss
and a false alarm. Precision and recall are reported per placeholder; negatives (lines that
must not change) are reported as the share left intact.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from shredline.processors.redact import LABELS, find, redact

HERE = Path(__file__).parent
SETS = sorted(HERE.glob("redaction_set_*.txt"))
_PLACEHOLDER = re.compile("|".join(re.escape(label) for label in LABELS))


@dataclass(frozen=True)
class Case:
    where: str
    text: str
    expected: str
    contact: dict[str, str]


def load() -> list[Case]:
    cases: list[Case] = []
    for path in SETS:
        contact: dict[str, str] = {}
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                pairs = [p.split("=", 1) for p in line[1:].split(";") if p.strip()]
                contact = {k.strip(): v.strip() for k, v in pairs}
                continue
            nfd = line.startswith("nfd| ")
            line = line.removeprefix("nfd| ")
            text, _, expected = line.partition(" => ")
            expected = expected or text
            if nfd:
                text, expected = unicodedata.normalize("NFD", text), unicodedata.normalize("NFD", expected)
            cases.append(Case(f"{path.name}:{number}", text, expected, contact))
    return cases


def labelled_spans(case: Case) -> list[tuple[int, int, str]]:
    """Where the expected line's placeholders stand in the input."""
    pieces = _PLACEHOLDER.split(case.expected)
    labels = _PLACEHOLDER.findall(case.expected)
    pattern = "".join(re.escape(p) + ("(.+?)" if i < len(labels) else "") for i, p in enumerate(pieces))
    match = re.fullmatch(pattern, case.text, re.DOTALL)
    assert match, f"{case.where}: expected line does not align with its input"
    return [(match.start(i + 1), match.end(i + 1), label) for i, label in enumerate(labels)]


@dataclass
class Tally:
    right: Counter[str]
    found: Counter[str]
    labelled: Counter[str]
    negatives: int = 0
    negatives_intact: int = 0


def score(cases: list[Case]) -> tuple[Tally, list[str]]:
    tally = Tally(Counter(), Counter(), Counter())
    wrong = []
    for case in cases:
        want = set(labelled_spans(case))
        got = set(find(case.text, name=case.contact.get("name"), phone=case.contact.get("phone")))
        tally.labelled.update(label for *_s, label in want)
        tally.found.update(label for *_s, label in got)
        tally.right.update(label for *_s, label in want & got)
        if not want:
            tally.negatives += 1
            tally.negatives_intact += not got
        if want != got:
            wrong.append(f"{case.where}: {redact(case.text, **case.contact)!r} (want {case.expected!r})")
    return tally, wrong


def report(tally: Tally) -> str:
    rows = [f"{'kind':<8}{'labelled':>9}{'found':>7}{'right':>7}{'precision':>11}{'recall':>8}"]
    for label in sorted(tally.labelled | tally.found, key=lambda x: -tally.labelled[x]):
        n, f, r = tally.labelled[label], tally.found[label], tally.right[label]
        rows.append(f"{label:<8}{n:>9}{f:>7}{r:>7}{(r / f if f else 1.0):>11.3f}{(r / n if n else 1.0):>8.3f}")
    total_r, total_f, total_n = (sum(c.values()) for c in (tally.right, tally.found, tally.labelled))
    rows.append(f"{'all':<8}{total_n:>9}{total_f:>7}{total_r:>7}{total_r / total_f:>11.3f}{total_r / total_n:>8.3f}")
    rows.append(f"negative lines left intact: {tally.negatives_intact}/{tally.negatives}")
    return "\n".join(rows)


def test_the_set_is_large_hand_written_and_well_formed() -> None:
    cases = load()
    assert len(cases) >= 300
    assert {c.where.split(":")[0] for c in cases} == {f"redaction_set_{x}.txt" for x in ("en", "es", "pt")}
    negatives = [c for c in cases if c.text == c.expected]
    assert len(negatives) >= 100
    for case in cases:
        labelled_spans(case)  # every expected line aligns with its input


def test_precision_and_recall_per_kind_on_the_hand_written_set() -> None:
    tally, wrong = score(load())
    print("\n" + report(tally) + "\nlines not exactly as labelled:\n  " + "\n  ".join(wrong))
    for label in tally.labelled:
        precision = tally.right[label] / tally.found[label] if tally.found[label] else 0.0
        recall = tally.right[label] / tally.labelled[label]
        assert precision >= 0.95 and recall >= 0.9, (label, precision, recall, wrong)
    assert tally.negatives_intact / tally.negatives >= 0.97, wrong
