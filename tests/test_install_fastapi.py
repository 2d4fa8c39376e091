"""turbows.install() under FastAPI: the patterns of FastAPI's websocket docs.

The apps are built at import, before any install(), with ``WebSocket``
imported from ``fastapi`` before install(); each test runs the same client
script without and with install() and compares the transcripts, and checks
that the endpoint (and its dependencies) got exactly the installed class.

No ``from __future__ import annotations``: ``annotated_app`` annotates with
a local variable, as real annotations must be objects for FastAPI there.
"""

from collections.abc import Callable
from typing import Annotated, Any

import pytest

fastapi = pytest.importorskip("fastapi")

from fastapi import (  # noqa: E402
    APIRouter,
    Cookie,
    Depends,
    FastAPI,
    Header,
    Query,
    WebSocket,
    WebSocketDisconnect,
    WebSocketException,
    status,
)
from fastapi.security import APIKeyQuery  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocket as StarletteWebSocket  # noqa: E402

import turbows  # noqa: E402
import install_harness  # noqa: E402
from install_harness import outcome  # noqa: E402

SEEN: list[type] = []


@pytest.fixture(autouse=True)
def _uninstall_at_teardown() -> Any:
    yield
    turbows.uninstall()


def connect(client: TestClient, url: str, **kwargs: Any) -> Any:
    """Open a connection that the app is expected to refuse."""
    return outcome(lambda: client.websocket_connect(url, **kwargs).__enter__())


def run_both(app: Any, script: Callable[[TestClient], Any], websocket_class: type, backend: str) -> Any:
    return install_harness.run_both(app, script, websocket_class, backend, SEEN)[0]


# The docs' "Using Depends and others" example, plus a header security
# dependency, validation and an API key (a denial response, no WebSocket)

app = FastAPI()


async def get_cookie_or_token(
    websocket: WebSocket,
    session: Annotated[str | None, Cookie()] = None,
    token: Annotated[str | None, Query()] = None,
) -> str:
    SEEN.append(type(websocket))
    if session is None and token is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    return session or token  # type: ignore[return-value]


@app.websocket("/items/{item_id}/ws")
async def items_endpoint(
    *,
    websocket: WebSocket,
    item_id: str,
    q: int | None = None,
    cookie_or_token: Annotated[str, Depends(get_cookie_or_token)],
) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(f"Session cookie or query token value is: {cookie_or_token}")
            if q is not None:
                await websocket.send_text(f"Query parameter q is: {q}")
            await websocket.send_text(f"Message text was: {data}, for item ID: {item_id}")
    except WebSocketDisconnect:  # the client left: done (the docs' version lets it propagate)
        pass


async def verify_token(x_token: Annotated[str | None, Header()] = None) -> None:
    if x_token != "fake-super-secret-token":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="X-Token header invalid")


@app.websocket("/secure/{number}", dependencies=[Depends(verify_token)])
async def secure_endpoint(websocket: WebSocket, number: int, limit: Annotated[int, Query(le=10)] = 5) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    await websocket.send_json({"number": number, "limit": limit, "headers": websocket.headers["x-token"]})
    await websocket.close()


api_key = APIKeyQuery(name="api_key")


@app.websocket("/keyed")
async def keyed_endpoint(websocket: WebSocket, key: Annotated[str, Depends(api_key)]) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    await websocket.send_text(f"key {key}")
    await websocket.close()


