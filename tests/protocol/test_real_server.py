"""turbows' native protocol under a real uvicorn (in this process, on 127.0.0.1:0):
TLS, keepalive, write-side flow control, access log, denial. Every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from realserver import HANDSHAKE, close_code, echo, mask_frame, raw_client, read_until_close, serve, serving
from websockets.asyncio.client import connect


def run(coro: Any, timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="needs the openssl command to make a certificate",
)
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    async def main() -> None:
        async with serving(echo, ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            async with connect(
                f"wss://127.0.0.1:{port}/tls", ssl=context, open_timeout=5
            ) as ws:
                for message in ("hello", b"\x00" * 100_000, "żółw" * 1000):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 5) == message

    run(main())


def test_keepalive_timeout_closes_with_1011() -> None:
    async def main() -> None:
        async with serving(echo, ws_ping_interval=0.1, ws_ping_timeout=0.2) as port:
            reader, writer = await raw_client(port)
            # Never answer: a ping, then a close 1011. The frames are parsed: the ping's
            # random payload may hold any byte, 0x88 included.
            frames = await read_until_close(reader)
            assert frames[0][0] == 0x89 and len(frames[0][1]) == 4
            assert [first for first, _ in frames] == [0x89, 0x88]
            assert frames[-1][1] == (1011).to_bytes(2, "big") + b"keepalive ping timeout"
            writer.close()

    run(main())


def test_keepalive_answered_keeps_the_connection() -> None:
    # uvicorn's test_server_keepalive_ping_pong, on turbows' class: pings go out, the
    # client's pongs are matched to them, and the connection outlives many timeouts.
    async def main() -> None:
        async with (
            serve(echo, ws_ping_interval=0.05, ws_ping_timeout=0.1) as served,
            connect(f"ws://127.0.0.1:{served.port}/ka", open_timeout=5, ping_interval=None) as ws,
        ):
            (protocol,) = served.protocols()
            await asyncio.sleep(0.6)  # the client answers pings by itself
            assert protocol.ping_sent_at > 0 and protocol.last_ping_rtt > 0
            assert not protocol.transport.is_closing()
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 5) == "still here"

    run(main())


def test_keepalive_disabled_sends_no_ping() -> None:
    # uvicorn's test_server_keepalive_disabled, on turbows' class.
    async def main() -> None:
        async with serve(echo, ws_ping_interval=None) as served:
            reader, writer = await raw_client(served.port)
            (protocol,) = served.protocols()
            assert protocol.ping_timer is None
            try:
                data = await asyncio.wait_for(reader.read(1), 0.3)
            except asyncio.TimeoutError:
                data = None
            assert data is None and protocol.ping_timer is None and protocol.ping_sent_at == 0
            writer.close()

    run(main())


def test_sends_wait_while_the_client_does_not_read() -> None:
    sent = []

    async def flood(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            for _ in range(2000):
                await send({"type": "websocket.send", "bytes": b"x" * 65536})
                sent.append(1)
        except OSError:
            pass

    async def main() -> None:
        async with serving(flood) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            writer.transport.pause_reading()
            writer.write(HANDSHAKE)
            await asyncio.sleep(1.0)
            # 2000 x 64 KiB = 125 MiB: the app must be held back, far short of that.
            assert 0 < len(sent) < 500, len(sent)
            writer.transport.abort()
            await asyncio.sleep(0.2)

    run(main())


def test_access_log_lines() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    async def main() -> None:
        async with serving(echo) as port:
            handler = Keep()
            logging.getLogger("uvicorn.error").addHandler(
                handler
            )  # uvicorn's loggers do not propagate
            try:
                async with connect(
                    f"ws://127.0.0.1:{port}/logged?q=1", open_timeout=5
                ) as ws:
                    await ws.send("x")
                    await asyncio.wait_for(ws.recv(), 5)
            finally:
                logging.getLogger("uvicorn.error").removeHandler(handler)

    run(main())
    assert any(
        '"WebSocket /logged?q=1" [accepted]' in record.getMessage()
        for record in records
    )


def test_denial_response() -> None:
    async def deny(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"x-why", b"no")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"go away"})

    async def main() -> None:
        async with serving(deny) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HANDSHAKE)
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
            assert b"x-why: no\r\n" in data and data.endswith(b"\r\n\r\ngo away")
            writer.close()

    run(main())


def test_echo_ping_and_close_on_the_wire() -> None:
    # (Bytes in the same read as the upgrade request never reach any ws protocol:
    # uvicorn's httptools protocol drops them, so the client waits for the 101.)
    async def main() -> None:
        async with serving(echo) as port:
            reader, writer = await raw_client(port)
            writer.write(mask_frame(1, b"early"))
            assert await asyncio.wait_for(reader.readexactly(7), 5) == b"\x81\x05early"
            writer.write(mask_frame(9, b"p"))
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"\x8a\x01p"
            writer.write(mask_frame(8, b"\x03\xe8"))
            assert (
                await asyncio.wait_for(reader.readexactly(4), 5) == b"\x88\x02\x03\xe8"
            )
            writer.close()

    run(main())


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_upgrade_from_either_http_protocol(http: str) -> None:
    async def main() -> None:
        async with (
            serving(echo, http=http) as port,
            connect(
                f"ws://127.0.0.1:{port}/h?x=1", open_timeout=5, subprotocols=None
            ) as ws,
        ):
            for message in ("hi", b"\x01\x02", "x" * 70000):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 5) == message
            await ws.close(4001, "done")

    run(main())


async def handshake_response(port: int) -> bytes:
    """What the server answers the upgrade with, up to the end of its head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE)
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "accept, problem",
    [
        ({"headers": [(b"x-ok", b"1\r\nset-cookie: injected=1")]}, "CR, LF or NUL"),
        ({"headers": [(b"x-ok", b"1\nset-cookie: injected=1")]}, "CR, LF or NUL"),
        ({"headers": [(b"x-ok", b"1\x00")]}, "CR, LF or NUL"),
        ({"headers": [(b"set-cookie: injected=1\r\nx-ok", b"1")]}, "not an HTTP token"),
        ({"subprotocol": "chat\r\nset-cookie: injected=1"}, "CR, LF or NUL"),
    ],
    ids=["cr-lf-in-value", "lf-in-value", "nul-in-value", "cr-lf-in-name", "cr-lf-in-subprotocol"],
)
def test_accept_refuses_headers_that_would_inject_others(accept: dict, problem: str) -> None:
    errors: list[Exception] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", **accept})
        except ValueError as error:
            errors.append(error)
            raise

    async def main() -> None:
        async with serving(app) as port:
            response = await handshake_response(port)
        assert response.startswith(b"HTTP/1.1 500 "), response
        assert b"injected" not in response

    run(main())
    assert len(errors) == 1 and problem in str(errors[0]) and "websocket.accept" in str(errors[0])


