"""The end-to-end benchmark apps: raw ASGI, one WebSocket class chosen by env.

``BENCH_WS=starlette|pure|speedups`` picks the class (for ``pure`` also set
``TURBOWS_NO_EXTENSIONS=1``, as serve.py does). Routes, by path:

- ``/text``: ``receive_text`` + ``send_text`` echo
- ``/json``: ``receive_json`` + ``send_json`` echo (text frames)
- ``/jsonbin``: the same with ``mode="binary"`` (binary frames)
- ``/bytes``: ``receive_bytes`` + ``send_bytes`` echo (the whole path's 64 KiB
  and 1 MiB messages: binary, as picows' own server echoes them)
- ``/idle``: ``accept``, then wait in ``receive`` until the client goes (the
  idle-connection scale test); an HTTP GET of ``/idle-count`` answers how many
  connections are accepted and waiting, so the test reads memory only once all are
- ``/fanout``: a connection manager of the FastAPI docs' shape: every JSON
  message received from any client is broadcast to every connection.
- ``/fanout-hub``: the same with ``turbows.Hub``: every connection joins one
  room, and every JSON message received is published to it
  (``publish_json``: encoded once; on turbows' protocol, framed once).
"""

from __future__ import annotations

import os

from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

CHOICE = os.environ.get("BENCH_WS", "starlette")
if CHOICE == "starlette":
    WebSocket = StarletteWebSocket
else:
    from turbows._cores import CORES

    WebSocket = CORES[CHOICE]  # KeyError: that core is not in this install


class ConnectionManager:
    """The FastAPI docs' manager: a list of connections, broadcast to all."""

    def __init__(self) -> None:
        self.active_connections: list = []

    async def connect(self, websocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message) -> None:
        for connection in self.active_connections:
            await connection.send_json(message)


manager = ConnectionManager()


async def text_echo(ws) -> None:
    await ws.accept()
    while True:
        await ws.send_text(await ws.receive_text())


async def json_echo(ws) -> None:
    await ws.accept()
    while True:
        await ws.send_json(await ws.receive_json())


async def json_binary_echo(ws) -> None:
    await ws.accept()
    while True:
        await ws.send_json(await ws.receive_json(mode="binary"), mode="binary")


async def bytes_echo(ws) -> None:
    await ws.accept()
    while True:
        await ws.send_bytes(await ws.receive_bytes())


#: Connections of ``/idle`` that have been accepted and not yet gone.
idle_connections = 0


async def idle(ws) -> None:
    global idle_connections
    await ws.accept()
    idle_connections += 1
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        idle_connections -= 1


async def idle_count(send) -> None:
    body = str(idle_connections).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def fanout(ws) -> None:
    await manager.connect(ws)
    try:
        while True:
            await manager.broadcast(await ws.receive_json())
    finally:
        manager.disconnect(ws)


import turbows  # noqa: E402  (the hub serves Starlette's class too, through its own send)

hub = turbows.Hub()


async def fanout_hub(ws) -> None:
    await ws.accept()
    async with hub.join("bench", ws):
        while True:
            await hub.publish_json("bench", await ws.receive_json())


ROUTES = {
    "/text": text_echo,
    "/json": json_echo,
    "/jsonbin": json_binary_echo,
    "/bytes": bytes_echo,
    "/idle": idle,
    "/fanout": fanout,
    "/fanout-hub": fanout_hub,
}


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and scope["path"] == "/idle-count":
        await idle_count(send)
        return
    if scope["type"] != "websocket":
        return
    handler = ROUTES.get(scope["path"])
    ws = WebSocket(scope, receive, send)
    if handler is None:
        await ws.close(code=1008)
        return
    try:
        await handler(ws)
    except WebSocketDisconnect:
        pass
