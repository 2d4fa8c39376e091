"""The idle-connection scale test: server memory per idle WebSocket connection, and the time to accept them.

    python benchmarks/e2e/idle.py [--conns 10000] [--rows turbows-native,turbows-sansio,granian]
                                  [--server-python PY] [--json results/idle.json]

Writes ``{"machine": ..., "idle": {python version: run}}`` (run.py's whole
path writes the same file, from its own runs).

Per server (one fresh process each, one after another): open one connection
and close it (so what the server loads on its first connection is not
counted), read the server's memory, then open ``--conns`` connections, each
a WebSocket handshake on a raw socket that then sends nothing. The app
(app.py's ``/idle``) accepts each one and waits in ``receive``; under ASGI
the 101 goes out on ``websocket.accept``, and the test also polls the app's
``/idle-count`` until it reports every connection accepted and waiting
before reading memory again. Memory per connection: (RSS after - RSS
before) / N, and the same for USS (private pages) and PSS from
/proc/PID/smaps_rollup, summed over the server's process tree (granian
serves from a child process).

The soft RLIMIT_NOFILE is raised to the hard limit here and in the server
(serve.py); if that is too few for ``--conns``, as many as fit are opened
and the result says so. The client is this one asyncio process: a handshake
costs it a connect, a send and a read, far below the server's work.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Server, log, machine  # noqa: E402

#: The servers of the whole-path table: key -> (label, serve.py kind, WebSocket class).
ROWS = {
    "starlette-sansio": ("Starlette's class, uvicorn's sansio protocol", "uvicorn", "starlette"),
    "turbows-sansio": ("turbows' class, uvicorn's sansio protocol", "uvicorn", "speedups"),
    "turbows-native": ("turbows' class, turbows' protocol", "uvicorn-turbows", "speedups"),
    "granian": ("granian, turbows' class", "granian", "speedups"),
    "picows": ("picows' own echo server, no ASGI", "picows", None),
}
#: The three servers the scale test is about; the whole-path table adds the other two rows.
DEFAULT_ROWS = ("turbows-native", "turbows-sansio", "granian")
#: File descriptors kept spare for the process's own files, the listening socket and the probes.
SPARE_FDS = 64


def raise_open_file_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def open_file_limit_of(pid: int) -> int | None:
    """The soft "Max open files" of a running process (/proc/PID/limits)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_of(pids: list[int]) -> dict:
    """RSS (/proc/PID/status) and PSS and USS (/proc/PID/smaps_rollup) in bytes, summed over ``pids``."""
    total = {"rss": 0, "pss": 0, "uss": 0}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total["rss"] += int(line.split()[1]) * 1024
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                field, _, rest = line.partition(":")
                if field == "Pss":
                    total["pss"] += int(rest.split()[0]) * 1024
                elif field in ("Private_Clean", "Private_Dirty"):
                    total["uss"] += int(rest.split()[0]) * 1024
        except (OSError, ValueError):
            continue  # a process of the tree that just went
    return total


