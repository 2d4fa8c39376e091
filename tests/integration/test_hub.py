"""``turbows.Hub`` behind real servers, with real clients: its contract, per server and core.

The app side is ``hubapp.py`` (members, and a control connection that
publishes on command). Each test uses a hub of its own (a fresh key), so
the counters it reads are its own. Nothing here times anything: a test
waits (bounded) for what must happen, and checks counts, orders and the
hub's own pending-byte counters.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harness import ServerProcess, new_key, recv, reset, run
from test_servers import JSON_VALUES, same_json

#: Every wait for a message or a reply gives up after this long.
WAIT = 15.0


@dataclass(frozen=True)
class HubTraits:
    #: The server's send waits while the client does not read (flow control), so a stalled
    #: member's messages wait in the hub, where max_pending applies. Daphne's send never waits:
    #: Twisted buffers whatever the app sends, so the hub never sees a slow member there.
    send_backpressure: bool = True
    #: The client sees the reason of the app's close (daphne drops it).
    close_reason: bool = True


HUB_TRAITS = {"daphne": HubTraits(send_backpressure=False, close_reason=False)}


def hub_traits(server: ServerProcess) -> HubTraits:
    return HUB_TRAITS.get(server.server, HubTraits())


class HubClient:
    """One test's hub on one server: member connections and a control connection."""

    def __init__(self, server: ServerProcess, **settings: Any) -> None:
        self.server = server
        self.key = new_key()
        self.settings = {name: str(value) for name, value in settings.items()}
        self._control: ClientConnection | None = None

    def _query(self, **query: Any) -> str:
        return urlencode({**self.settings, **query})

    async def member(self, name: str, rooms: list[str], *, via: str = "add", **connect: Any) -> ClientConnection:
        """A member of ``rooms``, once the server says it has joined them."""
        path = f"/hub/{self.key}/member/{name}?{self._query(rooms=','.join(rooms), via=via)}"
        ws = await self.server.connect(path, **connect)
        assert await recv(ws, WAIT) == "ack:joined"
        return ws

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        if self._control is None:
            self._control = await self.server.connect(f"/hub/{self.key}/control?{self._query()}")
        await self._control.send(json.dumps(command))
        return json.loads(await recv(self._control, WAIT))

    async def publish(self, room: str, **publish: Any) -> dict[str, Any]:
        reply = await self.command({"publish": {"room": room, **publish}})
        assert reply["errors"] == [], reply
        return reply

    async def stats_until(self, condition: Any, what: str) -> dict[str, Any]:
        """Read the hub's stats until ``condition(stats)`` (a member's end reaches the server a little later)."""
        for _ in range(int(WAIT / 0.02)):
            reply = await self.command({"stats": True})
            if condition(reply["stats"]):
                return reply
            await asyncio.sleep(0.02)
        raise AssertionError(f"waited {WAIT}s for {what}: {reply}")

    async def close(self) -> None:
        if self._control is not None:
            await self._control.close()


async def messages(ws: ClientConnection, count: int) -> list[Any]:
    return [await recv(ws, WAIT) for _ in range(count)]


def tagged(tag: str, count: int, start: int = 0) -> list[str]:
    return [f"{tag}:{n}" for n in range(start, start + count)]


def sequence_of(message: str | bytes) -> int:
    text = message.decode() if isinstance(message, bytes) else message
    return int(text.split(":")[1].rstrip("."))


# -- order, completeness, exclude, JSON -------------------------------------------------------


def test_every_member_gets_every_message_in_one_order(server: ServerProcess) -> None:
    """Two publishers at once, four members: the same 300 messages, in the same order, each publisher's kept."""

    async def scenario() -> None:
        hub = HubClient(server)
        members = [await hub.member(f"m{n}", ["room"]) for n in range(4)]
        second = HubClient(server)
        second.key = hub.key  # the same hub, through a control connection of its own
        replies = await asyncio.gather(
            hub.publish("room", tag="a", count=150), second.publish("room", tag="b", count=150)
        )
        received = [await messages(ws, 300) for ws in members]
        assert all(seen == received[0] for seen in received), "members disagree on the room's order"
        for tag in ("a", "b"):
            assert [m for m in received[0] if m.startswith(f"{tag}:")] == tagged(tag, 150)
        stats = (await hub.stats_until(lambda s: s["delivered"] == 1200, "1200 deliveries"))["stats"]
        assert (stats["published"], stats["dropped"], stats["closed_slow"], stats["disconnected"]) == (300, 0, 0, 0)
        # On turbows' protocol every member takes the native path (its fan-out writer); elsewhere none can.
        assert stats["native"] == (4 if server.server == "uvicorn-turbows" else 0), stats
        assert [reply["published"] for reply in replies] == [150, 150]
        for ws in members:
            await ws.close()
        await hub.close()
        await second.close()

    run(scenario(), 60)


