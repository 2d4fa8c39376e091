"""The cores this installation has, each made into a ``WebSocket`` class.

A core supplies the hot path: ``_core_py.WebSocketCore`` (pure Python:
coroutines over the state machine ``_state_py``), or ``_calls_c.WebSocketCore``
(compiled: C-level awaitables over ``_state_py`` compiled by Cython as
``_state_c``). Starlette's class supplies everything else.
Both classes are built here so the test suite can run each; ``turbows``
exposes the selected one.
"""

from __future__ import annotations

import os

from starlette.websockets import WebSocket as StarletteWebSocket

from . import _core_py
from ._iteration import Iteration

__all__ = ["CORES", "NO_EXTENSIONS", "websocket_class"]

# At import time, as at build time: load the pure core even where the compiled one exists.
NO_EXTENSIONS = os.environ.get("TURBOWS_NO_EXTENSIONS", "") not in ("", "0")


def websocket_class(core: type) -> type[StarletteWebSocket]:
    """Starlette's ``WebSocket`` with ``core``'s methods in front of its own."""

    class WebSocket(Iteration, core, StarletteWebSocket):  # type: ignore[misc, valid-type]
        __doc__ = StarletteWebSocket.__doc__

    WebSocket.__module__ = "turbows"
    WebSocket.__qualname__ = "WebSocket"
    return WebSocket


# name -> WebSocket class, the selected core first.
CORES: dict[str, type[StarletteWebSocket]] = {}

if not NO_EXTENSIONS:
    try:
        from . import _calls_c
    except ImportError:  # a source install with no compiler: the pure core serves
        pass
    else:
        CORES["speedups"] = websocket_class(_calls_c.WebSocketCore)

CORES["pure"] = websocket_class(_core_py.WebSocketCore)
