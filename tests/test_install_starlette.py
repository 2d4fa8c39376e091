"""turbows.install() under Starlette: the patterns of Starlette's docs.

Each app is built once, at import, before any install(); each test runs
the same client script against it without install() and with the class of
the core under test installed, and compares the transcripts. The endpoints
record ``type(websocket)``: Starlette's class without install(), exactly the
installed class with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
    requires,
)
from starlette.endpoints import WebSocketEndpoint
from starlette.exceptions import WebSocketException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketClose

import turbows
import install_harness
from install_harness import outcome

STARLETTE_WEBSOCKET = WebSocket  # bound at import, before any install()
SEEN: list[type] = []  # type(websocket) of every object an endpoint or handler got
CLOSED: list[int] = []  # WebSocketEndpoint.on_disconnect close codes


@pytest.fixture(autouse=True)
def _uninstall_at_teardown() -> Any:
    yield
    turbows.uninstall()


def run_both(app: Any, script: Callable[[TestClient], Any], websocket_class: type, backend: str) -> Any:
    return install_harness.run_both(app, script, websocket_class, backend, SEEN, also_equal=[CLOSED])


# WebSocketRoute with a typed path parameter


async def room(websocket: WebSocket) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    number = websocket.path_params["room"]
    await websocket.send_json({"room": number, "type": type(number).__name__, "path": websocket.url.path})
    async for text in websocket.iter_text():
        await websocket.send_text(f"room {number}: {text}")


rooms_app = Starlette(routes=[WebSocketRoute("/ws/{room:int}", room)])


def test_websocket_route_with_typed_path_params(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/ws/7?x=1") as ws:
            seen.append(ws.receive_json())
            ws.send_text("hello")
            seen.append(ws.receive_text())
            ws.send_text("again")
            seen.append(ws.receive_text())
        seen.append(outcome(lambda: client.websocket_connect("/ws/seven").__enter__()))
        return seen

    transcript, _ = run_both(rooms_app, script, websocket_class, anyio_backend)
    assert transcript[0] == {"room": 7, "type": "int", "path": "/ws/7"}
    assert transcript[-1] == ("WebSocketDisconnect", 1000, "")


# WebSocketEndpoint with each encoding


class Echo(WebSocketEndpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        SEEN.append(type(websocket))
        await websocket.accept()

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(f"{type(data).__name__}: {data!r}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        CLOSED.append(close_code)


class TextEcho(Echo):
    encoding = "text"


class BytesEcho(Echo):
    encoding = "bytes"


class JSONEcho(Echo):
    encoding = "json"


endpoints_app = Starlette(
    routes=[
        WebSocketRoute("/text", TextEcho),
        WebSocketRoute("/bytes", BytesEcho),
        WebSocketRoute("/json", JSONEcho),
        WebSocketRoute("/any", Echo),
    ]
)

ENCODING_CASES = {
    "/text": ([("text", "hi")], ("bytes", b"hi")),
    "/bytes": ([("bytes", b"\x00\xff")], ("text", "hi")),
    "/json": ([("text", '{"a": [1, 2.5, null]}'), ("bytes", b'{"b": "\xc3\xa9"}')], ("text", "{not json")),
    "/any": ([("text", "hi"), ("bytes", b"hi")], None),
}


@pytest.mark.parametrize("path", list(ENCODING_CASES))
def test_websocket_endpoint_encodings(path: str, websocket_class: type, anyio_backend: str) -> None:
    good, bad = ENCODING_CASES[path]

    def script(client: TestClient) -> Any:
        seen = []

        def session() -> None:
            with client.websocket_connect(path) as ws:
                for kind, data in good:
                    ws.send({"type": "websocket.receive", kind: data})
                    seen.append(ws.receive_text())
                if bad is not None:
                    ws.send({"type": "websocket.receive", bad[0]: bad[1]})

        seen.append(outcome(session))  # the decode error, re-raised on leaving
        return seen

    transcript, [(_, sent)] = run_both(endpoints_app, script, websocket_class, anyio_backend)
    assert len(transcript) == len(good) + 1
    if bad is None:
        assert transcript[-1] is None
        assert CLOSED == [1000]
    else:
        assert sent[-1] == {"type": "websocket.close", "code": 1003, "reason": ""}
        assert transcript[-1][0] == "RuntimeError"
        assert CLOSED == [1011]


# Exceptions: a handler registered with exception_handlers, WebSocketException,
# an unhandled error, and an error raised before the route's session exists


async def fragile(websocket: WebSocket) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    text = await websocket.receive_text()
    if text == "value":
        raise ValueError("bad value")
    if text == "policy":
        raise WebSocketException(code=1008, reason="policy says no")
    raise LookupError("unhandled")


async def on_value_error(websocket: WebSocket, exc: Exception) -> None:
    SEEN.append(type(websocket))
    await websocket.close(code=4000, reason=f"handled: {exc}")


class RaiseBeforeEndpoint:
    """Route middleware failing before the endpoint's WebSocket is built, so the
    handler gets the one ExceptionMiddleware constructed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("from middleware")


exceptions_app = Starlette(
    routes=[
        WebSocketRoute("/fragile", fragile),
        WebSocketRoute("/guarded", fragile, middleware=[Middleware(RaiseBeforeEndpoint)]),
    ],
    exception_handlers={ValueError: on_value_error},
)


