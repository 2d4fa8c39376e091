"""Starlette's WebSocket state machine, message dispatch and JSON: the hot path.

One source, two cores. Imported as it is, this module is the pure-Python
core. ``setup.py`` copies it to ``_core_c.py`` and Cython compiles it with
``_speedups/_core_c.pxd``, which makes ``WebSocketCore`` an extension type
with C-integer states and the helpers below C functions (aiohttp's
``reader_py.py`` + ``reader_c.pxd`` pattern). Behaviour is the same in both by
construction; the shared test suite keeps it so.

The reference is ``starlette.websockets.WebSocket`` (identical from Starlette
1.7 to 1.10): every check, state move, message and exception below mirrors
it, in its order. The code differs in shape only where that makes it fast:

- the checks ``receive()`` and ``send()`` make live in the non-async helpers
  ``_received``, ``_connected`` and ``_sending``, which the compiled core's
  awaitables (``_speedups/_calls_c.pyx``) call around the server's
  ``receive``/``send`` without a coroutine of their own;
- states are small integers; ``client_state`` and ``application_state``
  show them as ``WebSocketState`` members.
- JSON: the pure core makes Starlette's own calls; the compiled core swaps in
  orjson where its result is provably the same (``_speedups/_json_c.pyx``).
- ``iter_*`` live in ``_iteration.py``: plain Python async generators, which
  step the compiled core's awaitables faster than Cython's can.

Write it as Python that Cython compiles well: module-level constants, no
class attributes, ``type(x) is T`` checks, no closures.
"""

from __future__ import annotations

import json

from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState

from ._exceptions import WebSocketFrameTypeError

__all__ = ["WebSocketCore", "dumps_bytes", "dumps_text", "loads_bytes", "loads_text"]

# --------------------------------------------------------------------------
# JSON: Starlette's own calls. The compiled core replaces these with orjson
# where its result is provably the same (``_speedups/_json_c.pyx``); proving
# that means walking the value, which in Python costs more than the standard
# library's C encoder saves.

# Exactly what Starlette's json.dumps(data, separators=(",", ":"), ensure_ascii=False)
# builds on every call, built once.
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_loads = json.loads


def dumps_text(value):
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``."""
    return _json_encode(value)


def dumps_bytes(value):
    """Starlette's binary-mode ``send_json`` payload."""
    return _json_encode(value).encode("utf-8")


def loads_text(text):
    """Starlette's text-mode ``receive_json`` decoding."""
    return _json_loads(text)


def loads_bytes(data):
    """Starlette's binary-mode ``receive_json`` decoding."""
    return _json_loads(data.decode("utf-8"))


# --------------------------------------------------------------------------
# The state machine.

# WebSocketState's values, as plain integers.
_CONNECTING = 0
_CONNECTED = 1
_DISCONNECTED = 2
_RESPONSE = 3
_STATES = (
    WebSocketState.CONNECTING,
    WebSocketState.CONNECTED,
    WebSocketState.DISCONNECTED,
    WebSocketState.RESPONSE,
)

_NOT_ACCEPTED = 'WebSocket is not connected. Need to call "accept" first.'
_BAD_MODE = 'The "mode" argument should be "text" or "binary".'


def _state_number(state):
    if type(state) is not WebSocketState:
        raise TypeError(f"expected a WebSocketState member, got {state!r}")
    return state.value


def _raise_on_disconnect(message):
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message["code"], message.get("reason"))


# Subscripts, not .get(): Cython compiles message["text"] to a direct dict
# lookup, where .get() is a method call; the KeyError path is the error path.

def _text_of(message):
    try:
        text = message["text"]
    except KeyError:
        text = None
    if text is None:
        raise WebSocketFrameTypeError("text", message)
    return text


def _bytes_of(message):
    try:
        data = message["bytes"]
    except KeyError:
        data = None
    if data is None:
        raise WebSocketFrameTypeError("binary", message)
    return data


def _decode_json(message, binary):
    if binary:
        return loads_bytes(_bytes_of(message))
    return loads_text(_text_of(message))


def _check_mode(mode):
    """Whether ``mode`` asks for binary frames; Starlette's error for neither mode."""
    if mode == "text":
        return False
    if mode == "binary":
        return True
    raise RuntimeError(_BAD_MODE)