def handshake_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def read_head(loop, sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError(f"closed after {head[:80]!r}")
        head += chunk
    return head


async def open_one(loop, port: int, path: str) -> socket.socket:
    """A WebSocket connection whose 101 has arrived: the server's app has run ``accept``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, handshake_request(port, path))
        head = await read_head(loop, sock)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no 101: {head[:80]!r}")
    except BaseException:
        sock.close()
        raise
    return sock


async def open_many(port: int, path: str, conns: int, parallel: int) -> tuple[list[socket.socket], float]:
    """``conns`` connections, ``parallel`` handshakes in flight at a time; and the seconds it took."""
    loop = asyncio.get_running_loop()
    sockets: list[socket.socket] = []
    remaining = iter(range(conns))

    async def worker() -> None:
        for _ in remaining:
            sockets.append(await open_one(loop, port, path))

    start, cpu = time.perf_counter(), time.process_time()
    workers = [asyncio.ensure_future(worker()) for _ in range(min(parallel, conns))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        for sock in sockets:
            sock.close()
        raise
    seconds = time.perf_counter() - start
    log(f"  {len(sockets)} handshakes in {seconds:.2f} s, the client busy {(time.process_time() - cpu) / seconds:.0%} of it")
    return sockets, seconds


async def idle_count(port: int) -> int | None:
    """The app's count of accepted connections waiting in ``receive`` (None: the server has no such route)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = f"GET /idle-count HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        response = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 5):
            response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        return int(body) if head.startswith(b"HTTP/1.1 200") else None
    except (OSError, ValueError, asyncio.TimeoutError):
        return None
    finally:
        sock.close()


async def wait_for_count(port: int, wanted: int, timeout: float = 30) -> int | None:
    """Poll ``/idle-count`` until it is ``wanted`` (or the timeout): the count then, None without the route."""
    deadline = time.monotonic() + timeout
    while True:
        count = await idle_count(port)
        if count is None or count == wanted or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


async def measure(server: Server, conns: int, parallel: int, settle: float) -> dict:
    port = server.port
    # The first connection loads what the server loads lazily; granian's worker is up once it is answered.
    warm = await open_one(asyncio.get_running_loop(), port, "/idle")
    warm.close()
    await wait_for_count(port, 0)
    await asyncio.sleep(settle)
    pids = server.pids()
    before = memory_of(pids)
    sockets, seconds = await open_many(port, "/idle", conns, parallel)
    try:
        counted = await wait_for_count(port, conns)
        await asyncio.sleep(settle)
        pids = server.pids()
        after = memory_of(pids)
        result = {
            "conns": len(sockets),
            "accept_s": seconds,
            "accept_per_s": len(sockets) / seconds,
            "app_count": counted,
            "server_open_file_limit": open_file_limit_of(server.proc.pid),
            "before": before,
            "after": after,
        }
        for key in ("rss", "pss", "uss"):
            result[f"{key}_per_conn"] = (after[key] - before[key]) / len(sockets)
        if counted is not None and counted < len(sockets):
            result["error"] = f"the app counted {counted} accepted of {len(sockets)}"
        return result
    finally:
        server.kill()  # the figures are read: 10,000 clean closes would only cost time
        for sock in sockets:
            sock.close()


def run_loop(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_idle(rows: list[str], conns: int, python: str | None = None, parallel: int = 64,
             settle: float = 0.5) -> dict:
    """The scale test on each row's server, in turn; the figures by row key, and the limits used."""
    soft, hard = raise_open_file_limit()
    usable = max(soft - SPARE_FDS, 1)
    out: dict = {"requested_conns": conns, "client_open_file_limit": soft, "hard_open_file_limit": hard,
                 "rows": {}}
    if usable < conns:
        out["note"] = (f"RLIMIT_NOFILE allows {soft} open files: {usable} connections opened "
                       f"instead of {conns}")
        log(out["note"])
        conns = usable
    for row in rows:
        label, kind, impl = ROWS[row]
        server = None
        try:
            server = Server(kind, impl, python=python)
            limit = open_file_limit_of(server.proc.pid)
            if limit is not None and limit - SPARE_FDS < conns:
                out.setdefault("server_note", {})[row] = f"server RLIMIT_NOFILE {limit}"
            result = run_loop(measure(server, min(conns, (limit or conns + SPARE_FDS) - SPARE_FDS),
                                         parallel, settle))
        except Exception as exc:  # report, go on with the next server
            result = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if server is not None and server.proc.poll() is None:
                server.kill()
        result["label"] = label
        out["rows"][row] = result
        if "rss_per_conn" in result:
            log(f"idle {label:48s} {result['conns']:6d} conns: RSS {result['rss_per_conn'] / 1024:6.1f} KiB/conn, "
                f"USS {result['uss_per_conn'] / 1024:6.1f}, PSS {result['pss_per_conn'] / 1024:6.1f}; "
                f"accepted in {result['accept_s']:.2f} s ({result['accept_per_s']:,.0f}/s)"
                + (f" ERR {result['error']}" if result.get("error") else ""))
        else:
            log(f"idle {label}: ERR {result.get('error')}")
    return out


def render_markdown(idle: dict) -> str:
    """The scale test's table, one per interpreter."""
    lines = []
    for version, run in idle.items():
        server_limits = sorted({r["server_open_file_limit"] for r in run["rows"].values()
                                if r.get("server_open_file_limit")})
        lines += [
            f"Idle connections, CPython {version} servers: {run['requested_conns']:,} WebSocket connections "
            f"requested (open-file limit, raised to the hard limit: client {run['client_open_file_limit']:,}, "
            f"server {', '.join(f'{n:,}' for n in server_limits) or 'n/a'}), each accepted and its app "
            "waiting in `receive`; server memory per connection = (after - before) / N over the server's "
            "process tree; accept time: the first connect to the last 101, 64 handshakes in flight.",
            "",
            "| server | connections | RSS KiB/conn | USS KiB/conn | PSS KiB/conn | accept all, s | accepts/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in run["rows"].values():
            if "rss_per_conn" not in row:
                lines.append(f"| {row['label']} | n/a ({row.get('error')}) | | | | | |")
                continue
            lines.append(f"| {row['label']} | {row['conns']:,} | {row['rss_per_conn'] / 1024:.1f} | "
                         f"{row['uss_per_conn'] / 1024:.1f} | {row['pss_per_conn'] / 1024:.1f} | "
                         f"{row['accept_s']:.2f} | {row['accept_per_s']:,.0f} |"
                         + (f" {row['error']}" if row.get("error") else ""))
        if run.get("note"):
            lines += ["", run["note"]]
        for row, note in run.get("server_note", {}).items():
            lines += ["", f"{ROWS[row][0]}: {note}, fewer connections than requested."]
        lines.append("")
    return "\n".join(lines)


def python_version(python: str | None) -> str:
    if not python:
        import platform

        return platform.python_version()
    import subprocess

    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma list of {','.join(ROWS)}")
    p.add_argument("--server-python", action="append",
                   help="the servers' interpreter (repeatable: one run per interpreter; default this one)")
    p.add_argument("--parallel", type=int, default=64, help="handshakes in flight (default 64)")
    p.add_argument("--json", default="results/idle.json")
    args = p.parse_args(argv)
    results = {}
    for python in args.server_python or [None]:
        version = python_version(python)
        log(f"idle connections on CPython {version} servers: {args.conns} per server")
        results[version] = run_idle(args.rows.split(","), args.conns, python, args.parallel)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine(), "idle": results}, indent=2))
    print(render_markdown(results))
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
