"""What the install() tests share: run one client script without and with install().

Each framework's test module builds its apps at import, before any install(),
and records in a list the class of every object its endpoints, hooks and
handlers receive. ``run_both`` runs a client script against the app twice,
as it is and under ``turbows.install(websocket_class=...)``, and asserts that
the client saw the same, the app sent the same ASGI messages, and every
endpoint got Starlette's class the first time and the installed one the
second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

import turbows

# Bound at import, before any install() rebinds starlette.websockets.WebSocket.
STARLETTE_WEBSOCKET = StarletteWebSocket


def outcome(action: Callable[[], Any]) -> Any:
    """What the client saw: the value, or the exception's class and details."""
    try:
        return action()
    except WebSocketDenialResponse as exc:  # an HTTP response instead of a websocket
        return ("WebSocketDenialResponse", exc.status_code, exc.text)
    except WebSocketDisconnect as exc:
        return ("WebSocketDisconnect", exc.code, exc.reason)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


class Recorder:
    """ASGI wrapper keeping every message the app sends, per connection."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.connections: list[tuple[str, list[dict[str, Any]]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        sent: list[dict[str, Any]] = []
        self.connections.append((scope["path"], sent))

        async def recording_send(message: dict[str, Any]) -> None:
            sent.append(dict(message))
            await send(message)

        await self.app(scope, receive, recording_send)


def run_both(
    app: Any,
    script: Callable[[TestClient], Any],
    websocket_class: type,
    backend: str,
    seen: list[type],
    also_equal: Sequence[list[Any]] = (),
) -> tuple[Any, list[tuple[str, list[dict[str, Any]]]]]:
    """Run ``script`` without and with install(); return the second run's
    transcript and the messages the app sent, after asserting both runs agree.

    ``seen`` is the module's list of classes its endpoints received;
    ``also_equal`` are other lists the app fills (close codes, say) that must
    come out the same.
    """
    results = []
    for cls in (None, websocket_class):
        seen.clear()
        for observed in also_equal:
            observed.clear()
        recorder = Recorder(app)
        if cls is not None:
            turbows.install(websocket_class=cls)
        try:
            with TestClient(recorder, backend=backend) as client:
                transcript = script(client)
        finally:
            turbows.uninstall()
        results.append((transcript, recorder.connections, [list(o) for o in also_equal], list(seen)))
    (plain, plain_sent, plain_also, plain_seen), (turbo, turbo_sent, turbo_also, turbo_seen) = results
    assert turbo == plain
    assert turbo_sent == plain_sent
    assert turbo_also == plain_also
    assert plain_seen and all(t is STARLETTE_WEBSOCKET for t in plain_seen)
    assert len(turbo_seen) == len(plain_seen)
    assert all(t is websocket_class for t in turbo_seen)
    return turbo, turbo_sent
