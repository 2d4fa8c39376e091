"""Whatever a server's ``receive`` and ``send`` return, turbows awaits it as Starlette does.

Servers hand the app ``async def`` functions, but ASGI only asks for
awaitables: objects with ``__await__`` (futures and the like), generator-based
coroutines, or, by mistake, plain values. The compiled core steps each kind
differently (``am_send`` where the object has it, else its ``__await__()``), so
each is run through both cores and Starlette's class and compared.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any

import pytest
from starlette.websockets import WebSocket as StarletteWebSocket

pytestmark = pytest.mark.anyio

SCOPE = {"type": "websocket", "path": "/ws"}
INCOMING = [
    {"type": "websocket.connect"},
    {"type": "websocket.receive", "text": "hello"},
    {"type": "websocket.receive", "bytes": b'{"a": 1}'},
    {"type": "websocket.disconnect", "code": 1000},
]


class Ready:
    """An awaitable that is not a coroutine: ``__await__`` returns a generator."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[None, None, Any]:
        yield from ()
        return self.value


def _coroutine_function(value: Callable[[], Any]) -> Callable[..., Any]:
    async def call(*args: Any) -> Any:
        return value(*args)

    return call


def _awaitable_object(value: Callable[[], Any]) -> Callable[..., Any]:
    return lambda *args: Ready(value(*args))


def _generator_coroutine(value: Callable[[], Any]) -> Callable[..., Any]:
    @types.coroutine
    def call(*args: Any) -> Generator[None, None, Any]:
        yield from ()
        return value(*args)

    return call


def _plain_function(value: Callable[[], Any]) -> Callable[..., Any]:
    return value  # not awaitable at all: `await` raises TypeError


KINDS = {
    "coroutine": _coroutine_function,
    "__await__": _awaitable_object,
    "types.coroutine": _generator_coroutine,
    "not awaitable": _plain_function,
}


async def _transcript(cls: type, kind: str) -> list[Any]:
    incoming = list(INCOMING)
    sent: list[Any] = []
    wrap = KINDS[kind]
    websocket = cls(SCOPE, wrap(lambda: incoming.pop(0)), wrap(lambda message: sent.append(message)))
    steps: list[Any] = []
    for step in (
        websocket.accept,
        websocket.receive_text,
        lambda: websocket.send_text("echo"),
        lambda: websocket.receive_json(mode="binary"),
        websocket.receive,
    ):
        try:
            steps.append(("ok", await step()))
        except Exception as error:  # compared as class and text
            steps.append(("raise", type(error), str(error).split(" can't")[0]))
    return [steps, sent, websocket.client_state, websocket.application_state]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_kind_of_server_awaitable(websocket_class: type, kind: str) -> None:
    expected = await _transcript(StarletteWebSocket, kind)
    assert await _transcript(websocket_class, kind) == expected
    if kind != "not awaitable":
        assert expected[0][1] == ("ok", "hello")  # the script really exchanged messages
