"""``iter_text``, ``iter_bytes`` and ``iter_json``: shared by both cores.

They are plain Python async generators on purpose. CPython steps an awaitable
through its ``am_send`` slot, which the compiled core's calls implement; a
Cython async generator would step them through ``__next__`` and a
``StopIteration`` per message instead (measured: slower than the pure core).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.websockets import WebSocketDisconnect

__all__ = ["Iteration"]


class Iteration:
    """Starlette's iteration, until the client disconnects."""

    __slots__ = ()

    async def iter_text(self) -> AsyncIterator[str]:
        try:
            while True:
                yield await self.receive_text()  # type: ignore[attr-defined]
        except WebSocketDisconnect:
            pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield await self.receive_bytes()  # type: ignore[attr-defined]
        except WebSocketDisconnect:
            pass

    async def iter_json(self, mode: str = "text") -> AsyncIterator[Any]:
        """Like Starlette's, plus the ``mode`` that ``receive_json`` takes (a documented difference)."""
        try:
            while True:
                yield await self.receive_json(mode)  # type: ignore[attr-defined]
        except WebSocketDisconnect:
            pass
