"""Which member the hub makes for a connection: the native writer only where it is safe to bypass ``send``.

The writer here is an orphan (made without a protocol: every write answers
"over"), which is all ``member_for`` looks at; real connections on turbows'
protocol are ``tests/integration/test_fanout.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.websockets import WebSocket as StarletteWebSocket

from turbows import _runtime
from turbows._cores import CORES
from turbows._delivery import FANOUT_EXTENSION, Counters, Limits, NativeMember, QueuedMember, member_for

protocol_c = pytest.importorskip("turbows._protocol_c", reason="the compiled protocol is not built")

pytestmark = pytest.mark.anyio

CLASSES = {"starlette": StarletteWebSocket, **CORES}


def websocket(cls: type, extensions: dict[str, Any]) -> Any:
    scope = {"type": "websocket", "path": "/", "headers": [], "extensions": extensions}

    async def receive() -> dict[str, Any]:
        raise AssertionError("not called")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("not called")

    return cls(scope, receive, send)


def make(ws: Any, counters: Counters) -> Any:
    return member_for(ws, 1, lambda member: None, Limits(1024, True), counters, _runtime.current())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("name", list(CLASSES))
async def test_the_writer_is_used_where_send_is_known(name: str) -> None:
    counters = Counters()
    writer = protocol_c.FanoutWriter.__new__(protocol_c.FanoutWriter)
    member = make(websocket(CLASSES[name], {FANOUT_EXTENSION: writer}), counters)
    assert type(member) is NativeMember and counters.native == 1
    assert member.pending == 0


@pytest.mark.parametrize("name", list(CLASSES))
async def test_an_override_of_send_keeps_the_generic_path(name: str) -> None:
    class Logged(CLASSES[name]):  # type: ignore[misc, valid-type]
        async def send(self, message: Any) -> None:
            await super().send(message)

    counters = Counters()
    writer = protocol_c.FanoutWriter.__new__(protocol_c.FanoutWriter)
    member = make(websocket(Logged, {FANOUT_EXTENSION: writer}), counters)
    assert type(member) is QueuedMember and counters.native == 0
    member.end()


@pytest.mark.parametrize("extension", [None, object(), "turbows.fanout", {}])
async def test_anything_else_under_the_name_is_ignored(extension: object) -> None:
    counters = Counters()
    member = make(websocket(CLASSES["starlette"], {FANOUT_EXTENSION: extension}), counters)
    assert type(member) is QueuedMember and counters.native == 0
    member.end()


async def test_a_vanished_native_member_leaves_at_its_first_message() -> None:
    """An orphan writer answers "over": the member is disconnected, counted, and nothing raises."""
    from turbows._delivery import Outgoing

    removed: list = []
    counters = Counters()
    writer = protocol_c.FanoutWriter.__new__(protocol_c.FanoutWriter)
    ws = websocket(CLASSES["starlette"], {FANOUT_EXTENSION: writer})
    member = member_for(ws, 1, removed.append, Limits(1024, True), counters, _runtime.current())
    member.rooms.add("room")
    member.offer(Outgoing("hello", 5))
    assert removed == [member] and counters.disconnected == 1 and counters.delivered == 0
