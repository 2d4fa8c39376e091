"""``turbows.Hub``: rooms of connections, and publishing to them.

The public face: argument checks, the hub's lifetime, and the loop it is
bound to. Who is in which room is ``_rooms``; how a message reaches each
member is ``_delivery``; where a published message travels before it comes
back to be delivered is ``_backend``; what it is, encoded once, is
``_payload``.

A hub lives on one event loop, like the connections it serves: the first
member binds it, and it is free to bind another loop once it has no members
left (so a module-level hub serves one ``TestClient`` after another).
"""

from __future__ import annotations

import itertools
import os
from types import TracebackType
from typing import Any

from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketState

from . import _payload, _runtime
from ._backend import Envelope, backend_for
from ._delivery import Counters, Limits, Member, Outgoing, member_for
from ._rooms import Registry

__all__ = ["MAX_ROOM_NAME", "Hub"]

#: The longest room name, in characters.
MAX_ROOM_NAME = 256

_ON_SLOW = ("close", "drop")

#: Native members' frames are written once per loop turn, so a publisher that
#: reaches only them gives the loop a turn after this many messages or bytes,
#: not after every message: each write then carries a batch of frames, and
#: a loop of publishes still lets the loop (and other tasks) run often.
_NATIVE_BATCH_MESSAGES = 16
_NATIVE_BATCH_BYTES = 64 * 1024

_NEW = 0
_STARTED = 1
_STOPPED = 2


def _room_name(room: object) -> str:
    if type(room) is not str:
        if not isinstance(room, str):
            raise TypeError(f"a room name is a str, got {type(room).__name__}")
        room = str(room)  # a plain str: a subclass could hash or compare as it likes
    if not room:
        raise ValueError("a room name cannot be empty")
    if len(room) > MAX_ROOM_NAME:
        raise ValueError(f"a room name is at most {MAX_ROOM_NAME} characters, got one of {len(room)}")
    if not room.isascii():
        try:
            room.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"a room name must be valid Unicode text, got {room!r} (a lone surrogate)") from None
    return room


def _websocket(websocket: object, argument: str = "websocket") -> Any:
    if not isinstance(websocket, StarletteWebSocket):
        raise TypeError(
            f"{argument} must be a WebSocket (turbows' or Starlette's), got {type(websocket).__name__}"
        )
    return websocket


def _check_joinable(websocket: Any) -> None:
    state = websocket.application_state
    if state is WebSocketState.CONNECTING:
        raise RuntimeError("a websocket joins a room once accepted: await websocket.accept() first")
    if state is not WebSocketState.CONNECTED or websocket.client_state is WebSocketState.DISCONNECTED:
        raise RuntimeError(
            f"this websocket's connection is over (application {state.name.lower()}, "
            f"client {websocket.client_state.name.lower()}): it cannot join a room"
        )


