"""No leaks in the compiled core: reference counts and live objects stay flat.

Reference-counting mistakes in C show up as objects that never die (a missing
DECREF) or die early (a missing INCREF, usually a crash). These loops push
every message kind and every error path through the compiled core many times
and check that the objects handed in and out keep their reference counts and
that the number of live objects does not grow with the number of messages.
"""

from __future__ import annotations

import gc
import sys

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


def _exchange(websocket_class: type) -> None:
    peer = Peer([CONNECT])
    websocket = websocket_class(SCOPE, peer.receive, peer.send)
    _run(websocket.accept())
    peer.messages, peer.index = INCOMING, 0
    for _ in range(MESSAGES // len(INCOMING)):
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


def _cycles(websocket_class: type) -> None:
    for index in range(CYCLES):
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
