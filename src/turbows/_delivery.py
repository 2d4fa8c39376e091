"""How each member's messages reach it: one member per connection, whatever its rooms.

A publish hands each member of the room one ``Outgoing`` (built once per
message in this process, shared by every member) through ``Member.offer``,
a plain call that never waits on the member. The member applies the
slow-member policy against its pending bytes and keeps the message; how it
then gets written is the member's own business:

- ``QueuedMember``, on every server (the generic ASGI path): a bounded
  queue and one sender task per connection, which hands each message to the
  connection's own ``send`` (``websocket.send``, so the state machine and any
  override of it see every message). The ASGI message is the same dict for
  every member: the payload is never encoded or copied again.
- ``NativeMember``, on turbows' own protocol, which offers under
  ``scope["extensions"][FANOUT_EXTENSION]`` a writer per connection
  (``turbows._protocol_c.FanoutWriter``): the frame is built once per
  message (``Outgoing.frame``, a ``ServerFrame``) and handed to each
  member's writer in a plain call, with no task, coroutine or ASGI message
  per member; the writer writes each member's frames once per event-loop
  turn. A connection whose class or instance overrides ``send``, or whose
  ASGI send is wrapped by middleware, stays on the generic path, so the
  override sees every message.

Pending bytes: on the generic path, payload bytes a member has not yet
handed to its server, the message being handed over included; on the
native path, frame bytes queued in the writer plus the transport's write
buffer. A member with nothing pending always takes the next message, so one
larger than ``max_pending`` still reaches the members that keep up: a member
holds at most ``max_pending`` bytes, or one message where that is larger.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState

from ._runtime import Parker, Runtime

__all__ = [
    "FANOUT_EXTENSION",
    "Counters",
    "Limits",
    "Member",
    "NativeMember",
    "Outgoing",
    "QueuedMember",
    "gone",
    "member_for",
    "offer_native",
]

logger = logging.getLogger("turbows.hub")

#: The ASGI scope extension through which turbows' protocol offers its fan-out writer.
FANOUT_EXTENSION = "turbows.fanout"

_DISCONNECTED = WebSocketState.DISCONNECTED

# Why a member ended before leaving its rooms: its connection (the hub no
# longer delivers to it), too slow (closed with 1013), or the hub stopped.
_GONE = "gone"
_SLOW = "slow"
_STOPPED = "stopped"

SLOW_CODE = 1013
SLOW_REASON = "slow consumer"


class Limits:
    """A hub's slow-member policy, shared by its members."""

    __slots__ = ("max_pending", "close_slow")

    def __init__(self, max_pending: int, close_slow: bool) -> None:
        self.max_pending = max_pending
        self.close_slow = close_slow


class Counters:
    """A hub's running totals (``Hub.stats()``), counted by its members as they go."""

    __slots__ = ("published", "delivered", "dropped", "closed_slow", "disconnected", "native", "senders_waiting")

    def __init__(self) -> None:
        #: Messages this process published.
        self.published = 0
        #: Messages handed to a member's server (one per member).
        self.delivered = 0
        #: Messages a member missed under ``on_slow="drop"``.
        self.dropped = 0
        #: Members closed under ``on_slow="close"``.
        self.closed_slow = 0
        #: Members that left their rooms because their connection ended or a send to it failed.
        self.disconnected = 0
        #: Members served through the native protocol's fan-out writer (the rest: the generic path).
        self.native = 0
        #: A sender task was handed a message since the publisher last gave the loop a turn.
        self.senders_waiting = False


class Outgoing:
    """One message on its way to this process's members of a room: built once, shared by all."""

    __slots__ = ("payload", "message", "size", "frame")

    def __init__(self, payload: str | bytes, size: int) -> None:
        self.payload = payload
        #: What a generic member's ``send`` gets: the very dict ``send_text``/``send_bytes`` would build.
        self.message: dict[str, Any]
        if type(payload) is str:
            self.message = {"type": "websocket.send", "text": payload}
        else:
            self.message = {"type": "websocket.send", "bytes": payload}
        #: Payload bytes (UTF-8 for text), counted against each member's ``max_pending``.
        self.size = size
        #: The native path's websocket frame, built by the first member that needs it, then shared.
        self.frame: object = None


