"""Profile the uvicorn server (uvloop, httptools, default ws) under the JSON echo load, per class.

    python benchmarks/e2e/profile_server.py [--impls starlette,speedups] [--conns 8] [--duration 3] [--server uvicorn]

Runs serve.py under cProfile (BENCH_PROFILE), drives it with the load client,
and splits the server's own CPU time (cProfile tottime) into: the server and
its websocket protocol, the event loop / asyncio, the app's WebSocket class,
JSON encoding/decoding, and the rest. Compiled code has no Python frames:
turbows' compiled core (orjson included) is charged to its caller, app.py. cProfile inflates pure-Python code more
than compiled code, so read the split as shares, not absolute costs.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Client, Server  # noqa: E402

BUCKETS = (
    ("JSON", ("/json/", "orjson", "json.", "_json")),
    ("app WebSocket", ("starlette/websockets.py", "turbows", "/e2e/app.py", "_calls_c", "_state_c", "_json_c", "_core_py")),
    ("server + ws protocol", ("uvicorn", "websockets", "httptools", "wsproto", "h11", "hypercorn")),
    ("event loop / asyncio", ("asyncio", "uvloop", "selectors", "socket", "transport", "contextvars")),
)


def bucket(func: tuple) -> str:
    filename, _, name = func
    if filename.endswith("runners.py") and name == "run":
        return "idle (loop wait)"  # uvloop's run loop, epoll wait included: not charged to any share
    text = (filename + " " + name).lower()
    for label, needles in BUCKETS:
        if any(needle.lower() in text for needle in needles):
            return label
    return "other"


def split(path: str) -> tuple[dict[str, float], list[tuple[float, str]]]:
    stats = pstats.Stats(path)
    totals: dict[str, float] = defaultdict(float)
    top = []
    for func, (cc, nc, tt, ct, callers) in stats.stats.items():
        totals[bucket(func)] += tt
        top.append((tt, f"{Path(func[0]).name}:{func[1]}({func[2]})"))
    top.sort(reverse=True)
    return dict(totals), top[:12]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--impls", default="starlette,speedups")
    p.add_argument("--server", default="uvicorn")
    p.add_argument("--workload", default="json150")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args()
    path_of = {"text": "/text", "json150": "/json", "json4k": "/json", "jsonbin": "/jsonbin"}
    client = Client()
    tmp = Path(tempfile.mkdtemp(prefix="turbows-profile-"))
    try:
        for impl in args.impls.split(","):
            out = tmp / f"{impl}.prof"
            server = Server(args.server, impl, profile=str(out))
            try:
                result = client(op="echo", url=server.url(path_of[args.workload]), conns=args.conns,
                                payload=args.workload, duration=args.duration, warmup=0.3, server_pid=server.pid)
            finally:
                server.stop()
            totals, top = split(str(out))
            whole = sum(t for label, t in totals.items() if not label.startswith("idle"))
            msgs = max(result["msgs"], 1)
            print(f"\n{args.server} / {args.workload} / {args.conns} conns / {impl}: "
                  f"{result['msg_per_s']:,.0f} msg/s under cProfile, server CPU {result['server_cpu_us_per_msg']:.1f} us/msg")
            for label in ("server + ws protocol", "event loop / asyncio", "app WebSocket", "JSON", "other"):
                t = totals.get(label, 0.0)
                print(f"  {label:22s} {t / whole:6.1%}  {t / msgs * 1e6:7.1f} us/msg (profiled)")
            print("  top functions by own time:")
            for tt, name in top:
                print(f"    {tt / msgs * 1e6:7.2f} us/msg  {name}")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
