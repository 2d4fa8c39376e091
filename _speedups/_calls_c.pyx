# cython: language_level=3
"""The compiled core's hot methods: one C-level awaitable per call, no coroutine.

Why this file exists (measured; README, "How the cores are built"):
Cython awaits a CPython coroutine through its ``__await__()`` wrapper and
fetches the result from a ``StopIteration``: two allocations and an exception
per server call, which made a Cython ``async def`` cost as much as Python's.
Here each public call returns a ``_Call``, which drives the server's
coroutine with ``PyIter_Send`` and answers its own awaiter through the
``am_send`` slot, so a round trip allocates nothing but the messages.

No behaviour lives here. Every check, state move and conversion is a call
into ``_core_c`` (the single source shared with the pure core) or, for JSON,
``_json_c``; this file only sequences them around the server's ``receive``
and ``send``, in the order the pure core's ``async def`` methods do. The
shared test suite keeps the two in step.
"""

cimport cython
from cpython.object cimport Py_TYPE, PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF

from turbows._core_c cimport WebSocketCore as _Core
from turbows._core_c cimport _bytes_of, _check_mode, _raise_on_disconnect, _text_of
from turbows._json_c cimport dumps_bytes, dumps_text, loads_bytes, loads_text

cdef extern from "Python.h":
    # Python >= 3.10. PyIter_Send returns PYGEN_ERROR with an exception set.
    ctypedef enum PySendResult:
        PYGEN_RETURN
        PYGEN_ERROR
        PYGEN_NEXT
    PySendResult PyIter_Send(object iterator, object value, PyObject **result) except PYGEN_ERROR

    ctypedef PySendResult (*sendfunc)(PyObject *iterator, PyObject *value, PyObject **result) noexcept
    ctypedef struct PyAsyncMethods:
        sendfunc am_send
    ctypedef struct _TypeWithAsync "PyTypeObject":
        PyAsyncMethods *tp_as_async

    # With a NULL value: delete. Cython's own declaration takes `object`.
    int _generic_setattr "PyObject_GenericSetAttr"(object target, object name, PyObject *value) except -1


# What a _Call does; see _Call._start and _Call._finish.
cdef enum Op:
    RECEIVE
    RECEIVE_TEXT
    RECEIVE_BYTES
    RECEIVE_JSON
    SEND
    SEND_TEXT
    SEND_BYTES
    SEND_JSON
    CLOSE
    ACCEPT

# The core's state values (WebSocketState's).
cdef enum:
    CONNECTING = 0
    DISCONNECTED = 2

cdef enum Stage:
    NEW           # not yet stepped: nothing has run, as with a fresh coroutine
    RECEIVING     # awaiting the server's receive
    SENDING       # awaiting the server's send
    DONE


cdef inline object _steal(PyObject *reference):
    """Take ownership of a new reference handed back by the C API."""
    value = <object>reference
    Py_DECREF(value)
    return value


cdef object _awaitable_iterator(object awaitable):
    """What ``await awaitable`` steps: the object itself where it speaks am_send
    (coroutines, generators, Cython coroutines), else its ``__await__()``."""
    cdef PyAsyncMethods *slots = (<_TypeWithAsync *>Py_TYPE(awaitable)).tp_as_async
    if slots is not NULL and slots.am_send is not NULL:
        return awaitable
    await_method = getattr(type(awaitable), "__await__", None)
    if await_method is None:
        # What `await` itself raises for a server callable that is not async.
        raise TypeError(f"object {type(awaitable).__name__} can't be used in 'await' expression")
    return await_method(awaitable)


