"""The ASGI app the integration tests serve: a Starlette app whose websocket routes are raw ASGI endpoints.

Each endpoint builds the WebSocket itself from ``(scope, receive, send)``:
``turbows.WebSocket`` (the core the process loaded: ``TURBOWS_NO_EXTENSIONS=1``
selects the pure one; ``TURBOWS_APP_CORE`` names a core outright, for a server
whose compiled protocol must stay while the app runs the pure core), or Starlette's own class where the query string says
``impl=starlette``, so a test can run one scenario on both and compare.

What a handler observes (exceptions, disconnect codes, states) goes to a
per-key recorder; a test reads it back over ``/events/{key}``, which waits
until the handler has finished. Everything an endpoint awaits is bounded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows
from turbows import WebSocketDisconnect
from turbows._cores import CORES

import hubapp

APP_CORE = os.environ.get("TURBOWS_APP_CORE", turbows.IMPLEMENTATION)
APP_CLASS = CORES[APP_CORE]

SERVER = os.environ.get("TURBOWS_IT_SERVER", "unknown")
PROTOCOL = os.environ.get("TURBOWS_IT_PROTOCOL", "")
#: Every wait inside a handler gives up after this many seconds.
HANDLER_TIMEOUT = 15.0

Handler = Callable[[Any], Awaitable[None]]


# -- observations -----------------------------------------------------------------

_EVENTS: dict[str, list[Any]] = {}
_DONE: dict[str, anyio.Event] = {}
_STATS: dict[str, dict[str, int]] = {}


def _done(key: str) -> anyio.Event:
    if key not in _DONE:
        _DONE[key] = anyio.Event()
    return _DONE[key]


def record(key: str, *event: Any) -> None:
    _EVENTS.setdefault(key, []).append(list(event))


def finish(key: str) -> None:
    _done(key).set()


def describe(exc: BaseException) -> dict[str, Any]:
    """An exception as JSON: class, message, and a disconnect's code and reason."""
    described: dict[str, Any] = {"class": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, WebSocketDisconnect):
        described["code"] = exc.code
        described["reason"] = exc.reason
    return described


def states(ws: Any) -> list[str]:
    return [ws.client_state.name, ws.application_state.name]


# -- the endpoint: (scope, receive, send) -> a WebSocket -------------------------


class Endpoint:
    """A raw ASGI websocket endpoint running ``handler(ws)``.

    Starlette's ``WebSocketRoute`` treats an object that is not a function as
    an ASGI app, so this gets the server's own ``receive`` and ``send``.
    ``strip_denial`` removes the denial-response extension from the scope:
    the app then sees what a server without that extension offers.
    """

    def __init__(self, handler: Handler, *, strip_denial: bool = False) -> None:
        self.handler = handler
        self.strip_denial = strip_denial

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.strip_denial:
            scope = dict(scope)
            extensions = dict(scope.get("extensions") or {})
            extensions.pop("websocket.http.response", None)
            scope["extensions"] = extensions
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        websocket_class = StarletteWebSocket if query.get("impl") == ["starlette"] else APP_CLASS
        await self.handler(websocket_class(scope, receive, send))


def _query(ws: Any, name: str, default: str) -> str:
    return ws.query_params.get(name, default)


async def _until_client_closes(ws: Any) -> None:
    """Let the client close: a reply followed at once by a close from each side races in
    hypercorn's trio worker (trio.BusyResourceError, which brings the whole server down)."""
    with anyio.move_on_after(HANDLER_TIMEOUT):
        async for _ in ws.iter_text():
            pass


# -- handlers ---------------------------------------------------------------------


def _event_loop() -> str:
    """The module of the running asyncio loop's class ("uvloop", "asyncio.unix_events"), else "trio"."""
    try:
        return type(asyncio.get_running_loop()).__module__
    except RuntimeError:  # no asyncio loop: hypercorn's trio worker
        return "trio"


async def core(ws: Any) -> None:
    """Which class and core serve this process, and what the server offers."""
    await ws.accept()
    mro = type(ws).__mro__
    await ws.send_json(
        {
            "implementation": APP_CORE,
            "class": f"{type(ws).__module__}.{type(ws).__qualname__}",
            "mro_modules": [cls.__module__ for cls in mro],
            "is_starlette_websocket": isinstance(ws, StarletteWebSocket),
            "extensions": sorted(ws.scope.get("extensions") or {}),
            "server": SERVER,
            "protocol": PROTOCOL,
            "loop": _event_loop(),
            "pid": os.getpid(),
        }
    )
    await _until_client_closes(ws)


