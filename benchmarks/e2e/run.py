"""End-to-end benchmark: real ASGI servers in subprocesses, a picows load client in another.

    python benchmarks/e2e/run.py [--quick] [--servers uvicorn,hypercorn] [--reps 5] ...

Per server kind, one server process per WebSocket class (starlette, speedups,
pure) is started on a free 127.0.0.1 port; every cell (workload x
concurrency) runs the classes alternately, A B C A B C ..., and reports the
median and min-max of the repetitions. The client is first run against
picows' own echo server: that ceiling shows the client is not the bottleneck.

Fan-out (``--fanout-*``), on uvicorn's default protocol and turbows' (and
picows' own broadcast server, no ASGI, as the ceiling to beat): the FastAPI
docs' connection manager on Starlette's class and on turbows', and
``turbows.Hub``, at 100 and 1,000 members with one publisher keeping
``--fanout-window`` messages in flight, the hub again with one member that
stops reading, and granian's method (every member sends) at 16 and 64.
Writes results/benchmark.json, results/benchmark.md and results/benchmark.png.

First, the whole path (wholepath.py; ``--no-whole-path`` skips it,
``--whole-path-only`` runs it alone): Starlette's and turbows' class on
uvicorn's default protocol, turbows' class on turbows' protocol, granian and
picows' own echo server, text, JSON 150 B, 64 KiB and 1 MiB, then the idle
test (idle.py), with the servers on each ``--whole-path-python`` interpreter
in turn and this load client; it leads benchmark.md, and also writes
results/wholepath.{json,md,png} and results/idle.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import inprocess_report  # noqa: E402  (benchmarks/, one level up)
IMPLS = ("starlette", "speedups", "pure")
SERVERS = ("uvicorn", "uvicorn-wsproto", "uvicorn-turbows", "hypercorn")
SERVER_LABEL = {
    "uvicorn": "uvicorn (uvloop, httptools, default ws)",
    "uvicorn-wsproto": "uvicorn (ws=wsproto)",
    "uvicorn-turbows": "uvicorn (ws=turbows.uvicorn, native)",
    "hypercorn": "hypercorn (uvloop)",
    "picows": "picows echo server",
    "picows-broadcast": "picows broadcast server (no ASGI)",
}
#: The fan-out variants: (label, WebSocket class, route).
FANOUT_VARIANTS = (
    ("docs manager, Starlette", "starlette", "/fanout"),
    ("docs manager, turbows", "speedups", "/fanout"),
    ("turbows.Hub", "speedups", "/fanout-hub"),
)
FANOUT_BASE = "docs manager, Starlette"
FANOUT_STALLED = "turbows.Hub, 1 stalled member"
WORKLOADS = {"text": "/text", "json150": "/json", "json4k": "/json", "jsonbin": "/jsonbin"}
WORKLOAD_LABEL = {
    "text": "text echo",
    "json150": "JSON echo 150 B",
    "json4k": "JSON echo 4 KiB",
    "jsonbin": "JSON echo binary 150 B",
    "fanout": "fan-out broadcast",
}


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_impls() -> list[str]:
    probe = "from turbows._cores import CORES; print(' '.join(CORES))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    cores = out.stdout.split()
    return [name for name in IMPLS if name == "starlette" or name in cores]


class Server:
    """One server process (serve.py KIND PORT) on ``python`` (default: this interpreter)."""

    def __init__(self, kind: str, impl: str | None, profile: str | None = None, python: str | None = None) -> None:
        self.kind, self.impl, self.port = kind, impl, free_port()
        env = dict(os.environ)
        env.pop("TURBOWS_NO_EXTENSIONS", None)
        if impl:
            env["BENCH_WS"] = impl
        if impl == "pure":
            env["TURBOWS_NO_EXTENSIONS"] = "1"
        if profile:
            env["BENCH_PROFILE"] = profile
        self.proc = subprocess.Popen([python or sys.executable, str(HERE / "serve.py"), kind, str(self.port)], env=env)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} ({impl}) exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} ({impl}) did not listen on {self.port}")
                time.sleep(0.05)
        if kind == "granian":  # its supervisor listens; the worker it spawns answers a little later
            self.wait_answered(deadline)

    def wait_answered(self, deadline: float) -> None:
        """Until an HTTP request to app.py's /idle-count is answered."""
        request = f"GET /idle-count HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                    s.sendall(request.encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} ({self.impl}) did not answer on {self.port}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | list[int]:
        """The PID the server's figures are read from: for granian, its supervisor and its worker."""
        pids = self.pids()
        return pids if len(pids) > 1 else pids[0]

    def pids(self) -> list[int]:
        """The server process and its descendants (granian serves from a child process)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo += [int(child) for child in f.read().split()]
            except OSError:
                continue
        return found

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the whole tree (a killed granian supervisor would leave its worker behind)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "client.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __call__(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load client died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def summarise(runs: list[dict]) -> dict:
    """Median and min-max of each figure over the repetitions."""
    out: dict = {"runs": runs}
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        out["errors"] = errors
    good = [r for r in runs if not r.get("error")]
    for key in (good[0] if good else {}):
        values = [r[key] for r in good if isinstance(r.get(key), (int, float))]
        if values and key != "error":
            out[key] = statistics.median(values)
            out[key + "_min"], out[key + "_max"] = min(values), max(values)
    return out


def fmt_rate(cell: dict | None) -> str:
    if not cell or "msg_per_s" not in cell:
        return "n/a"
    return f"{cell['msg_per_s']:,.0f} ({cell['msg_per_s_min']:,.0f}-{cell['msg_per_s_max']:,.0f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="uvicorn only, 2 workloads, 2 concurrency levels, short runs")
    p.add_argument("--servers", help=f"comma list of {','.join(SERVERS)}")
    p.add_argument("--workloads", help=f"comma list of {','.join(WORKLOADS)}")
    p.add_argument("--concurrency", help="comma list of connection counts (default 1,8,64)")
    p.add_argument("--reps", type=int, help="alternating repetitions per cell (default 3)")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 0.6)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each run (default 0.25)")
    p.add_argument("--fanout-conns", help="comma list of member counts (default 100,1000; --quick: 100)")
    p.add_argument("--fanout-window", type=int, default=32,
                   help="broadcasts the publisher keeps in flight (default 32: as fast as the server takes them)")
    p.add_argument("--fanout-servers",
                   help="comma list of servers for the fan-out (default uvicorn,uvicorn-turbows,picows-broadcast)")
    p.add_argument("--fanout-all-conns",
                   help="granian's method, every member sends: comma list of member counts (default 16,64; "
                        "--quick: 16; 0: skip)")
    p.add_argument("--no-fanout", action="store_true")
    p.add_argument("--fanout-only", action="store_true", help="skip the echo workloads and the echo ceiling")
    p.add_argument("--no-ceiling", action="store_true")
    p.add_argument("--whole-path-python", action="append", metavar="PYTHON",
                   help="the whole path's servers on this interpreter (repeatable: one table each; default this "
                        "one; --quick: the first only); the load client stays on this one")
    p.add_argument("--whole-path-only", action="store_true",
                   help="the whole path and the idle test alone: writes wholepath.{json,md,png} and idle.json")
    p.add_argument("--no-whole-path", action="store_true")
    p.add_argument("--whole-path-conns", type=int, default=8, help="connections (default 8, as the targets say)")
    p.add_argument("--whole-path-rows", help="comma list of starlette-sansio,turbows-sansio,turbows-native,granian,picows")
    p.add_argument("--whole-path-workloads", help="comma list of text,json150,bytes64k,bytes1m")
    p.add_argument("--idle-conns", type=int,
                   help="idle connections per server (default 10000, --quick 2000; 0: no idle test)")
    p.add_argument("--idle-rows", help="comma list of the whole path's rows for the idle test (default all)")
    p.add_argument("--inprocess-json", help="inprocess_report.py's inprocess.json (every interpreter's run), merged into the outputs")
    p.add_argument("--out-dir", default="results")
    args = p.parse_args(argv)

    quick = args.quick
    servers = (args.servers or ("uvicorn" if quick else ",".join(SERVERS))).split(",")
    workloads = (args.workloads or ("text,json150" if quick else ",".join(WORKLOADS))).split(",")
    if args.fanout_only:
        workloads, args.no_ceiling = [], True
    levels = [int(c) for c in (args.concurrency or ("8,64" if quick else "1,8,64")).split(",")]
    reps = args.reps or 3
    # 0.6 s: the full run (4 servers) stays under 10 minutes on 2 cores.
    duration = args.duration or (0.5 if quick else 0.6)
    warmup = args.warmup or (0.2 if quick else 0.25)
    impls = available_impls()
    if not args.whole_path_only:
        log(f"classes: {', '.join(impls)}; servers: {', '.join(servers)}; workloads: {', '.join(workloads)}; "
            f"connections: {levels}; {reps} alternating reps of {duration}s (+{warmup}s warm-up)")

    results: dict = {"machine": machine(), "settings": {
        "servers": servers, "workloads": workloads, "concurrency": levels, "reps": reps,
        "duration_s": duration, "warmup_s": warmup, "impls": impls,
        "fanout_conns": [int(c) for c in (args.fanout_conns or ("100" if quick else "100,1000")).split(",")],
        "fanout_window": args.fanout_window,
        "fanout_all_conns": [int(c) for c in (args.fanout_all_conns or ("16" if quick else "16,64")).split(",")
                             if int(c)],
    }, "ceiling": {}, "echo": {}, "fanout": {}}
    fanout_servers = (args.fanout_servers or "uvicorn,uvicorn-turbows,picows-broadcast").split(",")
    client = Client()
    try:
        if not args.no_whole_path:
            results["wholepath"] = whole_path(client, args, reps, duration, warmup)
            write_whole_path(results, Path(args.out_dir))
            if args.whole_path_only:
                return 0
        if not args.no_ceiling:
            server = Server("picows", None)
            try:
                for payload in ("text", "json150"):
                    for conns in levels:
                        runs = [client(op="echo", url=server.url("/"), conns=conns, payload=payload, duration=duration,
                                       warmup=warmup, server_pid=server.pid) for _ in range(reps)]
                        cell = summarise(runs)
                        results["ceiling"][f"{payload}/{conns}"] = cell
                        log(f"ceiling picows {payload:8s} {conns:3d} conns: {fmt_rate(cell)} msg/s, "
                            f"client CPU {cell.get('client_cpu_us_per_msg', float('nan')):.1f} us/msg "
                            f"({cell.get('client_cpu_share', 0):.0%} of a core)")
            finally:
                server.stop()
        for kind in servers:
            started = {impl: Server(kind, impl) for impl in impls}
            try:
                for workload in workloads:
                    for conns in levels:
                        runs: dict[str, list] = {impl: [] for impl in impls}
                        for _ in range(reps):
                            for impl in impls:
                                s = started[impl]
                                runs[impl].append(client(op="echo", url=s.url(WORKLOADS[workload]), conns=conns,
                                                         payload=workload, duration=duration, warmup=warmup,
                                                         server_pid=s.pid))
                        cells = {impl: summarise(r) for impl, r in runs.items()}
                        results["echo"][f"{kind}/{workload}/{conns}"] = cells
                        log(progress(kind, workload, conns, cells))
                if not args.no_fanout and kind in fanout_servers:
                    results["fanout"][kind] = run_fanout(client, started, results["settings"], reps, duration, warmup)
            finally:
                for s in started.values():
                    s.stop()
        if not args.no_fanout and "picows-broadcast" in fanout_servers:
            server = Server("picows-broadcast", None)
            try:
                results["fanout"]["picows-broadcast"] = run_fanout(
                    client, {None: server}, results["settings"], reps, duration, warmup,
                    variants=(("picows broadcast", None, "/"),))
            finally:
                server.stop()
    finally:
        client.close()

    if args.inprocess_json and Path(args.inprocess_json).exists():
        results["inprocess_ns_per_op"] = json.loads(Path(args.inprocess_json).read_text())
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2))
    markdown = render_markdown(results)
    (out / "benchmark.md").write_text(markdown)
    print()
    print(markdown)
    try:
        render_png(results, out / "benchmark.png")
        log(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}, {out / 'benchmark.png'}")
    except Exception as exc:  # the figures stand without the chart
        log(f"chart not written: {type(exc).__name__}: {exc}")
    return 0


def whole_path(client, args, reps: int, duration: float, warmup: float) -> dict:
    """The whole-path table's figures and the idle test, per server interpreter: {version: run}."""
    import wholepath

    pythons = args.whole_path_python or [sys.executable]
    if args.quick:
        pythons = pythons[:1]
    rows = (args.whole_path_rows or ",".join(wholepath.ROWS)).split(",")
    idle_conns = args.idle_conns if args.idle_conns is not None else (2000 if args.quick else 10_000)
    out = {}
    for python in pythons:
        run = wholepath.run_whole_path(
            client, python, rows=rows, workloads=(args.whole_path_workloads or ",".join(wholepath.WORKLOADS)).split(","),
            conns=args.whole_path_conns, reps=reps, duration=duration, warmup=warmup,
            idle_rows=(args.idle_rows or ",".join(rows)).split(","), idle_conns=idle_conns)
        out[run["versions"]["python"]] = run
    return out


