"""The hub's native path on turbows' own protocol: one frame per message, written once per loop turn.

The server is uvicorn on ``turbows.uvicorn:WebSocketProtocol``, on each core;
the app is ``hubapp.py``, whose control connection reads a member's fan-out
writer (``scope["extensions"]["turbows.fanout"]``): how many transport
writes it made and how many frames they carried. The contract itself
(order, exclude, slow and dead members, races) runs on this server too, in
``test_hub.py``; here, what only the native path has: coalescing,
permessage-deflate on the shared frame, and misuse of the writer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Iterator

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from turbows._cores import NO_EXTENSIONS

from harness import ServerProcess, recv, run
from test_hub import WAIT, HubClient, messages, tagged

pytestmark = pytest.mark.skipif(NO_EXTENSIONS, reason="TURBOWS_NO_EXTENSIONS is set: no native protocol")


@pytest.fixture(scope="module", params=["speedups", "pure"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    process = ServerProcess("uvicorn-turbows", request.param)
    try:
        process.start().check()
        yield process
    finally:
        process.stop()
        process.discard_log()
    # A misuse that crashed the process would have failed the test that caused it (see below).


async def writer(hub: HubClient, name: str) -> dict[str, int]:
    reply = await hub.command({"writer": name})
    assert reply["writer"] is not None, "the member has no fan-out writer: not on the native path"
    return reply["writer"]


def test_members_are_native(server: ServerProcess) -> None:
    async def scenario() -> None:
        hub = HubClient(server)
        members = [await hub.member(f"m{n}", ["room"]) for n in range(3)]
        reply = await hub.publish("room", tag="t", count=5)
        assert reply["stats"]["native"] == 3
        for ws in members:
            assert await messages(ws, 5) == tagged("t", 5)
            await ws.close()
        await hub.close()

    run(scenario())


def test_publishes_in_one_loop_turn_are_one_write_per_member(server: ServerProcess) -> None:
    """Fifty publishes from fifty tasks in one turn: each member's writer makes one write of fifty frames."""

    async def scenario() -> None:
        hub = HubClient(server)
        members = [await hub.member(f"m{n}", ["room"]) for n in range(3)]
        before = [await writer(hub, f"m{n}") for n in range(3)]
        reply = await hub.publish("room", tag="burst", count=50, concurrent=True)
        assert reply["published"] == 50
        for n, ws in enumerate(members):
            received = await messages(ws, 50)
            assert sorted(received, key=lambda m: int(m.split(":")[1])) == tagged("burst", 50)
            after = await writer(hub, f"m{n}")
            assert (after["frames"] - before[n]["frames"], after["writes"] - before[n]["writes"]) == (50, 1)
        # All members got them in one order (the tasks' order, the same for everyone).
        await hub.close()
        for ws in members:
            await ws.close()

    run(scenario())


def test_a_publishing_loop_writes_in_batches(server: ServerProcess) -> None:
    """One task publishing 64 messages in a loop: each member gets every one in order, in a few writes."""
    from turbows._hub import _NATIVE_BATCH_MESSAGES

    async def scenario() -> None:
        hub = HubClient(server)
        member = await hub.member("m", ["room"])
        before = await writer(hub, "m")
        await hub.publish("room", tag="loop", count=64)
        assert await messages(member, 64) == tagged("loop", 64)
        after = await writer(hub, "m")
        assert after["frames"] - before["frames"] == 64
        assert after["writes"] - before["writes"] <= 64 // _NATIVE_BATCH_MESSAGES
        await member.close()
        await hub.close()

    run(scenario())


