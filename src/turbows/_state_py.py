"""Starlette's WebSocket state machine: the checks and state moves both cores make.

One source, two cores. Imported as it is, this module serves the pure core
(``_core_py``). ``setup.py`` copies it to ``_state_c.py`` and Cython compiles
it with ``_speedups/_state_c.pxd``, which makes ``StateMachine`` an extension
type with C-integer states and the helpers below C functions (aiohttp's
``reader_py.py`` + ``reader_c.pxd`` pattern); the compiled core
(``_speedups/_calls_c.pyx``) calls them around the server's ``receive`` and
``send``. The two cores share every check by construction; the shared test
suite keeps the rest in step.

The reference is ``starlette.websockets.WebSocket`` (identical from Starlette
1.7 to 1.10): every check, state move and exception below mirrors it, in its
order. The code differs in shape only where that makes it fast:

- the checks ``receive()`` and ``send()`` make live in the non-async methods
  ``_received``, ``_connected`` and ``_sending``, so the compiled core needs
  no coroutine of its own around the server's calls;
- states are small integers; ``client_state`` and ``application_state``
  show them as ``WebSocketState`` members;
- the message types are module constants, the very objects the compiled
  core builds its messages with, so its checks compare them by identity.

Write it as Python that Cython compiles well: module-level constants, no
class attributes, ``type(x) is T`` checks, no closures.
"""

from __future__ import annotations

from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState

from ._exceptions import WebSocketFrameTypeError

__all__ = ["StateMachine"]

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

# ASGI message types.
CONNECT = "websocket.connect"
RECEIVE = "websocket.receive"
DISCONNECT = "websocket.disconnect"
ACCEPT = "websocket.accept"
SEND = "websocket.send"
CLOSE = "websocket.close"
RESPONSE_START = "websocket.http.response.start"
RESPONSE_BODY = "websocket.http.response.body"

_NOT_ACCEPTED = 'WebSocket is not connected. Need to call "accept" first.'
_BAD_MODE = 'The "mode" argument should be "text" or "binary".'


def _state_number(state):
    if type(state) is not WebSocketState:
        raise TypeError(f"expected a WebSocketState member, got {state!r}")
    return state.value


def _raise_on_disconnect(message):
    if message["type"] == DISCONNECT:
        raise WebSocketDisconnect(message["code"], message.get("reason"))


def _item(message, key):
    """``message[key]``, or None where the server left the key out (any mapping)."""
    try:
        return message[key]
    except KeyError:
        return None


# Servers send dicts: for those, ``dict.get``, which Cython compiles to a
# direct lookup (``exact`` is typed ``dict`` in the .pxd). Any other mapping
# is subscripted, as Starlette subscripts it.

def _text_of(message):
    if type(message) is dict:
        exact = message
        text = exact.get("text")
    else:
        text = _item(message, "text")
    if text is None:
        raise WebSocketFrameTypeError("text", message)
    return text


def _bytes_of(message):
    if type(message) is dict:
        exact = message
        data = exact.get("bytes")
    else:
        data = _item(message, "bytes")
    if data is None:
        raise WebSocketFrameTypeError("binary", message)
    return data


def _check_mode(mode):
    """Whether ``mode`` asks for binary frames; Starlette's error for neither mode."""
    if mode == "text":
        return False
    if mode == "binary":
        return True
    raise RuntimeError(_BAD_MODE)


class StateMachine:
    """Starlette's ``WebSocket`` state, and every check it makes around the server's calls.

    ``turbows.WebSocket`` puts a core built on this class before Starlette's
    in its bases, so these win and ``HTTPConnection``'s metadata (``url``,
    ``headers``, ``state``...) comes from Starlette itself.
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

    def _connected(self, message):
        """Starlette's ``receive()`` check for the first message, which must be ``websocket.connect``."""
        message_type = message["type"]
        if message_type != CONNECT:
            raise RuntimeError(f'Expected ASGI message "websocket.connect", but got {message_type!r}')
        self._client_state = _CONNECTED
        return message

    def _received(self, message):
        """Starlette's ``receive()`` check for every later message."""
        message_type = message["type"]
        if message_type == RECEIVE:
            return message
        if message_type == DISCONNECT:
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
            if message_type == SEND:
                return True
            if message_type == CLOSE:
                self._application_state = _DISCONNECTED
                return True
            raise RuntimeError(
                f'Expected ASGI message "websocket.send" or "websocket.close", but got {message_type!r}'
            )
        if state == _CONNECTING:
            if message_type == ACCEPT:
                self._application_state = _CONNECTED
            elif message_type == CLOSE:
                self._application_state = _DISCONNECTED
            elif message_type == RESPONSE_START:
                self._application_state = _RESPONSE
            else:
                raise RuntimeError(
                    'Expected ASGI message "websocket.accept", "websocket.close" or '
                    f'"websocket.http.response.start", but got {message_type!r}'
                )
            return False
        # _RESPONSE: the denial response's body.
        if message_type != RESPONSE_BODY:
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