async def connection(ws: Any) -> None:
    """What the class makes of the server's scope: its URL, client, parameters, and which keys the scope has."""
    await ws.accept()
    scope = ws.scope
    server = scope.get("server")
    await ws.send_json(
        {
            "scope_keys": sorted(scope),
            "url": str(ws.url),
            "client": None if ws.client is None else [ws.client.host, ws.client.port],
            "server": None if server is None else list(server),
            "query_params": sorted(ws.query_params.multi_items()),
            "path_params": ws.path_params,
            "headers": sorted({name: ws.headers.getlist(name) for name in ("host", "x-turbows")}.items()),
            "cookies": ws.cookies,
            "subprotocols": scope.get("subprotocols"),
            "http_version": scope.get("http_version"),
            "scheme": scope.get("scheme"),
        }
    )
    await _until_client_closes(ws)


async def echo(ws: Any) -> None:
    """Echo each message back with the matching typed calls, until the client leaves."""
    kind = ws.path_params["kind"]
    await ws.accept()
    if kind == "text":
        async for text in ws.iter_text():
            await ws.send_text(text)
    elif kind == "bytes":
        async for data in ws.iter_bytes():
            await ws.send_bytes(data)
    else:
        mode = "binary" if kind == "json-binary" else "text"
        while True:
            try:
                value = await ws.receive_json(mode=mode)
            except WebSocketDisconnect:
                break
            await ws.send_json(value, mode=mode)


async def json_errors(ws: Any) -> None:
    """``receive_json`` in text mode; report each bad input to the client and go on."""
    await ws.accept()
    while True:
        try:
            value = await ws.receive_json()
        except WebSocketDisconnect:
            break
        except (ValueError, KeyError) as exc:  # malformed JSON; a frame of the wrong type
            await ws.send_json({"error": type(exc).__name__, "message": str(exc)})
            continue
        await ws.send_json({"value": value})


async def cancel_receive(ws: Any) -> None:
    """A receive cancelled by a timeout (asyncio or trio) leaves the connection usable."""
    await ws.accept()
    with anyio.move_on_after(0.05) as timer:
        await ws.receive_text()
    await ws.send_json({"cancelled": timer.cancelled_caught, "states": states(ws)})
    with anyio.fail_after(HANDLER_TIMEOUT):
        text = await ws.receive_text()
    await ws.send_text(f"after: {text}")
    await _until_client_closes(ws)


async def subprotocol(ws: Any) -> None:
    offered = ws.scope.get("subprotocols") or []
    chosen = "superchat" if "superchat" in offered else None
    await ws.accept(subprotocol=chosen)
    await ws.send_json({"offered": offered, "chosen": chosen})
    async for _ in ws.iter_text():
        pass


async def accept_headers(ws: Any) -> None:
    await ws.accept(headers=[(b"x-turbows", b"accepted"), (b"set-cookie", b"turbows=1; Path=/")])
    await ws.send_text("hello")
    async for _ in ws.iter_text():
        pass


async def close_by_app(ws: Any) -> None:
    """Close with the code and reason the client asks for, then try one more send."""
    key = ws.path_params["key"]
    try:
        with anyio.fail_after(HANDLER_TIMEOUT):
            await ws.accept()
            request = await ws.receive_json()
            await ws.close(code=request["code"], reason=request["reason"])
            record(key, "closed", states(ws))
            try:
                await ws.send_text("too late")
            except Exception as exc:  # the catalogue: a send after close
                record(key, "send after close", describe(exc))
    finally:
        finish(key)


async def close_by_client(ws: Any) -> None:
    """Wait for the client to close; record what the app saw, then one more receive."""
    key = ws.path_params["key"]
    try:
        with anyio.fail_after(HANDLER_TIMEOUT):
            await ws.accept()
            await ws.send_text("ready")
            try:
                while True:
                    await ws.receive_text()
            except WebSocketDisconnect as exc:
                record(key, "disconnect", describe(exc), states(ws))
            try:
                await ws.receive_text()
            except Exception as exc:
                record(key, "receive after disconnect", describe(exc))
    finally:
        finish(key)


async def deny(ws: Any) -> None:
    """Deny the handshake with a 401; where the server lacks the extension, the RuntimeError escapes."""
    key = ws.path_params["key"]
    try:
        record(key, "extensions", sorted(ws.scope.get("extensions") or {}))
        response = PlainTextResponse("denied by the app", status_code=401, headers={"x-denied": "yes"})
        try:
            await ws.send_denial_response(response)
        except RuntimeError as exc:
            record(key, "denial", describe(exc), states(ws))
            raise  # the server answers an app that fails before accepting with an error status
        record(key, "denial", "sent", states(ws))
    finally:
        finish(key)


