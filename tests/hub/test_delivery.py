"""The hub's delivery contract in process, under asyncio and trio, on both cores.

Members are turbows (or Starlette) ``WebSocket``s over in-memory
connections (``hub_peer.Connection``), so a test can hold a member's sends
(a client that stops reading) or fail them (a client that vanished) at an
exact point, and read the hub's own counters. The same contract on real
servers is ``tests/integration/test_hub.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketState

import turbows
from hub_peer import Connection, eventually

pytestmark = pytest.mark.anyio


async def members(websocket_class: type, count: int) -> list[Connection]:
    return [await Connection.accepted(websocket_class) for _ in range(count)]


async def joined(hub: turbows.Hub, room: str, connections: list[Connection]) -> None:
    for connection in connections:
        await hub.add(room, connection.websocket)


def tagged(tag: str, count: int) -> list[str]:
    return [f"{tag}:{n}" for n in range(count)]


# -- order, completeness, exclude ---------------------------------------------------------------


async def test_every_member_gets_every_message_once_in_one_order(websocket_class: type) -> None:
    hub = turbows.Hub()
    connections = await members(websocket_class, 4)
    await joined(hub, "room", connections)

    async def publish(tag: str) -> None:
        for n in range(100):
            await hub.publish_text("room", f"{tag}:{n}")

    async with anyio.create_task_group() as group:
        for tag in "abc":
            group.start_soon(publish, tag)
    await eventually(lambda: all(len(c.payloads) == 300 for c in connections), "300 messages each")
    first = connections[0].payloads
    assert all(c.payloads == first for c in connections)
    for tag in "abc":
        assert [p for p in first if p.startswith(f"{tag}:")] == tagged(tag, 100)
    assert len({p[:2] for p in first[:30]}) > 1, "the publishers did not interleave: the test shows nothing"
    stats = hub.stats()
    assert (stats["published"], stats["delivered"], stats["dropped"], stats["closed_slow"]) == (300, 1200, 0, 0)


async def test_exclude_leaves_out_one_member(websocket_class: type) -> None:
    hub = turbows.Hub()
    a, b, c = await members(websocket_class, 3)
    await joined(hub, "room", [a, b])
    await hub.publish_text("room", "not to a", exclude=a.websocket)
    await hub.publish_bytes("room", b"to both", exclude=c.websocket)  # c is no member: nobody is left out
    await hub.publish_json("room", {"not": "b"}, exclude=b.websocket)
    await eventually(lambda: len(a.payloads) == 2 and len(b.payloads) == 2, "the messages")
    assert a.payloads == [b"to both", '{"not":"b"}']
    assert b.payloads == ["not to a", b"to both"]
    assert c.payloads == []


async def test_every_member_gets_the_same_message_object(websocket_class: type) -> None:
    """Encoded once: each member's send gets the very same ASGI message, and the same payload object."""
    hub = turbows.Hub()
    connections = await members(websocket_class, 3)
    await joined(hub, "room", connections)
    await hub.publish_text("room", "text")
    await hub.publish_bytes("room", b"bytes")
    await hub.publish_json("room", {"json": [1, 2.5, None]}, mode="binary")
    await eventually(lambda: all(len(c.messages) == 3 for c in connections), "three messages each")
    for index, expected in enumerate(
        [{"type": "websocket.send", "text": "text"}, {"type": "websocket.send", "bytes": b"bytes"},
         {"type": "websocket.send", "bytes": b'{"json":[1,2.5,null]}'}]
    ):
        sent = [c.messages[index] for c in connections]
        assert sent[0] == expected
        assert all(message is sent[0] for message in sent)


async def test_a_bytearray_is_copied_once(websocket_class: type) -> None:
    hub = turbows.Hub()
    (connection,) = await members(websocket_class, 1)
    await hub.add("room", connection.websocket)
    data = bytearray(b"before")
    await hub.publish_bytes("room", data)
    data[:] = b"after!"  # the caller reuses its buffer at once
    await hub.publish_bytes("room", memoryview(data))
    await eventually(lambda: len(connection.payloads) == 2, "both messages")
    assert connection.payloads == [b"before", b"after!"]
    assert all(type(p) is bytes for p in connection.payloads)


async def test_starlettes_class_can_be_a_member(websocket_class: type) -> None:
    hub = turbows.Hub()
    theirs = await Connection.accepted(StarletteWebSocket)
    ours = await Connection.accepted(websocket_class)
    await joined(hub, "room", [theirs, ours])
    await hub.publish_json("room", [1, "two"])
    await eventually(lambda: len(theirs.payloads) == len(ours.payloads) == 1, "one message each")
    assert theirs.payloads == ours.payloads == ['[1,"two"]']


async def test_a_publishing_loop_lets_the_senders_run(websocket_class: type) -> None:
    """In process, a publish does all its work without suspending, then gives the loop a turn:
    a loop of publishes never outruns a member that keeps up, however small ``max_pending``."""
    hub = turbows.Hub(max_pending=64)
    connections = await members(websocket_class, 3)
    await joined(hub, "room", connections)
    for n in range(1000):
        await hub.publish_text("room", f"message {n:04}")  # 12 bytes: at most 5 may wait
    await eventually(lambda: all(len(c.payloads) == 1000 for c in connections), "every message")
    assert (hub.stats()["closed_slow"], hub.stats()["dropped"]) == (0, 0)