def gone(websocket: Any) -> bool:
    """Whether the connection is over for sending: the app received its disconnect, or closed it."""
    return websocket.client_state is _DISCONNECTED or websocket.application_state is _DISCONNECTED


class Member:
    """One connection in one or more of a hub's rooms.

    ``rooms`` is kept by the registry (``_rooms.Registry``). ``remove``, the
    registry's, takes the member out of every room and forgets it; the member
    calls it when it ends by itself (its connection went, or it was too slow)
    and once it has nothing left to do after leaving its last room.
    """

    __slots__ = ("websocket", "serial", "rooms", "_remove", "_limits", "_counters", "_ending")

    #: Bytes waiting to be written to it (see the module's docstring).
    pending: int

    def __init__(
        self,
        websocket: Any,
        serial: int,
        remove: Callable[[Member], None],
        limits: Limits,
        counters: Counters,
    ) -> None:
        self.websocket = websocket
        #: This member's number in its hub: what an ``Envelope`` names to exclude it.
        self.serial = serial
        #: The names of the rooms it is in.
        self.rooms: set[str] = set()
        self._remove = remove
        self._limits = limits
        self._counters = counters
        #: Why it ended (_GONE, _SLOW, _STOPPED), or None while it takes messages.
        self._ending: str | None = None

    def offer(self, outgoing: Outgoing) -> None:
        """Take ``outgoing`` for delivery, unless the slow-member policy applies. Never waits, never raises."""
        raise NotImplementedError

    def left_every_room(self) -> None:
        """Its last room was left: deliver what it has, then go."""
        raise NotImplementedError

    def end(self, reason: str = _STOPPED) -> None:
        """Stop delivering at once: drop what waits, leave every room (the message being written finishes)."""
        raise NotImplementedError

    def lost(self) -> bool:
        """Whether its connection is over for sending, as far as can be seen without sending."""
        return gone(self.websocket)

    def disconnected(self) -> None:
        """Its connection is over: it leaves every room (counted if it was still in one)."""
        if self._ending is None:
            if self.rooms:
                self._counters.disconnected += 1
            self.end(_GONE)

    def _over_limit(self) -> None:
        if self._limits.close_slow:
            self._counters.closed_slow += 1
            self.end(_SLOW)
        else:
            self._counters.dropped += 1


class QueuedMember(Member):
    """The generic ASGI path: a bounded queue and one sender task, through the connection's own ``send``."""

    __slots__ = ("pending", "_queue", "_in_flight", "_parker", "_parked")

    def __init__(
        self,
        websocket: Any,
        serial: int,
        remove: Callable[[Member], None],
        limits: Limits,
        counters: Counters,
        runtime: Runtime,
    ) -> None:
        super().__init__(websocket, serial, remove, limits, counters)
        self.pending = 0
        self._queue: deque[Outgoing] = deque()
        #: The size of the message its sender is handing over now (still pending), else 0.
        self._in_flight = 0
        self._parker: Parker = runtime.parker()
        self._parked = False
        runtime.spawn(self._send_all, name=f"turbows.Hub sender #{serial}")

    # -- the publisher's side: plain calls -------------------------------------------

    def offer(self, outgoing: Outgoing) -> None:
        size = outgoing.size
        pending = self.pending
        if pending and pending + size > self._limits.max_pending:
            self._over_limit()
            return
        self._queue.append(outgoing)
        self.pending = pending + size
        self._counters.senders_waiting = True
        if self._parked:
            self._parker.unpark()

    def left_every_room(self) -> None:
        if self._parked:
            self._parker.unpark()

    def end(self, reason: str = _STOPPED) -> None:
        if self._ending is not None:
            return
        self._ending = reason
        self._queue.clear()
        self.pending = self._in_flight
        self._remove(self)
        if self._parked:
            self._parker.unpark()

    # -- the sender task -----------------------------------------------------------

    async def _send_all(self) -> None:
        """The sender task: it must never raise (a trio system task that raises ends the whole run)."""
        try:
            await self._send_queued()
        except Exception:
            logger.exception("turbows.Hub: a member's sender failed; it leaves every room")
        finally:
            # Failed, cancelled (its loop is shutting down) or done: never leave a
            # member behind that nobody delivers to.
            if self._ending is None:
                self.end(_STOPPED)
        if self._ending is _SLOW:
            await self._close_slow()

    async def _send_queued(self) -> None:
        """Hand each queued message to the connection's ``send``, until the member ends or leaves."""
        queue = self._queue
        websocket = self.websocket
        send = websocket.send
        counters = self._counters
        idle = True
        while True:
            if queue:
                if idle:
                    idle = False
                    # Servers that drop sends to a closed connection silently (hypercorn,
                    # daphne) never make a send fail: look before sending again.
                    if gone(websocket):
                        self.disconnected()
                        continue
                outgoing = queue.popleft()
                self._in_flight = size = outgoing.size
                try:
                    await send(outgoing.message)
                except Exception as error:
                    self._failed(error)
                    return
                finally:
                    self._in_flight = 0
                self.pending -= size
                counters.delivered += 1
            elif self._ending is not None:
                return
            elif not self.rooms:
                self._remove(self)  # it left every room and has nothing left to deliver
                return
            else:
                self._parked = True
                try:
                    await self._parker.park()
                finally:
                    self._parked = False
                idle = True

    def _failed(self, error: Exception) -> None:
        # A vanished peer (OSError, which Starlette turns into WebSocketDisconnect)
        # or a connection the app closed is the normal end of a member; anything
        # else is a server or app bug worth seeing, but still only this member's.
        if not isinstance(error, (WebSocketDisconnect, WebSocketDisconnected, OSError)):
            logger.warning("turbows.Hub: sending to a member failed; it leaves every room", exc_info=error)
        self.disconnected()

    async def _close_slow(self) -> None:
        try:
            await self.websocket.close(code=SLOW_CODE, reason=SLOW_REASON)
        except Exception:  # it went meanwhile: nothing left to close
            pass