@pytest.mark.parametrize("trigger", ["value", "policy", "other"])
def test_exception_in_handler(trigger: str, websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []

        def session() -> None:
            with client.websocket_connect("/fragile") as ws:
                ws.send_text(trigger)
                if trigger != "other":  # an unhandled error closes nothing: leave at once
                    seen.append(ws.receive())

        seen.append(outcome(session))
        return seen

    transcript, [(_, sent)] = run_both(exceptions_app, script, websocket_class, anyio_backend)
    expected = {
        "value": {"type": "websocket.close", "code": 4000, "reason": "handled: bad value"},
        "policy": {"type": "websocket.close", "code": 1008, "reason": "policy says no"},
    }
    if trigger in expected:
        assert transcript == [expected[trigger], None]
        assert len(SEEN) == (2 if trigger == "value" else 1)  # the handler got the endpoint's object
    else:
        assert transcript == [("LookupError", "unhandled")]
        assert sent == [{"type": "websocket.accept", "subprotocol": None, "headers": []}]


def test_exception_middleware_connection(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        return [outcome(lambda: client.websocket_connect("/guarded").__enter__())]

    transcript, _ = run_both(exceptions_app, script, websocket_class, anyio_backend)
    assert transcript == [("WebSocketDisconnect", 4000, "handled: from middleware")]
    assert len(SEEN) == 1  # ExceptionMiddleware's own WebSocket, handed to the handler


# WebSocketClose as a route (no WebSocket object at all: unchanged)


close_app = Starlette(
    routes=[
        WebSocketRoute("/gone", WebSocketClose(code=4004, reason="gone")),
        WebSocketRoute("/ws/{room:int}", room),
    ]
)


def test_websocket_close_route(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = [outcome(lambda: client.websocket_connect("/gone").__enter__())]
        with client.websocket_connect("/ws/1") as ws:  # so the run has an endpoint to look at
            seen.append(ws.receive_json())
        return seen

    transcript, _ = run_both(close_app, script, websocket_class, anyio_backend)
    assert transcript[0] == ("WebSocketDisconnect", 4004, "gone")


# AuthenticationMiddleware (websocket.user, websocket.auth, @requires) and SessionMiddleware


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        token = conn.query_params.get("token")
        if token is None:
            return None
        if token == "forged":
            raise AuthenticationError("forged token")
        return AuthCredentials(["authenticated", "chat"]), SimpleUser(token)


@requires("authenticated")
async def whoami(websocket: WebSocket) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    await websocket.send_json(
        {
            "user": websocket.user.username,
            "authenticated": websocket.user.is_authenticated,
            "scopes": websocket.auth.scopes,
        }
    )
    await websocket.close()


async def anyone(websocket: WebSocket) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    await websocket.send_json({"authenticated": websocket.user.is_authenticated})
    await websocket.close()


auth_app = Starlette(
    routes=[WebSocketRoute("/me", whoami), WebSocketRoute("/anyone", anyone)],
    middleware=[Middleware(AuthenticationMiddleware, backend=TokenBackend())],
)


def test_authentication_middleware(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/me?token=ann") as ws:
            seen.append(ws.receive_json())
            seen.append(ws.receive())
        seen.append(outcome(lambda: client.websocket_connect("/me").__enter__()))  # @requires closes
        seen.append(outcome(lambda: client.websocket_connect("/me?token=forged").__enter__()))
        with client.websocket_connect("/anyone") as ws:
            seen.append(ws.receive_json())
        return seen

    transcript, _ = run_both(auth_app, script, websocket_class, anyio_backend)
    assert transcript[0] == {"user": "ann", "authenticated": True, "scopes": ["authenticated", "chat"]}
    assert transcript[2] == ("WebSocketDisconnect", 1000, "")


async def login(request: Request) -> PlainTextResponse:
    request.session["user"] = request.query_params["user"]
    return PlainTextResponse("ok")


async def session_echo(websocket: WebSocket) -> None:
    SEEN.append(type(websocket))
    await websocket.accept()
    await websocket.send_json(dict(websocket.session))
    websocket.session["seen"] = True  # written, never sent: no cookie on a websocket
    await websocket.close()


session_app = Starlette(
    routes=[Route("/login", login), WebSocketRoute("/session", session_echo)],
    middleware=[Middleware(SessionMiddleware, secret_key="not-a-secret")],
)


def test_session_middleware(websocket_class: type, anyio_backend: str) -> None:
    def script(client: TestClient) -> Any:
        seen = []
        with client.websocket_connect("/session") as ws:
            seen.append(ws.receive_json())
        seen.append(client.get("/login", params={"user": "ann"}).text)
        with client.websocket_connect("/session") as ws:
            seen.append(ws.receive_json())
        return seen

    transcript, _ = run_both(session_app, script, websocket_class, anyio_backend)
    assert transcript == [{}, "ok", {"user": "ann"}]


def test_app_built_after_install(websocket_class: type, anyio_backend: str) -> None:
    turbows.install(websocket_class=websocket_class)
    from starlette.websockets import WebSocket as Installed

    assert Installed is websocket_class
    SEEN.clear()
    app = Starlette(routes=[WebSocketRoute("/ws/{room:int}", room), WebSocketRoute("/json", JSONEcho)])
    with TestClient(app, backend=anyio_backend) as client:
        with client.websocket_connect("/ws/3") as ws:
            assert ws.receive_json()["room"] == 3
        with client.websocket_connect("/json") as ws:
            ws.send_json({"a": 1})
            assert ws.receive_text() == "dict: {'a': 1}"
    assert SEEN == [websocket_class, websocket_class]