def write_whole_path(results: dict, out: Path) -> None:
    """wholepath.{json,md,png} and idle.json: what the whole path measured, readable without benchmark.*."""
    import wholepath

    out.mkdir(parents=True, exist_ok=True)
    runs = results["wholepath"]
    (out / "wholepath.json").write_text(json.dumps({"machine": results["machine"], "wholepath": runs}, indent=2))
    (out / "idle.json").write_text(json.dumps({"machine": results["machine"], "idle": {
        version: run["idle"] for version, run in runs.items() if run.get("idle")}}, indent=2))
    (out / "wholepath.md").write_text(wholepath.render_markdown(runs))
    try:
        wholepath.render_png(runs, out / "wholepath.png", results["machine"])
    except Exception as exc:  # the figures stand without the chart
        log(f"whole-path chart not written: {type(exc).__name__}: {exc}")
    log(f"wrote {out / 'wholepath.md'}, {out / 'wholepath.json'}, {out / 'wholepath.png'}, {out / 'idle.json'}")


def run_fanout(client, started: dict, settings: dict, reps: int, duration: float, warmup: float,
               variants=FANOUT_VARIANTS) -> dict:
    """Every fan-out variant at every member count, alternating, plus the hub with one stalled member."""
    cells: dict = {}
    window = settings["fanout_window"]
    plan = [(label, impl, route, conns, 0) for conns in settings["fanout_conns"]
            for label, impl, route in variants if impl in started]
    if variants is FANOUT_VARIANTS and "speedups" in started:
        plan.append((FANOUT_STALLED, "speedups", "/fanout-hub", settings["fanout_conns"][0], 1))
    for conns in dict.fromkeys(p[3] for p in plan):
        runs: dict = {}
        for _ in range(reps):
            for label, impl, route, n, stalled in plan:
                if n != conns:
                    continue
                s = started[impl]
                runs.setdefault(label, []).append(client(op="fanout", url=s.url(route), conns=conns, window=window,
                                                         stalled=stalled, duration=duration, warmup=warmup,
                                                         server_pid=s.pid))
        for label, r in runs.items():
            cell = cells[f"{label}/{conns}"] = summarise(r)
            log_fanout(label, conns, cell)
    # granian's method: every member sends while all receive (no stalled member; latency: a sender's round trip).
    for conns in settings.get("fanout_all_conns", []):
        runs = {}
        for _ in range(reps):
            for label, impl, route in variants:
                if impl in started:
                    s = started[impl]
                    runs.setdefault(f"{label}, all send", []).append(client(
                        op="fanout-all", url=s.url(route), conns=conns, duration=duration, warmup=warmup,
                        server_pid=s.pid))
        for label, r in runs.items():
            cells[f"{label}/{conns}"] = summarise(r)
            log_fanout(label, conns, cells[f"{label}/{conns}"])
    return cells


