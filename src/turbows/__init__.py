"""turbows: Starlette's WebSocket, made fast.

``turbows.WebSocket`` is a subclass of ``starlette.websockets.WebSocket``
whose state machine, message dispatch and JSON run in a compiled core
(Cython and orjson), or in its pure-Python twin where no wheel or compiler
was at hand. ``IMPLEMENTATION`` says which one was loaded.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from starlette.websockets import (
    WebSocketClose,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketState,
)

from ._cores import CORES
from ._exceptions import HubUnavailable, WebSocketFrameTypeError
from ._hub import Hub
from ._install import install, uninstall, websocket_endpoint

__all__ = [
    "IMPLEMENTATION",
    "__version__",
    "Hub",
    "HubUnavailable",
    "WebSocket",
    "WebSocketClose",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketFrameTypeError",
    "WebSocketState",
    "install",
    "uninstall",
    "websocket_endpoint",
]

try:
    __version__: str = version("turbows")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    # Both are chosen at import time (``_cores``), which a type checker cannot
    # follow: this is what they are, for a checker.
    from collections.abc import AsyncIterator
    from typing import Any, Literal

    import starlette.websockets
    from starlette.requests import StateT

    #: ``"speedups"`` or ``"pure"``: which core this import loaded.
    IMPLEMENTATION: Literal["speedups", "pure"]

    # Generic in its state's type, as Starlette's is: ``WebSocket[AppState]``.
    class WebSocket(starlette.websockets.WebSocket[StateT]):
        """Starlette's ``WebSocket``, its state machine and dispatch from the selected core."""

        # Starlette's iter_json() takes no mode (a documented difference).
        def iter_json(self, mode: str = "text") -> AsyncIterator[Any]: ...

else:
    IMPLEMENTATION = next(iter(CORES))
    WebSocket = CORES[IMPLEMENTATION]
