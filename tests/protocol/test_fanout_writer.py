"""The native protocol's fan-out writer (``scope["extensions"]["turbows.fanout"]``), driven directly.

A real event loop and the recording transport of ``protocol_harness``, with
a write buffer size the test sets and a count of the transport's writes, so
each rule of the writer shows exactly: nothing before accept, one write per
loop turn, the app's own sends after what was queued, frames held while the
transport is paused, ``max_pending`` against queue plus buffer, nothing
after a close, and permessage-deflate frames a client can inflate.
"""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
import zlib
from typing import Any

import pytest
from protocol_harness import Harness, Transport, request, server_frames, settle
from wsframes import mask_frame

pytest.importorskip("turbows._protocol_c", reason="the compiled protocol is not built")

from turbows._frames_c import ServerFrame  # noqa: E402
from turbows._protocol_c import FANOUT_EXTENSION, WebSocketProtocol  # noqa: E402

TEXT, CLOSE = 1, 8


class BufferedTransport(Transport):
    """The harness' transport, with a write buffer of the size the test says and a count of writes."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer_size = 0
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1
        super().write(data)

    def get_write_buffer_size(self) -> int:
        return self.buffer_size


def app(log: list, commands: asyncio.Queue) -> Any:
    """Accepts, then does what the test puts in ``commands`` (ASGI messages to send)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        log.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        receiving = asyncio.ensure_future(_receive_all(receive, log))
        while True:
            message = await commands.get()
            if message is None:
                break
            await send(message)
        await receiving

    return asgi


async def _receive_all(receive: Any, log: list) -> None:
    while True:
        message = await receive()
        log.append(message)
        if message["type"] == "websocket.disconnect":
            return


async def connected(
    extra: str = "", cls: type = WebSocketProtocol, **config: Any
) -> tuple[Harness, Any, list, asyncio.Queue]:
    log: list = []
    commands: asyncio.Queue = asyncio.Queue()
    h = Harness(cls, app(log, commands), transport=BufferedTransport(), **config)
    h.feed(request(extra=extra))
    await settle()
    assert h.transport.take().startswith(b"HTTP/1.1 101 ")
    h.transport.writes = 0
    return h, log[0]["extensions"][FANOUT_EXTENSION], log, commands


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_not_before_accept() -> None:
    async def main() -> None:
        started = asyncio.Event()
        scopes: list = []

        async def waits(scope: Any, receive: Any, send: Any) -> None:
            scopes.append(scope)
            started.set()
            await asyncio.sleep(3600)

        h = Harness(WebSocketProtocol, waits, transport=BufferedTransport())
        h.feed(request())
        await started.wait()
        writer = scopes[0]["extensions"][FANOUT_EXTENSION]
        with pytest.raises(RuntimeError, match="not accepted"):
            writer.write_frame(ServerFrame("early"))
        with pytest.raises(RuntimeError, match="not accepted"):
            writer.close(1000)
        await settle()
        assert h.transport.take() == b""  # nothing, not even a 101
        h.transport.close()
        await settle()

    run(main())


def test_frames_of_one_turn_are_one_write() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        assert [writer.write_frame(ServerFrame(f"m{n}")) for n in range(5)] == [1] * 5
        assert h.transport.written == b"" and writer.pending == sum(len(f"m{n}") + 2 for n in range(5))
        await settle()
        assert server_frames(h.transport.take()) == [(0x81, f"m{n}".encode()) for n in range(5)]
        assert (h.transport.writes, writer.writes, writer.frames_written, writer.pending) == (1, 1, 5, 0)
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


def test_the_apps_own_send_comes_after_what_was_queued() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        writer.write_frame(ServerFrame("hub 1"))
        writer.write_frame(ServerFrame(b"hub 2"))
        commands.put_nowait({"type": "websocket.send", "text": "app"})
        await settle()
        assert server_frames(h.transport.take()) == [(0x81, b"hub 1"), (0x82, b"hub 2"), (0x81, b"app")]
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


