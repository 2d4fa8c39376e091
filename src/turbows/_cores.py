"""The cores this installation has, each made into a ``WebSocket`` class.

A core supplies the hot path; Starlette's class supplies everything else.

- ``pure``: ``_core_py.WebSocketCore``, Starlette's sequence of calls over
  the state machine ``_state_py``, with Starlette's JSON.
- ``speedups``, the compiled core, in the shape measured fastest on this
  interpreter (README, "How the cores are built"):
  - CPython 3.11: ``_calls_c.WebSocketCore``, C-level awaitables over the
    compiled state machine ``_state_c``, stepped through ``am_send``;
  - CPython 3.12 and later: ``_coroutines.WebSocketCore``, coroutines whose
    direct path the interpreter runs inline, with the compiled JSON.
Both classes are built here so the test suite can run each; ``turbows``
exposes the selected one.
"""

from __future__ import annotations

import os
import sys

from starlette.websockets import WebSocket as StarletteWebSocket

from . import _core_py
from ._iteration import Iteration

__all__ = ["CORES", "NO_EXTENSIONS", "SHAPES", "websocket_class"]

# At import time, as at build time: load the pure core even where the compiled one exists.
NO_EXTENSIONS = os.environ.get("TURBOWS_NO_EXTENSIONS", "") not in ("", "0")


def websocket_class(core: type) -> type[StarletteWebSocket]:
    """Starlette's ``WebSocket`` with ``core``'s methods in front of its own."""

    class WebSocket(Iteration, core, StarletteWebSocket):  # type: ignore[misc, valid-type]
        __doc__ = StarletteWebSocket.__doc__

    WebSocket.__module__ = "turbows"
    WebSocket.__qualname__ = "WebSocket"
    return WebSocket


# The compiled core's two shapes, where the extension is built: the one this
# interpreter loads, and the other one, which the benchmarks time beside it.
SHAPES: dict[str, type[StarletteWebSocket]] = {}
# CPython 3.12's SEND inlines native coroutines and no longer uses am_send.
COROUTINE_SHAPE = sys.version_info >= (3, 12)

if not NO_EXTENSIONS:
    try:
        from . import _calls_c, _coroutines
    except ImportError:  # a source install with no compiler: the pure core serves
        pass
    else:
        SHAPES["awaitables"] = websocket_class(_calls_c.WebSocketCore)
        SHAPES["coroutines"] = websocket_class(_coroutines.WebSocketCore)

# name -> WebSocket class, the selected core first.
CORES: dict[str, type[StarletteWebSocket]] = {}
if SHAPES:
    CORES["speedups"] = SHAPES["coroutines" if COROUTINE_SHAPE else "awaitables"]
CORES["pure"] = websocket_class(_core_py.WebSocketCore)