def log_fanout(label: str, conns: int, cell: dict) -> None:
    log(f"fanout {label:40s} {conns:4d} members: {cell.get('msg_per_s', float('nan')):,.0f} deliveries/s, "
        f"p50/p99 {cell.get('p50_us', float('nan')):.0f}/{cell.get('p99_us', float('nan')):.0f} us, "
        f"server CPU {cell.get('server_cpu_us_per_msg') or float('nan'):.2f} us/delivery"
        + (f" ERR {cell['errors'][0]}" if cell.get("errors") else ""))


def progress(kind: str, workload: str, conns: int, cells: dict, key: str = "msg_per_s") -> str:
    parts = []
    for impl, cell in cells.items():
        parts.append(f"{impl} {cell.get(key, float('nan')):,.0f}" + (" ERR" if cell.get("errors") else ""))
    base = cells.get("starlette", {}).get(key)
    ratios = [f"{impl} {cells[impl][key] / base:.2f}x" for impl in cells if impl != "starlette" and base and key in cells[impl]]
    unit = "broadcasts/s" if key == "broadcast_per_s" else "msg/s"
    return f"{kind:16s} {workload:8s} {conns:3d} conns: {', '.join(parts)} {unit}; vs starlette: {', '.join(ratios)}"


def machine() -> dict:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "platform": platform.platform(),
    }


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    impls = s["impls"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}",
        "",
    ]
    if results.get("wholepath"):
        import wholepath

        lines += [wholepath.render_markdown(results["wholepath"]).rstrip("\n"), "", "### Every server and class", ""]
    lines += [
        f"End to end: messages/s, median of {s['reps']} alternating runs of {s['duration_s']} s (min-max); "
        "x = times Starlette's class; round trip p50/p99 in µs; server CPU µs per message.",
        "",
        "| server | workload | conns | " + " | ".join(f"{i} msg/s" for i in impls)
        + " | " + " | ".join(f"{i} x" for i in impls if i != "starlette")
        + " | p50/p99 µs " + " / ".join(impls) + " | server CPU µs/msg " + " / ".join(impls) + " |",
        "|" + "---|" * (3 + len(impls) + len(impls) - 1 + 2),
    ]
    for key, cells in results["echo"].items():
        kind, workload, conns = key.split("/")
        base = cells.get("starlette", {}).get("msg_per_s")
        row = [kind, WORKLOAD_LABEL[workload], conns]
        row += [fmt_rate(cells.get(i)) for i in impls]
        row += [f"**{cells[i]['msg_per_s'] / base:.2f}x**" if base and "msg_per_s" in cells.get(i, {}) else "n/a"
                for i in impls if i != "starlette"]
        row.append(" / ".join(f"{cells[i].get('p50_us', float('nan')):.0f}/{cells[i].get('p99_us', float('nan')):.0f}" for i in impls))
        row.append(" / ".join(f"{cells[i].get('server_cpu_us_per_msg', float('nan')):.1f}" for i in impls))
        lines.append("| " + " | ".join(row) + " |")
    if results["fanout"]:
        lines += ["", render_fanout(results)]
    if results["ceiling"]:
        lines += [
            "",
            "Load-client ceiling (the same client against picows' own echo server; it must sit well above every figure above):",
            "",
            "| payload | conns | msg/s | p50/p99 µs | client CPU µs/msg | client CPU share of a core |",
            "|---|---|---|---|---|---|",
        ]
        for key, cell in results["ceiling"].items():
            payload, conns = key.split("/")
            lines.append(f"| {WORKLOAD_LABEL[payload]} | {conns} | {fmt_rate(cell)} | "
                         f"{cell.get('p50_us', float('nan')):.0f}/{cell.get('p99_us', float('nan')):.0f} | "
                         f"{cell.get('client_cpu_us_per_msg', float('nan')):.1f} | {cell.get('client_cpu_share', 0):.0%} |")
        client_cpu = [c.get("client_cpu_us_per_msg") for cells in results["echo"].values() for c in cells.values()
                      if c.get("client_cpu_us_per_msg")]
        if client_cpu:
            lines.append("")
            lines.append(f"Client CPU per message during the ASGI runs: median {statistics.median(client_cpu):.1f} µs "
                         f"(range {min(client_cpu):.1f}-{max(client_cpu):.1f}).")
    inproc = results.get("inprocess_ns_per_op")
    if inproc:
        lines += ["", inprocess_report.render_markdown(inproc).rstrip("\n")]
    return "\n".join(lines) + "\n"


