"""The in-process suite's figures, one row per CPython: merged, checked against the targets, drawn.

    python benchmarks/inprocess_report.py --out-dir results results/inprocess-*.json

Each input is what one interpreter's run of ``benchmarks/interleaved.py``
wrote (or of ``benchmarks/test_inprocess.py`` with ``TURBOWS_BENCH_JSON``; see conftest.py): its version, the compiled
core's shape it loads, and nanoseconds per operation (the fastest round) for every
implementation. Writes ``inprocess.json`` ({version: run}), ``inprocess.md``
and ``inprocess.png`` in the output directory. ``benchmarks/e2e/run.py``
puts the same tables into ``benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# The in-process targets (the project's performance targets): each is
# (label, operation, implementation, against, bound), met when
# ns[implementation] / ns[against] <= bound.
TARGETS = (
    ("text round trip ≤1.5x raw", "text round trip", "speedups", "raw", 1.5),
    ("construct+accept+close ≤1.5x raw", "construct+accept+close", "speedups", "raw", 1.5),
    ("JSON 150 B ≤1.2x raw orjson", "json round trip 150B", "speedups", "raw", 1.2),
    ("text ≥3.5x faster than Starlette", "text round trip", "speedups", "starlette", 1 / 3.5),
    ("JSON 150 B ≥3.5x faster than Starlette", "json round trip 150B", "speedups", "starlette", 1 / 3.5),
)
# The implementations, in the order the tables show them.
ORDER = ("raw", "starlette", "pure", "speedups", "awaitables", "coroutines")
LABEL = {
    "raw": "raw ASGI",
    "starlette": "Starlette",
    "pure": "turbows pure",
    "speedups": "turbows compiled",
    "awaitables": "compiled, other shape: awaitables",
    "coroutines": "compiled, other shape: coroutines",
}


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def merge(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """version -> that interpreter's run, in version order."""
    runs = [json.loads(path.read_text()) for path in paths if path.exists()]
    return {run["python"]: run for run in sorted(runs, key=lambda run: version_key(run["python"]))}


def ratio(table: dict[str, dict[str, float]], operation: str, name: str, against: str) -> float | None:
    row = table.get(operation, {})
    if name in row and against in row and row[against]:
        return row[name] / row[against]
    return None


def ordering_checks(table: dict[str, dict[str, float]]) -> tuple[list[str], list[str]]:
    """The operations where the compiled core is slower than the pure one, and where the pure one is slower than Starlette."""
    compiled_slower = [op for op, row in table.items() if "speedups" in row and "pure" in row and row["speedups"] >= row["pure"]]
    pure_slower = [op for op, row in table.items() if "pure" in row and "starlette" in row and row["pure"] > row["starlette"]]
    return compiled_slower, pure_slower


def _mark(met: bool) -> str:
    return "met" if met else "**missed**"


def render_markdown(runs: dict[str, dict[str, Any]]) -> str:
    if not runs:
        return ""
    lines = [
        "In process, per CPython (ns per operation, the fastest of each implementation's rounds, every implementation "
        "timed round by round in turn in one run per interpreter: benchmarks/interleaved.py). Targets: the compiled "
        "core as a multiple of raw ASGI (lower is better) or of Starlette's class.",
        "",
        "| CPython | compiled shape | " + " | ".join(target[0] for target in TARGETS)
        + " | compiled faster than pure | pure never slower than Starlette |",
        "|" + "---|" * (4 + len(TARGETS)),
    ]
    for version, run in runs.items():
        table = run["operations"]
        cells = [version, run.get("shape", "?")]
        for _label, operation, name, against, bound in TARGETS:
            value = ratio(table, operation, name, against)
            if value is None:
                cells.append("n/a")
            elif against == "starlette":
                cells.append(f"{1 / value:.2f}x faster, {_mark(value <= bound)}")
            else:
                cells.append(f"{value:.2f}x, {_mark(value <= bound)}")
        compiled_slower, pure_slower = ordering_checks(table)
        cells.append("every operation" if not compiled_slower else "**not on** " + ", ".join(compiled_slower))
        cells.append("every operation" if not pure_slower else "**slower on** " + ", ".join(pure_slower))
        lines.append("| " + " | ".join(cells) + " |")
    for version, run in runs.items():
        table = run["operations"]
        names = [name for name in ORDER if any(name in row for row in table.values())]
        lines += [
            "",
            f"CPython {version} (compiled core: {run.get('shape', '?')}): ns per operation (fastest round), "
            "and x raw (lower is better) / x faster than Starlette",
            "",
            "| operation | " + " | ".join(LABEL[name] for name in names)
            + " | " + " | ".join(f"{LABEL[name]} x raw / vs Starlette" for name in names if name not in ("raw", "starlette")) + " |",
            "|" + "---|" * (1 + 2 * len(names) - 2),
        ]
        for operation, row in table.items():
            cells = [f"{row[name]:,.0f}" if name in row else "n/a" for name in names]
            for name in names:
                if name in ("raw", "starlette"):
                    continue
                to_raw = ratio(table, operation, name, "raw")
                to_starlette = ratio(table, operation, name, "starlette")
                cells.append(f"{to_raw:.2f}x / {1 / to_starlette:.2f}x" if to_raw and to_starlette else "n/a")
            lines.append(f"| {operation} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_png(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"starlette": "#9e9e9e", "pure": "#64b5f6", "speedups": "#1565c0", "awaitables": "#ffb74d", "coroutines": "#ffb74d"}
    fig, axes = plt.subplots(len(runs), 1, figsize=(13, 3.4 * len(runs)), squeeze=False)
    fig.suptitle("turbows in process: time per operation as a multiple of raw ASGI calls (lower is better), per CPython",
                 fontsize=11)
    for ax, (version, run) in zip(axes[:, 0], runs.items()):
        table = run["operations"]
        operations = list(table)
        names = [name for name in ORDER if name != "raw" and any(name in row for row in table.values())]
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs, ys = [], []
            for i, operation in enumerate(operations):
                value = ratio(table, operation, name, "raw")
                if value is not None:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(value)
            ax.bar(xs, ys, width, label=LABEL[name], color=colours.get(name), hatch="//" if name in ("awaitables", "coroutines") else None)
        ax.axhline(1.5, color="#c62828", linewidth=0.8, linestyle="--", label="target 1.5x raw")
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(operations)))
        ax.set_xticklabels([operation.replace(" round trip", "\nround trip") for operation in operations], fontsize=8)
        ax.set_ylabel("x raw")
        ax.set_title(f"CPython {version}: compiled core = {run.get('shape', '?')}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("runs", nargs="+", type=Path, help="one TURBOWS_BENCH_JSON file per interpreter")
    args = parser.parse_args()
    runs = merge(args.runs)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inprocess.json").write_text(json.dumps(runs, indent=2))
    markdown = render_markdown(runs)
    (out / "inprocess.md").write_text(markdown)
    print(markdown)
    try:
        render_png(runs, out / "inprocess.png")
    except Exception as exc:  # the figures stand without the chart
        print(f"chart not written: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
