"""The in-process workloads timed interleaved: every implementation in turn, round after round.

    python benchmarks/interleaved.py --json results/inprocess-3.12.1.json [--rounds 60]

``bench.sh`` runs this on every interpreter. It times the very workloads of
``test_inprocess.py`` (``workloads.py``), but where pytest-benchmark runs one
implementation's rounds back to back, this runs round 1 of every
implementation (in a shuffled order), then round 2, and so on. A shared or
virtual machine's speed drifts over seconds (other tenants, frequency), so
rounds taken at different times do not compare; rounds taken side by side
do. Each figure is the fastest round (noise only ever adds time), in
nanoseconds per operation. Writes what ``inprocess_report.py`` reads.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import time
from pathlib import Path

from workloads import OPERATIONS, implementations, run_to_completion

from turbows._cores import CORES, SHAPES


def shape() -> str:
    """The compiled core's shape this interpreter loads, or why there is none."""
    for name, cls in SHAPES.items():
        if cls is CORES.get("speedups"):
            return name
    return "none (pure core only)"


def measure(rounds: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """operation -> implementation -> ns per operation, the fastest of ``rounds`` interleaved rounds."""
    found = implementations()
    shuffle = random.Random(seed).shuffle
    table: dict[str, dict[str, float]] = {}
    for operation, (make, count) in OPERATIONS.items():
        workloads = {name: make(cls) for name, cls in found.items()}
        best = {name: float("inf") for name in workloads}
        order = list(workloads)
        for round_number in range(rounds + 3):  # three rounds of warm-up
            shuffle(order)
            for name in order:
                workload = workloads[name]
                started = time.perf_counter_ns()
                run_to_completion(workload(count))
                elapsed = time.perf_counter_ns() - started
                if round_number >= 3:
                    best[name] = min(best[name], elapsed / count)
        table[operation] = best
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write this interpreter's run")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    gc.disable()  # as pytest-benchmark's --benchmark-disable-gc: the collector's pauses are not the code's
    try:
        table = measure(args.rounds)
    finally:
        gc.enable()
    run = {"python": platform.python_version(), "shape": shape(), "rounds": args.rounds, "operations": table}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=2))
    width = max(len(operation) for operation in table)
    names = list(next(iter(table.values())))
    print(f"CPython {run['python']} (compiled core: {run['shape']}): ns per operation, fastest of {args.rounds} interleaved rounds")
    print(" " * width + "".join(f"{name:>12s}" for name in names))
    for operation, row in table.items():
        print(f"{operation:{width}s}" + "".join(f"{row[name]:12,.0f}" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
