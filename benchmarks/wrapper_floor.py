"""The floor under any WebSocket class that keeps Starlette's method calls.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/wrapper_floor.py thin 3000

Runs COUNT text round trips either raw (awaiting a trivial ASGI ``receive``
and ``send`` directly) or through the thinnest possible wrapper: a class
whose ``receive_text`` and ``send_text`` are one-line coroutines with no
check at all. Run each under callgrind at two counts (1000 and 3000, say);
the difference of the totals over 2000 is the instructions per round trip.
README, "Benchmarks", quotes the ratio per interpreter: whatever a core does
on top, ``await websocket.receive_text()`` adds a coroutine of its own to
raw's, and that alone is more than 1.5x raw.
"""

from __future__ import annotations

import gc
import sys

MESSAGE = {"type": "websocket.receive", "text": "hello, world: a short chat line"}


async def receive() -> dict:
    return MESSAGE


async def send(message: dict) -> None:
    return None


class Thin:
    __slots__ = ("_receive", "_send")

    def __init__(self, receive, send) -> None:
        self._receive = receive
        self._send = send

    async def receive_text(self) -> str:
        return (await self._receive())["text"]

    async def send_text(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})


async def raw(count: int) -> None:
    for _ in range(count):
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})


async def thin(count: int) -> None:
    websocket = Thin(receive, send)
    for _ in range(count):
        await websocket.send_text(await websocket.receive_text())


def run(coroutine) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("suspended")


if __name__ == "__main__":
    gc.disable()
    workload = {"raw": raw, "thin": thin}[sys.argv[1]]
    run(workload(10))  # warm up
    run(workload(int(sys.argv[2])))
