"""The Autobahn target: a raw ASGI echo of text and bytes on turbows.WebSocket."""

from __future__ import annotations

from turbows import WebSocket, WebSocketDisconnect


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    assert scope["type"] == "websocket"
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass
