"""Small apps served through Starlette's TestClient, on turbows and on Starlette's own class.

Each scenario is one app handler and one client session. It runs twice, with
the app built on ``starlette.websockets.WebSocket`` and on turbows, and the
observations (what the client received, how the connection ended, what the
handler saw) must be equal. Apps come in two shapes: a raw ASGI app that
builds ``websocket_class(scope, receive, send)`` itself, and a Starlette app
whose ``WebSocketRoute`` endpoint is a raw ASGI callable doing the same.
Every scenario runs under asyncio and trio (``TestClient(backend=...)``).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from asgi_peer import canonical

Handler = Callable[[Any, "Record"], Awaitable[None]]


class Record:
    """What the handler saw, shared with the client thread."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.done = threading.Event()

    def add(self, *event: Any) -> None:
        self.events.append(event)


class Endpoint:
    """A raw ASGI endpoint (not a function, so ``WebSocketRoute`` does not wrap it in its own WebSocket)."""

    def __init__(self, cls: type, handler: Handler, record: Record) -> None:
        self.cls, self.handler, self.record = cls, handler, record

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":  # pragma: no cover - the client opens websockets only
            return
        try:
            await self.handler(self.cls(scope, receive, send), self.record)
        finally:
            self.record.done.set()


def raw_app(cls: type, handler: Handler, record: Record) -> Any:
    return Endpoint(cls, handler, record)


def starlette_app(cls: type, handler: Handler, record: Record) -> Any:
    return Starlette(routes=[WebSocketRoute("/ws", Endpoint(cls, handler, record))])


APP_SHAPES = {"raw": raw_app, "starlette": starlette_app}


@pytest.fixture(params=list(APP_SHAPES))
def app_shape(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return APP_SHAPES[request.param]


ClientSide = Callable[[TestClient, Record], Any]


def observe(cls: type, app_shape: Callable[..., Any], backend: str, handler: Handler, client_side: ClientSide) -> tuple[Any, list[Any]]:
    """Serve ``handler`` on ``cls``; return what ``client_side`` observed and what the handler recorded.

    A client side that closes the connection itself waits for ``record.done``
    before leaving its session: leaving cancels the app.
    """
    record = Record()
    client = TestClient(app_shape(cls, handler, record), backend=backend)  # type: ignore[arg-type]
    seen = client_side(client, record)
    assert record.done.wait(10), "the handler did not finish"
    return seen, record.events


def finish(session: Any, record: Record, code: int = 1000, reason: str | None = None) -> None:
    """Close from the client side and wait for the handler to end."""
    session.close(code, reason)
    assert record.done.wait(10), "the handler did not finish"


def compare(websocket_class: type, app_shape: Callable[..., Any], backend: str, handler: Handler, client_side: ClientSide) -> tuple[Any, list[Any]]:
    expected = observe(StarletteWebSocket, app_shape, backend, handler, client_side)
    actual = observe(websocket_class, app_shape, backend, handler, client_side)
    assert actual == expected
    return actual


def disconnect_info(exc: WebSocketDisconnect) -> tuple[Any, ...]:
    return (type(exc).__name__, exc.code, exc.reason)


# -- echo -----------------------------------------------------------------------------------------

TEXTS = ["hello", "", "ünïcödé ✓", "x" * 70_000]
BLOBS = [b"\x00\xff", b"", bytes(range(256)) * 300]


async def text_echo(ws: Any, record: Record) -> None:
    await ws.accept()
    async for message in ws.iter_text():
        await ws.send_text(message)
    record.add("iteration ended", ws.client_state, ws.application_state)


def test_text_echo(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            replies = []
            for text in TEXTS:
                session.send_text(text)
                replies.append(session.receive_text())
            finish(session, record)
        return replies

    replies, events = compare(websocket_class, app_shape, anyio_backend, text_echo, client_side)
    assert replies == TEXTS
    assert events == [("iteration ended", WebSocketState.DISCONNECTED, WebSocketState.CONNECTED)]


async def bytes_echo(ws: Any, record: Record) -> None:
    await ws.accept()
    async for message in ws.iter_bytes():
        await ws.send_bytes(message)
    record.add("iteration ended")


def test_bytes_echo(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            replies = []
            for blob in BLOBS:
                session.send_bytes(blob)
                replies.append(session.receive_bytes())
            finish(session, record)
        return replies

    replies, events = compare(websocket_class, app_shape, anyio_backend, bytes_echo, client_side)
    assert replies == BLOBS
    assert events == [("iteration ended",)]


VALUES = [
    {"a": [1, 2.5, None, True, "ü"]},
    [float("nan"), float("inf"), -0.0],
    2**70,
    "\ud800",
    {"nested": {"deep": [[[]]]}, "big": -(2**64)},
    [],
]


def json_echo(mode: str) -> Handler:
    async def handler(ws: Any, record: Record) -> None:
        await ws.accept()
        while True:
            try:
                value = await ws.receive_json(mode=mode)
            except WebSocketDisconnect as exc:
                record.add("disconnect", exc.code)
                break
            await ws.send_json(value, mode=mode)

    return handler


def json_client(mode: str, values: list[Any]) -> ClientSide:
    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            replies = []
            for value in values:
                session.send_json(value, mode=mode)  # type: ignore[arg-type]
                replies.append(canonical(session.receive_json(mode=mode)))  # type: ignore[arg-type]
            finish(session, record, 1001)
        return replies

    return client_side


@pytest.mark.parametrize("mode", ["text", "binary"])
def test_json_echo(websocket_class: type, app_shape: Any, anyio_backend: str, mode: str) -> None:
    values = VALUES if mode == "text" else [value for value in VALUES if value != "\ud800"]  # not UTF-8 encodable
    replies, events = compare(websocket_class, app_shape, anyio_backend, json_echo(mode), json_client(mode, values))
    assert replies == [canonical(value) for value in values]
    assert events == [("disconnect", 1001)]


@pytest.mark.parametrize("mode", ["text", "binary"])
def test_iter_json_echo(websocket_class: type, app_shape: Any, anyio_backend: str, mode: str) -> None:
    # turbows' iter_json(mode=...) (documented difference 2) against the same
    # app written for Starlette, whose iter_json has no mode, with receive_json(mode).
    async def with_iter_json(ws: Any, record: Record) -> None:
        await ws.accept()
        async for value in ws.iter_json(mode=mode):
            await ws.send_json(value, mode=mode)
        record.add("iteration ended", ws.client_state)

    async def with_receive_json(ws: Any, record: Record) -> None:
        await ws.accept()
        while True:
            try:
                value = await ws.receive_json(mode=mode)
            except WebSocketDisconnect:
                break
            await ws.send_json(value, mode=mode)
        record.add("iteration ended", ws.client_state)

    values = [value for value in VALUES if value != "\ud800"]
    expected = observe(StarletteWebSocket, app_shape, anyio_backend, with_receive_json, json_client(mode, values))
    actual = observe(websocket_class, app_shape, anyio_backend, with_iter_json, json_client(mode, values))
    assert actual == expected
    assert actual[0] == [canonical(value) for value in values]


# -- connection set-up and tear-down ------------------------------------------------------------


async def negotiate(ws: Any, record: Record) -> None:
    offered = ws.scope["subprotocols"]
    record.add("offered", offered, ws.headers.get("sec-websocket-protocol"))
    await ws.accept(subprotocol=offered[-1] if offered else None, headers=[(b"x-chosen", (offered[-1] if offered else "none").encode())])
    await ws.send_text(f"chose {offered[-1] if offered else None}")
    await ws.close()


@pytest.mark.parametrize("offered", [["chat", "superchat"], ["only"], None])
def test_subprotocol_negotiation(websocket_class: type, app_shape: Any, anyio_backend: str, offered: list[str] | None) -> None:
    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws", subprotocols=offered) as session:
            greeting = session.receive_text()
            with pytest.raises(WebSocketDisconnect) as closed:
                session.receive_text()
            return session.accepted_subprotocol, session.extra_headers, greeting, disconnect_info(closed.value)

    (subprotocol, headers, greeting, closed), events = compare(websocket_class, app_shape, anyio_backend, negotiate, client_side)
    assert subprotocol == (offered[-1] if offered else None)
    assert closed == ("WebSocketDisconnect", 1000, "")
    assert events[0][1] == (offered or [])


@pytest.mark.parametrize(("code", "reason"), [(4001, "bye"), (1000, None), (1011, "ünïcode reason")])
def test_close_with_code_and_reason(websocket_class: type, app_shape: Any, anyio_backend: str, code: int, reason: str | None) -> None:
    async def handler(ws: Any, record: Record) -> None:
        await ws.accept()
        record.add("got", await ws.receive_text())
        await ws.close(code, reason)
        record.add("states", ws.client_state, ws.application_state)

    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            session.send_text("hi")
            with pytest.raises(WebSocketDisconnect) as closed:
                session.receive_text()
        return disconnect_info(closed.value)

    closed, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert closed == ("WebSocketDisconnect", code, reason or "")
    assert events[-1] == ("states", WebSocketState.CONNECTED, WebSocketState.DISCONNECTED)


def test_close_before_accept(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    async def handler(ws: Any, record: Record) -> None:
        await ws.close(4003, "not allowed")
        record.add("states", ws.client_state, ws.application_state)

    def client_side(client: TestClient, record: Record) -> Any:
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("/ws"):
                pass  # pragma: no cover
        return disconnect_info(closed.value)

    closed, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert closed == ("WebSocketDisconnect", 4003, "not allowed")
    assert events == [("states", WebSocketState.CONNECTING, WebSocketState.DISCONNECTED)]


@pytest.mark.parametrize(
    "response",
    [
        lambda: PlainTextResponse("nope", status_code=403, headers={"x-why": "because"}),
        lambda: JSONResponse({"error": "rate limited", "retry": 3}, status_code=429),
    ],
    ids=["text", "json"],
)
def test_denial_response(websocket_class: type, app_shape: Any, anyio_backend: str, response: Callable[[], Any]) -> None:
    async def handler(ws: Any, record: Record) -> None:
        await ws.send_denial_response(response())
        record.add("states", ws.client_state, ws.application_state)

    def client_side(client: TestClient, record: Record) -> Any:
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/ws"):
                pass  # pragma: no cover
        reply = denied.value
        return reply.status_code, reply.headers.get("content-type"), reply.headers.get("x-why"), reply.content

    (status, content_type, why, body), events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert status in (403, 429) and body
    assert events == [("states", WebSocketState.CONNECTING, WebSocketState.DISCONNECTED)]


def test_client_disconnect_ends_iter_text(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    async def handler(ws: Any, record: Record) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            record.add("message", message)
        record.add("ended", ws.client_state, ws.application_state)

    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            session.send_text("one")
            session.send_text("two")
            finish(session, record, 1001, "leaving")  # the handler ends on this disconnect
        return None

    seen, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert events == [("message", "one"), ("message", "two"), ("ended", WebSocketState.DISCONNECTED, WebSocketState.CONNECTED)]


def test_client_disconnect_is_seen_by_receive_text(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    async def handler(ws: Any, record: Record) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            record.add("disconnect", exc.code, exc.reason)
        try:
            await ws.receive_text()
        except RuntimeError as exc:
            record.add("after", type(exc).__name__, str(exc))

    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            finish(session, record, 4321, "done here")
        return None

    _, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert events[0] == ("disconnect", 4321, "done here")
    assert events[1][1] == "WebSocketDisconnected"


def test_server_error_reaches_the_client_side(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    # A frame of the wrong kind: Starlette's receive_text returns None (TestClient
    # sends no "text" key, so KeyError); turbows raises WebSocketFrameTypeError,
    # a KeyError. Either way the app sees a KeyError it can catch.
    async def handler(ws: Any, record: Record) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except KeyError:
            record.add("KeyError caught")
        await ws.send_text("recovered")
        await ws.close()

    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws") as session:
            session.send_bytes(b"binary")
            return session.receive_text()

    seen, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert (seen, events) == ("recovered", [("KeyError caught",)])


def test_state_and_metadata_in_an_app(websocket_class: type, app_shape: Any, anyio_backend: str) -> None:
    async def handler(ws: Any, record: Record) -> None:
        record.add("url", str(ws.url), ws.query_params.get("room"), ws.cookies.get("session"), ws.client.host)
        record.add("is starlette", isinstance(ws, StarletteWebSocket))
        await ws.accept()
        await ws.send_json({"path": ws.url.path, "h": ws.headers.get("x-token")})
        await ws.close()

    def client_side(client: TestClient, record: Record) -> Any:
        with client.websocket_connect("/ws?room=7", headers={"x-token": "t", "cookie": "session=abc"}) as session:
            return session.receive_json()

    seen, events = compare(websocket_class, app_shape, anyio_backend, handler, client_side)
    assert seen == {"path": "/ws", "h": "t"}
    assert events[1] == ("is starlette", True)