def test_a_denial_response_refuses_headers_that_would_inject_others() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"x-why", b"no\r\nset-cookie: injected=1")],
            }
        )

    async def main() -> None:
        async with serving(app) as port:
            response = await handshake_response(port)
        assert response.startswith(b"HTTP/1.1 500 "), response
        assert b"injected" not in response

    run(main())


def test_a_denial_response_start_is_written_when_it_arrives() -> None:
    # With the body's length in its headers, the client has the status before the body is sent.
    body_sent = asyncio.Event()
    head_seen = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-length", b"7")],
            }
        )
        await asyncio.wait_for(head_seen.wait(), 5)
        await send({"type": "websocket.http.response.body", "body": b"go", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b" away"})
        body_sent.set()

    async def main() -> None:
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HANDSHAKE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert not body_sent.is_set()
            head_seen.set()
            assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
            assert b"content-length: 7\r\n" in head and b"Connection: close\r\n" in head
            assert await asyncio.wait_for(reader.read(), 5) == b"go away"
            writer.close()

    run(main())


def test_a_denial_response_the_app_abandons_is_still_written() -> None:
    # No length in its headers and no body: what the app sent, ending with the connection.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 404, "headers": [(b"x-why", b"gone")]})

    async def main() -> None:
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HANDSHAKE)
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 404 Not Found\r\nx-why: gone\r\n"), data
            assert data.endswith(b"\r\n\r\n") and b"Content-Length" not in data
            writer.close()

    run(main())


def test_a_keepalive_timeout_tells_the_app_1011() -> None:
    # The app sees why the server closed, as after any failure it closes with.
    disconnects: list[dict] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        disconnects.append(await receive())

    async def main() -> None:
        async with serving(app, ws_ping_interval=0.05, ws_ping_timeout=0.1) as port:
            reader, writer = await raw_client(port)  # never answers a ping
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            for _ in range(100):
                if disconnects:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert disconnects == [{"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}]


def test_closing_resumes_reads_paused_by_a_full_queue_so_the_peer_close_gets_through() -> None:
    # uvicorn's test_close_resumes_reads_paused_on_an_unconsumed_message, at turbows' own
    # threshold: reading pauses once ws_max_queue messages wait (sansio pauses after each one).
    # The app never reads them and closes; the peer's close reply must still be read, and
    # the connection end there, not at the close timeout.
    queued = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.wait_for(queued.wait(), 5)
        await send({"type": "websocket.close", "code": 1000})

    async def main() -> None:
        async with serve(app, ws_max_queue=8) as served:
            reader, writer = await raw_client(served.port)
            writer.write(b"".join(mask_frame(1, b"%d" % i) for i in range(100)))
            await writer.drain()
            for _ in range(100):
                if served.protocols() and served.protocols()[0].read_paused:
                    break
                await asyncio.sleep(0.01)
            (protocol,) = served.protocols()
            assert protocol.read_paused and protocol.close_timeout == 10.0
            queued.set()
            assert close_code(await read_until_close(reader)) == 1000
            writer.write(mask_frame(8, b"\x03\xe8"))  # the close reply
            assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server, now
            writer.close()

    run(main())