async def test_what_was_published_still_arrives_after_leaving(websocket_class: type) -> None:
    hub = turbows.Hub()
    (connection,) = await members(websocket_class, 1)
    connection.hold()
    await hub.add("room", connection.websocket)
    for n in range(3):
        await hub.publish_text("room", f"m:{n}")
    await hub.discard("room", connection.websocket)
    await hub.publish_text("room", "after it left")
    assert hub.members("room") == 0
    connection.release()
    await eventually(lambda: len(connection.payloads) == 3, "what it was sent as a member")
    await eventually(lambda: hub.stats()["pending_bytes"] == 0, "its sender to finish")
    assert connection.payloads == tagged("m", 3)


async def test_rejoining_while_its_queue_drains_keeps_the_order(websocket_class: type) -> None:
    hub = turbows.Hub()
    (connection,) = await members(websocket_class, 1)
    connection.hold()
    await hub.add("room", connection.websocket)
    await hub.publish_text("room", "m:0")
    await hub.discard("room", connection.websocket)
    await hub.publish_text("room", "missed")
    await hub.add("room", connection.websocket)
    await hub.publish_text("room", "m:1")
    connection.release()
    await eventually(lambda: len(connection.payloads) == 2, "two messages")
    assert connection.payloads == ["m:0", "m:1"]


async def test_publishing_to_a_room_nobody_is_in(websocket_class: type) -> None:
    hub = turbows.Hub()
    (connection,) = await members(websocket_class, 1)
    await hub.add("elsewhere", connection.websocket)
    await hub.publish_text("nobody here", "lost")
    await hub.publish_json("nobody here", {"a": 1})
    assert hub.stats()["published"] == 2 and hub.stats()["delivered"] == 0
    assert hub.rooms() == ["elsewhere"]


# -- slow members -------------------------------------------------------------------------------


async def test_a_slow_member_is_closed_and_the_others_go_on(websocket_class: type) -> None:
    hub = turbows.Hub(max_pending=100)
    slow, fast = await members(websocket_class, 2)
    await hub.add("room", slow.websocket)
    await hub.add("other room", slow.websocket)
    await hub.add("room", fast.websocket)
    slow.hold()
    peak = 0
    for n in range(10):
        await hub.publish_text("room", f"{n}:" + "x" * 28)  # 30 bytes each
        peak = max(peak, hub.stats()["pending_bytes_max"])
    await eventually(lambda: len(fast.payloads) == 10, "everything for the fast member")
    assert peak <= 100
    stats = hub.stats()
    assert (stats["closed_slow"], stats["dropped"], stats["members"]) == (1, 0, 1)
    assert hub.rooms() == ["room"] and hub.members("room") == 1  # out of both its rooms at once
    slow.release()
    # What was being written when it was found slow goes out, then the close.
    await eventually(lambda: slow.websocket.application_state is WebSocketState.DISCONNECTED, "the close")
    assert slow.payloads == ["0:" + "x" * 28]
    assert slow.sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}
    await hub.publish_text("room", "later")
    await eventually(lambda: len(fast.payloads) == 11, "the fast member's next message")
    assert len(slow.payloads) == 1


async def test_a_slow_member_misses_messages_under_drop(websocket_class: type) -> None:
    hub = turbows.Hub(max_pending=100, on_slow="drop")
    slow, fast = await members(websocket_class, 2)
    await joined(hub, "room", [slow, fast])
    slow.hold()
    for n in range(10):
        await hub.publish_text("room", f"{n}:" + "x" * 28)
        assert hub.stats()["pending_bytes_max"] <= 100
    stats = hub.stats()
    # One in flight and two queued (90 bytes) fit; the fourth would make 120.
    assert (stats["dropped"], stats["closed_slow"], stats["members"]) == (7, 0, 2)
    slow.release()
    await eventually(lambda: len(slow.payloads) == 3, "what it did not miss")
    await hub.publish_text("room", "caught up")
    await eventually(lambda: len(slow.payloads) == 4 and len(fast.payloads) == 11, "the next message")
    assert [p[0] for p in slow.payloads] == ["0", "1", "2", "c"]
    assert slow.websocket.application_state is WebSocketState.CONNECTED


async def test_a_message_larger_than_max_pending_reaches_a_member_that_keeps_up(websocket_class: type) -> None:
    hub = turbows.Hub(max_pending=10)
    (connection,) = await members(websocket_class, 1)
    await hub.add("room", connection.websocket)
    await hub.publish_bytes("room", b"x" * 1000)
    await eventually(lambda: len(connection.payloads) == 1, "the large message")
    await hub.publish_bytes("room", b"y" * 1000)
    await eventually(lambda: len(connection.payloads) == 2, "the next one")
    assert hub.stats()["closed_slow"] == 0


# -- members that end ------------------------------------------------------------------------------


