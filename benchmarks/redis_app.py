"""The app each worker serves in ``redis_fanout.py``: a room on Redis, two ways.

- ``/turbows/{room}``: a member joins ``turbows.Hub(REDIS_URL)``'s room and
  reads; ``?publisher=1``: a connection that publishes every text it
  receives to the room (``hub.publish_text``), and joins nothing.
- ``/broadcaster/{room}``: encode/broadcaster's README pattern on Starlette's
  own WebSocket: a member subscribes and sends each event
  (``async with broadcast.subscribe(...)``, ``await websocket.send_text``);
  the publisher's receive loop calls ``broadcast.publish``.

Both publish the same text and both members get exactly it. The hub's URL is
``BENCH_REDIS_URL``; the hub's slow-member bound is its default (1 MiB,
close); broadcaster has none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows

REDIS_URL = os.environ["BENCH_REDIS_URL"]

hub = turbows.Hub(REDIS_URL)

try:
    from broadcaster import Broadcast
except ImportError:  # the comparison is skipped; the turbows routes still serve
    Broadcast = None  # type: ignore[assignment,misc]
broadcast = Broadcast(REDIS_URL) if Broadcast is not None else None

if Broadcast is not None:
    # broadcaster 0.3.1's Redis backend delivers nothing here as published: subscribe() sets
    # its listener's `_ready` event before redis-py records the channel, so the listener's
    # `pubsub.listen()` finds no channel, returns at once, clears `_ready` and waits for good.
    # Setting it again once the subscription is recorded is the smallest fix that lets the
    # comparison run; redis_fanout.py reports it.
    from broadcaster._backends.redis import RedisBackend as _BroadcasterRedis

    _subscribe = _BroadcasterRedis.subscribe

    async def _subscribe_then_wake(self: _BroadcasterRedis, channel: str) -> None:
        await _subscribe(self, channel)
        self._ready.set()

    if os.environ.get("BENCH_BROADCASTER_AS_IS") != "1":
        _BroadcasterRedis.subscribe = _subscribe_then_wake  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        if broadcast is not None:
            await stack.enter_async_context(broadcast)
        yield


async def turbows_room(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    websocket = turbows.WebSocket(scope, receive, send)
    room = websocket.path_params["room"]
    await websocket.accept()
    if websocket.query_params.get("publisher"):
        async for text in websocket.iter_text():
            await hub.publish_text(room, text)
        return
    async with hub.join(room, websocket):
        async for _ in websocket.iter_text():
            pass


async def broadcaster_room(websocket: StarletteWebSocket) -> None:
    """broadcaster's README: a receiver that publishes, a sender per subscriber, in one task group."""
    room = websocket.path_params["room"]
    await websocket.accept()
    if websocket.query_params.get("publisher"):
        async for text in websocket.iter_text():
            await broadcast.publish(channel=room, message=text)  # type: ignore[union-attr]
        return

    async with anyio.create_task_group() as task_group:

        async def receiver() -> None:
            async for _ in websocket.iter_text():
                pass
            task_group.cancel_scope.cancel()

        task_group.start_soon(receiver)
        async with broadcast.subscribe(channel=room) as subscriber:  # type: ignore[union-attr]
            async for event in subscriber:
                await websocket.send_text(event.message)


class _Raw:
    """A raw ASGI endpoint behind a route (turbows' class built from the scope, as an app may)."""

    def __init__(self, endpoint):  # type: ignore[no-untyped-def]
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await self.endpoint(scope, receive, send)


app = Starlette(
    routes=[
        WebSocketRoute("/turbows/{room}", _Raw(turbows_room)),
        WebSocketRoute("/broadcaster/{room}", broadcaster_room),
    ],
    lifespan=lifespan,
)
