"""Chat rooms on turbows: FastAPI's WebSocket chat, with its broadcast loop replaced by a ``turbows.Hub``.

    python examples/chat/app.py            # http://127.0.0.1:8000, open it in two tabs
    python examples/chat/app.py --port 0   # any free port (uvicorn logs which)

Open ``/?room=kitchen&id=alice`` and ``/?room=kitchen&id=bob`` to chat in one
room; a tab in another room (``?room=garden``) hears none of it. FastAPI
serves the page; ``turbows.websocket_endpoint`` hands the route a
``turbows.WebSocket``; the hub holds the rooms. ``TURBOWS_NO_EXTENSIONS=1``
runs it on turbows' pure-Python core. Across workers, on Redis::

    TURBOWS_HUB_URL=redis://localhost:6379/0 uvicorn app:app --workers 2 --ws turbows.uvicorn:WebSocketProtocol
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

import turbows
from turbows import WebSocket

# TURBOWS_HUB_URL=redis://localhost:6379/0 puts the rooms on Redis, so they span every worker
# (uvicorn --workers 2, or several hosts); unset, the hub serves this one process.
hub = turbows.Hub(os.environ.get("TURBOWS_HUB_URL") or None)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:  # an in-process hub works without it too; a Redis one needs it
        yield


app = FastAPI(title="turbows chat", lifespan=lifespan)

HTML = """<!DOCTYPE html>
<html>
    <head>
        <title>Chat</title>
    </head>
    <body>
        <h1>WebSocket Chat</h1>
        <h2>Your ID: <span id="ws-id"></span>, in room <span id="room"></span></h2>
        <p>Status: <span id="status">connecting</span></p>
        <form action="" onsubmit="sendMessage(event)">
            <input type="text" id="messageText" autocomplete="off"/>
            <button id="send">Send</button>
        </form>
        <ul id="messages">
        </ul>
        <script>
            // ?id=alice picks the ID (by default, one made from the clock); ?room=kitchen the room.
            var params = new URLSearchParams(location.search);
            var client_id = params.get("id") || String(Date.now());
            var room = params.get("room") || "lobby";
            document.querySelector("#ws-id").textContent = client_id;
            document.querySelector("#room").textContent = room;
            var scheme = location.protocol === "https:" ? "wss" : "ws";
            var ws = new WebSocket(
                `${scheme}://${location.host}/ws/${encodeURIComponent(room)}/${encodeURIComponent(client_id)}`
            );
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


@app.websocket("/ws/{room}/{client_id}")
@turbows.websocket_endpoint
async def chat(websocket: WebSocket, room: str, client_id: str) -> None:
    await websocket.accept()
    # A member until the block ends, which it does when the connection does.
    async with hub.join(room, websocket):
        await hub.publish_text(room, f"Client #{client_id} joined {room}")
        async for data in websocket.iter_text():
            await websocket.send_text(f"You wrote: {data}")
            # Everyone else in the room; one slow or vanished tab delays nobody.
            await hub.publish_text(room, f"Client #{client_id} says: {data}", exclude=websocket)
    await hub.publish_text(room, f"Client #{client_id} left {room}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Chat rooms on turbows.Hub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    print(f"turbows core: {turbows.IMPLEMENTATION}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
