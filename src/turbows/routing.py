"""Opt in per route, with no global patching: ``turbows.routing.WebSocketRoute``.

A drop-in for ``starlette.routing.WebSocketRoute`` whose function endpoint
receives a ``turbows.WebSocket``. For every route at once, see
``turbows.install()``; for one FastAPI or Responder endpoint, the
``turbows.websocket_endpoint`` decorator.
"""

from __future__ import annotations

from ._install import WebSocketRoute, websocket_session

__all__ = ["WebSocketRoute", "websocket_session"]