def test_exclude_and_every_kind(server: ServerProcess) -> None:
    """Text, bytes and JSON reach every member but the excluded one, itself or another."""

    async def scenario() -> None:
        hub = HubClient(server)
        a, b, c = [await hub.member(name, ["room"]) for name in "abc"]
        # a publishes as a member, leaving itself out
        await a.send(json.dumps({"publish": {"room": "room", "tag": "from-a", "count": 3, "exclude_self": True}}))
        for ws in (b, c):
            assert await messages(ws, 3) == tagged("from-a", 3)
        await hub.publish("room", kind="bytes", tag="bytes", count=2, exclude="b")
        await hub.publish("room", kind="json", values=[{"x": 1}], exclude="b")
        await hub.publish("room", kind="json-binary", values=[[1, 2]], exclude="c")
        await hub.publish("room", tag="all", count=1)
        assert await messages(a, 5) == [b"bytes:0", b"bytes:1", '{"x":1}', b"[1,2]", "all:0"]
        assert await messages(b, 2) == [b"[1,2]", "all:0"]
        assert await messages(c, 4) == [b"bytes:0", b"bytes:1", '{"x":1}', "all:0"]
        for ws in (a, b, c):
            await ws.close()
        await hub.close()

    run(scenario())


@pytest.mark.parametrize("mode", ["text", "binary"])
def test_json_is_what_send_json_sends(server: ServerProcess, mode: str) -> None:
    """``publish_json`` gives each member what ``turbows.WebSocket.send_json`` sends, and Starlette's value."""

    async def scenario() -> None:
        hub = HubClient(server)
        member = await hub.member("m", ["room"])
        await hub.publish("room", kind="json" if mode == "text" else "json-binary", values=JSON_VALUES)
        published = await messages(member, len(JSON_VALUES))
        own = []  # the member's own send_json on the same connection
        for value in JSON_VALUES:
            await member.send(json.dumps({"send_json": value, "mode": mode}))
            own.append(await recv(member, WAIT))
        async with server.connect(f"/echo/{'json' if mode == 'text' else 'json-binary'}?impl=starlette") as echo:
            starlette = []
            for value in JSON_VALUES:
                await echo.send(json.dumps(value) if mode == "text" else json.dumps(value).encode())
                starlette.append(await recv(echo, WAIT))
        core = (await hub.command({"stats": True}))["implementation"]
        for value, sent, mine, reference in zip(JSON_VALUES, published, own, starlette):
            assert type(sent) is (str if mode == "text" else bytes), sent
            # The hub encodes as turbows.WebSocket does; the member's class is that one unless the
            # server runs the app on the other core (the pure app on turbows' compiled protocol).
            if core == server.info["implementation"]:
                assert sent == mine, (value, sent, mine)
            assert same_json(json.loads(sent), value), (value, sent)
            assert same_json(json.loads(sent), json.loads(reference)), (value, sent, reference)
        await member.close()
        await hub.close()

    run(scenario())


# -- members that end, stall or move ----------------------------------------------------------


def test_a_vanished_member_leaves_every_room_by_itself(server: ServerProcess) -> None:
    """A member in two rooms resets its connection (it never leaves them itself): publishing
    never raises, the others get everything, and it is out of both rooms."""

    async def scenario() -> None:
        hub = HubClient(server)
        gone = await hub.member("gone", ["r", "s"], via="add")
        stays_r = await hub.member("stays-r", ["r"], via="join")
        stays_s = await hub.member("stays-s", ["s"])
        reset(gone)
        for round_ in range(3):
            await hub.publish("r", tag=f"r{round_}", count=20, size=512)
            await hub.publish("s", tag=f"s{round_}", count=20, size=512)
        for round_ in range(3):
            assert [m.rstrip(".") for m in await messages(stays_r, 20)] == tagged(f"r{round_}", 20)
            assert [m.rstrip(".") for m in await messages(stays_s, 20)] == tagged(f"s{round_}", 20)
        reply = await hub.stats_until(lambda s: s["members"] == 2, "the vanished member to leave")
        assert reply["stats"]["disconnected"] == 1, reply
        assert sorted(reply["rooms"]) == ["r", "s"]
        for room in ("r", "s"):
            assert (await hub.command({"members": room}))["members"] == 1
        for ws in (stays_r, stays_s):
            await ws.close()
        await hub.close()

    run(scenario())


#: A stalled member's messages first fill the kernel's buffers (megabytes on loopback), then
#: the server's, and only then wait in the hub: publish rounds until the policy applies. A
#: round is less than ``max_pending``, so a member that reads each round is never the slow one,
#: however the loop schedules its sender (under trio, hypercorn's send takes several turns).
STALL_ROUND = 50
STALL_ROUNDS = 80
STALL_SIZE = 16 * 1024
STALL_MAX_PENDING = 1024 * 1024


