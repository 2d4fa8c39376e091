"""The opt-ins that patch nothing: ``WebSocketRoute`` and ``websocket_endpoint``.

Each app is run once with Starlette's own route or an undecorated endpoint
and once with the opt-in; the transcripts must match, only the opted-in
endpoint gets turbows' class, and no module attribute changes.
"""

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import pytest
import starlette.routing
import starlette.websockets
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.exceptions import WebSocketException
from starlette.middleware import Middleware
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketClose, WebSocketDisconnect, WebSocketState

import turbows
from turbows._install import WebSocketRoute, websocket_endpoint

SEEN: list[tuple[str, type]] = []


@pytest.fixture(autouse=True)
def _nothing_patched() -> Any:
    yield
    turbows.uninstall()  # one test installs on purpose
    assert starlette.websockets.WebSocket is WebSocket
    assert starlette.routing.WebSocket is WebSocket


def outcome(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except WebSocketDisconnect as exc:
        return ("WebSocketDisconnect", exc.code, exc.reason)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def transcript(
    app: Any, script: Callable[[TestClient], Any], backend: str
) -> tuple[Any, list[tuple[str, type]]]:
    SEEN.clear()
    with TestClient(app, backend=backend) as client:
        return script(client), list(SEEN)


# WebSocketRoute


async def room(websocket: WebSocket) -> None:
    SEEN.append(("endpoint", type(websocket)))
    await websocket.accept()
    number = websocket.path_params["room"]
    text = await websocket.receive_text()
    if text == "fail":
        raise ValueError("failed")
    await websocket.send_json({"room": number, "text": text, "tag": websocket.scope.get("tag")})
    await websocket.close()


async def on_error(websocket: WebSocket, exc: Exception) -> None:
    SEEN.append(("handler", type(websocket)))
    await websocket.close(code=4000, reason=str(exc))


class Tag:
    def __init__(self, app: Any, tag: str) -> None:
        self.app = app
        self.tag = tag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "tag": self.tag}, receive, send)


def room_app(route_class: type) -> Starlette:
    return Starlette(
        routes=[route_class("/rooms/{room:int}", room, middleware=[Middleware(Tag, tag="route middleware")])],
        exception_handlers={ValueError: on_error},
    )


def room_script(client: TestClient) -> Any:
    seen = []
    with client.websocket_connect("/rooms/5") as ws:
        ws.send_text("hi")
        seen += [ws.receive_json(), ws.receive()]
    with client.websocket_connect("/rooms/6") as ws:
        ws.send_text("fail")
        seen.append(ws.receive())
    return seen


def test_websocket_route(websocket_class: type, anyio_backend: str) -> None:
    class Route(WebSocketRoute):
        pass

    Route.websocket_class = websocket_class
    plain, plain_seen = transcript(room_app(starlette.routing.WebSocketRoute), room_script, anyio_backend)
    opted, opted_seen = transcript(room_app(Route), room_script, anyio_backend)
    assert opted == plain
    assert plain[0] == {"room": 5, "text": "hi", "tag": "route middleware"}
    assert plain[-1] == {"type": "websocket.close", "code": 4000, "reason": "failed"}
    who = ["endpoint", "endpoint", "handler"]
    assert [w for w, _ in opted_seen] == [w for w, _ in plain_seen] == who
    assert {cls for _, cls in plain_seen} == {WebSocket}
    assert {cls for _, cls in opted_seen} == {websocket_class}


def test_websocket_route_defaults_to_turbows(anyio_backend: str) -> None:
    _, seen = transcript(room_app(WebSocketRoute), room_script, anyio_backend)
    assert {cls for _, cls in seen} == {turbows.WebSocket}


def test_websocket_route_refuses_endpoint_classes_and_passes_asgi_apps() -> None:
    class Endpoint(WebSocketEndpoint):
        pass

    with pytest.raises(TypeError, match="turbows.install"):
        WebSocketRoute("/ws", Endpoint)
    closing = WebSocketClose(code=4004)
    assert WebSocketRoute("/gone", closing).app is closing


# websocket_endpoint, on Starlette, FastAPI and Responder


def decorated_twice(func: Callable[..., Any], websocket_class: type) -> tuple[Any, Any]:
    return func, websocket_endpoint(websocket_class=websocket_class)(func)


