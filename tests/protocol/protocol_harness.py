"""A websocket protocol for uvicorn driven directly: a fake transport that records
what is written, a real event loop. Shared by test_protocol.py and the differential fuzz."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            loop = asyncio.get_event_loop()
            loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(
            name, default
        )

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


def request(
    *, key: str = KEY, extra: str = "", version: str = "13", path: str = "/ws?x=1"
) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        f"sec-websocket-key: {key}\r\nsec-websocket-version: {version}\r\n{extra}\r\n"
    ).encode()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server frames."""
    frames = []
    while data:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            n, pos = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, pos = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0], data[pos : pos + n]))
        data = data[pos + n :]
    return frames


class Harness:
    def __init__(
        self, cls: type, app: Any, app_state: Any = None, transport: Transport | None = None, **config: Any
    ) -> None:
        config.setdefault("ws_max_size", 1000)
        self.config = Config(app, lifespan="off", log_level="warning", **config)
        self.config.load()
        self.state = ServerState()
        self.protocol = cls(
            config=self.config,
            server_state=self.state,
            app_state={} if app_state is None else app_state,
        )
        self.transport = Transport() if transport is None else transport
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
