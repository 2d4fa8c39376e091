"""The chat room of FastAPI's WebSocket docs, on turbows.

    python examples/chat/app.py            # http://127.0.0.1:8000, open it in two tabs
    python examples/chat/app.py --port 0   # any free port (uvicorn logs which)

FastAPI serves the page; the websocket route is a raw ASGI endpoint that
builds ``turbows.WebSocket`` from the server's own ``scope``, ``receive`` and
``send``, so the chat code below is the docs' code, unchanged, on turbows.
``TURBOWS_NO_EXTENSIONS=1`` runs it on turbows' pure-Python core.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

import turbows
from turbows import WebSocket, WebSocketDisconnect

app = FastAPI(title="turbows chat")

HTML = """<!DOCTYPE html>
<html>
    <head>
        <title>Chat</title>
    </head>
    <body>
        <h1>WebSocket Chat</h1>
        <h2>Your ID: <span id="ws-id"></span></h2>
        <p>Status: <span id="status">connecting</span></p>
        <form action="" onsubmit="sendMessage(event)">
            <input type="text" id="messageText" autocomplete="off"/>
            <button id="send">Send</button>
        </form>
        <ul id="messages">
        </ul>
        <script>
            // ?id=alice picks the ID; by default, one made from the clock.
            var client_id = new URLSearchParams(location.search).get("id") || String(Date.now());
            document.querySelector("#ws-id").textContent = client_id;
            var scheme = location.protocol === "https:" ? "wss" : "ws";
            var ws = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(client_id)}`);
            ws.onopen = function() {
                document.getElementById("status").textContent = "connected";
            };
            ws.onclose = function() {
                document.getElementById("status").textContent = "disconnected";
            };
            ws.onmessage = function(event) {
                var messages = document.getElementById("messages");
                var message = document.createElement("li");
                message.textContent = event.data;
                messages.appendChild(message);
            };
            function sendMessage(event) {
                var input = document.getElementById("messageText");
                ws.send(input.value);
                input.value = "";
                event.preventDefault();
            }
        </script>
    </body>
</html>
"""


@app.get("/")
async def get() -> HTMLResponse:
    return HTMLResponse(HTML)


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in list(self.active_connections):
            try:
                await connection.send_text(message)
            except WebSocketDisconnect:  # that client is gone; its own handler says so to the others
                self.disconnect(connection)


manager = ConnectionManager()


async def websocket_endpoint(websocket: WebSocket) -> None:
    client_id = websocket.path_params["client_id"]
    await manager.connect(websocket)
    await manager.broadcast(f"Client #{client_id} joined the chat")
    try:
        while True:
            data = await websocket.receive_text()
            await manager.send_personal_message(f"You wrote: {data}", websocket)
            await manager.broadcast(f"Client #{client_id} says: {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)
        await manager.broadcast(f"Client #{client_id} left the chat")


class TurbowsEndpoint:
    """A raw ASGI websocket endpoint: ``handler`` gets a ``turbows.WebSocket`` built from the server's own calls.

    Starlette's (and so FastAPI's) ``WebSocketRoute`` serves an object that is
    not a function as an ASGI app, so nothing wraps ``receive`` and ``send``.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handler(WebSocket(scope, receive, send))


app.router.add_websocket_route("/ws/{client_id}", TurbowsEndpoint(websocket_endpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description="The FastAPI docs' chat room, on turbows.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    print(f"turbows core: {turbows.IMPLEMENTATION}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
