"""The hub's API: membership, lifetime, and every kind of bad input, with a clear error that breaks nothing.

In process, under asyncio and trio, on both cores (``websocket_class``).
JSON is held to ``send_json``'s contract here too: the same text or bytes
``turbows.WebSocket.send_json`` sends, the value Starlette's sends, and the
same exception class for a value Starlette rejects.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows
from asgi_peer import canonical
from hub_peer import Connection, eventually
from test_json import REJECTED, SUBCLASSES, _cycles, json_values, modes, nested

pytestmark = pytest.mark.anyio


async def member_of(hub: turbows.Hub, websocket_class: type, *rooms: str) -> Connection:
    connection = await Connection.accepted(websocket_class)
    for room in rooms:
        await hub.add(room, connection.websocket)
    return connection


def test_the_names_are_exported() -> None:
    assert {"Hub", "HubUnavailable"} <= set(turbows.__all__)
    assert issubclass(turbows.HubUnavailable, Exception)
    assert turbows.Hub.__module__ == "turbows._hub"


# -- membership --------------------------------------------------------------------------------


async def test_add_discard_members_and_rooms(websocket_class: type) -> None:
    hub = turbows.Hub()
    a = await member_of(hub, websocket_class, "one", "two")
    b = await member_of(hub, websocket_class, "two")
    await hub.add("two", b.websocket)  # a member already: nothing changes
    assert hub.rooms() == ["one", "two"]
    assert (hub.members("one"), hub.members("two"), hub.members("three")) == (1, 2, 0)
    await hub.discard("one", a.websocket)
    await hub.discard("one", a.websocket)  # not a member any more: nothing happens
    await hub.discard("never joined", b.websocket)
    assert hub.rooms() == ["two"] and hub.stats()["members"] == 2
    await hub.discard("two", a.websocket)
    await hub.discard("two", b.websocket)
    assert hub.rooms() == [] and hub.stats()["members"] == 0
    assert repr(hub) == "<turbows.Hub new, 0 rooms, 0 members>"


async def test_join_leaves_when_the_block_ends_however_it_ends(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "kept")
    async with hub.join("room", connection.websocket) as entered:
        assert entered is None
        assert hub.members("room") == 1
    assert hub.members("room") == 0
    with pytest.raises(LookupError, match="raised in the block"):
        async with hub.join("room", connection.websocket):
            raise LookupError("raised in the block")
    assert hub.members("room") == 0 and hub.members("kept") == 1  # only that room


async def test_join_checks_its_arguments_at_once(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await Connection.accepted(websocket_class)
    with pytest.raises(TypeError, match="a room name is a str, got int"):
        hub.join(7, connection.websocket)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="websocket must be a WebSocket"):
        hub.join("room", "not a websocket")


async def test_a_websocket_joins_once_accepted_and_while_open(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = Connection(websocket_class)
    with pytest.raises(RuntimeError, match=r"await websocket.accept\(\) first"):
        await hub.add("room", connection.websocket)
    await connection.websocket.accept()
    await connection.websocket.close()
    with pytest.raises(RuntimeError, match="connection is over .* it cannot join a room"):
        await hub.add("room", connection.websocket)
    assert hub.rooms() == []


# -- lifetime ----------------------------------------------------------------------------------


async def test_an_in_process_hub_works_with_or_without_start(websocket_class: type) -> None:
    unstarted = turbows.Hub()
    connection = await member_of(unstarted, websocket_class, "room")
    await unstarted.publish_text("room", "unstarted")
    async with turbows.Hub() as started:
        assert started.connected
        await started.add("room", connection.websocket)
        await started.publish_text("room", "started")
        await eventually(lambda: len(connection.payloads) == 2, "both messages")  # stop() drops what waits
    assert connection.payloads == ["unstarted", "started"]
    assert unstarted.connected and not started.connected


async def test_a_stopped_hub_says_so(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "room")
    await hub.start()
    with pytest.raises(RuntimeError, match="started already"):
        await hub.start()
    await hub.stop()
    await hub.stop()  # idempotent
    for call in (
        hub.publish_text("room", "x"),
        hub.publish_bytes("room", b"x"),
        hub.publish_json("room", 1),
        hub.add("room", connection.websocket),
    ):
        with pytest.raises(RuntimeError, match=r"turbows.Hub.\w+\(\): this hub was stopped; make a new one"):
            await call
    with pytest.raises(RuntimeError, match="a hub is not started again"):
        await hub.start()
    # Leaving and reading stay quiet: a connection ending after shutdown must not raise.
    await hub.discard("room", connection.websocket)
    assert (hub.members("room"), hub.rooms(), hub.stats()["members"]) == (0, [], 0)
    assert repr(hub) == "<turbows.Hub stopped, 0 rooms, 0 members>"


def test_the_constructor_checks_its_arguments() -> None:
    for max_pending, error, message in [
        (0, ValueError, "at least 1 byte, got 0"),
        (-5, ValueError, "at least 1 byte"),
        ("1024", TypeError, "an int\\), got str"),
        (True, TypeError, "got bool"),
        (1.5, TypeError, "got float"),
    ]:
        with pytest.raises(error, match=message):
            turbows.Hub(max_pending=max_pending)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_slow must be \"close\" or \"drop\", got 'kill'"):
        turbows.Hub(on_slow="kill")
    with pytest.raises(ValueError, match="on_slow"):
        turbows.Hub(on_slow=["close"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a str URL or None, got bytes"):
        turbows.Hub(b"redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported URL 'http://localhost'"):
        turbows.Hub("http://localhost")
    # A Redis URL makes a Redis hub (tests/hub/test_redis.py); it connects only once started.
    for url in ("redis://localhost:6379/0", "rediss://host", "unix:///tmp/redis.sock"):
        assert not turbows.Hub(url).connected
    assert turbows.Hub(max_pending=1, on_slow="drop").stats()["members"] == 0


# -- bad input -------------------------------------------------------------------------------


BAD_ROOMS = [
    (7, TypeError, "a room name is a str, got int"),
    (b"room", TypeError, "a room name is a str, got bytes"),
    (None, TypeError, "got NoneType"),
    ("", ValueError, "a room name cannot be empty"),
    ("x" * 257, ValueError, "at most 256 characters, got one of 257"),
    ("room \ud800", ValueError, "valid Unicode text"),
]


@pytest.mark.parametrize(("room", "error", "message"), BAD_ROOMS, ids=lambda v: repr(v)[:12])
async def test_bad_room_names(websocket_class: type, room: Any, error: type, message: str) -> None:
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "good")
    for call in (
        lambda: hub.add(room, connection.websocket),
        lambda: hub.discard(room, connection.websocket),
        lambda: hub.publish_text(room, "x"),
        lambda: hub.publish_bytes(room, b"x"),
        lambda: hub.publish_json(room, 1),
    ):
        with pytest.raises(error, match=message):
            await call()
    with pytest.raises(error, match=message):
        hub.members(room)
    with pytest.raises(error, match=message):
        hub.join(room, connection.websocket)
    # Nothing else broke: the good room still works.
    await hub.publish_text("good", "fine")
    await eventually(lambda: connection.payloads == ["fine"], "the good room's message")
    assert hub.rooms() == ["good"] and hub.stats()["published"] == 1


async def test_room_names_at_the_bounds(websocket_class: type) -> None:
    class Name(str):
        pass

    hub = turbows.Hub()
    connection = await Connection.accepted(websocket_class)
    for room in ("x" * 256, "ż" * 256, "🐢", Name("subclass")):
        await hub.add(room, connection.websocket)
    await hub.publish_text(Name("subclass"), "a str subclass names the same room")
    assert [type(name) for name in hub.rooms()] == [str] * 4
    await eventually(lambda: connection.payloads == ["a str subclass names the same room"], "the message")


async def test_bad_payloads(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "room")
    with pytest.raises(TypeError, match="publish_text\\(\\) takes a str, got bytes"):
        await hub.publish_text("room", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="publish_bytes\\(\\) takes bytes, bytearray or memoryview, got str"):
        await hub.publish_bytes("room", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exclude must be a WebSocket"):
        await hub.publish_text("room", "x", exclude="me")
    # A lone surrogate cannot be written as UTF-8: the publisher hears it, not each member's send.
    with pytest.raises(UnicodeEncodeError):
        await hub.publish_text("room", "half a pair: \ud83d")
    with pytest.raises(UnicodeEncodeError):
        await hub.publish_json("room", "\udfff")
    await hub.publish_text("room", "after the bad ones")
    await eventually(lambda: connection.payloads == ["after the bad ones"], "the good message")
    assert hub.members("room") == 1 and hub.stats()["published"] == 1


async def test_using_the_hub_from_another_event_loop_is_an_error(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "room")
    other = await Connection.accepted(websocket_class)

    async def elsewhere() -> None:
        with pytest.raises(RuntimeError, match="a hub serves one event loop") as raised:
            await hub.add("room", other.websocket)
        assert "with TestClient(app) as client:" in str(raised.value)
        with pytest.raises(RuntimeError, match="a hub serves one event loop"):
            await hub.publish_text("room", "x")

    await anyio.to_thread.run_sync(asyncio.run, elsewhere())
    await hub.discard("room", connection.websocket)
    await eventually(lambda: hub.stats()["members"] == 0 and not hub._registry.members, "its sender to end")

    async def once_empty() -> None:  # with no members left, another loop may take the hub over
        ours = await Connection.accepted(websocket_class)
        await hub.add("room", ours.websocket)
        await hub.publish_text("room", "from the other loop")
        await eventually(lambda: ours.payloads == ["from the other loop"], "the message")
        await hub.discard("room", ours.websocket)

    await anyio.to_thread.run_sync(asyncio.run, once_empty())


# -- JSON: send_json's contract --------------------------------------------------------------


async def published_json(websocket_class: type, value: Any, mode: str) -> tuple[Any, ...]:
    """``("ok", payload)`` as a member of ``websocket_class`` received it, or ``("raise", class)``."""
    hub = turbows.Hub()
    connection = await member_of(hub, websocket_class, "room")
    try:
        await hub.publish_json("room", value, mode=mode)
    except Exception as exc:
        assert hub.stats()["published"] == 0 and connection.payloads == []
        return ("raise", type(exc))
    await eventually(lambda: len(connection.payloads) == 1, "the message")
    return ("ok", connection.payloads[0])


async def sent_json(websocket_class: type, value: Any, mode: str) -> tuple[Any, ...]:
    """The same, from ``websocket_class``'s own ``send_json``."""
    connection = await Connection.accepted(websocket_class)
    try:
        await connection.websocket.send_json(value, mode=mode)
    except Exception as exc:
        return ("raise", type(exc))
    return ("ok", connection.payloads[0])


