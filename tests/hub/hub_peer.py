"""In-memory ASGI connections for the hub's in-process tests, under asyncio or trio.

``Connection`` is the server side of one websocket, as a server's
``receive`` and ``send`` would be: ``receive`` waits for what the test
delivers (``websocket.connect`` first), ``send`` records every message, and
can be held (a client that stops reading: each send waits until released)
or made to fail (a client that vanished: ``OSError``, as uvicorn raises).
Everything waits through anyio, so the same test runs on both loops, and
every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from asgi_peer import make_scope

__all__ = ["Connection", "eventually"]

#: Every wait in these tests gives up after this long.
WAIT = 10.0


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds (the hub's senders are tasks of their own)."""
    with anyio.fail_after(WAIT):
        while not condition():
            await anyio.sleep(0)
    assert condition(), what


class Connection:
    """One accepted websocket on an in-memory server."""

    def __init__(self, websocket_class: type, *, path: str = "/ws") -> None:
        self.sent: list[dict[str, Any]] = []
        self._to_app, self._from_client = anyio.create_memory_object_stream[dict[str, Any]](16)
        self._to_app.send_nowait({"type": "websocket.connect"})
        self._released = anyio.Event()
        self._released.set()
        self.fail_with: BaseException | None = None
        self.websocket = websocket_class(make_scope(path=path), self.receive, self.send)

    @classmethod
    async def accepted(cls, websocket_class: type, **kwargs: Any) -> Connection:
        connection = cls(websocket_class, **kwargs)
        await connection.websocket.accept()
        return connection

    # -- the server's callables ----------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        return await self._from_client.receive()

    async def send(self, message: dict[str, Any]) -> None:
        if not self._released.is_set():  # like a server's send: it suspends only when held
            await self._released.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(message)

    # -- the client's side ---------------------------------------------------------------

    def hold(self) -> None:
        """The client stops reading: every send from now on waits."""
        self._released = anyio.Event()

    def release(self) -> None:
        self._released.set()

    def disconnect(self, code: int = 1001) -> None:
        self._to_app.send_nowait({"type": "websocket.disconnect", "code": code})

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``websocket.send`` messages the app sent."""
        return [message for message in self.sent if message["type"] == "websocket.send"]

    @property
    def payloads(self) -> list[str | bytes]:
        """The text or bytes of each ``websocket.send`` message."""
        return [message.get("text", message.get("bytes")) for message in self.messages]