async def _raw_member(server: ServerProcess, hub: HubClient, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A member over a plain socket: the handshake by hand, no extension, then raw frames."""
    reader, stream = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = f"/hub/{hub.key}/member/{name}?rooms=room"
    stream.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, stream


async def _raw_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame, read off the socket byte by byte as the RFC lays it out (unmasked)."""
    first, second = await asyncio.wait_for(reader.readexactly(2), WAIT)
    assert second & 0x80 == 0, "a server frame is never masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first, await asyncio.wait_for(reader.readexactly(length), WAIT)


def test_coalesced_frames_are_whole_frames_on_the_wire(server: ServerProcess) -> None:
    """What one coalesced write puts on the socket parses as consecutive final text frames, in order."""

    async def scenario() -> None:
        hub = HubClient(server)
        reader, stream = await _raw_member(server, hub, "raw")
        assert await _raw_frame(reader) == (0x81, b"ack:joined")
        sizes = [0, 1, 125, 126, 65535, 65536, 300]
        values = ["v" * size for size in sizes]
        before = await writer(hub, "raw")
        await hub.publish("room", values=values, concurrent=True)
        frames = [await _raw_frame(reader) for _ in values]
        assert sorted(frames, key=lambda f: len(f[1])) == [(0x81, value.encode()) for value in sorted(values, key=len)]
        after = await writer(hub, "raw")
        assert (after["frames"] - before["frames"], after["writes"] - before["writes"]) == (len(values), 1)
        stream.close()
        await hub.close()

    run(scenario())


def test_deflate_members_get_valid_compressed_frames(server: ServerProcess) -> None:
    """Members with and without permessage-deflate, with and without our context takeover (shared or
    per member), all get the same messages; an app's own send between the hub's frames stays in order."""

    async def scenario() -> None:
        hub = HubClient(server)
        plain = await hub.member("plain", ["room"], compression=None)
        takeover = await hub.member("takeover", ["room"])  # websockets' default offer: our context is kept
        shared = [
            await hub.member(
                f"shared{n}", ["room"], compression=None,
                extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True)],
            )
            for n in range(2)
        ]
        small_window = await hub.member(
            "small", ["room"], compression=None,
            extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True, server_max_window_bits=10)],
        )
        everyone = [plain, takeover, *shared, small_window]
        assert [ws.protocol.extensions != [] for ws in everyone] == [False, True, True, True, True]
        values = [f"deflate:{n}:" + "abc" * (n * 7) for n in range(40)]
        await hub.publish("room", values=values)
        for ws in everyone:
            assert await messages(ws, 40) == values
        # The member publishes to its own room and at once sends with its own send: with context
        # takeover the compressor's order must be the wire's, or the client could not inflate it.
        await takeover.send(json.dumps({"publish": {"room": "room", "tag": "own", "count": 10}}))
        await takeover.send(json.dumps({"send_json": {"after": "own"}}))
        assert await messages(takeover, 10) == tagged("own", 10)
        assert json.loads(await recv(takeover, WAIT)) == {"after": "own"}
        stats = (await hub.command({"stats": True}))["stats"]
        assert stats["native"] == 5 and stats["disconnected"] == 0, stats
        for ws in everyone:
            await ws.close()
        await hub.close()

    run(scenario())


def test_misusing_the_writer_raises_and_never_crashes(server: ServerProcess) -> None:
    """Wrong types, an orphan writer and a closed connection: clear errors or plain answers, never a crash."""

    async def scenario() -> None:
        hub = HubClient(server)
        member = await hub.member("victim", ["room"])
        outcomes = (await hub.command({"misuse": "victim"}))["outcomes"]
        assert outcomes == {
            "write_frame(None)": "TypeError",
            "write_frame(str)": "TypeError",
            "write_frame(bytes)": "TypeError",
            "write_frame(frame, 'a')": "TypeError",
            "write_frame()": "TypeError",
            "close('x')": "TypeError",
            "close(1000, 5)": "TypeError",
            "close(999)": "ValueError",
            "close(1000, long)": "ValueError",
            "close(1000, surrogate)": "UnicodeEncodeError",
            "FanoutWriter()": "TypeError",
            "orphan.write_frame": "returned -1",
            "orphan.close": "returned False",
            "orphan.pending": "returned 0",
            "write_to_all(None, ())": "TypeError",
            "write_to_all(frame, list)": "TypeError",
            "write_to_all(frame, (str,))": "TypeError",
            "write_to_all(frame, (), 'a')": "TypeError",
            "write_to_all(frame, (orphan,))": "returned (0, [(0, -1)])",
            "write_to_all(frame, (writer,), skip=writer)": "returned (0, None)",
            "copy(writer)": "TypeError",
            "pickle(writer)": "TypeError",
            "pickle(frame)": "TypeError",
            "writer.pending": "returned 0",
            "writer.closed": "returned False",
            "writer.write_frame(frame)": "returned 1",
        }
        assert await recv(member, WAIT) == "misuse"  # the one right use went out, as a frame
        await member.close()
        state = await hub.stats_until(lambda s: s["members"] == 0, "the member to leave")
        assert state["stats"]["native"] == 1
        after = (await hub.command({"misuse": "victim"}))["outcomes"]
        assert after["writer.closed"] == "returned True"
        assert after["writer.write_frame(frame)"] == "returned -1"
        assert after["write_frame(None)"] == "TypeError"
        # Publishing to the room it left, and to nobody, still works; the server is alive.
        await hub.publish("room", tag="after", count=3)
        assert server.alive()
        await hub.close()

    run(scenario())


