"""The operations the in-process benchmarks time, for each implementation.

An implementation is one of ``raw`` (the ASGI callables awaited directly, with
orjson for JSON: the floor no wrapper can beat), ``starlette`` (Starlette's
``WebSocket``), ``pure`` and ``speedups`` (turbows' two cores), and the
compiled core's other shape (see ``implementations``). Every workload
is a coroutine function that performs its operation ``count`` times against a
scripted peer whose ``receive`` and ``send`` are real ``async def`` functions
that never suspend, so the coroutine runs to completion in one ``send(None)``
and no event loop cost is timed. Batching ``count`` operations per call keeps
the harness's own cost (starting the outer coroutine) out of the per-operation
figure.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from turbows._cores import CORES, SHAPES

SCOPE = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
CONNECT = {"type": "websocket.connect"}
DISCONNECT = {"type": "websocket.disconnect", "code": 1000}

Workload = Callable[[int], Awaitable[None]]


def json_object(size: int, seed: int = 0) -> dict[str, Any]:
    """A chat-like JSON object whose compact encoding is about ``size`` bytes."""
    rng = random.Random(seed)
    value: dict[str, Any] = {"type": "message", "id": 12345, "ok": True, "score": 0.75, "items": []}
    while len(json.dumps(value, separators=(",", ":"))) < size:
        value["items"].append(
            {
                "user": "".join(rng.choices(string.ascii_lowercase, k=8)),
                "text": "".join(rng.choices(string.ascii_letters + " ", k=24)),
                "n": rng.randrange(1_000_000),
            }
        )
    return value


def implementations() -> dict[str, type | None]:
    """name -> WebSocket class (None for raw), for what this install has.

    ``speedups`` is the compiled core this interpreter loads; the compiled
    core's other shape (``awaitables`` on 3.12+, ``coroutines`` on 3.11) is
    timed beside it, so each run shows why the selection is what it is.
    """
    found: dict[str, type | None] = {"raw": None, "starlette": StarletteWebSocket}
    for name in ("pure", "speedups"):
        if name in CORES:
            found[name] = CORES[name]
    for shape, cls in SHAPES.items():
        if cls is not CORES.get("speedups"):
            found[shape] = cls
    return found


async def _nothing(message: Any) -> None:
    return None


def _repeat(message: dict) -> Callable[[], Awaitable[dict]]:
    async def receive() -> dict:
        return message

    return receive


def _sequence(*messages: dict) -> Callable[[], Awaitable[dict]]:
    """A receive that hands out ``messages`` in a cycle."""
    state = {"index": 0}

    async def receive() -> dict:
        index = state["index"]
        state["index"] = (index + 1) % len(messages)
        return messages[index]

    return receive


def _connected(cls: type, receive: Callable) -> Any:
    websocket = cls(SCOPE, receive, _nothing)
    websocket.client_state = WebSocketState.CONNECTED
    websocket.application_state = WebSocketState.CONNECTED
    return websocket


# -- workloads: make(cls) -> coroutine function taking a count -----------------


def text_round_trip(cls: type | None) -> Workload:
    receive = _repeat({"type": "websocket.receive", "text": "hello, world: a short chat line"})
    if cls is None:

        async def raw(count: int) -> None:
            for _ in range(count):
                message = await receive()
                await _nothing({"type": "websocket.send", "text": message["text"]})

        return raw
    websocket = _connected(cls, receive)

    async def run(count: int) -> None:
        for _ in range(count):
            await websocket.send_text(await websocket.receive_text())

    return run


def bytes_round_trip(cls: type | None) -> Workload:
    receive = _repeat({"type": "websocket.receive", "bytes": b"\x00\x01 a short binary frame"})
    if cls is None:

        async def raw(count: int) -> None:
            for _ in range(count):
                message = await receive()
                await _nothing({"type": "websocket.send", "bytes": message["bytes"]})

        return raw
    websocket = _connected(cls, receive)

    async def run(count: int) -> None:
        for _ in range(count):
            await websocket.send_bytes(await websocket.receive_bytes())

    return run


def json_round_trip(size: int, binary: bool) -> Callable[[type | None], Workload]:
    encoded = json.dumps(json_object(size), separators=(",", ":"))
    key = "bytes" if binary else "text"
    payload: str | bytes = encoded.encode() if binary else encoded

    def make(cls: type | None) -> Workload:
        receive = _repeat({"type": "websocket.receive", key: payload})
        if cls is None:
            if binary:

                async def raw(count: int) -> None:
                    for _ in range(count):
                        message = await receive()
                        value = orjson.loads(message["bytes"])
                        await _nothing({"type": "websocket.send", "bytes": orjson.dumps(value)})

            else:

                async def raw(count: int) -> None:
                    for _ in range(count):
                        message = await receive()
                        value = orjson.loads(message["text"])
                        await _nothing({"type": "websocket.send", "text": orjson.dumps(value).decode()})

            return raw
        websocket = _connected(cls, receive)
        mode = "binary" if binary else "text"
        if cls is StarletteWebSocket or not binary:
            # Starlette's receive_json takes a mode too; both sides use it.
            async def run(count: int) -> None:
                for _ in range(count):
                    await websocket.send_json(await websocket.receive_json(mode=mode), mode=mode)

            return run

        async def run_binary(count: int) -> None:
            for _ in range(count):
                await websocket.send_json(await websocket.receive_json(mode="binary"), mode="binary")

        return run_binary

    return make


def construct_accept_close(cls: type | None) -> Workload:
    receive = _repeat(CONNECT)
    if cls is None:

        async def raw(count: int) -> None:
            for _ in range(count):
                await receive()
                await _nothing({"type": "websocket.accept", "subprotocol": None, "headers": []})
                await _nothing({"type": "websocket.close", "code": 1000, "reason": ""})

        return raw

    async def run(count: int) -> None:
        for _ in range(count):
            websocket = cls(SCOPE, receive, _nothing)
            await websocket.accept()
            await websocket.close()

    return run


ITERATED = 100  # messages per iter_text loop, then a disconnect


def iter_text(cls: type | None) -> Workload:
    messages = [{"type": "websocket.receive", "text": f"line {index}"} for index in range(ITERATED)]

    if cls is None:

        async def raw(count: int) -> None:
            for _ in range(count // ITERATED):
                receive = _sequence(*messages, DISCONNECT)
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    message["text"]

        return raw

    async def run(count: int) -> None:
        for _ in range(count // ITERATED):
            websocket = _connected(cls, _sequence(*messages, DISCONNECT))
            async for _text in websocket.iter_text():
                pass

    return run


def disconnect_path(cls: type | None) -> Workload:
    """Accept, then the client is gone: receive_text raises WebSocketDisconnect."""
    if cls is None:

        async def raw(count: int) -> None:
            for _ in range(count):
                receive = _sequence(CONNECT, DISCONNECT)
                await receive()
                await _nothing({"type": "websocket.accept", "subprotocol": None, "headers": []})
                message = await receive()
                try:
                    raise WebSocketDisconnect(message["code"], message.get("reason"))
                except WebSocketDisconnect:
                    pass

        return raw

    async def run(count: int) -> None:
        for _ in range(count):
            websocket = cls(SCOPE, _sequence(CONNECT, DISCONNECT), _nothing)
            await websocket.accept()
            try:
                await websocket.receive_text()
            except WebSocketDisconnect:
                pass

    return run


# name -> (factory, operations per timed call)
OPERATIONS: dict[str, tuple[Callable[[type | None], Workload], int]] = {
    "text round trip": (text_round_trip, 1000),
    "bytes round trip": (bytes_round_trip, 1000),
    "json round trip 150B": (json_round_trip(150, binary=False), 500),
    "json round trip 4KiB": (json_round_trip(4096, binary=False), 50),
    "json round trip 64KiB": (json_round_trip(65536, binary=False), 4),
    "binary json round trip 150B": (json_round_trip(150, binary=True), 500),
    "construct+accept+close": (construct_accept_close, 500),
    "iter_text": (iter_text, 1000),
    "disconnect path": (disconnect_path, 500),
}


def run_to_completion(coroutine: Any) -> None:
    """Drive a coroutine that never suspends (the peers above never do)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("a benchmark coroutine suspended")
