"""The top frames of a py-spy profile in collapsed ("raw") form, by share of samples.

    python -m bench.top PROFILE.raw [--n 10] [--self]

Inclusive by default (a frame counts once per sample that has it anywhere on its stack); `--self`
counts only the innermost frame. Frames are `function (file:line)` as py-spy writes them, with
the line dropped so one function is one row.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def top(path: Path, n: int, self_only: bool) -> list[tuple[str, float]]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        total += int(samples)
        for frame in [frames[-1]] if self_only else set(frames[1:]):  # frames[0] is the thread
            counts[frame] += int(samples)
    return [(frame, count / total) for frame, count in counts.most_common(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--self", dest="self_only", action="store_true")
    args = parser.parse_args()
    for frame, share in top(args.profile, args.n, args.self_only):
        print(f"{share:>6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
