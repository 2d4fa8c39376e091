"""Mistakes a user's checker must catch, one a line.

Each line carries the error each checker must report there: ``# type:
ignore[code]`` for mypy, ``# pyright: ignore[rule]`` for pyright (configured
to leave ``# type: ignore`` to mypy). Both report an ignore that silences
nothing (mypy ``--strict``'s ``warn_unused_ignores``, pyright's
``reportUnnecessaryTypeIgnoreComment``) and any other error on the line, so a
mistake that stops being caught (a name decayed to ``Any``, a signature
loosened) fails ``ci/typecheck.sh``.
"""

from __future__ import annotations

import uvicorn

import turbows
import turbows.uvicorn


async def handler(websocket: turbows.WebSocket) -> None:
    # A coroutine never awaited: nothing is sent.
    websocket.send_text("hello")  # type: ignore[unused-coroutine]  # pyright: ignore[reportUnusedCoroutine]
    # receive_text() gives str, not bytes.
    data: bytes = await websocket.receive_text()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    await websocket.send_bytes(data)
    # iter_json takes mode=..., as receive_json does, and nothing else.
    websocket.iter_json(binary=True)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    # The error names what was expected and the message that arrived.
    raise turbows.WebSocketFrameTypeError("text")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


@turbows.websocket_endpoint
async def endpoint(websocket: turbows.WebSocket, room: str) -> None:
    await websocket.accept()


async def call_endpoint(websocket: turbows.WebSocket) -> None:
    # The decorated endpoint keeps its signature.
    await endpoint(websocket, 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


# No core of that name: IMPLEMENTATION is "speedups" or "pure".
compiled = turbows.IMPLEMENTATION == "compiled"  # type: ignore[comparison-overlap]  # pyright: ignore[reportUnnecessaryComparison]

# install() takes a WebSocket class.
turbows.install(websocket_class=dict)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

# uvicorn's ws= takes the protocol, not the WebSocket class.
uvicorn.Config("app:app", ws=turbows.WebSocket)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
# uvicorn constructs the protocol, with its config and server state.
turbows.uvicorn.WebSocketProtocol(uvicorn.Config("app:app"))  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
