"""Run every benchmark under bench/ with the arguments its README figure was measured with, one after the
other (they each want the whole machine), and end with one table: benchmark, wall time, exit status.

Each benchmark prints its own figures as it goes; this only runs them and summarises. A benchmark script
added to bench/ without an entry in SUITES is run with its own defaults, so nothing is silently left out.

Usage: python bench/run_all.py [--quick] [--only NAME ...] [--list]
  --quick   smaller sizes (minutes, not an hour): a smoke run that every benchmark still works
  --only    run only these benchmarks (file names without .py)
  --list    print the commands and run nothing
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (full arguments: the README's figures, quick arguments: a smoke run)
SUITES: dict[str, tuple[list[list[str]], list[list[str]]]] = {
    "simulate_rate": ([["--preset", "medium"]], [["--preset", "tiny"]]),
    "stages": ([["--preset", "small"], ["--preset", "medium"]], [["--preset", "tiny"]]),
    "resources": ([["--preset", "tiny", "--preset", "small", "--preset", "marginal"]],
                  [["--preset", "tiny", "--preset", "marginal"]]),
    "eta": ([["--preset", "tiny", "--preset", "small", "--preset", "marginal"]],
            [["--preset", "tiny", "--preset", "marginal"]]),
    "imaging_scaleout": ([["--part", "walltime", "--preset", "tiny", "--chunk", "4"],
                          ["--part", "memory", "--chunks", "16"], ["--part", "pod", "--chunks", "16"]],
                         [["--part", "memory", "--chunks", "2"], ["--part", "pod", "--chunks", "2"]]),
    "control_plane": ([["--n", "1000"]], [["--n", "50", "--window", "30"]]),
    "import_ms": ([["--antennas", "43", "--channels", "128", "--target-minutes", "10"]],
                  [["--antennas", "16", "--channels", "16", "--target-minutes", "2"]]),
    # the README's table is of the reduced corpus case, which is already minutes: no smaller variant. Its work
    # directory is kept for wsclean_weights, which runs after it (benchmarks run in name order).
    "compare_imagers": ([["--size", "reduced", "--work", "/tmp/imgbench", "--keep"]],
                        [["--size", "reduced", "--work", "/tmp/imgbench", "--keep"]]),
    "wsclean_weights": ([["--work", "/tmp/imgbench"]], [["--work", "/tmp/imgbench"]]),
}


def benchmark_scripts() -> list[str]:
    """Every runnable benchmark in bench/ (this file excepted), by name."""
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_"))


def commands(quick: bool, only: list[str] | None) -> list[tuple[str, list[str]]]:
    names = benchmark_scripts()
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SystemExit(f"run_all: no benchmark named {', '.join(unknown)} (have: {', '.join(names)})")
    out = []
    for name in names:
        if only and name not in only:
            continue
        full, smoke = SUITES.get(name, ([[]], [[]]))
        for args in smoke if quick else full:
            out.append((name, [sys.executable, str(HERE / f"{name}.py"), *args]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", metavar="NAME")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    todo = commands(args.quick, args.only)
    if args.list:
        for _name, cmd in todo:
            print(" ".join(cmd[1:]))
        return 0
    results = []
    for name, cmd in todo:
        print(f"\n=== {' '.join(Path(c).name if i == 1 else c for i, c in enumerate(cmd[1:], 1))}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        results.append((name, " ".join(cmd[2:]), time.perf_counter() - t0, rc))
    print("\n| benchmark | arguments | wall s | result |\n|---|---|---|---|")
    for name, argv, secs, rc in results:
        print(f"| {name} | {argv} | {secs:.0f} | {'ok' if rc == 0 else f'FAILED (exit {rc})'} |")
    return 0 if all(rc == 0 for *_, rc in results) else 1


if __name__ == "__main__":
    sys.exit(main())