def as_a_server_writes_it(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
    """Text with a lone surrogate: ``send_json`` hands it on and the server's send raises
    ``UnicodeEncodeError`` writing it (this in-memory peer writes nothing); the hub raises it up front."""
    if outcome[0] == "ok" and type(outcome[1]) is str:
        try:
            outcome[1].encode("utf-8")
        except UnicodeEncodeError:
            return ("raise", UnicodeEncodeError)
    return outcome


async def check_json(websocket_class: type, value: Any, mode: str) -> None:
    published = await published_json(websocket_class, value, mode)
    # The very bytes turbows' send_json sends: the hub encodes with the selected core's functions.
    assert published == as_a_server_writes_it(await sent_json(turbows.WebSocket, value, mode))
    starlette = as_a_server_writes_it(await sent_json(StarletteWebSocket, value, mode))
    if starlette[0] == "raise" or published[0] == "raise":
        assert published == starlette
    else:
        assert type(published[1]) is type(starlette[1])
        assert canonical(json.loads(published[1])) == canonical(json.loads(starlette[1]))


VALUES = [
    {"text": "hello", "n": 1, "pi": 3.14159, "ok": True, "nothing": None, "list": [1, "two", 3.0]},
    {"unicode": "żółw 🐢 \u2028", "nested": {"deep": [[[{"x": -0.0}]]]}},
    {"big": 2**70, "u64": 2**64 - 1, "floats": [1e16, 5e-324, math.nan, math.inf, -math.inf]},
    {1: "int key", None: "null key", 2.5: "float key"},
    (1, "tuple"),
    "a bare string",
    12345678901234567890123,
    *SUBCLASSES,
]


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("value", VALUES, ids=lambda value: type(value).__name__)
async def test_json_is_what_send_json_sends(websocket_class: type, value: Any, mode: str) -> None:
    await check_json(websocket_class, value, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize(
    "value",
    [*REJECTED, *_cycles(), nested(100_000, "list"), "\ud800"],
    ids=lambda value: type(value).__name__,
)
async def test_json_rejects_what_send_json_rejects(websocket_class: type, value: Any, mode: str) -> None:
    await check_json(websocket_class, value, mode)


async def test_json_mode_is_checked_as_send_json_does(websocket_class: type) -> None:
    hub = turbows.Hub()
    connection = await Connection.accepted(StarletteWebSocket)
    with pytest.raises(RuntimeError) as starlette:
        await connection.websocket.send_json(1, mode="bogus")
    with pytest.raises(RuntimeError) as ours:
        await hub.publish_json("room", 1, mode="bogus")
    assert str(ours.value) == str(starlette.value) == 'The "mode" argument should be "text" or "binary".'


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for every example (a loop per example would cost more than the test)."""
    with asyncio.Runner() as runner:
        yield runner


# The hub calls send_json's own functions, whose property tests run 1,000 examples
# (tests/test_json.py); these check that it calls them, and delivers what they give.
@settings(max_examples=200)
@given(value=json_values, mode=modes)
def test_json_matches_send_json_for_any_value(
    runner: asyncio.Runner, websocket_class: type, value: Any, mode: str
) -> None:
    runner.run(check_json(websocket_class, value, mode))
