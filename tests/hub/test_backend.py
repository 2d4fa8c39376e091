"""The boundary between the hub and its backend (``turbows._backend``), held by a backend of the tests' own.

Issue 14 adds a Redis backend behind this boundary and changes nothing
else, so what the hub promises a backend is tested here: it hears of a
room's first member and last one leaving, in order, however they leave; an
``add`` returns once the backend says the subscription is in effect (and a
cancelled one leaves nothing behind); a publish raises what the backend
raises; ``exclude`` is read only from the hub's own envelopes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import turbows
import turbows._hub
from turbows._backend import Envelope, LocalBackend
from hub_peer import Connection, eventually

pytestmark = pytest.mark.anyio


class RecordingBackend(LocalBackend):
    """The in-process backend, recording what the hub tells it, with a subscription that can be held."""

    def __init__(self, deliver: Any) -> None:
        super().__init__(deliver)
        self.calls: list[tuple[str, str]] = []
        self.subscription: anyio.Event | None = None
        self.unavailable = False

    def subscribe(self, room: str) -> None:
        self.calls.append(("subscribe", room))

    def unsubscribe(self, room: str) -> None:
        self.calls.append(("unsubscribe", room))

    async def subscribed(self, room: str) -> None:
        if self.subscription is not None:
            await self.subscription.wait()

    async def publish(self, room: str, envelope: Envelope) -> None:
        if self.unavailable:
            raise turbows.HubUnavailable("the backend is down")
        await super().publish(room, envelope)

    def stats(self) -> dict[str, int]:
        return {"backend_calls": len(self.calls)}


class StartedBackend(RecordingBackend):
    needs_start = True


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingBackend]]:
    """Every hub made in the test gets a ``RecordingBackend``; the list holds them."""
    made: list[RecordingBackend] = []

    def backend_for(url: object, deliver: Any) -> RecordingBackend:
        made.append((StartedBackend if url == "started://" else RecordingBackend)(deliver))
        return made[-1]

    monkeypatch.setattr(turbows._hub, "backend_for", backend_for)
    yield made


async def test_the_backend_hears_of_each_rooms_first_and_last_member(
    websocket_class: type, recording: list[RecordingBackend]
) -> None:
    hub = turbows.Hub(max_pending=10)
    (backend,) = recording
    a, b, slow, dead = [await Connection.accepted(websocket_class) for _ in range(4)]
    await hub.add("one", a.websocket)
    await hub.add("one", b.websocket)
    await hub.add("two", a.websocket)
    await hub.discard("one", a.websocket)
    assert backend.calls == [("subscribe", "one"), ("subscribe", "two")]
    await hub.discard("one", b.websocket)
    assert backend.calls[-1] == ("unsubscribe", "one")
    # Members that leave by themselves: one too slow, one whose connection went.
    await hub.add("slow", slow.websocket)
    slow.hold()
    for _ in range(3):
        await hub.publish_bytes("slow", b"x" * 8)
    await hub.add("dead", dead.websocket)
    dead.fail_with = OSError("gone")
    await hub.publish_text("dead", "x")
    await eventually(lambda: ("unsubscribe", "dead") in backend.calls, "the dead member's room to empty")
    assert backend.calls[2:] == [
        ("unsubscribe", "one"),
        ("subscribe", "slow"),
        ("unsubscribe", "slow"),
        ("subscribe", "dead"),
        ("unsubscribe", "dead"),
    ]
    await hub.stop()
    assert backend.calls[-1] == ("unsubscribe", "two")
    assert hub.stats()["backend_calls"] == len(backend.calls) == 8
    slow.release()


async def test_add_returns_once_the_subscription_is_in_effect(
    websocket_class: type, recording: list[RecordingBackend]
) -> None:
    hub = turbows.Hub()
    (backend,) = recording
    connection = await Connection.accepted(websocket_class)
    backend.subscription = anyio.Event()
    added = anyio.Event()

    async def add() -> None:
        await hub.add("room", connection.websocket)
        added.set()

    async with anyio.create_task_group() as group:
        group.start_soon(add)
        await eventually(lambda: backend.calls == [("subscribe", "room")], "the subscription to start")
        for _ in range(10):
            await anyio.sleep(0)
        assert not added.is_set()
        backend.subscription.set()
    assert hub.members("room") == 1


async def test_a_cancelled_add_leaves_no_membership(websocket_class: type, recording: list[RecordingBackend]) -> None:
    hub = turbows.Hub()
    (backend,) = recording
    connection = await Connection.accepted(websocket_class)
    backend.subscription = anyio.Event()  # never set: the subscription never takes effect
    with anyio.move_on_after(0.05) as scope:
        await hub.add("room", connection.websocket)
    assert scope.cancelled_caught
    assert hub.members("room") == 0 and hub.rooms() == []
    assert backend.calls == [("subscribe", "room"), ("unsubscribe", "room")]


async def test_a_publish_raises_what_the_backend_raises(websocket_class: type, recording: list[RecordingBackend]) -> None:
    hub = turbows.Hub()
    (backend,) = recording
    connection = await Connection.accepted(websocket_class)
    await hub.add("room", connection.websocket)
    backend.unavailable = True
    with pytest.raises(turbows.HubUnavailable, match="the backend is down"):
        await hub.publish_text("room", "lost")
    backend.unavailable = False
    await hub.publish_text("room", "delivered")
    await eventually(lambda: connection.payloads == ["delivered"], "the second message")
    assert hub.stats()["published"] == 1 and hub.members("room") == 1  # the member stayed


async def test_exclude_is_read_from_the_hubs_own_envelopes_only(
    websocket_class: type, recording: list[RecordingBackend]
) -> None:
    """With many processes, each hub numbers its own members: another hub's ``exclude`` names none of ours."""
    hub = turbows.Hub()
    (backend,) = recording
    first, second = [await Connection.accepted(websocket_class) for _ in range(2)]
    await hub.add("room", first.websocket)
    await hub.add("room", second.websocket)
    await hub.publish_text("room", "not to the first", exclude=first.websocket)
    await eventually(lambda: second.payloads == ["not to the first"], "the message")
    serial = hub._registry.members[first.websocket].serial
    backend._deliver("room", Envelope("from another process", 20, b"another hub's token", serial))
    await eventually(lambda: first.payloads == second.payloads[1:] == ["from another process"], "the message")


async def test_a_backend_that_needs_starting(websocket_class: type, recording: list[RecordingBackend]) -> None:
    hub = turbows.Hub("started://")
    connection = await Connection.accepted(websocket_class)
    for call in (hub.add("room", connection.websocket), hub.publish_text("room", "x")):
        with pytest.raises(RuntimeError, match=r"this hub is not started; `async with hub:` or `await hub.start\(\)`"):
            await call
    async with hub:
        await hub.add("room", connection.websocket)
        await hub.publish_text("room", "started")
        await eventually(lambda: connection.payloads == ["started"], "the message")