async def deny_or_close(ws: Any) -> None:
    """The portable fallback: deny where the server can, else close before accepting (a 403)."""
    key = ws.path_params["key"]
    try:
        try:
            await ws.send_denial_response(PlainTextResponse("denied by the app", status_code=401))
            record(key, "denial", "sent", states(ws))
        except RuntimeError as exc:
            record(key, "denial", describe(exc), states(ws))
            await ws.close(code=1008)
            record(key, "closed", states(ws))
    finally:
        finish(key)


async def vanish(ws: Any) -> None:
    """Stream to the client while listening; the client then kills its TCP connection.

    ``mode=receive``: the listener calls ``receive_text()`` until it raises;
    ``mode=iterate``: it runs ``iter_text()`` to its end. Meanwhile the
    sender keeps sending: it stops at the first exception, or after 20
    sends that succeed once the listener has seen the disconnect (servers
    that drop sends to a closed connection silently).
    """
    key = ws.path_params["key"]
    mode = _query(ws, "mode", "receive")
    listener_done = anyio.Event()
    try:
        with anyio.fail_after(HANDLER_TIMEOUT):
            await ws.accept()
            await ws.receive_text()  # "go"

            async def sender() -> None:
                after = 0
                try:
                    while after < 20:
                        await ws.send_text("tick" * 256)
                        if listener_done.is_set():
                            after += 1
                        await anyio.sleep(0.002)
                except Exception as exc:
                    record(key, "send", describe(exc))
                else:
                    record(key, "send", "no error after the disconnect")

            async def listener() -> None:
                try:
                    if mode == "iterate":
                        received = [text async for text in ws.iter_text()]
                        record(key, "iteration ended", len(received))
                    else:
                        while True:
                            await ws.receive_text()
                except Exception as exc:
                    record(key, "receive", describe(exc))
                finally:
                    listener_done.set()

            async with anyio.create_task_group() as group:
                group.start_soon(sender)
                group.start_soon(listener)
            # Which of the two notices first is a race; the states they end in are not.
            record(key, "final states", states(ws))
    except Exception as exc:
        record(key, "handler", describe(exc))
    finally:
        finish(key)


async def many(ws: Any) -> None:
    """One echo per connection, counting how many are open at once."""
    stats = _STATS.setdefault(ws.path_params["key"], {"open": 0, "peak": 0, "served": 0})
    await ws.accept()
    stats["open"] += 1
    stats["peak"] = max(stats["peak"], stats["open"])
    try:
        with anyio.fail_after(60):
            await ws.send_text(await ws.receive_text())
            async for _ in ws.iter_text():
                pass
        stats["served"] += 1
    finally:
        stats["open"] -= 1


async def stats(ws: Any) -> None:
    await ws.accept()
    await ws.send_json(_STATS.get(ws.path_params["key"], {"open": 0, "peak": 0, "served": 0}))
    await _until_client_closes(ws)


async def events(ws: Any) -> None:
    """Wait (bounded) until the handler for ``key`` has finished, then send what it recorded."""
    key = ws.path_params["key"]
    await ws.accept()
    done = _done(key)
    with anyio.move_on_after(float(_query(ws, "timeout", "10"))):
        await done.wait()
    await ws.send_json({"done": done.is_set(), "events": _EVENTS.pop(key, [])})
    _DONE.pop(key, None)
    await _until_client_closes(ws)


app = Starlette(
    routes=[
        WebSocketRoute("/core", Endpoint(core)),
        WebSocketRoute("/connection/{name}", Endpoint(connection)),
        WebSocketRoute("/echo/{kind}", Endpoint(echo)),
        WebSocketRoute("/json-errors", Endpoint(json_errors)),
        WebSocketRoute("/cancel-receive", Endpoint(cancel_receive)),
        WebSocketRoute("/subprotocol", Endpoint(subprotocol)),
        WebSocketRoute("/headers", Endpoint(accept_headers)),
        WebSocketRoute("/close-by-app/{key}", Endpoint(close_by_app)),
        WebSocketRoute("/close-by-client/{key}", Endpoint(close_by_client)),
        WebSocketRoute("/deny/{key}", Endpoint(deny)),
        WebSocketRoute("/noext/deny/{key}", Endpoint(deny, strip_denial=True)),
        WebSocketRoute("/deny-or-close/{key}", Endpoint(deny_or_close)),
        WebSocketRoute("/noext/deny-or-close/{key}", Endpoint(deny_or_close, strip_denial=True)),
        WebSocketRoute("/vanish/{key}", Endpoint(vanish)),
        WebSocketRoute("/many/{key}", Endpoint(many)),
        WebSocketRoute("/stats/{key}", Endpoint(stats)),
        WebSocketRoute("/events/{key}", Endpoint(events)),
        *(WebSocketRoute(path, Endpoint(handler)) for path, handler in hubapp.ROUTES),
    ]
)