def test_a_paused_transport_holds_the_frames_and_counts_them() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        h.transport.buffer_size = 70_000
        h.protocol.pause_writing()
        frame = ServerFrame("x" * 1000)
        assert writer.write_frame(frame, 100_000) == 1
        await settle()
        assert h.transport.written == b""  # held: the transport is above its high-water mark
        assert writer.pending == 70_000 + len(frame.data)
        # Queue plus buffer against max_pending: 28 more fit under 100,000, the next does not.
        answers = [writer.write_frame(frame, 100_000) for _ in range(30)]
        assert answers == [1] * 28 + [0] * 2
        assert writer.pending <= 100_000
        h.transport.buffer_size = 0
        h.protocol.resume_writing()
        await settle()
        assert server_frames(h.transport.take()) == [(0x81, b"x" * 1000)] * 29
        assert h.transport.writes == 1 and writer.pending == 0
        # Nothing pending: a frame larger than the bound still goes.
        assert writer.write_frame(ServerFrame("y" * 500), 100) == 1
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


def test_nothing_after_a_close() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        writer.write_frame(ServerFrame("before the close"))
        h.feed(mask_frame(CLOSE, b"\x03\xe8"))  # the peer closes while the frame waits for its turn
        await settle()
        frames = server_frames(h.transport.take())
        assert frames == [(0x88, b"\x03\xe8")], frames  # the close echo only: the frame was dropped
        assert writer.closed and writer.write_frame(ServerFrame("after")) == -1
        assert writer.close(1000) is False
        commands.put_nowait(None)
        await settle()

    run(main())


def test_close_from_the_writer() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        writer.write_frame(ServerFrame("dropped: queued when the close came"))
        assert writer.close(1013, "slow consumer") is True
        await settle()
        assert server_frames(h.transport.take()) == [(0x88, b"\x03\xf5slow consumer")]
        assert {"type": "websocket.disconnect", "code": 1013, "reason": "slow consumer"} in log
        assert writer.closed and writer.write_frame(ServerFrame("after")) == -1
        assert writer.close(1013) is False
        # The app's own send after that close is refused as after its own close.
        commands.put_nowait({"type": "websocket.send", "text": "late"})
        commands.put_nowait(None)
        h.feed(mask_frame(CLOSE, b"\x03\xf5"))
        await settle()

    run(main())


def _inflate(payloads: list[bytes], decoder: Any = None, wbits: int = 15) -> list[bytes]:
    out = []
    for payload in payloads:
        d = decoder or zlib.decompressobj(wbits=-wbits)
        out.append(d.decompress(payload + b"\x00\x00\xff\xff"))
    return out


@pytest.mark.parametrize(
    "offer, takeover, wbits",
    [
        ("permessage-deflate; client_max_window_bits", True, 15),
        ("permessage-deflate; server_no_context_takeover", False, 15),
        ("permessage-deflate; server_no_context_takeover; server_max_window_bits=10", False, 10),
    ],
)
def test_deflate_frames_inflate(offer: str, takeover: bool, wbits: int) -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(
            extra=f"sec-websocket-extensions: {offer}\r\n", ws_per_message_deflate=True
        )
        messages = [("hello hello hello " * n).encode() for n in range(1, 6)]
        frames = [ServerFrame(m.decode()) for m in messages]
        for frame in frames:
            writer.write_frame(frame)
        commands.put_nowait({"type": "websocket.send", "text": "from the app"})
        await settle()
        written = server_frames(h.transport.take())
        assert [first for first, _ in written] == [0xC1] * 6  # FIN, RSV1, text
        payloads = [payload for _, payload in written]
        decoder = zlib.decompressobj(wbits=-wbits) if takeover else None
        assert _inflate(payloads, decoder, wbits) == messages + [b"from the app"]
        if not takeover:
            # Shared: the frame compressed once per window size, the same object for the next writer.
            assert writer.write_frame(frames[0]) == 1
            assert writer.pending == len(written[0][1]) + 2
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