async def test_a_member_whose_send_fails_leaves_every_room(websocket_class: type) -> None:
    hub = turbows.Hub()
    gone, stays = await members(websocket_class, 2)
    for room in ("a", "b"):
        await joined(hub, room, [gone, stays])
    gone.fail_with = OSError("connection reset")  # how uvicorn's send reports a vanished client
    for n in range(5):
        await hub.publish_text("a", f"a:{n}")
        await hub.publish_text("b", f"b:{n}")
    await eventually(lambda: len(stays.payloads) == 10, "everything for the member that stays")
    assert hub.members("a") == hub.members("b") == 1
    assert hub.stats()["disconnected"] == 1
    # The member's own state says what its send saw (Starlette turns the OSError into a 1006 disconnect).
    assert gone.websocket.application_state is WebSocketState.DISCONNECTED


async def test_an_unexpected_send_error_is_logged_and_only_that_member_leaves(
    websocket_class: type, caplog: pytest.LogCaptureFixture
) -> None:
    hub = turbows.Hub()
    broken, stays = await members(websocket_class, 2)
    await joined(hub, "room", [broken, stays])
    broken.fail_with = ValueError("a bug in the server")
    with caplog.at_level(logging.WARNING, logger="turbows.hub"):
        await hub.publish_text("room", "one")
        await hub.publish_text("room", "two")
        await eventually(lambda: len(stays.payloads) == 2, "both messages")
    assert hub.members("room") == 1
    (record,) = caplog.records
    assert "leaves every room" in record.getMessage() and isinstance(record.exc_info[1], ValueError)


async def test_a_connection_that_ends_leaves_its_rooms_without_a_send(websocket_class: type) -> None:
    """No send needed: a member whose app saw the disconnect, or closed it, is out of its rooms."""
    hub = turbows.Hub()
    left, closed, stays = await members(websocket_class, 3)
    for room in ("a", "b"):
        await joined(hub, room, [left, closed, stays])
    left.disconnect()
    with pytest.raises(turbows.WebSocketDisconnect):
        await left.websocket.receive_text()
    await closed.websocket.close()
    # In-memory sends, like hypercorn's and daphne's, never fail once the client has gone:
    # the hub looks before it sends.
    await hub.publish_text("a", "still here")
    await eventually(lambda: stays.payloads == ["still here"], "the message")
    assert left.payloads == [] and closed.payloads == []
    assert (hub.members("a"), hub.members("b")) == (1, 1)
    assert hub.stats()["disconnected"] == 2


async def test_stop_ends_every_membership_but_not_the_connections(websocket_class: type) -> None:
    hub = turbows.Hub()
    connections = await members(websocket_class, 2)
    await joined(hub, "room", connections)
    connections[0].hold()
    await hub.publish_text("room", "first")
    await hub.publish_text("room", "dropped by stop")
    await hub.stop()
    assert hub.rooms() == [] and hub.stats()["members"] == 0
    connections[0].release()
    await eventually(lambda: connections[0].payloads == ["first"], "the message being written")
    await connections[1].websocket.send_text("the connection is still open")
    assert connections[1].payloads[-1] == "the connection is still open"


# -- the hub's own accounting ------------------------------------------------------------------


async def test_pending_bytes_count_utf8_bytes(websocket_class: type) -> None:
    hub = turbows.Hub()
    (connection,) = await members(websocket_class, 1)
    await hub.add("room", connection.websocket)
    connection.hold()
    for payload in ("żółw", "🐢", "ascii"):
        await hub.publish_text("room", payload)
    await hub.publish_json("room", ["żółw"], mode="binary")
    stats: dict[str, Any] = hub.stats()
    assert stats["pending_bytes"] == stats["pending_bytes_max"] == 7 + 4 + 5 + 11
    connection.release()
    await eventually(lambda: hub.stats()["pending_bytes"] == 0, "the queue to drain")


async def test_a_sender_that_breaks_ends_its_member_only(websocket_class: type, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever goes wrong in a member's sender stays there: under trio, a system task that
    raised would end the whole run."""
    broken = False

    class Fragile(websocket_class):  # type: ignore[misc, valid-type]
        @property
        def client_state(self) -> WebSocketState:
            if broken:
                raise RuntimeError("a state nobody can read")
            return super().client_state

        @client_state.setter
        def client_state(self, state: WebSocketState) -> None:
            websocket_class.client_state.__set__(self, state)

    hub = turbows.Hub()
    fragile = await Connection.accepted(Fragile)
    (stays,) = await members(websocket_class, 1)
    await joined(hub, "room", [fragile, stays])
    broken = True
    with caplog.at_level(logging.ERROR, logger="turbows.hub"):
        await hub.publish_text("room", "one")
        await eventually(lambda: stays.payloads == ["one"], "the message")
        await eventually(lambda: bool(caplog.records), "the sender's failure")
    assert "a member's sender failed" in caplog.records[0].getMessage()
    broken = False
    assert hub.members("room") == 1
    await hub.publish_text("room", "two")
    await eventually(lambda: stays.payloads == ["one", "two"], "the next message")
    assert fragile.payloads == []
