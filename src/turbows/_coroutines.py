"""The compiled core's methods on CPython 3.12 and later: coroutines with a direct path.

From 3.12, CPython's ``SEND`` runs an awaited native coroutine inside the
awaiting frame (no C recursion, no ``StopIteration``), but steps anything
else, the compiled core's C awaitables (``_speedups/_calls_c.pyx``)
included, through ``tp_iternext`` and a ``StopIteration`` per result, and
every call from C into the server's coroutines enters the interpreter
afresh. Measured side by side, a Python coroutine that awaits the server's
``receive``/``send`` directly beats any C awaitable there (README, "How the
cores are built"). So on 3.12+ the compiled core is this class: each hot
method is a coroutine whose direct path, taken whenever the state allows it
and nothing overrides ``receive()``/``send()``, reads the state as plain
attributes and awaits the server itself; JSON is the compiled ``_json_c``.
Anything else takes Starlette's own sequence of calls, the pure core's, with
the same checks (``_state_py``). The shared suite, differential tests
included, runs this class on every interpreter it serves.

Overrides: Starlette's typed methods go through ``self.receive()`` and
``self.send()``, so an override of either, on the instance (Responder's
``ws_idle_timeout`` sets one) or on a class, even one patched after its
instances exist, must see every message. ``_direct`` says there is none:
a class attribute the metaclass keeps up to date whenever ``receive`` or
``send`` is set on a class, and an instance attribute once the instance
itself gets one (``receive`` and ``send`` are descriptors that take them,
``_calls_c.Overridable``). Until the first override anywhere, the module
global ``_no_overrides`` answers alone: a global is the cheapest read there
is (CPython 3.12 does not specialise reading a class attribute through an
instance).
"""

from __future__ import annotations

from abc import ABCMeta

from starlette.websockets import WebSocketDisconnect

from ._calls_c import Overridable
from ._json_c import dumps_bytes, dumps_text, loads_bytes, loads_text
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


def _static_lookup(cls: type, name: str) -> object:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


# turbows' own receive and send (set below, once the class exists).
_RECEIVE: object = None
_SEND: object = None
# True until receive() or send() is overridden anywhere, on any class or instance.
_no_overrides = True


def _overridden() -> None:
    global _no_overrides
    _no_overrides = False