@cython.final
@cython.freelist(16)
cdef class _Call:
    """One awaited call of the compiled core: a coroutine in all but allocation.

    It has ``send``, ``throw`` and ``close`` and ``__await__``, so
    ``collections.abc.Coroutine`` (and so asyncio's and trio's task APIs)
    accepts it, as it accepts Cython's own coroutines.
    """

    cdef WebSocketCore ws
    cdef Op op
    cdef Stage stage
    # Whether an OSError from the server's send means the peer is gone.
    cdef bint sending_connected
    # RECEIVE_JSON / SEND_JSON: binary mode.
    cdef bint binary
    # RECEIVE*: whether the connect message is the one awaited.
    cdef bint connecting
    # The server's call goes through the WebSocket's own receive()/send()
    # (overridden somewhere), which make the checks themselves.
    cdef bint through_methods
    # The call's arguments, then the message being sent.
    cdef object first
    cdef object second
    # The server's awaitable, while one is being awaited.
    cdef object inner

    def __await__(self):
        return self

    def __next__(self):
        return self.send(None)

    def send(self, value):
        cdef PyObject *result = NULL
        cdef PySendResult status = self._advance(value, &result)
        returned = _steal(result)
        if status == PYGEN_RETURN:
            if returned is None:
                raise StopIteration
            raise StopIteration(returned)
        return returned

    def throw(self, error_type, error=None, traceback=None):
        """Raise an exception where the call waits, as ``coroutine.throw`` does."""
        if self.stage == NEW or self.stage == DONE or self.inner is None:
            self.stage = DONE
            raise _exception(error_type, error, traceback)
        inner = self.inner
        try:
            thrower = getattr(inner, "throw", None)
            if thrower is None:
                raise _exception(error_type, error, traceback)
            if error is None and traceback is None:
                yielded = thrower(error_type)
            else:
                yielded = thrower(error_type, error, traceback)
        except StopIteration as stop:
            # The server's call caught the exception and returned: carry on.
            return self._resume_after(stop.value)
        except BaseException as raised:
            self._failed(raised)
            raise
        return yielded

    def close(self):
        inner = self.inner
        self.inner = None
        self.stage = DONE
        if inner is not None:
            closer = getattr(inner, "close", None)
            if closer is not None:
                closer()

    def __repr__(self):
        return f"<turbows call {_OP_NAMES[self.op]}>"

    # -- stepping ------------------------------------------------------------

    cdef PySendResult _advance(self, object value, PyObject **result) except PYGEN_ERROR:
        """One step: PYGEN_NEXT with what the server yields, or PYGEN_RETURN with the result."""
        cdef PySendResult status
        cdef PyObject *raw
        if self.stage == NEW:
            if value is not None:
                raise TypeError("can't send non-None value to a just-started coroutine")
            self.stage = DONE  # until the server's call starts: a failed check ends the call
            self._start()  # the checks, and the server's call
        elif self.stage == DONE:
            raise RuntimeError("cannot reuse already awaited coroutine")
        while True:
            raw = NULL
            try:
                status = PyIter_Send(self.inner, value, &raw)
            except BaseException as raised:
                self._failed(raised)
                raise
            if status == PYGEN_NEXT:
                result[0] = raw
                return PYGEN_NEXT
            final = self._finish(_steal(raw))
            if self.stage == DONE:
                Py_INCREF(final)
                result[0] = <PyObject *>final
                return PYGEN_RETURN
            value = None  # ACCEPT: the connect arrived, now send the accept

    cdef object _resume_after(self, object returned):
        """``throw`` ended the server's call with a value: finish, or go on stepping."""
        final = self._finish(returned)
        if self.stage == DONE:
            if final is None:
                raise StopIteration
            raise StopIteration(final)
        return self.send(None)

    cdef int _failed(self, BaseException raised) except -1:
        """The server's call raised ``raised``; the caller re-raises it unless this raises instead."""
        self.inner = None
        sending_connected = self.stage == SENDING and self.sending_connected
        self.stage = DONE
        if sending_connected and isinstance(raised, OSError):
            # Starlette: `except OSError: raise WebSocketDisconnect(code=1006)`,
            # so the OSError becomes the new exception's context.
            disconnect = self.ws._lost()
            disconnect.__context__ = raised
            raise disconnect
        return 0

    # -- what happens before and after the server's call, per operation --------
    # Each mirrors the pure core's async method of the same name, in order.

    cdef int _start(self) except -1:
        cdef WebSocketCore ws = self.ws
        cdef Op op = self.op
        # Starlette's typed methods call self.receive() and self.send(); where
        # either is overridden, go through them too. receive() and send()
        # themselves never do: an override calling super() would recurse.
        cdef bint through_methods = ws._delegate and op != RECEIVE and op != SEND
        if op == RECEIVE or op == RECEIVE_TEXT or op == RECEIVE_BYTES or op == RECEIVE_JSON:
            if op == RECEIVE_JSON:
                self.binary = _check_mode(self.first)
            if op != RECEIVE:
                ws._check_receiving()
            if not through_methods:
                ws._check_client()
            self._start_receive(through_methods)
            return 0
        if op == SEND_TEXT:
            message = {"type": "websocket.send", "text": self.first}
        elif op == SEND_BYTES:
            message = {"type": "websocket.send", "bytes": self.first}
        elif op == SEND_JSON:
            if _check_mode(self.second):
                message = {"type": "websocket.send", "bytes": dumps_bytes(self.first)}
            else:
                message = {"type": "websocket.send", "text": dumps_text(self.first)}
        elif op == CLOSE:
            message = {"type": "websocket.close", "code": self.first, "reason": self.second or ""}
        elif op == ACCEPT:
            self.second = self.second or []  # headers
            if ws._client_state == CONNECTING:
                # If we haven't yet seen the 'connect' message, then wait for it first.
                self._start_receive(through_methods)
                return 0
            message = self._accept_message()
        else:  # SEND
            message = self.first
        self._start_send(message, through_methods)
        return 0

    cdef int _start_receive(self, bint through_methods) except -1:
        self.through_methods = through_methods
        if through_methods:
            awaitable = self.ws.receive()
        else:
            self.connecting = self.ws._client_state == CONNECTING
            awaitable = self.ws._receive()
        self.stage = RECEIVING
        self.inner = _awaitable_iterator(awaitable)
        return 0

    cdef int _start_send(self, object message, bint through_methods) except -1:
        if through_methods:
            self.sending_connected = False  # the WebSocket's send() translates OSError itself
            awaitable = self.ws.send(message)
        else:
            self.sending_connected = self.ws._sending(message)
            awaitable = self.ws._send(message)
        self.stage = SENDING
        self.inner = _awaitable_iterator(awaitable)
        return 0

    cdef dict _accept_message(self):
        return {"type": "websocket.accept", "subprotocol": self.first, "headers": self.second}

    cdef object _finish(self, object returned):
        """The server's call returned ``returned``: the call's result, or the next stage."""
        cdef WebSocketCore ws = self.ws
        cdef Op op = self.op
        cdef Stage stage = self.stage
        self.inner = None
        self.stage = DONE  # unless ACCEPT goes on to send
        if stage == SENDING:
            return None
        if self.through_methods:
            message = returned  # the WebSocket's receive() made the checks
        elif self.connecting:
            message = ws._connected(returned)
        else:
            message = ws._received(returned)
        if op == ACCEPT:
            self._start_send(self._accept_message(), self.through_methods)
            return None
        if op == RECEIVE:
            return message
        if self.through_methods or ws._client_state == DISCONNECTED:
            # _received moves the state on a disconnect message, so while the
            # state is not DISCONNECTED this was no disconnect: skip the lookup.
            _raise_on_disconnect(message)
        if op == RECEIVE_TEXT:
            return _text_of(message)
        if op == RECEIVE_BYTES:
            return _bytes_of(message)
        if self.binary:
            return loads_bytes(_bytes_of(message))
        return loads_text(_text_of(message))


