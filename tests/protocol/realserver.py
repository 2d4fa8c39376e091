"""A real uvicorn on 127.0.0.1:0, in this process, serving with turbows' native protocol,
and raw clients for it: what the wire tests of tests/protocol share. Every wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from wsframes import mask_frame

WS = "turbows.uvicorn:WebSocketProtocol"

HANDSHAKE = (
    b"GET /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass
class Served:
    server: uvicorn.Server
    port: int
    #: What the event loop's exception handler saw (asyncio's fatal-error path lands here).
    loop_errors: list[dict[str, Any]] = field(default_factory=list)

    def protocols(self) -> list[Any]:
        """The websocket protocols of the connections open now."""
        from turbows.uvicorn import WebSocketProtocol

        return [p for p in self.server.server_state.connections if isinstance(p, WebSocketProtocol)]


@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[Served]:
    config.setdefault("ws", WS)
    config.setdefault("log_level", "info")
    cfg = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", **config)
    server = uvicorn.Server(cfg)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  (uvicorn < 0.29)
    loop = asyncio.get_running_loop()
    served = Served(server, 0)
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: served.loop_errors.append(context))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        served.port = server.servers[0].sockets[0].getsockname()[1]
        yield served
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        loop.set_exception_handler(previous)


@asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """``serve``, yielding only the port."""
    async with serve(app, **config) as served:
        yield served.port


async def echo(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})
        else:
            return


async def accept_and_wait(scope: Any, receive: Any, send: Any) -> None:
    """Accepts, then receives only the disconnect: an app that never lags behind on purpose."""
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def raw_client(port: int, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that has completed the opening handshake (the 101 read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
    writer.write(HANDSHAKE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def parse_server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Unmasked server frames: ``[(first byte, payload), ...]`` and the bytes of an incomplete last one."""
    frames = []
    while len(data) >= 2:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, pos = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            if len(data) < 10:
                break
            n, pos = int.from_bytes(data[2:10], "big"), 10
        if len(data) < pos + n:
            break
        frames.append((data[0], data[pos : pos + n]))
        data = data[pos + n :]
    return frames, data


async def read_until_close(reader: asyncio.StreamReader, timeout: float = 5) -> list[tuple[int, bytes]]:
    """Every frame the server sends up to and including its close frame (or EOF)."""
    frames: list[tuple[int, bytes]] = []
    buffer = b""

    async def run() -> None:
        nonlocal buffer
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            parsed, buffer = parse_server_frames(buffer + chunk)
            frames.extend(parsed)
            if any(first & 0x0F == 0x8 for first, _ in parsed):
                return

    await asyncio.wait_for(run(), timeout)
    return frames


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    """The code of the close frame among ``frames`` (1005 for an empty one), None if there is none."""
    for first, payload in frames:
        if first & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big") if payload else 1005
    return None


def header(opcode: int, length: int, *, fin: bool = True, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked client frame header announcing ``length`` bytes (the payload to follow, masked with ``key``)."""
    first = bytes([opcode | (0x80 if fin else 0)])
    if length < 126:
        return first + bytes([0x80 | length]) + key
    if length < 65536:
        return first + bytes([0x80 | 126]) + length.to_bytes(2, "big") + key
    return first + bytes([0x80 | 127]) + length.to_bytes(8, "big") + key


__all__ = [
    "HANDSHAKE",
    "Served",
    "close_code",
    "echo",
    "header",
    "mask_frame",
    "parse_server_frames",
    "raw_client",
    "read_until_close",
    "serve",
    "serving",
]