class OverrideTracking(ABCMeta):
    """The metaclass (Starlette's is ABCMeta) that keeps ``_direct`` true
    exactly while the class's ``receive`` and ``send`` are turbows' own."""

    def __init__(cls, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        OverrideTracking._refresh(cls)

    def __setattr__(cls, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "receive" or name == "send":
            OverrideTracking._refresh_tree(cls)

    def __delattr__(cls, name: str) -> None:
        super().__delattr__(name)
        if name == "receive" or name == "send":
            OverrideTracking._refresh_tree(cls)

    @staticmethod
    def _refresh(cls: type) -> None:
        direct = _static_lookup(cls, "receive") is _RECEIVE and _static_lookup(cls, "send") is _SEND
        type.__setattr__(cls, "_direct", direct)
        if not direct and _RECEIVE is not None:
            _overridden()

    @staticmethod
    def _refresh_tree(cls: type) -> None:
        pending = [cls]
        while pending:
            klass = pending.pop()
            if isinstance(klass, OverrideTracking):
                OverrideTracking._refresh(klass)
            pending.extend(type.__subclasses__(klass))


class WebSocketCore(StateMachine, metaclass=OverrideTracking):
    """Starlette's ``WebSocket`` methods, each with a direct path to the server."""

    # No override anywhere yet (the metaclass sets the class's; the properties an instance's).
    _direct = True
    _receive_override = None
    _send_override = None

    async def _receive_plain(self):
        """Receive ASGI websocket messages, ensuring valid state transitions."""
        if self._client_state == _CONNECTED:
            message = await self._receive()
            if type(message) is dict and message.get("type") == RECEIVE:
                return message
            return self._received(message)
        self._check_client()
        return self._connected(await self._receive())

    async def _send_plain(self, message):
        """Send ASGI websocket messages, ensuring valid state transitions."""
        if self._sending(message):
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
        else:
            await self._send(message)

    _receive_plain.__name__ = _receive_plain.__qualname__ = "receive"
    _send_plain.__name__ = _send_plain.__qualname__ = "send"
    receive = Overridable(_receive_plain, "_receive_override", _overridden)
    send = Overridable(_send_plain, "_send_override", _overridden)

    async def accept(self, subprotocol=None, headers=None):
        headers = headers or []
        if (_no_overrides or self._direct) and self._client_state == _CONNECTING and self._application_state == _CONNECTING:
            message = await self._receive()
            if type(message) is dict and message.get("type") == CONNECT:
                self._client_state = _CONNECTED
            else:
                self._connected(message)
            self._application_state = _CONNECTED
            await self._send({"type": ACCEPT, "subprotocol": subprotocol, "headers": headers})
            return
        if self._client_state == _CONNECTING:
            # If we haven't yet seen the 'connect' message, then wait for it first.
            await self.receive()
        await self.send({"type": ACCEPT, "subprotocol": subprotocol, "headers": headers})

    async def close(self, code=1000, reason=None):
        message = {"type": CLOSE, "code": code, "reason": reason or ""}
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED:
            self._application_state = _DISCONNECTED
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
            return
        await self.send(message)

    # -- messages: the direct path, else Starlette's calls --------------------

    def _finish(self, message):
        """What the direct path does with a message that is not a plain text, binary or disconnect one."""
        self._received(message)
        _raise_on_disconnect(message)
        return message

    async def receive_text(self):
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED and self._client_state == _CONNECTED:
            message = await self._receive()
            if type(message) is dict:
                message_type = message.get("type")
                if message_type == RECEIVE:
                    text = message.get("text")
                    if text is not None:
                        return text
                elif message_type == DISCONNECT:
                    self._client_state = _DISCONNECTED
                    raise WebSocketDisconnect(message["code"], message.get("reason"))
            return _text_of(self._finish(message))
        self._check_receiving()
        message = await self.receive()
        _raise_on_disconnect(message)
        return _text_of(message)

    async def receive_bytes(self):
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED and self._client_state == _CONNECTED:
            message = await self._receive()
            if type(message) is dict:
                message_type = message.get("type")
                if message_type == RECEIVE:
                    data = message.get("bytes")
                    if data is not None:
                        return data
                elif message_type == DISCONNECT:
                    self._client_state = _DISCONNECTED
                    raise WebSocketDisconnect(message["code"], message.get("reason"))
            return _bytes_of(self._finish(message))
        self._check_receiving()
        message = await self.receive()
        _raise_on_disconnect(message)
        return _bytes_of(message)

    async def receive_json(self, mode="text"):
        binary = _check_mode(mode)
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED and self._client_state == _CONNECTED:
            message = await self._receive()
            if type(message) is dict:
                message_type = message.get("type")
                if message_type == DISCONNECT:
                    self._client_state = _DISCONNECTED
                    raise WebSocketDisconnect(message["code"], message.get("reason"))
                if message_type != RECEIVE:
                    self._finish(message)
            else:
                self._finish(message)
        else:
            self._check_receiving()
            message = await self.receive()
            _raise_on_disconnect(message)
        if binary:
            return loads_bytes(_bytes_of(message))
        return loads_text(_text_of(message))

    async def send_text(self, data):
        message = {"type": SEND, "text": data}
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED:
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
            return
        await self.send(message)

    async def send_bytes(self, data):
        message = {"type": SEND, "bytes": data}
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED:
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
            return
        await self.send(message)

    async def send_json(self, data, mode="text"):
        if _check_mode(mode):
            message = {"type": SEND, "bytes": dumps_bytes(data)}
        else:
            message = {"type": SEND, "text": dumps_text(data)}
        if (_no_overrides or self._direct) and self._application_state == _CONNECTED:
            try:
                await self._send(message)
            except OSError:
                raise self._lost()
            return
        await self.send(message)


_RECEIVE = WebSocketCore.__dict__["receive"]
_SEND = WebSocketCore.__dict__["send"]
OverrideTracking._refresh_tree(WebSocketCore)