def test_a_lost_connection_frees_its_protocol_and_its_writer_says_so() -> None:
    """The scope holds the writer and the writer held the protocol: connection_lost ends that cycle,
    so the protocol goes with its last reference (no collector needed) while a hub still holds the writer."""

    class Weak(WebSocketProtocol):  # a __weakref__ slot, to watch it go
        pass

    async def main() -> None:
        h, writer, log, commands = await connected(cls=Weak, ws_per_message_deflate=False)
        writer.write_frame(ServerFrame("queued when the connection went"))
        protocol = weakref.ref(h.protocol)
        commands.put_nowait(None)
        h.transport.close()
        await settle()
        assert writer.closed and writer.pending == 0
        assert writer.write_frame(ServerFrame("after")) == -1 and writer.close() is False
        gc.disable()
        try:
            h.protocol = h.transport.protocol = None
            assert protocol() is None
        finally:
            gc.enable()

    run(main())


class Interrupted(BaseException):
    pass


class InterruptingTransport(BufferedTransport):
    """A transport whose write raises a BaseException: what ends a loop turn early."""

    interrupt = False

    def write(self, data: Any) -> None:
        if self.interrupt:
            self.interrupt = False
            raise Interrupted
        super().write(data)


def test_a_base_exception_while_writing_one_connection_leaves_the_others_able_to_write() -> None:
    async def main() -> None:
        first, first_writer, _, first_commands = await connected(ws_per_message_deflate=False)
        log: list = []
        commands: asyncio.Queue = asyncio.Queue()
        second = Harness(WebSocketProtocol, app(log, commands), transport=InterruptingTransport())
        second.feed(request())
        await settle()
        second.transport.take()
        third, third_writer, _, third_commands = await connected(ws_per_message_deflate=False)
        second_writer = log[0]["extensions"][FANOUT_EXTENSION]
        loop = asyncio.get_running_loop()
        seen: list = []
        loop.set_exception_handler(lambda loop, context: seen.append(context.get("exception")))
        second.transport.interrupt = True
        for writer in (first_writer, second_writer, third_writer):
            assert writer.write_frame(ServerFrame("one")) == 1
        await settle()
        assert any(isinstance(error, Interrupted) for error in seen), seen
        assert server_frames(first.transport.take()) == [(0x81, b"one")]
        # The writer after the interrupted one was never flushed, but is not stuck: its next
        # frame schedules a write, which carries both.
        assert third_writer.write_frame(ServerFrame("two")) == 1
        await settle()
        assert server_frames(third.transport.take()) == [(0x81, b"one"), (0x81, b"two")]
        for h, queue in ((first, first_commands), (second, commands), (third, third_commands)):
            queue.put_nowait(None)
            h.transport.close()
        await settle()

    run(main())