def test_a_stalled_member_is_bounded_and_the_others_keep_going(server: ServerProcess) -> None:
    """A native member that stops reading: its writer's pending (queue + transport buffer) stays under
    max_pending plus one message, it is closed with 1013, and the other member gets everything."""
    from test_hub import STALL_MAX_PENDING, STALL_ROUND, STALL_SIZE, _stalled_member, sequence_of

    async def scenario() -> None:
        hub = HubClient(server, max_pending=STALL_MAX_PENDING, on_slow="close")
        stalled = await _stalled_member(hub)
        fast = await hub.member("fast", ["room"])
        published, peak = 0, 0
        for _ in range(80):
            reading = asyncio.ensure_future(messages(fast, STALL_ROUND))
            reply = await hub.publish("room", tag="m", start=published, count=STALL_ROUND, size=STALL_SIZE, sample=True)
            assert [sequence_of(m) for m in await reading] == list(range(published, published + STALL_ROUND))
            published += STALL_ROUND
            peak = max(peak, reply["peak_pending"])
            if reply["stats"]["closed_slow"]:
                break
        assert reply["stats"]["native"] == 2
        assert (reply["stats"]["closed_slow"], reply["stats"]["members"]) == (1, 1), reply["stats"]
        assert STALL_MAX_PENDING - 2 * STALL_SIZE <= peak <= STALL_MAX_PENDING + STALL_SIZE, peak
        state = await writer(hub, "stalled")
        assert state["closed"] and state["pending"] <= STALL_MAX_PENDING + STALL_SIZE, state
        await stalled.close()
        await fast.close()
        await hub.close()

    run(scenario(), 120)


def _chained(count: int, start: int = 0) -> list[str]:
    """Messages that a compressor with context takeover encodes partly as references into the one
    before (each repeats 2 KB of the last's), the rest random (so they fill a buffer, compressed)."""
    import random

    def fresh(n: int) -> str:
        return base64.b64encode(random.Random(n).randbytes(9 * 1024)).decode()

    return [f"{n}:" + fresh(n) + fresh(n - 1)[:2048] for n in range(start, start + count)]


def test_a_member_that_missed_messages_under_drop_still_inflates_what_follows(server: ServerProcess) -> None:
    """on_slow="drop" with websockets' default permessage-deflate (our context kept): the messages a
    stalled member missed never reached our compressor, so every one it gets afterwards inflates."""
    import socket

    from test_hub import STALL_MAX_PENDING, _drain

    async def scenario() -> None:
        hub = HubClient(server, max_pending=STALL_MAX_PENDING, on_slow="drop")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        stalled = await hub.member("stalled", ["room"], sock=sock, max_queue=1)
        assert stalled.protocol.extensions != []  # deflate, with the server's context takeover
        published = 0
        for _ in range(80):
            reply = await hub.publish("room", values=_chained(50, published))
            published += 50
            if reply["stats"]["dropped"]:
                break
        dropped = reply["stats"]["dropped"]
        assert dropped and reply["stats"]["native"] == 1, reply["stats"]
        # It reads again: what it was sent, whole, then a few more published once it keeps up.
        received = await messages(stalled, published - dropped)
        expected = {message.split(":", 1)[0]: message for message in _chained(published)}
        assert all(expected[message.split(":", 1)[0]] == message for message in received)
        after = _chained(5, published)
        await hub.publish("room", values=after)
        assert await messages(stalled, 5) == after
        await stalled.close()
        assert stalled.close_code == 1000 and await _drain(stalled) == []
        await hub.close()

    run(scenario(), 120)