def test_path_query_cookie_and_token_dependency(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/items/foo/ws?token=some-token&q=3") as ws:
            for text in ("Hello", "World"):
                ws.send_text(text)
                seen += [ws.receive_text(), ws.receive_text(), ws.receive_text()]
        client.cookies.set("session", "fakesession")
        with client.websocket_connect("/items/bar/ws") as ws:
            ws.send_text("Hi")
            seen += [ws.receive_text(), ws.receive_text()]
        client.cookies.clear()
        seen.append(connect(client, "/items/foo/ws"))  # no cookie, no token: 1008
        return seen

    transcript = run_both(app, script, websocket_class, anyio_backend)
    assert transcript[:3] == [
        "Session cookie or query token value is: some-token",
        "Query parameter q is: 3",
        "Message text was: Hello, for item ID: foo",
    ]
    assert transcript[-3:] == [
        "Session cookie or query token value is: fakesession",
        "Message text was: Hi, for item ID: bar",
        ("WebSocketDisconnect", 1008, ""),
    ]


def test_security_dependency_and_validation(websocket_class: type, anyio_backend: str) -> None:
    token = {"X-Token": "fake-super-secret-token"}

    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/secure/4?limit=7", headers=token) as ws:
            seen.append(ws.receive_json())
        seen.append(connect(client, "/secure/4"))  # missing header
        seen.append(connect(client, "/secure/four", headers=token))  # path validation
        seen.append(connect(client, "/secure/4?limit=11", headers=token))  # query validation
        seen.append(connect(client, "/items/foo/ws?token=t&q=x"))  # query validation
        seen.append(connect(client, "/keyed"))  # APIKeyQuery: a denial response
        with client.websocket_connect("/keyed?api_key=k") as ws:
            seen.append(ws.receive_text())
        return seen

    transcript = run_both(app, script, websocket_class, anyio_backend)
    assert transcript[0] == {"number": 4, "limit": 7, "headers": "fake-super-secret-token"}
    assert transcript[1] == ("WebSocketDisconnect", 1008, "X-Token header invalid")
    for refused in transcript[2:5]:
        assert refused[:2] == ("WebSocketDisconnect", 1008)
        assert refused[2][0]["type"] in ("int_parsing", "less_than_equal")
    assert transcript[5][0] == "WebSocketDenialResponse"
    assert transcript[6] == "key k"


# The docs' ConnectionManager chat, two clients


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/ws/{client_id}")
async def chat(websocket: WebSocket, client_id: int) -> None:
    SEEN.append(type(websocket))
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.send_personal_message(f"You wrote: {data}", websocket)
            await manager.broadcast(f"Client #{client_id} says: {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)
        await manager.broadcast(f"Client #{client_id} left the chat")


def chat_script(client: TestClient, base: str = "/ws") -> Any:
    seen = []
    with client.websocket_connect(f"{base}/1") as one, client.websocket_connect(f"{base}/2") as two:
        one.send_text("hi")
        seen += [("1", one.receive_text()), ("1", one.receive_text()), ("2", two.receive_text())]
        two.send_text("hello")
        seen += [("2", two.receive_text()), ("2", two.receive_text()), ("1", one.receive_text())]
        one.close()  # inside the block, so the app runs its disconnect branch before teardown
        seen.append(("2", two.receive_text()))
    return seen


def test_connection_manager_chat(websocket_class: type, anyio_backend: str) -> None:
    transcript = run_both(app, chat_script, websocket_class, anyio_backend)
    assert transcript == [
        ("1", "You wrote: hi"),
        ("1", "Client #1 says: hi"),
        ("2", "Client #1 says: hi"),
        ("2", "You wrote: hello"),
        ("2", "Client #2 says: hello"),
        ("1", "Client #2 says: hello"),
        ("2", "Client #1 left the chat"),
    ]
    assert manager.active_connections == []


# APIRouter, included with a prefix and a router-level dependency

router = APIRouter(prefix="/rooms")


async def room_name(websocket: WebSocket, room: str) -> str:
    SEEN.append(type(websocket))
    return room.upper()


@router.websocket("/{room}")
async def room_endpoint(websocket: WebSocket, name: Annotated[str, Depends(room_name)]) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    async for message in websocket.iter_json():
        await websocket.send_json({"room": name, "echo": message, "url": str(websocket.url)})


app.include_router(router, dependencies=[Depends(verify_token)])


def test_api_router_include(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/rooms/lobby", headers={"X-Token": "fake-super-secret-token"}) as ws:
            ws.send_json({"n": [1, 2]})
            seen.append(ws.receive_json())
            ws.send_json("again")
            seen.append(ws.receive_json())
        seen.append(connect(client, "/rooms/lobby"))
        return seen

    transcript = run_both(app, script, websocket_class, anyio_backend)
    assert transcript[0] == {"room": "LOBBY", "echo": {"n": [1, 2]}, "url": "ws://testserver/rooms/lobby"}
    assert transcript[-1] == ("WebSocketDisconnect", 1008, "X-Token header invalid")


# Annotations: every name users write, imported before and after install()


def annotated_app(annotation: Any) -> FastAPI:
    annotated = FastAPI()

    async def dependency(conn: annotation) -> str:  # type: ignore[valid-type]
        SEEN.append(type(conn))
        return conn.url.path

    @annotated.websocket("/ws")
    async def endpoint(
        websocket: annotation,  # type: ignore[valid-type]
        path: Annotated[str, Depends(dependency)],
    ) -> None:
        SEEN.append(type(websocket))
        await websocket.accept()
        await websocket.send_text(path)
        await websocket.close()

    return annotated


@pytest.mark.parametrize("name", ["starlette", "fastapi", "fastapi.websockets", "turbows"])
@pytest.mark.parametrize("imported", ["before", "after"])
def test_annotations_keep_working(
    name: str, imported: str, websocket_class: type, anyio_backend: str
) -> None:
    def annotation() -> Any:
        if name == "starlette":
            from starlette.websockets import WebSocket as annotation
        elif name == "fastapi":
            from fastapi import WebSocket as annotation
        elif name == "fastapi.websockets":
            from fastapi.websockets import WebSocket as annotation
        else:
            annotation = websocket_class
        return annotation

    before = annotation()
    turbows.install(websocket_class=websocket_class)
    annotated = annotated_app(before if imported == "before" else annotation())
    SEEN.clear()
    with TestClient(annotated, backend=anyio_backend) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "/ws"
    assert SEEN == [websocket_class, websocket_class]


def test_checks_keep_starlettes_class(websocket_class: type) -> None:
    from fastapi.dependencies import utils

    turbows.install(websocket_class=websocket_class)
    assert utils.WebSocket is StarletteWebSocket
    assert fastapi.WebSocket is StarletteWebSocket
    assert fastapi.websockets.WebSocket is StarletteWebSocket
    assert fastapi.routing.WebSocket is websocket_class
