"""The pure core: Starlette's ``WebSocket`` methods as Python coroutines.

Every check and state move is a call into ``_state_py``, the state machine
the compiled core shares (compiled there as ``_state_c``); JSON is
Starlette's own (``_json_py``). The methods follow Starlette's line by line,
so this core is also the readable statement of what the compiled one
(``_speedups/_calls_c.pyx``) does.
"""

from __future__ import annotations

from ._json_py import dumps_bytes, dumps_text, loads_bytes, loads_text
from ._state_py import (
    _CONNECTED,
    _CONNECTING,
    ACCEPT,
    CLOSE,
    SEND,
    StateMachine,
    _bytes_of,
    _check_mode,
    _raise_on_disconnect,
    _text_of,
)

__all__ = ["WebSocketCore"]


class WebSocketCore(StateMachine):
    """Everything of Starlette's ``WebSocket`` that runs per message."""

    # -- the ASGI level --------------------------------------------------------

    async def receive(self):
        """Receive ASGI websocket messages, ensuring valid state transitions."""
        self._check_client()
        if self._client_state == _CONNECTED:
            return self._received(await self._receive())
        return self._connected(await self._receive())

    async def send(self, message):
        """Send ASGI websocket messages, ensuring valid state transitions."""
        if self._sending(message):
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
        else:
            await self._send(message)

    async def accept(self, subprotocol=None, headers=None):
        headers = headers or []
        if self._client_state == _CONNECTING:
            # If we haven't yet seen the 'connect' message, then wait for it first.
            await self.receive()
        await self.send({"type": ACCEPT, "subprotocol": subprotocol, "headers": headers})

    async def close(self, code=1000, reason=None):
        await self.send({"type": CLOSE, "code": code, "reason": reason or ""})

    # -- messages --------------------------------------------------------------
    # Through self.receive() and self.send(), as Starlette's are, so an override
    # of either, on the instance or in a subclass, is honoured (Responder's
    # ws_idle_timeout sets one). The compiled core takes the same path when it
    # sees an override, and awaits the server directly when there is none.

    async def receive_text(self):
        self._check_receiving()
        message = await self.receive()
        _raise_on_disconnect(message)
        return _text_of(message)

    async def receive_bytes(self):
        self._check_receiving()
        message = await self.receive()
        _raise_on_disconnect(message)
        return _bytes_of(message)

    async def receive_json(self, mode="text"):
        binary = _check_mode(mode)
        self._check_receiving()
        message = await self.receive()
        _raise_on_disconnect(message)
        if binary:
            return loads_bytes(_bytes_of(message))
        return loads_text(_text_of(message))

    async def send_text(self, data):
        await self.send({"type": SEND, "text": data})

    async def send_bytes(self, data):
        await self.send({"type": SEND, "bytes": data})

    async def send_json(self, data, mode="text"):
        if _check_mode(mode):
            await self.send({"type": SEND, "bytes": dumps_bytes(data)})
        else:
            await self.send({"type": SEND, "text": dumps_text(data)})
