"""An app written against turbows' public API, as a user writes one.

Never run: ``ci/typecheck.sh`` checks it with ``mypy --strict`` and pyright
(strict) against the installed turbows, so the types a user's checker sees
cannot drift from what the API is. ``assert_type`` pins the types that matter:
a name that decayed to ``Any`` fails it.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, assert_type

import starlette.websockets
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

import turbows
import turbows.routing
import turbows.uvicorn
from turbows import WebSocket, WebSocketDisconnect, WebSocketFrameTypeError, WebSocketState


# A raw ASGI app: the class is constructed directly.
async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive=receive, send=send)
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as disconnect:
        assert_type(disconnect.code, int)


# Code written against Starlette's class takes turbows' (a subclass).
async def accept(websocket: starlette.websockets.WebSocket) -> None:
    await websocket.accept(subprotocol=None)


# A Starlette endpoint, routed with turbows' route.
async def json_echo(websocket: WebSocket) -> None:
    await accept(websocket)
    async for value in websocket.iter_json(mode="binary"):
        await websocket.send_json(value, mode="binary")
    assert websocket.client_state is WebSocketState.DISCONNECTED


# Typed state, as Starlette's class takes it.
class AppState(TypedDict):
    greeting: str


async def greet(websocket: WebSocket[AppState]) -> None:
    assert_type(websocket.state, AppState)
    await websocket.accept()
    await websocket.send_text(websocket.state["greeting"])


starlette_app = Starlette(
    routes=[
        turbows.routing.WebSocketRoute("/json", json_echo),
        turbows.routing.WebSocketRoute("/greet", greet),
    ]
)


# A FastAPI endpoint, opted in per endpoint.
fastapi_app = FastAPI()


@fastapi_app.websocket("/rooms/{room}")
@turbows.websocket_endpoint
async def room(websocket: turbows.WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        message: Any = await websocket.receive_json()
    except WebSocketFrameTypeError as error:  # a binary frame
        assert_type(error.expected, str)
        await websocket.close(code=1003, reason=str(error))
        return
    await websocket.send_json({"room": room, "message": message})
    assert_type(await websocket.receive_bytes(), bytes)
    async for text in websocket.iter_text():
        assert_type(text, str)


# A subclass of turbows' class, installed everywhere the frameworks build one.
class AppWebSocket(turbows.WebSocket):
    async def send_greeting(self) -> None:
        await self.send_text("hello")


turbows.install(websocket_class=AppWebSocket)
turbows.install()
turbows.uninstall()

assert_type(turbows.IMPLEMENTATION, Literal["speedups", "pure"])
if turbows.IMPLEMENTATION == "pure":
    print("no compiled core here")

# uvicorn with turbows' protocol.
config = uvicorn.Config(echo, ws=turbows.uvicorn.WebSocketProtocol)
assert_type(turbows.uvicorn.NATIVE, bool)