async def _stalled_member(hub: HubClient) -> ClientConnection:
    """A member that reads nothing after joining: a small receive buffer, one queued message, and no
    compression (the padded test messages would shrink to nothing)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.server.port))
    return await hub.member("stalled", ["room"], sock=sock, max_queue=1, compression=None)


async def _drain(ws: ClientConnection) -> list[str]:
    received = []
    try:
        while True:
            received.append(await recv(ws, WAIT))
    except ConnectionClosed:
        return received


@pytest.mark.parametrize("on_slow", ["close", "drop"])
def test_a_member_that_stops_reading(server: ServerProcess, on_slow: str) -> None:
    """One member stops reading: the others get everything, its pending bytes stay under
    ``max_pending`` (plus the one message being written), and the policy applies to it."""
    backpressure = hub_traits(server).send_backpressure

    def applied(stats: dict[str, int]) -> bool:
        return stats["closed_slow"] > 0 or stats["dropped"] > 0

    async def scenario() -> None:
        hub = HubClient(server, max_pending=STALL_MAX_PENDING, on_slow=on_slow)
        stalled = await _stalled_member(hub)
        fast = await hub.member("fast", ["room"])
        published, peak = 0, 0
        for _ in range(STALL_ROUNDS if backpressure else 2):
            reading = asyncio.ensure_future(messages(fast, STALL_ROUND))
            reply = await hub.publish("room", tag="m", start=published, count=STALL_ROUND, size=STALL_SIZE, sample=True)
            assert [sequence_of(m) for m in await reading] == list(range(published, published + STALL_ROUND))
            published += STALL_ROUND
            peak = max(peak, reply["peak_pending"])
            stats = reply["stats"]
            if applied(stats):
                break
        # The hub's bound held; where the server pushes back, it was reached and the policy applied.
        assert peak <= STALL_MAX_PENDING + STALL_SIZE, peak
        if not backpressure:
            assert not applied(stats), stats
            assert [sequence_of(m) for m in await messages(stalled, published)] == list(range(published))
        elif on_slow == "close":
            assert peak >= STALL_MAX_PENDING - 2 * STALL_SIZE, peak
            assert (stats["closed_slow"], stats["dropped"], stats["members"]) == (1, 0, 1), stats
            received = await _drain(stalled)  # it reads again: what was written, then the close
            assert [sequence_of(m) for m in received] == list(range(len(received)))
            assert len(received) < published
            assert stalled.close_code == 1013
            if hub_traits(server).close_reason:
                assert stalled.close_reason == "slow consumer"
        else:
            assert peak >= STALL_MAX_PENDING - 2 * STALL_SIZE, peak
            assert stats["closed_slow"] == 0 and stats["dropped"] > 0, stats
            # It reads again: every message it did not miss, in order; then it keeps up again.
            received = await messages(stalled, published - stats["dropped"])
            sequences = [sequence_of(m) for m in received]
            assert sequences == sorted(set(sequences)), sequences
            await hub.publish("room", tag="after", count=1)
            assert await recv(stalled, WAIT) == "after:0"
            await stalled.close()
        await fast.close()
        await hub.close()

    run(scenario(), 120)


def test_many_rooms_per_connection(server: ServerProcess) -> None:
    """One connection in twelve rooms, another in six; leaving some; a connection that ends leaves the rest."""

    async def scenario() -> None:
        hub = HubClient(server)
        rooms = [f"room-{n}" for n in range(12)]
        many = await hub.member("many", rooms, via="join")
        some = await hub.member("some", rooms[::2])
        for room in rooms:
            await hub.publish(room, tag=room, count=1)
        assert await messages(many, 12) == [f"{room}:0" for room in rooms]
        assert await messages(some, 6) == [f"{room}:0" for room in rooms[::2]]
        for room in rooms[:6]:
            await many.send(json.dumps({"leave": room}))
            assert await recv(many, WAIT) == f"ack:left {room}"
        for room in rooms:
            await hub.publish(room, tag=f"{room}-again", count=1)
        assert await messages(many, 6) == [f"{room}-again:0" for room in rooms[6:]]
        assert await messages(some, 6) == [f"{room}-again:0" for room in rooms[::2]]
        assert [(await hub.command({"members": room}))["members"] for room in rooms] == [1, 0] * 3 + [2, 1] * 3
        await many.close()  # its join blocks end: it leaves the six rooms it is still in
        reply = await hub.stats_until(lambda s: s["members"] == 1, "the closed connection to leave")
        assert sorted(reply["rooms"]) == sorted(rooms[::2])
        assert reply["stats"]["disconnected"] == 0  # it left through its join blocks, not by vanishing
        await some.close()
        await hub.close()

    run(scenario())


def test_join_and_leave_race_a_publisher(server: ServerProcess) -> None:
    """A member joins and leaves sixty times while 300 messages are published: it gets exactly
    those published while it was a member, once each, in order."""

    async def scenario() -> None:
        hub = HubClient(server)
        member = await hub.member("churn", [])
        reply = await hub.command({"race": {"room": "room", "member": "churn", "publishes": 300, "churns": 60}})
        expected = [f"race:{n}" for start, end in reply["windows"] for n in range(start, end)]
        received = []
        while not received or received[-1] != "race:end":
            received.append(await recv(member, WAIT))
        assert received[:-1] == expected
        assert 0 < len(expected) < 300
        assert reply["members"] == 1
        await member.close()
        await hub.close()

    run(scenario())