class WebSocketCore:
    """Everything of Starlette's ``WebSocket`` that runs per message.

    ``turbows.WebSocket`` puts this class before Starlette's in its bases, so
    these methods win and ``HTTPConnection``'s metadata (``url``, ``headers``,
    ``state``...) comes from Starlette itself.
    """

    def __init__(self, scope, receive, send):
        # HTTPConnection.__init__'s check, then WebSocket.__init__'s.
        assert scope["type"] in ("http", "websocket")
        self.scope = scope
        assert scope["type"] == "websocket"
        self._receive = receive
        self._send = send
        self._client_state = _CONNECTING
        self._application_state = _CONNECTING

    @property
    def client_state(self):
        return _STATES[self._client_state]

    @client_state.setter
    def client_state(self, state):
        self._client_state = _state_number(state)

    @property
    def application_state(self):
        return _STATES[self._application_state]

    @application_state.setter
    def application_state(self, state):
        self._application_state = _state_number(state)

    # -- checks around the server's receive and send --------------------------

    def _connected(self, message):
        """Starlette's ``receive()`` check for the first message, which must be ``websocket.connect``."""
        message_type = message["type"]
        if message_type != "websocket.connect":
            raise RuntimeError(f'Expected ASGI message "websocket.connect", but got {message_type!r}')
        self._client_state = _CONNECTED
        return message

    def _received(self, message):
        """Starlette's ``receive()`` check for every later message."""
        message_type = message["type"]
        if message_type == "websocket.receive":
            return message
        if message_type == "websocket.disconnect":
            self._client_state = _DISCONNECTED
            return message
        raise RuntimeError(
            f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {message_type!r}'
        )

    def _sending(self, message):
        """Starlette's ``send()`` checks and state moves, before the server's send.

        Returns whether the connection was open, where an ``OSError`` from the
        server's send means the peer is gone.
        """
        state = self._application_state
        if state == _DISCONNECTED:
            # Starlette reads no key of the message once closed.
            raise WebSocketDisconnected('Cannot call "send" once a close message has been sent.')
        message_type = message["type"]
        if state == _CONNECTED:
            if message_type == "websocket.send":
                return True
            if message_type == "websocket.close":
                self._application_state = _DISCONNECTED
                return True
            raise RuntimeError(
                f'Expected ASGI message "websocket.send" or "websocket.close", but got {message_type!r}'
            )
        if state == _CONNECTING:
            if message_type == "websocket.accept":
                self._application_state = _CONNECTED
            elif message_type == "websocket.close":
                self._application_state = _DISCONNECTED
            elif message_type == "websocket.http.response.start":
                self._application_state = _RESPONSE
            else:
                raise RuntimeError(
                    'Expected ASGI message "websocket.accept", "websocket.close" or '
                    f'"websocket.http.response.start", but got {message_type!r}'
                )
            return False
        # _RESPONSE: the denial response's body.
        if message_type != "websocket.http.response.body":
            raise RuntimeError(f'Expected ASGI message "websocket.http.response.body", but got {message_type!r}')
        if not message.get("more_body", False):
            self._application_state = _DISCONNECTED
        return False

    def _lost(self):
        """The server's send raised ``OSError`` on an open connection: the peer is gone."""
        self._application_state = _DISCONNECTED
        return WebSocketDisconnect(code=1006)

    def _check_receiving(self):
        if self._application_state != _CONNECTED:
            raise WebSocketDisconnected(_NOT_ACCEPTED)

    def _check_client(self):
        state = self._client_state
        if state != _CONNECTED and state != _CONNECTING:
            raise WebSocketDisconnected('Cannot call "receive" once a disconnect message has been received.')

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
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})

    async def close(self, code=1000, reason=None):
        await self.send({"type": "websocket.close", "code": code, "reason": reason or ""})

    async def send_denial_response(self, response):
        if "websocket.http.response" in self.scope.get("extensions", {}):
            await response(self.scope, self.receive, self.send)
        else:
            raise RuntimeError("The server doesn't support the Websocket Denial Response extension.")

    # -- messages --------------------------------------------------------------
    # Through self.receive() and self.send(), as Starlette's are, so an override
    # of either, on the instance or in a subclass, is honoured (Responder's
    # ws_idle_timeout sets one). The compiled core's versions (_calls_c) take
    # the same path when it sees an override, and await the server directly
    # when there is none.

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
        return _decode_json(message, binary)

    async def send_text(self, data):
        await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data):
        await self.send({"type": "websocket.send", "bytes": data})

    async def send_json(self, data, mode="text"):
        if _check_mode(mode):
            await self.send({"type": "websocket.send", "bytes": dumps_bytes(data)})
        else:
            await self.send({"type": "websocket.send", "text": dumps_text(data)})
