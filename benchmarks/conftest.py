"""Prints the in-process benchmarks' ratios (each implementation against Starlette and raw) and writes them for inprocess_report.py."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
from inprocess_report import ORDER

from turbows._cores import CORES, SHAPES


def _shape() -> str:
    """The compiled core's shape this interpreter loads, or why there is none."""
    for name, cls in SHAPES.items():
        if cls is CORES.get("speedups"):
            return name
    return "none (pure core only)"


def _best(config: pytest.Config) -> dict[str, dict[str, float]]:
    """operation -> implementation -> nanoseconds per operation, in the fastest round.

    The fastest of 30 rounds, not the median: on a shared machine noise only
    ever adds time, and a round of 500-1000 operations lasts well under a
    millisecond, so one preemption moves a median while the minimum stays put.
    """
    session = getattr(config, "_benchmarksession", None)
    table: dict[str, dict[str, float]] = {}
    for bench in getattr(session, "benchmarks", []) or []:
        info = bench.extra_info
        if "operation" not in info or not bench.stats:
            continue
        per_operation = bench.stats.min / info["count"] * 1e9
        table.setdefault(info["operation"], {})[info["implementation"]] = per_operation
    return table


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    table = _best(config)
    if not table:
        return
    names = [name for name in ORDER if any(name in row for row in table.values())]
    compiled = [name for name in names if name not in ("raw", "starlette")]
    write = terminalreporter.write_line
    write("")
    write("turbows in-process benchmarks: ns per operation, fastest of 30 rounds; x = times faster than Starlette; /raw = cost over raw ASGI")
    header = f"{'operation':30s}" + "".join(f"{name:>12s}" for name in names)
    header += "".join(f"{name + ' x':>13s}{name + ' /raw':>13s}" for name in compiled)
    write(header)
    for operation, row in table.items():
        line = f"{operation:30s}" + "".join(f"{row.get(name, float('nan')):12.0f}" for name in names)
        for name in compiled:
            if name in row:
                line += f"{row['starlette'] / row[name]:12.2f}x{row[name] / row['raw']:12.2f}x"
        write(line)
    output = os.environ.get("TURBOWS_BENCH_JSON")
    if output:
        run = {"python": platform.python_version(), "shape": _shape(), "operations": table}
        Path(output).write_text(json.dumps(run, indent=2))
        write(f"figures written to {output}")