def test_decorator_keeps_the_signature(websocket_class: type) -> None:
    async def endpoint(websocket: WebSocket, room: int, *, q: str = "x") -> None:
        pass

    decorated = websocket_endpoint(endpoint)
    assert inspect.signature(decorated) == inspect.signature(endpoint)
    assert inspect.iscoroutinefunction(decorated)
    assert decorated.__name__ == "endpoint" and decorated.__wrapped__ is endpoint
    with pytest.raises(TypeError, match="async functions"):
        websocket_endpoint(lambda websocket: None)
    with pytest.raises(TypeError, match="must subclass"):
        websocket_endpoint(websocket_class=dict)(endpoint)


def test_decorator_on_starlette(websocket_class: type, anyio_backend: str) -> None:
    plain, opted = decorated_twice(room, websocket_class)
    app = Starlette(
        routes=[
            starlette.routing.WebSocketRoute("/rooms/{room:int}", plain),
            starlette.routing.WebSocketRoute("/opted/{room:int}", opted),
        ],
        exception_handlers={ValueError: on_error},
    )

    def script(prefix: str) -> Callable[[TestClient], Any]:
        def run(client: TestClient) -> Any:
            seen = []
            with client.websocket_connect(f"{prefix}/5") as ws:
                ws.send_text("hi")
                seen += [ws.receive_json(), ws.receive()]
            with client.websocket_connect(f"{prefix}/6") as ws:
                ws.send_text("fail")
                seen.append(ws.receive())
            return seen

        return run

    before, before_seen = transcript(app, script("/rooms"), anyio_backend)
    after, after_seen = transcript(app, script("/opted"), anyio_backend)
    assert after == before
    assert before_seen == [("endpoint", WebSocket), ("endpoint", WebSocket), ("handler", WebSocket)]
    # The handler gets the route's object, whose state the decorator handed back.
    assert after_seen == [
        ("endpoint", websocket_class),
        ("endpoint", websocket_class),
        ("handler", WebSocket),
    ]


def test_decorator_hands_the_state_back(websocket_class: type, anyio_backend: str) -> None:
    states = []

    @websocket_endpoint(websocket_class=websocket_class)
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        if await websocket.receive_text() == "close first":
            await websocket.close(code=4001)
        raise WebSocketException(code=1008, reason="policy")

    async def handler(websocket: WebSocket, exc: Exception) -> None:
        states.append((type(websocket), websocket.client_state, websocket.application_state))
        if websocket.application_state != WebSocketState.DISCONNECTED:
            await websocket.close(code=1008, reason="policy")

    app = Starlette(
        routes=[starlette.routing.WebSocketRoute("/ws", endpoint)],
        exception_handlers={WebSocketException: handler},
    )
    with TestClient(app, backend=anyio_backend) as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_text("raise")
            assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": "policy"}
        with client.websocket_connect("/ws") as ws:
            ws.send_text("close first")
            assert ws.receive() == {"type": "websocket.close", "code": 4001, "reason": ""}
    assert states == [
        (WebSocket, WebSocketState.CONNECTED, WebSocketState.CONNECTED),
        (WebSocket, WebSocketState.CONNECTED, WebSocketState.DISCONNECTED),
    ]


def test_decorator_under_install_passes_the_object_through(websocket_class: type, anyio_backend: str) -> None:
    got = []

    @websocket_endpoint(websocket_class=websocket_class)
    async def endpoint(websocket: WebSocket) -> None:
        got.append(websocket)
        await websocket.accept()
        await websocket.close()

    app = Starlette(routes=[starlette.routing.WebSocketRoute("/ws", endpoint)])
    turbows.install(websocket_class=websocket_class)
    with TestClient(app, backend=anyio_backend) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive()["type"] == "websocket.close"
    assert [type(ws) for ws in got] == [websocket_class]


