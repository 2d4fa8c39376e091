"""turbows: Starlette's WebSocket, made fast.

``turbows.WebSocket`` is a subclass of ``starlette.websockets.WebSocket``
whose state machine, message dispatch and JSON run in a compiled core
(Cython and orjson), or in its pure-Python twin where no wheel or compiler
was at hand. ``IMPLEMENTATION`` says which one was loaded.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
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

#: ``"speedups"`` or ``"pure"``: which core this import loaded.
IMPLEMENTATION: str = next(iter(CORES))
WebSocket = CORES[IMPLEMENTATION]
