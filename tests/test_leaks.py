"""No leaks in the compiled core: reference counts and live objects stay flat.

Reference-counting mistakes in C show up as objects that never die (a missing
DECREF) or die early (a missing INCREF, usually a crash). These loops push
every message kind and every error path through the compiled core many times
and check that the objects handed in and out keep their reference counts and
that the number of live objects does not grow with the number of messages.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

import pytest

from turbows import WebSocketDisconnect, WebSocketFrameTypeError
from turbows._cores import CORES

pytestmark = pytest.mark.speedups

SCOPE = {"type": "websocket", "path": "/ws"}
MESSAGES = 100_000
CYCLES = 10_000


def _run(coroutine):
    """Drive a coroutine that never really suspends (the peer below never waits)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


class Peer:
    """An ASGI server that hands out the same message objects every time."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = messages
        self.index = 0

    async def receive(self) -> dict:
        message = self.messages[self.index % len(self.messages)]
        self.index += 1
        return message

    async def send(self, message: dict) -> None:
        pass


TEXT = "hello, turbows"
DATA = b"\x00\x01binary"
JSON_TEXT = '{"id":1,"tags":["a","b"],"score":1.5}'
JSON_BYTES = JSON_TEXT.encode()
PAYLOAD = {"id": 1, "tags": ["a", "b"], "score": 1.5}
INCOMING = [
    {"type": "websocket.receive", "text": TEXT},
    {"type": "websocket.receive", "bytes": DATA},
    {"type": "websocket.receive", "text": JSON_TEXT},
    {"type": "websocket.receive", "bytes": JSON_BYTES},
    {"type": "websocket.receive", "text": "{not json"},
    {"type": "websocket.receive", "bytes": b"\xff\xfe"},
]
CONNECT = {"type": "websocket.connect"}
DISCONNECT = {"type": "websocket.disconnect", "code": 1001}
TRACKED = [TEXT, DATA, JSON_TEXT, JSON_BYTES, PAYLOAD, *INCOMING, CONNECT, DISCONNECT]


def _exchange(websocket_class: type, messages: int = MESSAGES) -> None:
    peer = Peer([CONNECT])
    websocket = websocket_class(SCOPE, peer.receive, peer.send)
    _run(websocket.accept())
    peer.messages, peer.index = INCOMING, 0
    for _ in range(messages // len(INCOMING)):
        assert _run(websocket.receive_text()) is TEXT
        assert _run(websocket.receive_bytes()) is DATA
        assert _run(websocket.receive_json()) == PAYLOAD
        assert _run(websocket.receive_json(mode="binary")) == PAYLOAD
        with pytest.raises(ValueError):
            _run(websocket.receive_json())  # malformed JSON
        with pytest.raises(WebSocketFrameTypeError):
            _run(websocket.receive_text())  # wrong frame type
        _run(websocket.send_text(TEXT))
        _run(websocket.send_bytes(DATA))
        _run(websocket.send_json(PAYLOAD))
        _run(websocket.send_json(PAYLOAD, mode="binary"))
        with pytest.raises(TypeError):
            _run(websocket.send_json({1j}))


def _cycles(websocket_class: type, messages: int = CYCLES) -> None:
    for index in range(messages):
        peer = Peer([CONNECT, DISCONNECT])
        websocket = websocket_class(SCOPE, peer.receive, peer.send)
        _run(websocket.accept())
        if index % 2:
            with pytest.raises(WebSocketDisconnect):
                _run(websocket.receive_text())
        else:
            _run(websocket.close())


def _live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


@pytest.mark.parametrize("workload", [_exchange, _cycles], ids=["messages", "connections"])
def test_reference_counts_and_live_objects_stay_flat(workload) -> None:
    websocket_class = CORES["speedups"]
    workload(websocket_class)  # warm up caches, freelists and interned strings
    counts = [sys.getrefcount(obj) for obj in TRACKED]
    before = _live_objects()
    workload(websocket_class)
    after = _live_objects()
    assert [sys.getrefcount(obj) for obj in TRACKED] == counts
    # Tens of thousands of messages: a leak of one object per message would show as thousands.
    assert after - before < 100, (before, after)


# -- memory, not only objects ---------------------------------------------------
# gc.get_objects() sees only what the cycle collector tracks: message dicts of
# atomic values, str and bytes are not tracked, and a leaked payload is exactly
# such an object. sys.getallocatedblocks() counts every live allocation of
# CPython's allocator, and tracemalloc every byte; both stay flat unless
# something per message is kept. Both compiled shapes ship (one is selected
# per interpreter), so both are checked.


def _suspending_exchange(websocket_class: type, messages: int = MESSAGES // 5) -> None:
    """Messages through a peer whose receive and send really suspend, under asyncio."""

    class SuspendingPeer(Peer):
        async def receive(self) -> dict:
            await asyncio.sleep(0)
            return await super().receive()

        async def send(self, message: dict) -> None:
            await asyncio.sleep(0)

    async def main() -> None:
        peer = SuspendingPeer([CONNECT])
        websocket = websocket_class(SCOPE, peer.receive, peer.send)
        await websocket.accept()
        peer.messages, peer.index = INCOMING, 0
        for _ in range(messages // len(INCOMING)):
            assert await websocket.receive_text() is TEXT
            assert await websocket.receive_bytes() is DATA
            assert await websocket.receive_json() == PAYLOAD
            assert await websocket.receive_json(mode="binary") == PAYLOAD
            with pytest.raises(ValueError):
                await websocket.receive_json()
            with pytest.raises(WebSocketFrameTypeError):
                await websocket.receive_text()
            await websocket.send_text(TEXT)
            await websocket.send_json(PAYLOAD, mode="binary")
        peer.messages, peer.index = [DISCONNECT], 0
        with pytest.raises(WebSocketDisconnect):
            await websocket.receive_text()

    asyncio.run(main())


def _shapes() -> list:
    from turbows._cores import SHAPES

    return [pytest.param(cls, id=name) for name, cls in SHAPES.items()] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no compiled core"))
    ]


@pytest.mark.parametrize("websocket_class", _shapes())
@pytest.mark.parametrize(
    "workload", [_exchange, _cycles, _suspending_exchange], ids=["messages", "connections", "suspending-peer"]
)
def test_allocated_blocks_and_traced_memory_stay_flat(workload, websocket_class: type) -> None:
    workload(websocket_class)  # warm up caches, freelists and interned strings
    gc.collect()
    blocks = sys.getallocatedblocks()
    workload(websocket_class)
    gc.collect()
    # Every workload moves 10,000 to 100,000 messages or connections: a block kept
    # per message would show as thousands.
    assert sys.getallocatedblocks() - blocks < 200, (blocks, sys.getallocatedblocks())
    # tracemalloc slows every allocation down: a fifth of the messages.
    tracemalloc.start()
    try:
        workload(websocket_class, 2000)
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        workload(websocket_class, 10_000)
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A 10-byte payload kept per message would be over 100 KiB.
    assert second - first < 32 * 1024, (first, second)
