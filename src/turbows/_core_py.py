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
    _DISCONNECTED,
    ACCEPT,
    CLOSE,
    CONNECT,
    DISCONNECT,
    RECEIVE,
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

    # receive() and send() run their common cases inline, as Starlette's do (a
    # call per check would make this core slower than Starlette's class); every
    # other case, and every error, is the shared state machine's.

    async def receive(self):
        """Receive ASGI websocket messages, ensuring valid state transitions."""
        state = self._client_state
        if state == _CONNECTED:
            message = await self._receive()
            message_type = message["type"]
            if message_type == RECEIVE:
                return message
            if message_type == DISCONNECT:
                self._client_state = _DISCONNECTED
                return message
            return self._received(message)  # raises
        if state == _CONNECTING:
            message = await self._receive()
            if message["type"] == CONNECT:
                self._client_state = _CONNECTED
                return message
            return self._connected(message)  # raises
        self._check_client()  # raises

    async def send(self, message):
        """Send ASGI websocket messages, ensuring valid state transitions."""
        state = self._application_state
        if state == _CONNECTED:
            message_type = message["type"]
            if message_type == SEND or message_type == CLOSE:
                if message_type == CLOSE:
                    self._application_state = _DISCONNECTED
                try:
                    await self._send(message)
                except OSError:
                    raise self._lost()
                return
        elif state == _CONNECTING and message["type"] == ACCEPT:
            self._application_state = _CONNECTED
            await self._send(message)
            return
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
        if self._application_state != _CONNECTED:
            self._check_receiving()  # raises
        message = await self.receive()
        if message["type"] == DISCONNECT:
            _raise_on_disconnect(message)  # raises
        return _text_of(message)

    async def receive_bytes(self):
        if self._application_state != _CONNECTED:
            self._check_receiving()  # raises
        message = await self.receive()
        if message["type"] == DISCONNECT:
            _raise_on_disconnect(message)  # raises
        return _bytes_of(message)

    async def receive_json(self, mode="text"):
        binary = _check_mode(mode)
        if self._application_state != _CONNECTED:
            self._check_receiving()  # raises
        message = await self.receive()
        if message["type"] == DISCONNECT:
            _raise_on_disconnect(message)  # raises
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