class NativeMember(Member):
    """turbows' own protocol: each message's one frame handed to the connection's fan-out writer."""

    __slots__ = ("_writer",)

    def __init__(
        self,
        websocket: Any,
        serial: int,
        remove: Callable[[Member], None],
        limits: Limits,
        counters: Counters,
        writer: Any,
    ) -> None:
        super().__init__(websocket, serial, remove, limits, counters)
        self._writer = writer
        counters.native += 1

    @property  # type: ignore[override]
    def pending(self) -> int:
        return self._writer.pending

    @property
    def writer(self) -> Any:
        return self._writer

    def lost(self) -> bool:
        # The protocol knows first: a peer that vanished while the app is not receiving
        # leaves the WebSocket's states as they were, and nothing is sent to find out.
        return self._writer.closed or gone(self.websocket)

    def offer(self, outgoing: Outgoing) -> None:
        # A room offers to its native members all at once (offer_native); this is for one.
        frame = outgoing.frame
        if frame is None:
            frame = outgoing.frame = _ServerFrame(outgoing.payload)
        try:
            written = self._writer.write_frame(frame, self._limits.max_pending)
        except Exception as error:
            self.refused(error)
            return
        if written > 0:
            self._counters.delivered += 1
        else:
            self.refused(written)

    def refused(self, answer: int | Exception) -> None:
        """Its writer did not take a message: 0, over ``max_pending``; -1, the connection is over."""
        if isinstance(answer, Exception):  # never the publisher's problem: this member alone goes
            logger.error("turbows.Hub: writing to a member failed; it leaves every room", exc_info=answer)
            self.disconnected()
        elif answer == 0:
            self._over_limit()
        else:
            self.disconnected()

    def left_every_room(self) -> None:
        self._remove(self)  # what it was handed is the server's now

    def end(self, reason: str = _STOPPED) -> None:
        if self._ending is not None:
            return
        self._ending = reason
        self._remove(self)
        if reason is _SLOW:
            # Not websocket.close(): its send would wait for the very buffer that is full.
            try:
                closed = self._writer.close(SLOW_CODE, SLOW_REASON)
            except Exception:  # it went meanwhile: nothing left to close
                return
            if closed:
                # As websocket.close() would have: the app's next send or close gets Starlette's
                # WebSocketDisconnected, as on the generic path, not the protocol's refusal.
                self.websocket.application_state = _DISCONNECTED


