"""The load client: picows on uvloop, in its own process, driven by JSON lines on stdin.

Each command line gets one JSON result line on stdout. Commands:

- ``{"op": "echo", "url", "conns", "payload", "duration", "warmup", "server_pid"}``:
  ``conns`` connections each doing round trips (send, wait for the echo,
  send again) for ``warmup`` + ``duration`` seconds; only the ``duration``
  window is counted. Result: messages/s, p50/p99 round trip, the client's CPU
  per message and (``server_pid``: a PID, or a list of them, summed) the
  server's CPU per message, read from /proc/PID/stat at the window's edges.
  ``payload`` ``bytes64k`` and ``bytes1m``: binary messages of 64 KiB and
  1 MiB, checked byte for byte (the echo must return what was sent).
- ``{"op": "fanout", "url", "conns", "duration", "warmup", "server_pid",
  "window", "stalled"}``: ``conns`` connections to the broadcast app;
  connection 0 sends JSON messages of 150 B, keeping ``window`` (default 1)
  broadcasts in flight: the next goes once the oldest has reached all
  ``conns`` (``window`` > 1: publishing as fast as the server takes them).
  ``stalled``: that many more connections join and never read (they are not
  waited for). Result: broadcasts/s, deliveries/s, p50/p99 delivery latency
  (send to each receipt) and p50/p99 of the time until the last connection
  has it.
- ``{"op": "fanout-all", "url", "conns", "duration", "warmup", "server_pid"}``:
  granian's broadcast benchmark method: every connection sends while all
  receive; each sends its next message once its last one came back to it
  (the broadcast reaches its sender too). Result: deliveries/s, and p50/p99
  of that round trip (send to the sender's own receipt).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from statistics import median  # noqa: F401  (kept for interactive use)

import orjson
import uvloop
from picows import WSListener, WSMsgType, ws_connect

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from workloads import json_object  # noqa: E402

TEXT = "hello, world: a short chat line"
PAYLOADS = {
    "text": (WSMsgType.TEXT, TEXT.encode()),
    "json150": (WSMsgType.TEXT, orjson.dumps(json_object(150))),
    "json4k": (WSMsgType.TEXT, orjson.dumps(json_object(4096))),
    "jsonbin": (WSMsgType.BINARY, orjson.dumps(json_object(150))),
    # Not all one byte, so that a server's unmasking is checked (a mask xor a constant is a constant).
    "bytes64k": (WSMsgType.BINARY, bytes(range(256)) * 256),
    "bytes1m": (WSMsgType.BINARY, bytes(range(256)) * 4096),
}
#: The payloads checked byte for byte; the others are JSON, checked by value.
EXACT = {"text", "bytes64k", "bytes1m"}
TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int | list[int] | None) -> float:
    """utime + stime of ``pid`` (or the sum over a list of them: granian's worker and its supervisor)."""
    if not pid:
        return 0.0
    total = 0.0
    for one in pid if isinstance(pid, list) else [pid]:
        try:
            with open(f"/proc/{one}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Run:
    def __init__(self, msg_type, payload: bytes, exact: bool) -> None:
        self.msg_type, self.payload, self.exact = msg_type, payload, exact
        self.running = True
        self.measuring = False
        self.count = 0
        self.latencies: list[float] = []
        self.outstanding = 0
        self.drained: asyncio.Future | None = None
        self.error: str | None = None
        self.checked = False


class EchoClient(WSListener):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.sent = 0.0

    def kick(self) -> None:
        self.run.outstanding += 1
        self.sent = time.perf_counter()
        self.transport.send(self.run.msg_type, self.run.payload)

    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:
        now = time.perf_counter()
        run = self.run
        if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        run.outstanding -= 1
        if not run.checked:
            run.checked = True
            got = frame.get_payload_as_bytes()
            same = got == run.payload if run.exact else orjson.loads(got) == orjson.loads(run.payload)
            if frame.msg_type != run.msg_type or not same:
                run.error = f"bad echo: {frame.msg_type} {got[:60]!r}"
        if run.measuring:
            run.count += 1
            run.latencies.append(now - self.sent)
        if run.running:
            self.sent = now
            run.outstanding += 1
            transport.send(run.msg_type, run.payload)
        elif run.outstanding == 0 and run.drained is not None and not run.drained.done():
            run.drained.set_result(None)


class FanoutClient(WSListener):
    def __init__(self, run: "FanoutRun") -> None:
        self.run = run
        #: Messages this connection received: one publisher, one order, so the k-th is broadcast k.
        self.count = 0

    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.count += 1
            self.run.delivered(self.count, time.perf_counter())


class StalledClient(WSListener):
    """A member that stops reading once connected: the server's buffers for it fill up.

    Its receive buffer is made small (as a slow phone's would fill), so what
    it does not read reaches the server's own buffers within the run, not
    the kernel's megabytes of loopback buffering."""

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        underlying = transport.underlying_transport
        underlying.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        underlying.pause_reading()


class FanoutRun:
    def __init__(self, conns: int, window: int = 1) -> None:
        self.conns = conns
        self.window = window
        self.sender = None
        self.running = True
        self.measuring = False
        self.broadcasts = 0
        self.deliveries: list[float] = []
        self.completions: list[float] = []
        self.seq = 0  # the last broadcast sent
        self.done = 0  # every broadcast up to this one has reached every connection
        self.sent_at: dict[int, float] = {}
        self.got: dict[int, int] = {}
        self.idle: asyncio.Future | None = None
        self.first: asyncio.Future | None = None

    def reset(self, clients) -> None:
        """Before the measured run: every connection's count and the sequence start again."""
        for client in clients:
            client.count = 0
        self.seq = self.done = 0
        self.sent_at.clear()
        self.got.clear()

    def send(self) -> None:
        self.seq += 1
        message = {"type": "message", "seq": self.seq, "user": "bench", "text": "x" * 90, "ok": True}
        self.sent_at[self.seq] = time.perf_counter()
        self.got[self.seq] = 0
        self.sender.transport.send(WSMsgType.TEXT, orjson.dumps(message))

    def fill(self) -> None:
        while self.running and self.seq - self.done < self.window:
            self.send()

    def delivered(self, seq: int, now: float) -> None:
        sent_at = self.sent_at.get(seq)
        if sent_at is None:
            return
        if self.measuring:
            self.deliveries.append(now - sent_at)
        got = self.got[seq] = self.got[seq] + 1
        if got < self.conns:
            return
        del self.got[seq], self.sent_at[seq]
        self.done = max(self.done, seq)
        if self.first is not None and not self.first.done():
            self.first.set_result(None)
        if self.measuring:
            self.broadcasts += 1
            self.completions.append(now - sent_at)
        if self.running:
            self.fill()
        elif not self.got and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)


class AllSendClient(WSListener):
    """granian's method: this connection sends, and sends again once its own message is back."""

    def __init__(self, run: "AllSendRun", ident: int) -> None:
        self.run = run
        # The JSON the app re-encodes keeps this prefix: {"from":"00042",...
        self.tag = f'{{"from":"{ident:05d}"'.encode()
        self.message = orjson.dumps({"from": f"{ident:05d}", "type": "message", "text": "x" * 110, "ok": True})
        self.sent_at = 0.0

    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, self.message)

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        run = self.run
        if run.measuring:
            run.deliveries += 1
        if frame.get_payload_as_bytes().startswith(self.tag):
            now = time.perf_counter()
            if run.measuring:
                run.round_trips.append(now - self.sent_at)
            if run.running:
                self.send()


