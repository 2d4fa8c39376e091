"""Soak run: turbows (compiled core) under uvicorn, in a subprocess, for a while.

    python benchmarks/soak.py [--messages 100000] [--cycles 10000] [--connections 8] [--core speedups]

Sends ``--messages`` messages (half text echo, half a 150-byte JSON object
echoed through ``receive_json``/``send_json``) over ``--connections``
connections, then runs ``--cycles`` connect / one echo / disconnect cycles,
against uvicorn (uvloop, httptools, its default websocket protocol) serving
a raw ASGI app on ``turbows.WebSocket``. Reads the server's RSS from
``/proc/PID/status`` at start, after a warm-up, and at the end; checks that
every handler finished; prints a small report. Not part of the test run;
well under a minute on 2 cores. ``--core pure`` runs the pure core,
``--core starlette`` Starlette's own class (the reference for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import Any

WINDOW = 64  # messages in flight per connection
CYCLE_CONCURRENCY = 16
DEADLINE = 170.0  # seconds: the whole run gives up after this

PAYLOAD = {
    "id": 123456,
    "user": "someone@example.com",
    "event": "message",
    "room": "general",
    "text": "hello from the soak run",
    "tags": ["a", "b", "c"],
    "ok": True,
}


# -- the server side (python soak.py --serve) ---------------------------------------


def serve() -> None:
    import uvicorn

    import turbows
    from turbows import WebSocketDisconnect

    if os.environ.get("SOAK_STARLETTE"):  # the reference: Starlette's own class, same app
        from starlette.websockets import WebSocket as websocket_class

        implementation = "starlette"
    else:
        websocket_class = turbows.WebSocket
        implementation = turbows.IMPLEMENTATION
    stats: dict[str, Any] = {"open": 0, "handled": 0, "errors": 0, "paths": {}}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        assert scope["type"] == "websocket"
        ws = websocket_class(scope, receive, send)
        path = scope["path"]
        stats["open"] += 1
        try:
            await ws.accept()
            if path == "/text":
                async for text in ws.iter_text():
                    await ws.send_text(text)
            elif path == "/json":
                async for value in ws.iter_json():
                    await ws.send_json(value)
            elif path == "/stats":
                await ws.send_json({**stats, "implementation": implementation})
                async for _ in ws.iter_text():
                    pass
        except WebSocketDisconnect:
            pass
        except Exception:
            stats["errors"] += 1
            raise
        finally:
            stats["open"] -= 1
            stats["handled"] += 1
            stats["paths"][path] = stats["paths"].get(path, 0) + 1

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", ws="auto", lifespan="off", log_level="warning", backlog=2048
    )
    uvicorn.Server(config).run(sockets=[sock])


# -- the client side ------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(core: str) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ)
    env.pop("TURBOWS_NO_EXTENSIONS", None)
    env.pop("SOAK_STARLETTE", None)
    if core == "pure":
        env["TURBOWS_NO_EXTENSIONS"] = "1"
    elif core == "starlette":
        env["SOAK_STARLETTE"] = "1"
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(20):
            process.kill()
            raise RuntimeError("the server did not start within 20s")
    line = process.stdout.readline().decode()
    if not line.startswith("LISTENING "):
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, int(line.split()[1])


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def connect(port: int, path: str) -> Any:
    from websockets.asyncio.client import connect as ws_connect

    return ws_connect(
        f"ws://127.0.0.1:{port}{path}", open_timeout=10, close_timeout=5, ping_interval=None, compression=None
    )


async def echo_stream(port: int, path: str, count: int) -> None:
    """``count`` messages on one connection, ``WINDOW`` in flight; every reply checked."""
    text = json.dumps(PAYLOAD) if path == "/json" else "x" * 150
    async with connect(port, path) as ws:
        sent = received = 0
        while received < count:
            while sent < count and sent - received < WINDOW:
                await ws.send(text)
                sent += 1
            reply = await asyncio.wait_for(ws.recv(), 10)
            if path == "/json":
                assert json.loads(reply) == PAYLOAD, reply
            else:
                assert reply == text
            received += 1


async def messages(port: int, total: int, connections: int) -> float:
    """Send ``total`` messages, half text and half JSON; returns the seconds taken."""
    per_connection = total // connections
    paths = ["/text" if n % 2 == 0 else "/json" for n in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(echo_stream(port, path, per_connection) for path in paths))
    return time.perf_counter() - started


async def cycles(port: int, total: int) -> float:
    """``total`` connect / one echo / disconnect cycles, ``CYCLE_CONCURRENCY`` at a time."""
    remaining = iter(range(total))

    async def worker() -> None:
        for n in remaining:
            async with connect(port, "/text") as ws:
                await ws.send(f"cycle {n}")
                assert await asyncio.wait_for(ws.recv(), 10) == f"cycle {n}"

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CYCLE_CONCURRENCY)))
    return time.perf_counter() - started


async def server_stats(port: int) -> dict[str, Any]:
    async with connect(port, "/stats") as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


def echo_handlers(stats: dict[str, Any]) -> int:
    """How many echo handlers (not stats ones) have finished."""
    return stats["paths"].get("/text", 0) + stats["paths"].get("/json", 0)


async def settled_stats(port: int, handled: int) -> dict[str, Any]:
    """The server's counters once every echo handler has finished (the last ones lag the client's close)."""
    deadline = time.monotonic() + 10
    while True:
        stats = await server_stats(port)
        if (stats["open"] <= 1 and echo_handlers(stats) >= handled) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.1)


async def soak(args: argparse.Namespace, pid: int, port: int) -> dict[str, Any]:
    report: dict[str, Any] = {"rss_start_kib": rss_kib(pid)}
    # warm-up: first-use allocations (imports, caches, the loop's buffers) out of the way
    await messages(port, 2_000, args.connections)
    await cycles(port, 200)
    report["rss_warm_kib"] = rss_kib(pid)

    cpu = cpu_seconds(pid)
    report["message_seconds"] = await messages(port, args.messages, args.connections)
    report["message_cpu"] = cpu_seconds(pid) - cpu
    report["rss_after_messages_kib"] = rss_kib(pid)
    cpu = cpu_seconds(pid)
    report["cycle_seconds"] = await cycles(port, args.cycles)
    report["cycle_cpu"] = cpu_seconds(pid) - cpu
    report["rss_end_kib"] = rss_kib(pid)
    expected = args.connections * 2 + 200 + args.cycles  # echo connections, warm-up included
    report["stats"] = await settled_stats(port, expected)
    report["expected_handled"] = expected
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--core", choices=["speedups", "pure", "starlette"], default="speedups", help="starlette: the reference class"
    )
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    process, port = start_server(args.core)
    try:
        report = asyncio.run(asyncio.wait_for(soak(args, process.pid, port), DEADLINE))
    finally:
        stop_server(process)

    stats = report["stats"]
    per_connection = args.messages // args.connections * args.connections
    rate = per_connection / report["message_seconds"]
    cycle_rate = args.cycles / report["cycle_seconds"]
    growth = report["rss_end_kib"] - report["rss_warm_kib"]
    print("turbows soak: uvicorn (uvloop, httptools, websockets-sansio), one worker")
    print(f"  core                 {stats['implementation']}")
    print(f"  messages             {per_connection:,} over {args.connections} connections (half text, half JSON)")
    print(f"                       {report['message_seconds']:.1f} s, {rate:,.0f} msg/s "
          "(round trips; the Python client is the bottleneck)")
    print(f"                       server CPU {report['message_cpu']:.2f} s: "
          f"{per_connection / max(report['message_cpu'], 1e-9):,.0f} msg per server CPU second")
    print(f"  connect/disconnect   {args.cycles:,} cycles, {report['cycle_seconds']:.1f} s, {cycle_rate:,.0f} cycles/s; "
          f"server CPU {report['cycle_cpu']:.2f} s")
    print(f"  server RSS           start {report['rss_start_kib'] / 1024:.1f} MiB, "
          f"after warm-up {report['rss_warm_kib'] / 1024:.1f} MiB, "
          f"after messages {report['rss_after_messages_kib'] / 1024:.1f} MiB, "
          f"end {report['rss_end_kib'] / 1024:.1f} MiB")
    print(f"                       growth after warm-up: {growth:+,} KiB")
    print(f"  handlers             {echo_handlers(stats):,} echo handlers finished of {report['expected_handled']:,}, "
          f"{stats['open']} open (the stats one), {stats['errors']} errors")
    ok = stats["errors"] == 0 and stats["open"] <= 1 and echo_handlers(stats) == report["expected_handled"]
    if not ok:
        print("  FAILED: a handler leaked, failed or never finished")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