class Hub:
    """Rooms of websocket connections, and publishing to them.

    ``Hub()`` serves the connections of one process. Every member of a room
    when a message is published, still connected, receives it exactly once,
    in the room's one order, unless the slow-member policy applies to it;
    publishing never waits on a member. ``max_pending``: the bytes a member
    may have waiting to be written before ``on_slow`` applies: ``"close"``
    closes it (code 1013, ``"slow consumer"``), ``"drop"`` has it miss
    messages while it is over the bound.
    """

    __slots__ = (
        "_backend",
        "_registry",
        "_limits",
        "_counters",
        "_token",
        "_serials",
        "_state",
        "_runtime",
        "_unyielded_messages",
        "_unyielded_bytes",
        "_batch_bytes",
    )

    def __init__(self, url: str | None = None, *, max_pending: int = 1_048_576, on_slow: str = "close") -> None:
        if not isinstance(max_pending, int) or isinstance(max_pending, bool):
            raise TypeError(f"max_pending is a number of bytes (an int), got {type(max_pending).__name__}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1 byte, got {max_pending}")
        if on_slow not in _ON_SLOW:
            raise ValueError(f'on_slow must be "close" or "drop", got {on_slow!r}')
        self._backend = backend_for(url, self._deliver)
        self._registry = Registry(self._backend.subscribe, self._backend.unsubscribe)
        self._limits = Limits(max_pending, on_slow == "close")
        self._counters = Counters()
        # Names this hub in the envelopes it publishes, so only it reads their `exclude`.
        self._token = os.urandom(16)
        self._serials = itertools.count(1)
        self._state = _NEW
        #: The event loop its members run on; None until the first member (see the module's docstring).
        self._runtime: _runtime.Runtime | None = None
        #: Published in process since a publisher last gave the loop a turn, and how many bytes may be.
        self._unyielded_messages = 0
        self._unyielded_bytes = 0
        self._batch_bytes = min(_NATIVE_BATCH_BYTES, max_pending // 2)

    def __repr__(self) -> str:
        state = ("new", "started", "stopped")[self._state]
        return f"<turbows.Hub {state}, {len(self._registry.rooms)} rooms, {self._registry.in_rooms()} members>"

    # -- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backend and start its listener (an in-process hub works without it)."""
        if self._state == _STARTED:
            raise RuntimeError("this turbows.Hub is started already")
        if self._state == _STOPPED:
            raise RuntimeError("this turbows.Hub was stopped; a hub is not started again, make a new one")
        await self._backend.start()
        self._state = _STARTED

    async def stop(self) -> None:
        """Stop delivering: every member leaves every room, what waited for it is dropped. Idempotent.

        It does not wait on any member: a message being written finishes in
        the background. The connections themselves stay open.
        """
        if self._state == _STOPPED:
            return
        self._state = _STOPPED
        for member in tuple(self._registry.members.values()):
            member.end()
        await self._backend.stop()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """Whether a publish now would reach the backend (always, in process, until stopped)."""
        return self._state != _STOPPED and self._backend.connected

    def _check_usable(self, action: str) -> None:
        if self._state == _STOPPED:
            raise RuntimeError(f"turbows.Hub.{action}(): this hub was stopped; make a new one")
        if self._state == _NEW and self._backend.needs_start:
            raise RuntimeError(
                f"turbows.Hub.{action}(): this hub is not started; `async with hub:` "
                "or `await hub.start()` first (in the app's lifespan)"
            )

    def _check_loop(self, action: str) -> None:
        """Members exist, so the caller must run on their loop."""
        runtime = self._runtime
        if runtime is not None and self._registry.members and not runtime.is_current():
            raise RuntimeError(
                f"turbows.Hub.{action}(): this hub's members run on {runtime.describe()}, and this call "
                "does not; a hub serves one event loop (Starlette's TestClient runs each connection on "
                "a loop of its own unless used as `with TestClient(app) as client:`)"
            )

    # -- membership ----------------------------------------------------------------

    def join(self, room: str, websocket: Any) -> _Joined:
        """``async with hub.join(room, websocket):`` a member of ``room`` until the block ends."""
        return _Joined(self, _room_name(room), _websocket(websocket))

    async def add(self, room: str, websocket: Any) -> None:
        """Make ``websocket`` (accepted) a member of ``room``; nothing changes if it is one already.

        It receives everything published to ``room`` once this returns. A
        connection that ends leaves all its rooms by itself.
        """
        room = _room_name(room)
        websocket = _websocket(websocket)
        self._check_usable("add")
        self._check_loop("add")
        _check_joinable(websocket)
        member = self._member(websocket)
        if not self._registry.join(room, member):
            return
        try:
            await self._backend.subscribed(room)
        except BaseException:  # not a member after all, whatever stopped the wait
            self._registry.leave(room, member)
            raise

    async def discard(self, room: str, websocket: Any) -> None:
        """``websocket`` leaves ``room``; nothing happens if it is not a member (or the hub was stopped).

        What was published to the room while it was a member still reaches it.
        """
        room = _room_name(room)
        member = self._registry.members.get(_websocket(websocket))
        if member is not None:
            self._check_loop("discard")
            self._registry.leave(room, member)

    def _member(self, websocket: Any) -> Member:
        registry = self._registry
        member = registry.members.get(websocket)
        if member is None:
            runtime = self._runtime
            if runtime is None or not registry.members:
                runtime = self._runtime = _runtime.current()
            member = member_for(
                websocket, next(self._serials), registry.remove, self._limits, self._counters, runtime
            )
            registry.register(member)
        return member

    # -- publishing ----------------------------------------------------------------

    async def publish_text(self, room: str, text: str, *, exclude: Any = None) -> None:
        """Every member of ``room`` but ``exclude`` receives ``text``, as ``send_text`` would send it."""
        room = _room_name(room)
        payload, size = _payload.text_payload(text)
        await self._publish("publish_text", room, payload, size, exclude)

    async def publish_bytes(self, room: str, data: bytes, *, exclude: Any = None) -> None:
        """Every member of ``room`` but ``exclude`` receives ``data``, as ``send_bytes`` would send it."""
        room = _room_name(room)
        payload, size = _payload.bytes_payload(data)
        await self._publish("publish_bytes", room, payload, size, exclude)

    async def publish_json(self, room: str, value: Any, *, mode: str = "text", exclude: Any = None) -> None:
        """Every member of ``room`` but ``exclude`` receives ``value``, encoded once as ``send_json`` does."""
        room = _room_name(room)
        payload, size = _payload.json_payload(value, mode)
        await self._publish("publish_json", room, payload, size, exclude)

    async def _publish(self, action: str, room: str, payload: str | bytes, size: int, exclude: Any) -> None:
        serial = 0
        if exclude is not None:
            excluded = self._registry.members.get(_websocket(exclude, "exclude"))
            if excluded is not None:
                serial = excluded.serial
        self._check_usable(action)
        self._check_loop(action)
        backend = self._backend
        await backend.publish(room, Envelope(payload, size, self._token, serial))
        counters = self._counters
        counters.published += 1
        if not backend.suspends:
            # Delivery never suspends, so neither would the publisher: let the
            # senders run, or a loop of publishes would only fill their queues.
            # Native members need no sender, only the loop's turn to write what
            # they hold: one turn per batch, so each write carries many frames.
            self._unyielded_messages += 1
            self._unyielded_bytes += size
            if (
                counters.senders_waiting
                or self._unyielded_messages >= _NATIVE_BATCH_MESSAGES
                or self._unyielded_bytes >= self._batch_bytes
            ):
                counters.senders_waiting = False
                self._unyielded_messages = self._unyielded_bytes = 0
                await _runtime.current().checkpoint()

    def _deliver(self, name: str, envelope: Envelope) -> None:
        """The backend's delivery of one message to this process's members of a room."""
        room = self._registry.rooms.get(name)
        if room is None:
            return
        skip = None
        if envelope.exclude and envelope.origin == self._token:
            skip = self._registry.by_serial.get(envelope.exclude)
        room.offer(Outgoing(envelope.payload, envelope.size), skip)

    # -- what it holds ---------------------------------------------------------------

    def _prune(self, members: tuple[Member, ...]) -> None:
        """Members whose connection is over leave now, so counts are true (on the hub's loop only)."""
        runtime = self._runtime
        if runtime is not None and runtime.is_current():
            for member in members:
                if member.lost():
                    member.disconnected()

    def members(self, room: str) -> int:
        """How many of this process's connections are in ``room``."""
        room = _room_name(room)
        found = self._registry.rooms.get(room)
        if found is None:
            return 0
        self._prune(found.snapshot())
        return len(found.members)

    def rooms(self) -> list[str]:
        """The rooms this process has members in, in the order they got their first."""
        self._prune(tuple(self._registry.members.values()))
        return list(self._registry.rooms)

    def stats(self) -> dict[str, int]:
        """Counters since the hub was made, and what it holds now.

        ``published``: messages this process published; ``delivered``: handed
        to a member's server, one per member; ``dropped``: messages members
        missed under ``on_slow="drop"``; ``closed_slow``: members closed under
        ``on_slow="close"``; ``disconnected``: members that left because
        their connection ended or a send to them failed; ``native``: members
        served through turbows' protocol's fan-out writer. Now: ``members``
        (connections in a room), ``rooms``, ``pending_bytes`` (waiting for
        all members) and ``pending_bytes_max`` (for the one with most).
        """
        self._prune(tuple(self._registry.members.values()))
        members = tuple(self._registry.members.values())
        counters = self._counters
        pending = [member.pending for member in members]
        stats = {
            "published": counters.published,
            "delivered": counters.delivered,
            "dropped": counters.dropped,
            "closed_slow": counters.closed_slow,
            "disconnected": counters.disconnected,
            "native": counters.native,
            "members": self._registry.in_rooms(),
            "rooms": len(self._registry.rooms),
            "pending_bytes": sum(pending),
            "pending_bytes_max": max(pending, default=0),
        }
        stats.update(self._backend.stats())
        return stats


class _Joined:
    """``hub.join(room, websocket)``: ``add`` on entry, ``discard`` on exit, whatever ends the block."""

    __slots__ = ("_hub", "_room", "_websocket")

    def __init__(self, hub: Hub, room: str, websocket: Any) -> None:
        self._hub = hub
        self._room = room
        self._websocket = websocket

    async def __aenter__(self) -> None:
        await self._hub.add(self._room, self._websocket)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._hub.discard(self._room, self._websocket)