def render_fanout(results: dict) -> str:
    """The fan-out table: every variant and member count, per server; the ratio to the docs' manager on
    Starlette's class on the same server; the stalled member's effect on the hub's rate."""
    s = results["settings"]
    lines = [
        f"Fan-out: N members of one room; one of them sends JSON messages of 150 B with {s['fanout_window']} in "
        "flight, and the app sends each to every member (the FastAPI docs' connection manager: a sequential "
        "`await send_json` per member; or `turbows.Hub.publish_json`). Deliveries/s: messages received by all "
        "members; latency: from the send to each receipt; server CPU: the server process's utime+stime over "
        "the window, per delivery. \"all send\": granian's broadcast method, every member sends while all "
        "receive, each sending again once its own message is back (latency: that round trip).",
        "",
        "| server | variant | members | deliveries/s | x docs manager (Starlette) | delivery p50/p99 µs | "
        "server CPU µs/delivery | server CPU share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, cells in results["fanout"].items():
        for key, cell in cells.items():
            label, conns = key.rsplit("/", 1)
            method = ", all send" if label.endswith(", all send") else ""
            base = cells.get(f"{FANOUT_BASE}{method}/{conns}", {}).get("msg_per_s")
            rate = (f"{cell['msg_per_s']:,.0f} ({cell['msg_per_s_min']:,.0f}-{cell['msg_per_s_max']:,.0f})"
                    if "msg_per_s" in cell else "n/a" + (f" ({cell['errors'][0]})" if cell.get("errors") else ""))
            ratio = f"**{cell['msg_per_s'] / base:.2f}x**" if base and "msg_per_s" in cell else "-"
            cpu = cell.get("server_cpu_us_per_msg")
            share = cell.get("server_cpu_share")
            lines.append(f"| {SERVER_LABEL.get(kind, kind)} | {label} | {conns} | {rate} | {ratio} | "
                         f"{cell.get('p50_us', float('nan')):.0f}/{cell.get('p99_us', float('nan')):.0f} | "
                         f"{cpu if cpu is not None else float('nan'):.2f} | {share or 0:.0%} |")
        hub = cells.get(f"turbows.Hub/{s['fanout_conns'][0]}", {}).get("msg_per_s")
        stalled = cells.get(f"{FANOUT_STALLED}/{s['fanout_conns'][0]}", {}).get("msg_per_s")
        if hub and stalled:
            lines.append(f"| {SERVER_LABEL.get(kind, kind)} | stalled member's effect on the others' rate | "
                         f"{s['fanout_conns'][0]} | {stalled / hub - 1:+.1%} | | | | |")
    return "\n".join(lines)


def render_png(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = results["settings"]["impls"]
    colours = {"starlette": "#9e9e9e", "pure": "#64b5f6", "speedups": "#1565c0"}
    kinds = list(dict.fromkeys(k.split("/")[0] for k in results["echo"]))
    panels = kinds + (["fanout"] if results["fanout"] else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(10, 1.1 * len(results["echo"]) / max(len(kinds), 1) + 4),
                                                       3.6 * len(panels)), squeeze=False)
    m = results["machine"]
    fig.suptitle(f"turbows vs Starlette's WebSocket, end to end: msg/s (median, whiskers min-max)\n"
                 f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date'][:10]}", fontsize=11)
    width = 0.8 / len(impls)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "fanout":
            render_fanout_panel(ax, results)
            continue
        else:
            groups = [(f"{WORKLOAD_LABEL[k.split('/')[1]]}\n{k.split('/')[2]} conn", cells)
                      for k, cells in results["echo"].items() if k.split("/")[0] == panel]
            key, ylabel, title = "msg_per_s", "messages/s", SERVER_LABEL.get(panel, panel)
        for j, impl in enumerate(impls):
            xs, ys, lo, hi = [], [], [], []
            for i, (_, cells) in enumerate(groups):
                c = cells.get(impl, {})
                if key in c:
                    xs.append(i + (j - (len(impls) - 1) / 2) * width)
                    ys.append(c[key])
                    lo.append(c[key] - c[key + "_min"])
                    hi.append(c[key + "_max"] - c[key])
            label = "Starlette" if impl == "starlette" else f"turbows {impl}"
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label, color=colours.get(impl))
        for i, (_, cells) in enumerate(groups):
            base = cells.get("starlette", {}).get(key)
            best = cells.get("speedups", {}).get(key)
            if base and best:
                top = max(c.get(key + "_max", 0) for c in cells.values())
                ax.annotate(f"{best / base:.2f}x", (i, top), ha="center", va="bottom", fontsize=8, fontweight="bold")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g[0] for g in groups], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_fanout_panel(ax, results: dict) -> None:
    """Deliveries/s per (server, members, method), one bar per variant, labelled with server CPU µs/delivery."""
    groups: list = []
    labels: list = []
    for kind, cells in results["fanout"].items():
        keys = [key.rsplit("/", 1) for key in cells]
        for method in ("", ", all send"):
            for conns in sorted({int(n) for label, n in keys if label.endswith(", all send") == bool(method)}):
                row = {label.removesuffix(method): cells[f"{label}/{conns}"] for label, n in keys
                       if int(n) == conns and label.endswith(", all send") == bool(method)}
                if row:
                    name = f"{kind}\n{conns} members" + ("\nall send" if method else "")
                    groups.append((name, row))
                    labels += [label for label in row if label not in labels]
    colours = dict(zip(labels, ["#9e9e9e", "#64b5f6", "#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a"]))
    width = 0.8 / max(max((len(row) for _, row in groups), default=1), 1)
    shown: set = set()
    for i, (_, row) in enumerate(groups):
        for j, (label, c) in enumerate(row.items()):
            if "msg_per_s" not in c:
                continue
            x = i + (j - (len(row) - 1) / 2) * width
            ax.bar([x], [c["msg_per_s"]], width,
                   yerr=[[c["msg_per_s"] - c["msg_per_s_min"]], [c["msg_per_s_max"] - c["msg_per_s"]]], capsize=2,
                   color=colours[label], label=None if label in shown else label)
            shown.add(label)
            if c.get("server_cpu_us_per_msg"):
                ax.annotate(f"{c['server_cpu_us_per_msg']:.1f}", (x, c["msg_per_s_max"]), ha="center", va="bottom",
                            fontsize=6)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=6)
    ax.set_ylabel("deliveries/s")
    ax.set_title("fan-out: deliveries/s (labels: server CPU µs per delivery)", fontsize=10)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


if __name__ == "__main__":
    sys.exit(main())
