"""turbows.install() under Responder: its docs' websocket patterns.

The APIs are built at import, before any install(); each test runs the same
client script without and with install() and compares the transcripts, and
checks that handlers, hooks and dependencies got exactly the installed class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

responder = pytest.importorskip("responder")

from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState  # noqa: E402

import turbows  # noqa: E402
import install_harness  # noqa: E402
from install_harness import outcome  # noqa: E402

STARLETTE_WEBSOCKET = WebSocket  # bound at import, before any install()
SEEN: list[type] = []
IDENTITIES: list[int] = []  # id() of the object each hook and handler got, per connection


@pytest.fixture(autouse=True)
def _uninstall_at_teardown() -> Any:
    yield
    turbows.uninstall()


def run_both(api: Any, script: Callable[[TestClient], Any], websocket_class: type, backend: str) -> Any:
    return install_harness.run_both(api, script, websocket_class, backend, SEEN)[0]


# The docs' echo, and a chat room broadcasting to everyone in it

api = responder.API()


@api.route("/ws", websocket=True)
async def websocket(ws: Any) -> None:
    SEEN.append(type(ws))
    await ws.accept()
    try:
        while True:
            name = await ws.receive_text()
            await ws.send_text(f"Hello {name}!")
    except WebSocketDisconnect:  # the docs' loop never ends; a client leaving ends it here
        pass


ROOMS: dict[str, list[Any]] = {}


@api.route("/chat/{room}", websocket=True)
async def chat(ws: Any, room: str) -> None:
    SEEN.append(type(ws))
    await ws.accept()
    nick = ws.query_params.get("nick", "anonymous")
    members = ROOMS.setdefault(room, [])
    members.append(ws)
    for member in members:
        await member.send_json({"room": room, "event": "joined", "nick": nick})
    try:
        async for message in ws.iter_json():
            for member in members:
                await member.send_json({"room": room, "nick": nick, "text": message["text"]})
    finally:
        members.remove(ws)
        for member in members:
            await member.send_json({"room": room, "event": "left", "nick": nick})


def test_echo(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        with client.websocket_connect("/ws") as ws:
            replies = []
            for name in ("Ann", "Bob", "ünïcode"):
                ws.send_text(name)
                replies.append(ws.receive_text())
            return replies

    transcript = run_both(api, script, websocket_class, anyio_backend)
    assert transcript == ["Hello Ann!", "Hello Bob!", "Hello ünïcode!"]


def test_chat_room_broadcast(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/chat/lobby?nick=ann") as ann:
            seen.append(("ann", ann.receive_json()))
            with client.websocket_connect("/chat/lobby?nick=bob") as bob:
                seen += [("ann", ann.receive_json()), ("bob", bob.receive_json())]
                ann.send_json({"text": "hi bob"})
                seen += [("ann", ann.receive_json()), ("bob", bob.receive_json())]
                bob.send_json({"text": "hi ann"})
                seen += [("ann", ann.receive_json()), ("bob", bob.receive_json())]
                bob.close()  # inside the block: the app broadcasts the leave before teardown
                seen.append(("ann", ann.receive_json()))
        return seen

    transcript = run_both(api, script, websocket_class, anyio_backend)
    assert transcript[3:5] == [
        ("ann", {"room": "lobby", "nick": "ann", "text": "hi bob"}),
        ("bob", {"room": "lobby", "nick": "ann", "text": "hi bob"}),
    ]
    assert transcript[-1] == ("ann", {"room": "lobby", "event": "left", "nick": "bob"})


# before_request(websocket=True) hooks, a per-route dependency annotated with
# Starlette's class, and typed path parameters

hooked = responder.API()


@hooked.before_request(websocket=True)
def remember(ws: Any) -> None:  # a sync hook, run in the thread pool
    SEEN.append(type(ws))
    IDENTITIES.append(id(ws))
    ws.state.hooked = True


@hooked.before_request(websocket=True)
async def gatekeeper(ws: Any) -> None:
    SEEN.append(type(ws))
    IDENTITIES.append(id(ws))
    if ws.query_params.get("token") != "sesame":
        await ws.close(code=4401, reason="no token")  # short-circuits the handler
        return
    await ws.accept()


@hooked.dependency()
async def caller(connection: WebSocket) -> str:  # injected by annotation (Starlette's class)
    SEEN.append(type(connection))
    IDENTITIES.append(id(connection))
    return connection.headers.get("x-caller", "nobody")


@hooked.route("/rooms/{number:int}", websocket=True)
async def room(ws: Any, number: int, caller: str) -> None:
    SEEN.append(type(ws))
    IDENTITIES.append(id(ws))
    await ws.send_json(
        {
            "number": number,
            "type": type(number).__name__,
            "caller": caller,
            "hooked": ws.state.hooked,
            "same object": len(set(IDENTITIES)) == 1,
        }
    )
    await ws.close(code=1000)


def test_before_request_hooks(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        IDENTITIES.clear()
        with client.websocket_connect("/rooms/12?token=sesame", headers={"X-Caller": "ann"}) as ws:
            seen.append(ws.receive_json())
            seen.append(ws.receive())
        IDENTITIES.clear()
        seen.append(outcome(lambda: client.websocket_connect("/rooms/12").__enter__()))
        return seen

    transcript = run_both(hooked, script, websocket_class, anyio_backend)
    assert transcript == [
        {"number": 12, "type": "int", "caller": "ann", "hooked": True, "same object": True},
        {"type": "websocket.close", "code": 1000, "reason": ""},
        ("WebSocketDisconnect", 4401, "no token"),
    ]
    assert len(SEEN) == 6  # 2 hooks + dependency + handler, then the 2 hooks of the refused one


def test_checks_keep_starlettes_class(websocket_class: type) -> None:
    from responder import routes

    turbows.install(websocket_class=websocket_class)
    assert routes.WebSocket is websocket_class
    assert STARLETTE_WEBSOCKET in routes._REQUEST_TYPES


@pytest.mark.anyio
async def test_instance_receive_override_is_honoured(websocket_class: type) -> None:
    async def asgi_receive() -> dict[str, Any]:
        return {"type": "websocket.receive", "text": "from the server"}

    async def send(message: dict[str, Any]) -> None:
        pass

    ws = websocket_class({"type": "websocket"}, asgi_receive, send)
    ws.client_state = ws.application_state = WebSocketState.CONNECTED
    calls = []

    async def shadow() -> dict[str, Any]:  # what responder.routes._apply_idle_timeout installs
        calls.append("shadow")
        return await asgi_receive()

    ws.receive = shadow
    assert await ws.receive_text() == "from the server"
    assert calls == ["shadow"]
