"""Hostile clients against turbows' native protocol, over real loopback connections
to a real uvicorn: memory follows the bytes a client sends, never what it announces;
a failure while reading is a clean close, never an exception out of data_received;
what a client can make the server hold, in either direction, is bounded."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

import pytest
import websockets
from realserver import (
    accept_and_wait,
    close_code,
    header,
    mask_frame,
    raw_client,
    read_until_close,
    serve,
)
from websockets.asyncio.client import connect

from turbows.uvicorn import WebSocketProtocol

TEXT, BINARY, PING = 1, 2, 9
MiB = 1 << 20


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def no_frame_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Nothing from the server (no frame, no EOF) for ``seconds``."""
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except asyncio.TimeoutError:
        return True
    return False


def test_an_announced_length_reserves_nothing_before_the_bytes_arrive() -> None:
    # 40 clients, each a header announcing 16 MiB (uvicorn's default ws_max_size) and 1 KiB of
    # payload: the server holds about 40 KiB for them, not 640 MiB of address space.
    async def main() -> None:
        async with serve(accept_and_wait) as served:
            clients = [await raw_client(served.port) for _ in range(40)]
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for _, writer in clients:
                    writer.write(header(BINARY, 16 * MiB) + bytes(1024))
                    await writer.drain()
                await asyncio.sleep(0.3)
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert grown < 4 * MiB, f"{grown / MiB:.1f} MiB held for 40 KiB received"
            for reader, _ in clients:
                assert await no_frame_within(reader, 0.01)  # all of them still mid-frame, open
            for _, writer in clients:
                writer.close()

    run(main())


def test_no_size_limit_and_a_2_to_the_44_announcement_is_just_a_frame_in_progress() -> None:
    # ws_max_size=None: a header announcing 2**44 bytes allocated them at once, and the
    # MemoryError escaped data_received into asyncio's fatal-error path (no close frame).
    async def main() -> None:
        async with serve(accept_and_wait, ws_max_size=None) as served:
            reader, writer = await raw_client(served.port)
            writer.write(header(BINARY, 1 << 44) + bytes(4096))
            await writer.drain()
            assert await no_frame_within(reader, 0.3)
            assert served.loop_errors == []
            assert len(served.protocols()) == 1
            writer.close()

    run(main())


# A server in a subprocess whose address space may grow by 256 MiB once it serves.
_LIMITED_SERVER = textwrap.dedent(
    """
    import asyncio, resource, uvicorn

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    def address_space():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    async def main():
        config = uvicorn.Config(app, host="127.0.0.1", port=0, ws="turbows.uvicorn:WebSocketProtocol",
                                ws_max_size=None, lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        limit = address_space() + 256 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
        await task

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_running_out_of_memory_for_a_message_is_a_1009_close() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _LIMITED_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("PORT "), line + process.stderr.read().decode()
        port = int(line.split()[1])

        async def main() -> None:
            reader, writer = await raw_client(port)
            # Masked with a zero key: the payload is sent as it is.
            writer.write(header(BINARY, 1 << 40, key=bytes(4)))
            closed = asyncio.ensure_future(read_until_close(reader, timeout=60))
            chunk = bytes(MiB)
            try:
                for _ in range(1024):  # far more than the server may hold
                    if closed.done():
                        break
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), 10)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            assert close_code(await closed) == 1009
            writer.close()

        run(main(), timeout=90)
        assert process.poll() is None, "the server died"
    finally:
        process.kill()
        _, err = process.communicate(timeout=10)
    assert b"Fatal error" not in err, err.decode()


class PingHandlerFails(WebSocketProtocol):  # type: ignore[misc, valid-type]
    """A subclass whose keepalive bookkeeping raises when a pong arrives, in the middle of feeding frames."""

    def schedule_ping(self) -> None:
        if self.pending_ping_payload is None and self.last_ping_rtt:
            raise RuntimeError("a bug in a subclass")
        super().schedule_ping()


def test_an_exception_while_feeding_frames_fails_the_connection_with_1011() -> None:
    async def main() -> None:
        async with serve(accept_and_wait, ws=PingHandlerFails, ws_ping_interval=0.05, ws_ping_timeout=5) as served:
            async with connect(f"ws://127.0.0.1:{served.port}/", open_timeout=5, ping_interval=None) as ws:
                # The client answers the server's ping by itself; the pong makes the server raise.
                with pytest.raises(websockets.ConnectionClosedError) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            assert served.loop_errors == []

    run(main())


def test_a_ping_flood_from_a_client_that_never_reads_cannot_grow_the_write_buffer() -> None:
    async def main() -> None:
        async with serve(accept_and_wait) as served:
            reader, writer = await raw_client(served.port)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            writer.transport.pause_reading()  # never read a pong
            burst = mask_frame(PING, b"p" * 125) * 8000  # 1 MiB of pings, answered by 1 MiB of pongs
            for _ in range(32):
                writer.write(burst)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            (protocol,) = served.protocols()
            buffered = protocol.transport.get_write_buffer_size()
            # The high-water mark (64 KiB) plus the pongs of one read, not what the client sent.
            assert buffered < 2 * MiB, f"{buffered / MiB:.1f} MiB of pongs buffered"
            writer.transport.abort()

    run(main())


def test_one_read_of_empty_frames_queues_at_most_ws_max_queue_messages_and_loses_none() -> None:
    frames = 256 * 1024 // 6  # a 6-byte empty text frame each: one 256 KiB read
    go = asyncio.Event()
    received: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while (message := await receive())["type"] == "websocket.receive":
            assert message["text"] == ""
            received.append(1)
            if len(received) == frames:
                await send({"type": "websocket.close"})

    async def main() -> None:
        async with serve(app) as served:
            reader, writer = await raw_client(served.port)
            before = sys.getallocatedblocks()
            writer.write(mask_frame(TEXT, b"", key=b"abcd") * frames)
            await writer.drain()
            await asyncio.sleep(0.3)
            # ~43,000 queued message dicts before; now ws_max_queue (32) and the bytes not yet parsed.
            grown = sys.getallocatedblocks() - before
            assert grown < 5000, f"{grown} blocks allocated for messages the app has not asked for"
            go.set()
            assert close_code(await read_until_close(reader, timeout=30)) == 1000
            assert len(received) == frames
            writer.close()

    run(main())