_OP_NAMES = (
    "WebSocket.receive",
    "WebSocket.receive_text",
    "WebSocket.receive_bytes",
    "WebSocket.receive_json",
    "WebSocket.send",
    "WebSocket.send_text",
    "WebSocket.send_bytes",
    "WebSocket.send_json",
    "WebSocket.close",
    "WebSocket.accept",
)


cdef PySendResult _call_am_send(PyObject *call, PyObject *value, PyObject **result) except PYGEN_ERROR:
    # The am_send slot: how an awaiting coroutine steps a _Call, with no
    # StopIteration. An exception leaves as PYGEN_ERROR with the error set,
    # which is what `except PYGEN_ERROR` compiles to.
    return (<_Call>call)._advance(<object>value, result)


(<_TypeWithAsync *>_Call).tp_as_async.am_send = <sendfunc>_call_am_send


cdef object _exception(object error_type, object error, object traceback):
    """The exception ``coroutine.throw(error_type, error, traceback)`` raises."""
    if isinstance(error_type, BaseException):
        exception = error_type
    elif error is None:
        exception = error_type()
    elif isinstance(error, error_type):
        exception = error
    else:
        exception = error_type(error)
    if traceback is not None:
        exception = exception.with_traceback(traceback)
    return exception


cdef class WebSocketCore


cdef inline _Call _call(WebSocketCore ws, Op op, object first, object second):
    cdef _Call call = _Call.__new__(_Call)
    call.ws = ws
    call.op = op
    call.first = first
    call.second = second
    return call


# type -> whether it overrides receive() or send(); filled once per class.
cdef dict _OVERRIDING_TYPES = {}


cdef bint _overrides_receive_or_send(type cls) except -1:
    overrides = _OVERRIDING_TYPES.get(cls)
    if overrides is None:
        overrides = cls.receive is not _PLAIN_RECEIVE or cls.send is not _PLAIN_SEND
        _OVERRIDING_TYPES[cls] = overrides
    return overrides


cdef class WebSocketCore(_Core):
    """The compiled core: ``_core_c``'s class, its hot methods returning ``_Call``s."""

    # receive() or send() is overridden, on the instance or in a subclass:
    # the typed methods go through them, as Starlette's do.
    cdef bint _delegate

    def __cinit__(self, *args, **kwargs):
        self._delegate = _overrides_receive_or_send(type(self))

    def __setattr__(self, name, value):
        if name == "receive" or name == "send":
            self._delegate = True
        _generic_setattr(self, name, <PyObject *>value)

    def __delattr__(self, name):
        _generic_setattr(self, name, NULL)

    def receive(self):
        """Receive ASGI websocket messages, ensuring valid state transitions."""
        return _call(self, RECEIVE, None, None)

    def send(self, message):
        """Send ASGI websocket messages, ensuring valid state transitions."""
        return _call(self, SEND, message, None)

    def accept(self, subprotocol=None, headers=None):
        return _call(self, ACCEPT, subprotocol, headers)

    def close(self, code=1000, reason=None):
        return _call(self, CLOSE, code, reason)

    def receive_text(self):
        return _call(self, RECEIVE_TEXT, None, None)

    def receive_bytes(self):
        return _call(self, RECEIVE_BYTES, None, None)

    def receive_json(self, mode="text"):
        return _call(self, RECEIVE_JSON, mode, None)

    def send_text(self, data):
        return _call(self, SEND_TEXT, data, None)

    def send_bytes(self, data):
        return _call(self, SEND_BYTES, data, None)

    def send_json(self, data, mode="text"):
        return _call(self, SEND_JSON, data, mode)


_PLAIN_RECEIVE = WebSocketCore.receive
_PLAIN_SEND = WebSocketCore.send