def offer_native(members: tuple[NativeMember, ...], writers: tuple[Any, ...], outgoing: Outgoing, skip: Member | None) -> None:
    """``outgoing`` to native members of one hub (``writers``: theirs, in the same order) but ``skip``:
    its frame built once, handed to every writer in one call into the protocol."""
    frame = outgoing.frame
    if frame is None:
        frame = outgoing.frame = _ServerFrame(outgoing.payload)
    first = members[0]
    queued, refused = _write_to_all(
        frame, writers, first._limits.max_pending, skip._writer if isinstance(skip, NativeMember) else None
    )
    first._counters.delivered += queued
    if refused is not None:
        for index, answer in refused:
            members[index].refused(answer)


def _native_writer(websocket: Any) -> Any:
    """The connection's fan-out writer, where its server offers one and nothing stands in its way."""
    try:
        writer = websocket.scope["extensions"][FANOUT_EXTENSION]
    except (KeyError, TypeError):
        return None
    if type(writer) is not _FanoutWriter:
        return None
    # An override of send must see every message: only the classes whose send is known,
    # with nothing set on the instance, and an ASGI send that is the protocol's own (a
    # middleware's wrapper of it would be bypassed: the scope says nothing of it).
    if type(websocket).send not in _PLAIN_SENDS or _send_set_on(websocket):
        return None
    asgi_send = writer.asgi_send  # None: the connection is lost, and the member leaves at its first message
    if asgi_send is not None and _unwrapped(getattr(websocket, "_send", None)) != asgi_send:
        return None
    return writer


def _send_set_on(websocket: Any) -> bool:
    """Whether ``send`` is overridden on the instance: the compiled coroutine core keeps
    the override in ``_send_override``; the others, in the instance's ``__dict__``."""
    if getattr(websocket, "_send_override", None) is not None:
        return True
    try:
        return "send" in vars(websocket)
    except TypeError:  # no __dict__: nothing known about it
        return True


# Starlette's routes (and its ExceptionMiddleware) hand the app a ``sender`` closure that
# only notes an HTTP response's start and awaits the ASGI send: for a websocket it adds
# nothing, so the send inside it counts. Only that very function is looked through.
_STARLETTE_SENDER = ("starlette._exception_handler", "wrap_app_handling_exceptions.<locals>.wrapped_app.<locals>.sender")


def _unwrapped(send: Any) -> Any:
    """The ASGI send under Starlette's own pass-through wrappers (anything else is returned as is)."""
    for _ in range(8):  # a route inside a mounted app: a few layers at most
        code = getattr(send, "__code__", None)
        if code is None or (getattr(send, "__module__", None), send.__qualname__) != _STARLETTE_SENDER:
            return send
        try:
            send = send.__closure__[code.co_freevars.index("send")].cell_contents
        except (ValueError, IndexError, TypeError):
            return None
    return None


def member_for(
    websocket: Any,
    serial: int,
    remove: Callable[[Member], None],
    limits: Limits,
    counters: Counters,
    runtime: Runtime,
) -> Member:
    """The member for ``websocket``, by what its server offers: the native writer, else its own ``send``."""
    if _FanoutWriter is not None:
        writer = _native_writer(websocket)
        if writer is not None:
            return NativeMember(websocket, serial, remove, limits, counters, writer)
    return QueuedMember(websocket, serial, remove, limits, counters, runtime)


def _plain_sends() -> tuple[Any, ...]:
    """``send`` of every WebSocket class known to hand each message straight to the ASGI send."""
    from starlette.websockets import WebSocket as StarletteWebSocket

    from ._cores import CORES, SHAPES

    # Both compiled shapes, not only the one this interpreter selects: either may be used directly.
    classes = (*CORES.values(), *SHAPES.values())
    return (StarletteWebSocket.send, *(websocket_class.send for websocket_class in classes))


try:
    from ._frames_c import ServerFrame as _ServerFrame
    from ._protocol_c import FanoutWriter as _FanoutWriter
    from ._protocol_c import write_to_all as _write_to_all
except ImportError:  # a pure install: no native protocol, so no writer to find
    _ServerFrame = _FanoutWriter = _write_to_all = None  # type: ignore[assignment,misc]
    _PLAIN_SENDS: tuple[Any, ...] = ()
else:
    _PLAIN_SENDS = _plain_sends()
