"""A native websocket protocol for uvicorn.

    uvicorn app:app --ws turbows.uvicorn:WebSocketProtocol
    uvicorn.Config(app, ws="turbows.uvicorn:WebSocketProtocol")  # or ws=WebSocketProtocol

``WebSocketProtocol`` is the compiled ``turbows._protocol_c.WebSocketProtocol``
(the connection's state machine, with frames in ``turbows._frames_c``,
permessage-deflate in ``turbows._deflate_c`` and the handshake in
``turbows._handshake``), with uvicorn's own websockets-sansio protocol as its
behavioural reference. Where
the extension is missing (a pure install, or ``TURBOWS_NO_EXTENSIONS=1``),
it is uvicorn's ``WebSocketsSansIOProtocol`` itself, with a warning, so the
same command works everywhere.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING

from ._cores import NO_EXTENSIONS

__all__ = ["NATIVE", "WebSocketProtocol"]

_protocol_c = None
if not NO_EXTENSIONS:
    try:
        from . import _protocol_c
    except ImportError:  # a source install with no compiler
        _protocol_c = None

#: Whether ``WebSocketProtocol`` is turbows' compiled protocol (else uvicorn's sansio one).
NATIVE = _protocol_c is not None

if TYPE_CHECKING:
    # Either class below, chosen at import time: for a checker, what both are.
    from typing import Any

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    class WebSocketProtocol(asyncio.Protocol):
        """uvicorn's websocket protocol: constructed by uvicorn, as its own are."""

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None: ...

elif _protocol_c is not None:

    class WebSocketProtocol(_protocol_c.WebSocketProtocol, asyncio.Protocol):  # type: ignore[misc]
        """uvicorn's websocket protocol, compiled: see ``turbows._protocol_c``."""

        __slots__ = ()

else:
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol,
    )

    warnings.warn(
        "turbows.uvicorn: the compiled protocol is not available "
        + (
            "(TURBOWS_NO_EXTENSIONS is set)"
            if NO_EXTENSIONS
            else "(turbows._protocol_c is missing)"
        )
        + "; using uvicorn's websockets-sansio protocol",
        RuntimeWarning,
        stacklevel=2,
    )

    class WebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[no-redef]
        """uvicorn's websockets-sansio protocol (the compiled one is not available here)."""

        def __init__(
            self, config, server_state, app_state, _loop=None, on_connection_lost=None
        ):  # type: ignore[no-untyped-def]
            super().__init__(
                config=config,
                server_state=server_state,
                app_state=app_state,
                _loop=_loop,
            )