class AllSendRun:
    def __init__(self) -> None:
        self.running = False
        self.measuring = False
        self.deliveries = 0
        self.round_trips: list[float] = []


async def fanout_all(cmd: dict) -> dict:
    run = AllSendRun()
    clients = []
    for ident in range(cmd["conns"]):
        _, client = await ws_connect(lambda ident=ident: AllSendClient(run, ident), cmd["url"])
        clients.append(client)
    await asyncio.sleep(0.2)  # every connection joined before the first send
    run.running = True
    for client in clients:
        client.send()
    pid = cmd.get("server_pid")
    (s0, c0, t0), (s1, c1, t1) = await measured_window(run, cmd)
    run.running = False
    await asyncio.sleep(0.2)
    await close_all(clients)
    n = max(run.deliveries, 1)
    return {
        "msg_per_s": run.deliveries / (t1 - t0),
        "p50_us": percentile(run.round_trips, 0.50) * 1e6,
        "p99_us": percentile(run.round_trips, 0.99) * 1e6,
        "client_cpu_us_per_msg": (c1 - c0) / n * 1e6,
        "client_cpu_share": (c1 - c0) / (t1 - t0),
        "server_cpu_us_per_msg": (s1 - s0) / n * 1e6 if pid else None,
        "server_cpu_share": (s1 - s0) / (t1 - t0) if pid else None,
        "error": None,
    }


async def close_all(clients) -> None:
    for client in clients:
        try:
            client.transport.send_close()
            client.transport.disconnect()
        except Exception:
            pass
    for client in clients:
        try:
            await asyncio.wait_for(client.transport.wait_disconnected(), 2)
        except Exception:
            pass