def test_frames_queued_as_the_app_returns_are_written_before_the_transport_closes() -> None:
    async def main() -> None:
        scopes: list = []

        async def publishes_and_returns(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            writer = scope["extensions"][FANOUT_EXTENSION]
            assert writer.write_frame(ServerFrame("last words")) == 1  # counted as delivered
            scopes.append(scope)

        h = Harness(WebSocketProtocol, publishes_and_returns, transport=BufferedTransport())
        h.feed(request())
        await settle()
        assert scopes and h.transport.closed
        data = h.transport.take()
        assert data.startswith(b"HTTP/1.1 101 ")
        assert server_frames(data[data.index(b"\r\n\r\n") + 4 :]) == [(0x81, b"last words")]

    run(main())


def test_frames_queued_before_a_shutdown_go_before_its_close() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        assert writer.write_frame(ServerFrame("before the shutdown")) == 1
        h.protocol.shutdown()
        await settle()
        assert server_frames(h.transport.take()) == [(0x81, b"before the shutdown"), (0x88, b"\x03\xf4")]
        commands.put_nowait(None)
        await settle()

    run(main())


def test_a_skipped_frame_never_reaches_the_compressor_with_context_takeover() -> None:
    """With context takeover the compressor's state is the peer's inflater's: a frame skipped over
    ``max_pending`` must not have been compressed, or every later message refers back to bytes the
    peer never got. One inflater for the whole stream, as the peer has, reads every frame written."""

    async def main() -> None:
        h, writer, log, commands = await connected(
            extra="sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n",
            ws_per_message_deflate=True,
        )
        # Unlike each other but for what the compressor finds in the ones before (a periodic text
        # could land a wrong back-reference on equal bytes by chance).
        sent = ["".join(random.Random(n % 4).choice("abcdefgh ") for _ in range(300)) + str(n) for n in range(8)]
        assert writer.write_frame(ServerFrame(sent[0]), 1000) == 1
        await settle()
        h.transport.buffer_size = 5000  # the peer stalls: over the bound, the next ones are skipped
        assert [writer.write_frame(ServerFrame(text), 1000) for text in sent[1:4]] == [0, 0, 0]
        await settle()
        h.transport.buffer_size = 0  # drained
        assert [writer.write_frame(ServerFrame(text), 1000) for text in sent[4:]] == [1] * 4
        commands.put_nowait({"type": "websocket.send", "text": "from the app"})
        await settle()
        written = server_frames(h.transport.take())
        assert [first for first, _ in written] == [0xC1] * 6
        inflater = zlib.decompressobj(wbits=-15)
        got = _inflate([payload for _, payload in written], inflater)
        assert got == [text.encode() for text in [sent[0], *sent[4:], "from the app"]]
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


def test_calls_from_another_thread_are_refused() -> None:
    """The writer and its protocol belong to the connection's loop: from another thread, a write
    could interleave with connection_lost. Refused, with nothing queued and nothing written."""
    import threading

    from turbows._protocol_c import write_to_all

    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        errors: list = []

        def elsewhere() -> None:
            for call in (
                lambda: writer.write_frame(ServerFrame("from a thread")),
                lambda: write_to_all(ServerFrame("from a thread"), (writer,)),
                lambda: writer.close(1000),
            ):
                try:
                    call()
                except RuntimeError as error:
                    errors.append(str(error))

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert len(errors) == 3 and all("event loop" in error for error in errors), errors
        await settle()
        assert h.transport.take() == b"" and writer.pending == 0 and not writer.closed
        assert writer.write_frame(ServerFrame("from the loop")) == 1
        await settle()
        assert server_frames(h.transport.take()) == [(0x81, b"from the loop")]
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())


# -- which member the hub makes, and what it does, on this protocol ----------------------------


def _classes() -> dict[str, type]:
    from starlette.websockets import WebSocket as StarletteWebSocket

    from turbows._cores import CORES, SHAPES

    # Starlette's class, each core, and the compiled core's other shape (both are built here).
    return {"starlette": StarletteWebSocket, **CORES, **{f"shape-{name}": cls for name, cls in SHAPES.items()}}


CLASSES = _classes()


def member_app(cls: type, wrap_send: bool, override_send: bool, body: Any, results: dict) -> Any:
    """An app that accepts through a WebSocket of ``cls``, makes the hub's member for it and runs ``body``.
    ``wrap_send``: the ASGI send is a middleware's wrapper; ``override_send``: ``send`` is set on the
    instance. Either records every message in ``results["seen"]``."""
    from turbows import _runtime
    from turbows._delivery import Counters, Limits, member_for

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        seen = results["seen"] = []

        async def wrapped(message: Any) -> None:
            seen.append(message)
            await send(message)

        ws = cls(scope, receive, wrapped if wrap_send else send)
        await ws.accept()
        if override_send:
            plain = ws.send

            async def logged(message: Any) -> None:
                seen.append(message)
                await plain(message)

            ws.send = logged
        member = member_for(ws, 1, lambda member: None, Limits(1 << 20, True), Counters(), _runtime.current())
        member.rooms.add("room")
        results["member"] = type(member).__name__
        try:
            await body(ws, member)
        finally:
            member.end()

    return asgi