def test_decorator_on_fastapi(websocket_class: type, anyio_backend: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi import APIRouter, Depends, FastAPI, Query
    from fastapi import WebSocket as FastAPIWebSocket

    def dependency(websocket: FastAPIWebSocket) -> str:
        SEEN.append(("dependency", type(websocket)))
        return websocket.url.path

    async def chat(
        websocket: FastAPIWebSocket,
        client_id: int,
        path: Annotated[str, Depends(dependency)],
        q: Annotated[int, Query()] = 0,
    ) -> None:
        SEEN.append(("endpoint", type(websocket)))
        await websocket.accept()
        try:
            async for text in websocket.iter_text():
                await websocket.send_json({"client": client_id, "text": text, "path": path, "q": q})
        except WebSocketDisconnect:
            pass

    plain, opted = decorated_twice(chat, websocket_class)
    router = APIRouter(prefix="/router")
    router.websocket("/plain/{client_id}")(plain)
    router.websocket("/opted/{client_id}")(opted)
    app = FastAPI()
    app.websocket("/plain/{client_id}")(plain)
    app.websocket("/opted/{client_id}")(opted)
    app.include_router(router)  # rebuilds the routes: the decorated endpoint travels with them

    def script(kind: str) -> Callable[[TestClient], Any]:
        def run(client: TestClient) -> Any:
            seen = []
            for prefix in ("", "/router"):
                with client.websocket_connect(f"{prefix}/{kind}/7?q=2") as ws:
                    ws.send_text("hi")
                    seen.append(ws.receive_json())
            seen.append(outcome(lambda: client.websocket_connect(f"/{kind}/seven").__enter__()))
            return seen

        return run

    before, before_seen = transcript(app, script("plain"), anyio_backend)
    after, after_seen = transcript(app, script("opted"), anyio_backend)
    for row in before[:2]:
        row["path"] = row["path"].replace("plain", "opted")
    assert after[:2] == before[:2]
    assert after[2][:2] == before[2][:2] == ("WebSocketDisconnect", 1008)
    # (the refused connection's dependency runs: FastAPI reports every error at once)
    refused = [("dependency", WebSocket)]
    assert before_seen == [("dependency", WebSocket), ("endpoint", WebSocket)] * 2 + refused
    assert after_seen == [("dependency", WebSocket), ("endpoint", websocket_class)] * 2 + refused


def test_decorator_on_responder(websocket_class: type, anyio_backend: str) -> None:
    responder = pytest.importorskip("responder")
    api = responder.API()

    @api.before_request(websocket=True)
    async def hook(ws: Any) -> None:
        SEEN.append(("hook", type(ws)))
        await ws.accept()

    async def echo(ws: Any, name: str) -> None:
        SEEN.append(("endpoint", type(ws)))
        text = await ws.receive_text()
        if text == "fail":
            raise RuntimeError("handler failed")
        await ws.send_text(f"{name}: {text}")
        await ws.close()

    plain, opted = decorated_twice(echo, websocket_class)
    api.route("/plain/{name}", websocket=True)(plain)
    api.route("/opted/{name}", websocket=True)(opted)
    sent: list[dict[str, Any]] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_send(message: dict[str, Any]) -> None:
            sent.append(dict(message))
            await send(message)

        await api(scope, receive, recording_send)

    def script(kind: str) -> Callable[[TestClient], Any]:
        def run(client: TestClient) -> Any:
            sent.clear()
            seen = []
            with client.websocket_connect(f"/{kind}/ann") as ws:
                ws.send_text("hi")
                seen += [ws.receive_text(), ws.receive()]

            def failing() -> None:
                with client.websocket_connect(f"/{kind}/bob") as ws:
                    ws.send_text("fail")

            seen.append(outcome(failing))  # the handler's error, re-raised on leaving
            return seen, list(sent)

        return run

    before, before_seen = transcript(recorder, script("plain"), anyio_backend)
    after, after_seen = transcript(recorder, script("opted"), anyio_backend)
    assert after == before
    (client_saw, app_sent) = before
    assert client_saw[1:] == [
        {"type": "websocket.close", "code": 1000, "reason": ""},
        ("RuntimeError", "handler failed"),
    ]
    # Responder closed with 1011 on the framework's object: the decorator had handed the state back.
    assert app_sent[-1] == {"type": "websocket.close", "code": 1011, "reason": ""}
    assert before_seen == [("hook", WebSocket), ("endpoint", WebSocket)] * 2
    assert after_seen == [("hook", WebSocket), ("endpoint", websocket_class)] * 2
