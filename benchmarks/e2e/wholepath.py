"""The whole path: one table per CPython, from Starlette's class on uvicorn to picows' own server.

run.py drives it (``--whole-path-python``, ``--whole-path-only``). Rows (idle.ROWS):
Starlette's class on uvicorn's default websocket protocol (websockets-sansio;
uvloop and httptools), turbows' class on the same protocol, turbows' class on
turbows' protocol (``ws=turbows.uvicorn:WebSocketProtocol``), granian
(``--interface asgi --ws --loop uvloop``) with turbows' class, and picows' own
echo server, no ASGI: the ceiling every ratio is taken against. Columns: text
echo, JSON echo 150 B, binary echo 64 KiB and 1 MiB (picows' server echoes a
frame as it came: binary, and the app's ``/bytes`` route does the same), as
msg/s at ``conns`` connections, alternating the servers run by run; and the
server memory per idle connection (idle.py). The targets are checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import idle
from run import Server, log, summarise
from serve import GRANIAN_OPTIONS

ROWS = idle.ROWS
CEILING = "picows"
WORKLOADS = {"text": "/text", "json150": "/json", "bytes64k": "/bytes", "bytes1m": "/bytes"}
WORKLOAD_LABEL = {"text": "text echo", "json150": "JSON echo 150 B", "bytes64k": "binary echo 64 KiB",
                  "bytes1m": "binary echo 1 MiB"}
#: The targets (DESIGN.md "Performance targets", issue 15): (label, workload, row, against, factor):
#: met when msg/s of row >= factor x msg/s of against.
THROUGHPUT_TARGETS = (
    ("text echo ≥0.9x picows", "text", "turbows-native", CEILING, 0.9),
    ("JSON echo 150 B ≥3.5x Starlette's class on sansio", "json150", "turbows-native", "starlette-sansio", 3.5),
    ("64 KiB ≥ picows", "bytes64k", "turbows-native", CEILING, 1.0),
    ("1 MiB ≥ picows", "bytes1m", "turbows-native", CEILING, 1.0),
)
IDLE_TARGET_KIB = 5.0
IDLE_TARGET_ROW = "turbows-native"

VERSIONS_PROBE = """
import json, platform, importlib.metadata as md
out = {"python": platform.python_version()}
for name in ("turbows", "starlette", "uvicorn", "websockets", "httptools", "uvloop", "granian", "picows"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
try:
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
    out["uvicorn_default_ws"] = AutoWebSocketsProtocol.__name__
except Exception as exc:
    out["uvicorn_default_ws"] = repr(exc)
print(json.dumps(out))
"""


def versions_of(python: str) -> dict:
    """The interpreter's version and the servers' packages it would run (granian's is recorded with the figures)."""
    done = subprocess.run([python, "-c", VERSIONS_PROBE], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_whole_path(client, python: str, *, rows: list[str], workloads: list[str], conns: int, reps: int,
                   duration: float, warmup: float, idle_rows: list[str], idle_conns: int) -> dict:
    """Every cell on every row's server, alternating (A B C D E, A B C D E, ...), then the idle test."""
    versions = versions_of(python)
    log(f"whole path on CPython {versions['python']} ({python}): granian {versions['granian']}, "
        f"uvicorn {versions['uvicorn']} (default ws: {versions['uvicorn_default_ws']}), picows {versions['picows']}; "
        f"{conns} connections, {reps} alternating reps of {duration}s (+{warmup}s warm-up)")
    began = time.monotonic()
    out: dict = {"python_path": python, "versions": versions, "cells": {}, "settings": {
        "rows": rows, "workloads": workloads, "conns": conns, "reps": reps, "duration_s": duration,
        "warmup_s": warmup, "idle_conns": idle_conns}}
    started: dict[str, Server] = {}
    try:
        for row in rows:
            _, kind, impl = ROWS[row]
            try:
                started[row] = Server(kind, impl, python=python)
            except RuntimeError as exc:  # e.g. no granian in that environment: the other rows still run
                out.setdefault("errors", {})[row] = str(exc)
                log(f"whole path: {row} not measured: {exc}")
        for workload in workloads:
            runs: dict[str, list] = {row: [] for row in started}
            for _ in range(reps):
                for row, server in started.items():
                    route = "/" if ROWS[row][1] == "picows" else WORKLOADS[workload]
                    runs[row].append(client(op="echo", url=server.url(route), conns=conns, payload=workload,
                                            duration=duration, warmup=warmup, server_pid=server.pid))
            cells = out["cells"][workload] = {row: summarise(r) for row, r in runs.items()}
            log(progress(workload, cells))
    finally:
        for server in started.values():
            server.stop()
    out["throughput_s"] = time.monotonic() - began
    if idle_rows and idle_conns:
        began = time.monotonic()
        out["idle"] = idle.run_idle(idle_rows, idle_conns, python)
        out["idle_s"] = time.monotonic() - began
    log(f"whole path on CPython {versions['python']}: throughput {out['throughput_s']:.0f} s"
        + (f", idle {out['idle_s']:.0f} s" if "idle_s" in out else ""))
    return out


def ratio(cells: dict, row: str, against: str) -> float | None:
    a, b = cells.get(row, {}).get("msg_per_s"), cells.get(against, {}).get("msg_per_s")
    return a / b if a and b else None


def progress(workload: str, cells: dict) -> str:
    parts = []
    for row, cell in cells.items():
        r = ratio(cells, row, CEILING)
        parts.append(f"{row} {cell.get('msg_per_s', float('nan')):,.0f}"
                     + (f" ({r:.2f}x)" if r and row != CEILING else "")
                     + (f" ERR {cell['errors'][0]}" if cell.get("errors") else ""))
    return f"whole path {WORKLOAD_LABEL[workload]:20s}: " + ", ".join(parts)


def idle_kib(run: dict, row: str) -> float | None:
    figure = run.get("idle", {}).get("rows", {}).get(row, {}).get("rss_per_conn")
    return figure / 1024 if figure is not None else None


def targets(run: dict) -> list[tuple[str, float | None, bool | None, str]]:
    """(label, measured, met, how it is measured) for every target this run has the figures of."""
    checks = []
    for label, workload, row, against, factor in THROUGHPUT_TARGETS:
        r = ratio(run["cells"].get(workload, {}), row, against)
        checks.append((label, r, None if r is None else r >= factor, f"{r:.2f}x" if r is not None else "n/a"))
    kib = idle_kib(run, IDLE_TARGET_ROW)
    checks.append((f"idle memory ≤{IDLE_TARGET_KIB:g} KiB per connection", kib,
                   None if kib is None else kib <= IDLE_TARGET_KIB, f"{kib:.1f} KiB" if kib is not None else "n/a"))
    return checks


def mark(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def render_markdown(wholepath: dict) -> str:
    lines = []
    for version in sorted(wholepath, key=version_key):
        run = wholepath[version]
        s, v = run["settings"], run["versions"]
        idle_run = run.get("idle", {})
        lines += [
            f"### The whole path, CPython {version}",
            "",
            f"msg/s at {s['conns']} connections (a picows load client on CPython {wholepath_client_version()}), "
            f"median of {s['reps']} runs of {s['duration_s']} s, the servers alternating run by run; "
            "(x) = times picows' own echo server, the ceiling. Idle memory: server RSS per accepted "
            f"connection waiting in `receive`, at {idle_connections(idle_run)} connections. "
            f"turbows {v.get('turbows')}, Starlette {v.get('starlette')}, uvicorn {v.get('uvicorn')} "
            f"(default ws: {v.get('uvicorn_default_ws')}; uvloop {v.get('uvloop')}, httptools {v.get('httptools')}), "
            f"websockets {v.get('websockets')}, granian {v.get('granian')} (`granian {' '.join(GRANIAN_OPTIONS)}`), "
            f"picows {v.get('picows')}.",
            "",
            "| server | " + " | ".join(WORKLOAD_LABEL[w] for w in s["workloads"]) + " | idle memory KiB/conn |",
            "|---|" + "---:|" * (len(s["workloads"]) + 1),
        ]
        for row in s["rows"]:
            if row in run.get("errors", {}):
                lines.append(f"| {ROWS[row][0]} | not measured: {run['errors'][row]} |" + " |" * len(s["workloads"]))
                continue
            cols = []
            for workload in s["workloads"]:
                cells = run["cells"].get(workload, {})
                cell = cells.get(row)
                if not cell or "msg_per_s" not in cell:
                    cols.append("n/a" + (f" ({cell['errors'][0]})" if cell and cell.get("errors") else ""))
                    continue
                r = ratio(cells, row, CEILING)
                cols.append(f"{cell['msg_per_s']:,.0f}" + (f" ({r:.2f}x)" if r is not None else ""))
            kib = idle_kib(run, row)
            cols.append(f"{kib:.1f}" if kib is not None else "-")
            lines.append(f"| {ROWS[row][0]} | " + " | ".join(cols) + " |")
        lines += ["", "Server CPU µs per message (the server's process tree, utime + stime over the window; "
                  "on a machine whose cores the client and server share, the fairer comparison at 64 KiB and 1 MiB):",
                  "", "| server | " + " | ".join(WORKLOAD_LABEL[w] for w in s["workloads"]) + " |",
                  "|---|" + "---:|" * len(s["workloads"])]
        for row in s["rows"]:
            cpu = [run["cells"].get(w, {}).get(row, {}).get("server_cpu_us_per_msg") for w in s["workloads"]]
            lines.append(f"| {ROWS[row][0]} | " + " | ".join(f"{c:,.1f}" if c else "n/a" for c in cpu) + " |")
        lines += ["", "Targets (turbows' class on turbows' protocol):", ""]
        for label, _, met, shown in targets(run):
            lines.append(f"- {label}: {shown}, {mark(met)}")
        big = [(w, run["cells"].get(w, {}).get(CEILING)) for w in ("bytes64k", "bytes1m")]
        notes = [f"{WORKLOAD_LABEL[w]} {c['msg_per_s']:,.0f} msg/s, the client {c.get('client_cpu_us_per_msg', 0):,.0f} "
                 f"µs/msg ({c.get('client_cpu_share', 0):.0%} of a core), the server "
                 f"{c.get('server_cpu_us_per_msg') or 0:,.0f} µs/msg ({c.get('server_cpu_share') or 0:.0%})"
                 for w, c in big if c and "msg_per_s" in c]
        if notes:
            lines += ["", "Against picows' own server: " + "; ".join(notes) + ". At these sizes most of either "
                      "side's time is the kernel's copies through loopback, so the client costs about what "
                      "picows' server does: where both are near a core, that row measures the pair."]
        took = f"Took {run.get('throughput_s', 0):.0f} s" + (f" + {run['idle_s']:.0f} s idle test" if "idle_s" in run else "")
        lines += ["", took + ".", ""]
    idle_runs = {version: wholepath[version]["idle"] for version in sorted(wholepath, key=version_key)
                 if wholepath[version].get("idle")}
    if idle_runs:
        lines += ["### Idle connections", "", idle.render_markdown(idle_runs)]
    return "\n".join(lines)


def idle_connections(idle_run: dict) -> str:
    conns = {r.get("conns") for r in idle_run.get("rows", {}).values() if r.get("conns")}
    return ", ".join(f"{c:,}" for c in sorted(conns)) if conns else "n/a"


def wholepath_client_version() -> str:
    import platform

    return platform.python_version()


COLOURS = {"starlette-sansio": "#9e9e9e", "turbows-sansio": "#64b5f6", "turbows-native": "#1565c0",
           "granian": "#ef6c00", "picows": "#2e7d32"}


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def render_png(wholepath: dict, path: Path, machine: dict) -> None:
    """Per CPython (oldest first): throughput as times picows, whiskers min-max, msg/s on the bars;
    turbows' targets dashed; and server memory per idle connection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = sorted(wholepath, key=version_key)
    fig, axes = plt.subplots(len(versions), 2, figsize=(14, 3.8 * len(versions) + 1), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    fig.suptitle("The whole path: full ASGI against picows' own echo server (no ASGI), per CPython\n"
                 f"{machine['cpu']}, {machine['cores']} cores, {machine['date'][:10]}", fontsize=11)
    handles: dict = {}
    for (ax, mem), version in zip(axes, versions):
        run = wholepath[version]
        rows, workloads = run["settings"]["rows"], run["settings"]["workloads"]
        width = 0.8 / len(rows)
        for j, row in enumerate(rows):
            xs, ys, lo, hi = [], [], [], []
            for i, workload in enumerate(workloads):
                cells = run["cells"].get(workload, {})
                r = ratio(cells, row, CEILING)
                if r is None:
                    continue
                cell, ceiling = cells[row], cells[CEILING]["msg_per_s"]
                x = i + (j - (len(rows) - 1) / 2) * width
                xs.append(x)
                ys.append(r)
                lo.append(r - cell["msg_per_s_min"] / ceiling)
                hi.append(cell["msg_per_s_max"] / ceiling - r)
                ax.annotate(f"{cell['msg_per_s'] / 1000:,.1f}k", (x, cell["msg_per_s_max"] / ceiling),
                            ha="center", va="bottom", fontsize=6, rotation=90)
            handles[row] = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=1.5, error_kw={"linewidth": 0.6},
                                  label=ROWS[row][0], color=COLOURS.get(row))
        for label, workload, row, against, factor in THROUGHPUT_TARGETS:
            if workload not in workloads:
                continue
            base = ratio(run["cells"].get(workload, {}), against, CEILING)
            if base is not None:  # a target against another row: drawn where it lands, in times picows
                i = workloads.index(workload)
                ax.hlines(factor * base, i - 0.45, i + 0.45, colors="#c62828", linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels([WORKLOAD_LABEL[w] for w in workloads], fontsize=8)
        ax.set_ylabel("x picows' own server")
        ax.set_title(f"CPython {version}: msg/s at {run['settings']['conns']} connections as times picows' own "
                     "server (labels: msg/s; dashed: turbows' protocol's target)", fontsize=9)
        ax.margins(y=0.25)
        ax.grid(axis="y", alpha=0.3)
        kib = [(row, idle_kib(run, row)) for row in rows]
        kib = [(row, k) for row, k in kib if k is not None]
        if kib:
            mem.barh(range(len(kib)), [k for _, k in kib], color=[COLOURS.get(row) for row, _ in kib])
            mem.set_yticks(range(len(kib)))
            mem.set_yticklabels([ROWS[row][0].replace(", ", ",\n", 1) for row, _ in kib], fontsize=6)
            for y, (_, k) in enumerate(kib):
                mem.annotate(f" {k:.1f}", (k, y), va="center", fontsize=7)
            mem.axvline(IDLE_TARGET_KIB, color="#c62828", linestyle="dashed", linewidth=1)
            mem.set_xscale("log")
            mem.set_xlim(1, max(k for _, k in kib) * 4)
            mem.invert_yaxis()
        mem.set_title(f"server KiB per idle connection, at {idle_connections(run.get('idle', {}))} "
                      f"(log; dashed: {IDLE_TARGET_KIB:g} KiB)", fontsize=8)
    fig.legend([handles[row] for row in handles], [ROWS[row][0] for row in handles], loc="lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # the figures only come from run.py: say so
    sys.exit("run it through run.py: python benchmarks/e2e/run.py --whole-path-only [--whole-path-python PY ...]")
