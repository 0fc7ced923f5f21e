"""Run the benchmarks and print every figure against its same-run baseline in one table.

    python -m bench                     # all of them, full size (about an hour with memory at 1M)
    python -m bench --quick             # smaller inputs, for a smoke run (a few minutes)
    python -m bench worker sink         # only these

Each benchmark runs in its own process (`python -m bench.<name>`) on the broker that
`connect_or_launch` finds or starts, writes `bench/results/<name>.json`, and this collects them
into `bench/results/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.results import RESULTS, load, machine

# name -> (full-size arguments, quick arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "publish": ([], ["--events", "10000", "--rounds", "1"]),
    "keystore": ([], ["--messages", "20000", "--creations", "500", "--runs", "5"]),
    "worker": ([], ["--events", "5000"]),
    "hosts": ([], ["--events", "5000", "--creations", "500"]),
    "latency": ([], ["--seconds", "10"]),
    "termination": ([], ["--runs", "5"]),
    "sink": ([], ["--rows", "50000"]),
    "views": ([], ["--rows", "1000000"]),
    "ingest_window": ([], []),
    "memory": ([], ["--events", "20000", "100000"]),
    "redaction": ([], ["--rounds", "2"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    args = parser.parse_args()
    chosen = args.names or list(BENCHES)
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    failed = []
    for name in chosen:
        print(f"== {name}", flush=True)
        full, quick = BENCHES[name]
        run = subprocess.run([sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)], check=False)
        if run.returncode != 0:
            failed.append(name)
    rows, summary = [], {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    for name in chosen:
        result = load(name)
        if result is None or name in failed:
            continue
        summary["benchmarks"][name] = result
        rows += [(name, f) for f in result["figures"]]
    print(f"\n{'benchmark':<14}{'figure':<48}{'value':>12}  {'baseline (same run)':<40}{'value':>12}{'ratio':>9}")
    for name, f in rows:
        value = f"{f['value']:,.3f} {f['unit']}"
        base = f"{f['baseline_value']:,.3f} {f['unit']}"
        print(f"{name:<14}{f['what'][:47]:<48}{value:>12}  {f['baseline'][:39]:<40}{base:>12}{f['ratio']:>8.3f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nmachine: {summary['machine']}; results in {RESULTS}/")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
