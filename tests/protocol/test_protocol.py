"""turbows' native uvicorn protocol driven directly: a fake transport, a real event loop.

Checked against uvicorn's websockets-sansio protocol where behaviour is shared
(``both`` fixture): the same ASGI messages to the app and the same frames and
HTTP responses on the wire, modulo headers that carry dates or versions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from typing import Any

import pytest
from protocol_harness import KEY, Harness, Transport, request, server_frames, settle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from wsframes import mask_frame

from turbows.uvicorn import WebSocketProtocol

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def echo_app(log: list) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        log.append(scope)
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.connect":
                await send(
                    {
                        "type": "websocket.accept",
                        "subprotocol": None,
                        "headers": [(b"x-test", b"1")],
                    }
                )
            elif message["type"] == "websocket.receive":
                await send(
                    {
                        "type": "websocket.send",
                        **{k: v for k, v in message.items() if k != "type"},
                    }
                )
            else:
                return

    return app


BOTH = pytest.mark.parametrize(
    "cls", [WebSocketProtocol, WebSocketsSansIOProtocol], ids=["turbows", "sansio"]
)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


@BOTH
def test_handshake_scope_and_echo(cls: type) -> None:
    async def main() -> None:
        log: list = []
        h = Harness(cls, echo_app(log), ws_per_message_deflate=False)
        h.feed(request(extra="sec-websocket-protocol: a, b\r\n"))
        await settle()
        response = h.transport.take()
        accept = base64.b64encode(
            hashlib.sha1(
                KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            ).digest()
        )
        assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: " + accept + b"\r\n" in response
        assert b"x-test: 1\r\n" in response
        scope = log[0]
        assert (
            scope["path"] == "/ws"
            and scope["query_string"] == b"x=1"
            and scope["raw_path"] == b"/ws"
        )
        assert scope["subprotocols"] == ["a", "b"]
        assert scope["asgi"]["spec_version"] == "2.4"
        # The denial-response extension; turbows' protocol adds the hub's fan-out writer.
        assert scope["extensions"].pop("websocket.http.response") == {}
        if cls is WebSocketProtocol:
            assert type(scope["extensions"].pop("turbows.fanout")).__name__ == "FanoutWriter"
        assert scope["extensions"] == {}
        assert (b"host", b"example.com") in scope["headers"]
        h.feed(
            mask_frame(TEXT, "żółw".encode(), fin=False)
            + mask_frame(PING, b"hi")
            + mask_frame(CONT, b"!")
        )
        h.feed(mask_frame(BINARY, b"\x00\x01"))
        await settle()
        assert server_frames(h.transport.take()) == [
            (0x8A, b"hi"),
            (0x81, "żółw!".encode()),
            (0x82, b"\x00\x01"),
        ]
        h.feed(mask_frame(CLOSE, b"\x0f\xa0bye"))
        await settle()
        assert server_frames(h.transport.take()) == [(0x88, b"\x0f\xa0bye")]
        assert {"type": "websocket.disconnect", "code": 4000, "reason": "bye"} in log
        assert h.transport.closed

    run(main())


@BOTH
@pytest.mark.parametrize(
    "bad, status",
    [
        (request(version="12"), 400),
        (request(key="short"), 400),
        (request().replace(b"upgrade: websocket\r\n", b""), 426),
        (
            request().replace(
                b"connection: Upgrade\r\n", b"connection: keep-alive\r\n"
            ),
            426,
        ),
        (request().replace(b"GET", b"POST"), 405),
    ],
)
def test_invalid_handshakes_are_refused(cls: type, bad: bytes, status: int) -> None:
    async def main() -> None:
        log: list = []
        h = Harness(cls, echo_app(log))
        h.feed(bad)
        await settle()
        assert h.transport.take().startswith(f"HTTP/1.1 {status} ".encode())
        assert h.transport.closed and log == []

    run(main())


@BOTH
@pytest.mark.parametrize(
    "frames, code",
    [
        (mask_frame(TEXT, b"\xff"), 1007),
        (mask_frame(TEXT, b"\xce", fin=False) + mask_frame(CONT, b"\xba\xff"), 1007),
        (mask_frame(BINARY, b"x" * 1001), 1009),
        (mask_frame(7, b""), 1002),
        (mask_frame(CLOSE, b"\x03\xed"), 1002),
    ],
)
def test_protocol_errors_close_with_the_right_code(
    cls: type, frames: bytes, code: int
) -> None:
    async def main() -> None:
        log: list = []
        h = Harness(cls, echo_app(log), ws_per_message_deflate=False)
        h.feed(request())
        await settle()
        h.transport.take()
        h.feed(frames)
        await settle()
        sent = server_frames(h.transport.take())
        assert sent[-1][0] == 0x88 and int.from_bytes(sent[-1][1][:2], "big") == code
        assert log[-1]["type"] == "websocket.disconnect" and log[-1]["code"] == code
        assert h.transport.closed

    run(main())


def test_invalid_utf8_fails_before_the_frame_ends() -> None:
    async def main() -> None:
        h = Harness(WebSocketProtocol, echo_app([]), ws_per_message_deflate=False)
        h.feed(request())
        await settle()
        h.transport.take()
        frame = mask_frame(TEXT, b"ok\xff" + b"x" * 500)
        h.feed(frame[:20])  # the frame is far from complete
        sent = server_frames(h.transport.take())
        assert sent and int.from_bytes(sent[-1][1][:2], "big") == 1007

    run(main())


def test_a_failure_while_building_the_scope_is_a_500_not_an_exception() -> None:
    class BrokenState(dict):  # type: ignore[type-arg]
        def copy(self) -> Any:
            raise RuntimeError("a broken lifespan state")

    async def main() -> None:
        log: list = []
        h = Harness(WebSocketProtocol, echo_app(log), app_state=BrokenState())
        h.feed(request())  # nothing escapes data_received
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert h.transport.closed and log == []

    run(main())


def test_a_non_ascii_request_target_is_refused_with_400() -> None:
    # uvicorn's HTTP parsers refuse it before any websocket protocol sees it; the
    # protocol's own parser refuses it too, rather than fail building the scope.
    async def main() -> None:
        log: list = []
        h = Harness(WebSocketProtocol, echo_app(log))
        h.feed(request(path="/caf\xe9"))
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert h.transport.closed and log == []

    run(main())


@BOTH
def test_close_before_accept_is_403(cls: type) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async def main() -> None:
        h = Harness(cls, app)
        h.feed(request())
        await settle()
        assert h.transport.take().startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert h.transport.closed

    run(main())


@BOTH
def test_shutdown_closes_with_1012(cls: type) -> None:
    async def main() -> None:
        log: list = []
        h = Harness(cls, echo_app(log))
        h.feed(request())
        await settle()
        h.transport.take()
        h.protocol.shutdown()
        await settle()
        assert server_frames(h.transport.take()) == [(0x88, b"\x03\xf4")]
        assert {"type": "websocket.disconnect", "code": 1012} in log

    run(main())


def test_reading_pauses_while_the_app_lags() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def main() -> None:
        h = Harness(WebSocketProtocol, app, ws_max_queue=4)
        h.feed(request())
        await settle()
        for _ in range(4):
            h.feed(mask_frame(TEXT, b"x"))
        assert not h.transport.reading
        gate.set()
        await settle()
        assert h.transport.reading

    gate = asyncio.Event()
    run(main())


def test_permessage_deflate_negotiated_and_bounded() -> None:
    async def main() -> None:
        log: list = []
        h = Harness(WebSocketProtocol, echo_app(log), ws_max_size=10_000)
        h.feed(
            request(
                extra="sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"
            )
        )
        await settle()
        response = h.transport.take()
        assert (
            b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; client_max_window_bits=12\r\n"
            in response
        )
        compressor = zlib.compressobj(wbits=-12)
        data = compressor.compress(b"hello " * 100) + compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        h.feed(mask_frame(TEXT, data[:-4], rsv=4))
        await settle()
        ((first, payload),) = server_frames(h.transport.take())
        assert first == 0xC1
        assert (
            zlib.decompressobj(wbits=-12).decompress(payload + b"\x00\x00\xff\xff")
            == b"hello " * 100
        )
        # a bomb: 10 MB of zeros in a few KiB, far beyond ws_max_size
        bomb = compressor.compress(bytes(10_000_000)) + compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        h.feed(mask_frame(BINARY, bomb[:-4], rsv=4))
        await settle()
        sent = server_frames(h.transport.take())
        assert int.from_bytes(sent[-1][1][:2], "big") == 1009

    run(main())


@pytest.mark.parametrize(
    "offer, answer",
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        ),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; unknown", None),
        (
            "x-other, permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
    ],
)
def test_deflate_negotiation_matches_websockets(offer: str, answer: str | None) -> None:
    from turbows._handshake import negotiate_deflate, parse_extensions
    from websockets.exceptions import NegotiationError
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.headers import build_extension, parse_extension

    negotiated = negotiate_deflate(parse_extensions([offer]))
    assert (negotiated[0] if negotiated else None) == answer
    factory = ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12
    )
    expected = None
    for name, params in parse_extension(offer):
        if name != "permessage-deflate":
            continue
        try:
            params_out, _ = factory.process_request_params(params, [])
        except NegotiationError:
            continue
        expected = build_extension([(name, params_out)])
        break
    assert answer == expected


@BOTH
def test_app_close_waits_for_the_peer_then_times_out(cls: type) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})

    async def main() -> None:
        h = Harness(cls, app)
        h.protocol.close_timeout = 0.2
        h.feed(request())
        await settle()
        assert server_frames(h.transport.take().split(b"\r\n\r\n", 1)[1]) == [
            (0x88, b"\x0f\xa0bye")
        ]
        assert not h.transport.closed  # waiting for the peer's close
        await asyncio.sleep(0.4)
        assert h.transport.closed  # uvicorn's close timeout

    run(main())


@BOTH
def test_app_close_then_peer_close_completes_the_handshake(cls: type) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    async def main() -> None:
        h = Harness(cls, app)
        h.feed(request())
        await settle()
        h.transport.take()
        h.feed(mask_frame(TEXT, b"ignored") + mask_frame(CLOSE, b"\x03\xe8"))
        await settle()
        assert h.transport.closed and h.transport.take() == b""

    run(main())


async def waiting_receives(count: int) -> tuple[Harness, list[Any], asyncio.Event]:
    """An accepted connection whose app has ``count`` receive() calls waiting at once,
    until the event returned is set."""
    calls: list[Any] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        calls.extend(asyncio.ensure_future(receive()) for _ in range(count))
        await done.wait()

    h = Harness(WebSocketProtocol, app, ws_per_message_deflate=False)
    h.feed(request())
    await settle()
    return h, calls, done


def test_concurrent_receives_each_wait_on_their_own() -> None:
    # Cancelling one receive() must not wake the others with CancelledError; messages
    # go to the receivers still waiting, oldest first, none lost.
    async def main() -> None:
        h, (first, second, third), done = await waiting_receives(3)
        first.cancel()
        await settle()
        h.feed(mask_frame(TEXT, b"one"))
        await settle()
        assert first.cancelled() and not third.done()
        assert second.result() == {"type": "websocket.receive", "text": "one"}
        h.feed(mask_frame(TEXT, b"two"))
        await settle()
        assert third.result() == {"type": "websocket.receive", "text": "two"}
        done.set()
        h.protocol.connection_lost(None)
        await settle()

    run(main())


def test_a_receive_woken_then_cancelled_passes_its_message_on() -> None:
    async def main() -> None:
        h, (first, second), done = await waiting_receives(2)
        h.feed(mask_frame(TEXT, b"one"))  # wakes the first, which has not run yet...
        first.cancel()  # ...and is cancelled before it takes the message
        await settle()
        assert first.cancelled()
        assert second.result() == {"type": "websocket.receive", "text": "one"}
        done.set()
        h.protocol.connection_lost(None)
        await settle()

    run(main())


def test_a_transport_that_feeds_the_protocol_from_write_fails_it_cleanly() -> None:
    # feed() is not re-entrant (it holds a pointer into the buffer it unmasks into):
    # re-entered, through a pong's write here, the connection fails with 1011.
    class FeedingTransport(Transport):
        def write(self, data: Any) -> None:
            super().write(data)
            if data[:1] == b"\x8a":  # a pong: more data arrives, from inside write()
                self.protocol.data_received(mask_frame(BINARY, b"y" * 300))

    async def main() -> None:
        log: list = []
        h = Harness(WebSocketProtocol, echo_app(log), ws_per_message_deflate=False, transport=FeedingTransport())
        h.feed(request())
        await settle()
        h.transport.take()
        h.feed(mask_frame(BINARY, b"x" * 200, fin=False) + mask_frame(PING, b"p") + mask_frame(CONT, b"z" * 100))
        await settle()
        sent = server_frames(h.transport.take())
        assert sent[0] == (0x8A, b"p")
        assert sent[-1][0] == 0x88 and int.from_bytes(sent[-1][1][:2], "big") == 1011
        assert log[-1]["type"] == "websocket.disconnect" and log[-1]["code"] == 1011
        assert h.transport.closed

    run(main())