@pytest.mark.parametrize("how", ["instance override", "wrapped ASGI send"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_an_instance_override_or_a_wrapped_send_keeps_the_generic_path(name: str, how: str) -> None:
    from turbows._delivery import Outgoing

    async def body(ws: Any, member: Any) -> None:
        member.offer(Outgoing("from the hub", 12))
        for _ in range(50):
            if any(message.get("text") == "from the hub" for message in results["seen"]):
                break
            await asyncio.sleep(0)
        await ws.close()

    async def main() -> None:
        h = Harness(
            WebSocketProtocol,
            member_app(CLASSES[name], how == "wrapped ASGI send", how == "instance override", body, results),
            transport=BufferedTransport(),
            ws_per_message_deflate=False,
        )
        h.feed(request())
        await settle()
        await settle()
        data = h.transport.take()
        assert results["member"] == "QueuedMember"
        assert {"type": "websocket.send", "text": "from the hub"} in results["seen"]
        assert (0x81, b"from the hub") in server_frames(data[data.index(b"\r\n\r\n") + 4 :])
        h.transport.close()
        await settle()

    results: dict = {}
    run(main())


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_plain_websocket_gets_the_native_member(name: str) -> None:
    async def body(ws: Any, member: Any) -> None:
        await ws.close()

    async def main() -> None:
        h = Harness(WebSocketProtocol, member_app(CLASSES[name], False, False, body, results), transport=BufferedTransport())
        h.feed(request())
        await settle()
        assert results["member"] == "NativeMember"
        h.transport.close()
        await settle()

    results: dict = {}
    run(main())


@pytest.mark.parametrize("path", ["native", "generic"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_after_the_hub_closes_a_slow_member_the_apps_send_gets_websocket_disconnected(name: str, path: str) -> None:
    """On either path: the hub's close of a slow member leaves the app's WebSocket as its own close would."""
    from starlette.websockets import WebSocketDisconnected

    from turbows._delivery import _SLOW

    async def body(ws: Any, member: Any) -> None:
        member.end(_SLOW)
        await settle()
        for attempt in ("send_text", "close"):
            try:
                await (ws.send_text("late") if attempt == "send_text" else ws.close())
            except Exception as error:
                results[attempt] = type(error)
            else:
                results[attempt] = None

    async def main() -> None:
        h = Harness(
            WebSocketProtocol,
            member_app(CLASSES[name], False, path == "generic", body, results),
            transport=BufferedTransport(),
            ws_per_message_deflate=False,
        )
        h.feed(request())
        await settle()
        await settle()
        assert results["member"] == ("NativeMember" if path == "native" else "QueuedMember")
        data = h.transport.take()
        assert server_frames(data[data.index(b"\r\n\r\n") + 4 :]) == [(0x88, b"\x03\xf5slow consumer")]
        assert results["send_text"] is WebSocketDisconnected and results["close"] is WebSocketDisconnected
        h.transport.close()
        await settle()

    results: dict = {}
    run(main())


def test_a_lost_native_member_is_not_counted_while_its_app_is_not_receiving() -> None:
    """The peer vanishes while the app waits on something else: the WebSocket's states still say
    connected, but the writer knows, so the hub's counts drop it at once."""
    import turbows

    async def main() -> None:
        hub = turbows.Hub()
        joined = asyncio.Event()
        release = asyncio.Event()

        async def waits(scope: Any, receive: Any, send: Any) -> None:
            ws = turbows.WebSocket(scope, receive, send)
            await ws.accept()
            await hub.add("room", ws)
            joined.set()
            await release.wait()  # not receiving: it has not seen the disconnect

        h = Harness(WebSocketProtocol, waits, transport=BufferedTransport())
        h.feed(request())
        await joined.wait()
        assert hub.members("room") == 1 and hub.stats()["native"] == 1
        h.transport.close()
        await settle()
        assert hub.members("room") == 0 and hub.rooms() == [] and hub.stats()["disconnected"] == 1
        release.set()
        await settle()

    run(main())


def test_an_app_send_waiting_for_the_buffer_keeps_its_place_before_later_hub_frames() -> None:
    async def main() -> None:
        h, writer, log, commands = await connected(ws_per_message_deflate=False)
        h.protocol.pause_writing()
        assert writer.write_frame(ServerFrame("hub before")) == 1
        commands.put_nowait({"type": "websocket.send", "text": "app"})
        await settle()  # the app's send waits for the buffer to drain
        assert writer.write_frame(ServerFrame("hub after")) == 1
        h.protocol.resume_writing()
        await settle()
        frames = server_frames(h.transport.take())
        assert frames == [(0x81, b"hub before"), (0x81, b"app"), (0x81, b"hub after")], frames
        assert writer.pending == 0
        commands.put_nowait(None)
        h.transport.close()
        await settle()

    run(main())