async def measured_window(run, cmd: dict) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Warm up, then count for ``cmd["duration"]`` seconds: (server CPU,
    client CPU, wall clock) at the window's start and at its end."""
    await asyncio.sleep(cmd["warmup"])
    pid = cmd.get("server_pid")
    start = server_cpu(pid), time.process_time(), time.perf_counter()
    run.measuring = True
    await asyncio.sleep(cmd["duration"])
    run.measuring = False
    return start, (server_cpu(pid), time.process_time(), time.perf_counter())


async def echo(cmd: dict) -> dict:
    msg_type, payload = PAYLOADS[cmd["payload"]]
    run = Run(msg_type, payload, cmd["payload"] in EXACT)
    clients = []
    for _ in range(cmd["conns"]):
        _, client = await ws_connect(lambda: EchoClient(run), cmd["url"], max_frame_size=64 * 1024 * 1024)
        clients.append(client)
    for client in clients:
        client.kick()
    pid = cmd.get("server_pid")
    (s0, c0, t0), (s1, c1, t1) = await measured_window(run, cmd)
    run.running = False
    run.drained = asyncio.get_running_loop().create_future()
    if run.outstanding:
        try:
            await asyncio.wait_for(run.drained, 5)
        except asyncio.TimeoutError:
            pass
    await close_all(clients)
    n = max(run.count, 1)
    return {
        "msgs": run.count,
        "msg_per_s": run.count / (t1 - t0),
        "p50_us": percentile(run.latencies, 0.50) * 1e6,
        "p99_us": percentile(run.latencies, 0.99) * 1e6,
        "client_cpu_us_per_msg": (c1 - c0) / n * 1e6,
        "client_cpu_share": (c1 - c0) / (t1 - t0),
        "server_cpu_us_per_msg": (s1 - s0) / n * 1e6 if pid else None,
        "server_cpu_share": (s1 - s0) / (t1 - t0) if pid else None,
        "error": run.error,
    }


async def fanout(cmd: dict) -> dict:
    run = FanoutRun(cmd["conns"], cmd.get("window", 1))
    clients = []
    for _ in range(cmd["conns"]):
        _, client = await ws_connect(lambda: FanoutClient(run), cmd["url"])
        clients.append(client)
    run.sender = clients[0]
    loop = asyncio.get_running_loop()
    # the server registers a connection just after accepting it: retry until one broadcast reaches all
    for _ in range(100):
        run.reset(clients)
        run.first = loop.create_future()
        run.running = False
        run.send()
        try:
            await asyncio.wait_for(asyncio.shield(run.first), 0.1)
            break
        except asyncio.TimeoutError:
            continue
    else:
        raise RuntimeError("no broadcast reached every connection")
    for _ in range(cmd.get("stalled", 0)):
        _, client = await ws_connect(StalledClient, cmd["url"])
        clients.append(client)
    await asyncio.sleep(0.1)
    run.reset(clients)
    run.running = True
    run.fill()
    pid = cmd.get("server_pid")
    (s0, c0, t0), (s1, c1, t1) = await measured_window(run, cmd)
    run.running = False
    run.idle = loop.create_future()
    try:
        await asyncio.wait_for(run.idle, 5)
    except asyncio.TimeoutError:
        pass
    await close_all(clients)
    n = max(run.broadcasts, 1)
    return {
        "broadcasts": run.broadcasts,
        "broadcast_per_s": run.broadcasts / (t1 - t0),
        "msg_per_s": len(run.deliveries) / (t1 - t0),
        "p50_us": percentile(run.deliveries, 0.50) * 1e6,
        "p99_us": percentile(run.deliveries, 0.99) * 1e6,
        "all_p50_us": percentile(run.completions, 0.50) * 1e6,
        "all_p99_us": percentile(run.completions, 0.99) * 1e6,
        "client_cpu_us_per_msg": (c1 - c0) / max(len(run.deliveries), 1) * 1e6,
        "client_cpu_share": (c1 - c0) / (t1 - t0),
        "server_cpu_us_per_msg": (s1 - s0) / max(len(run.deliveries), 1) * 1e6 if pid else None,
        "server_cpu_us_per_broadcast": (s1 - s0) / n * 1e6 if pid else None,
        "server_cpu_share": (s1 - s0) / (t1 - t0) if pid else None,
        "error": None,
    }


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            result = await {"echo": echo, "fanout": fanout, "fanout-all": fanout_all}[cmd["op"]](cmd)
        except Exception as exc:  # report, keep serving
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(main())
