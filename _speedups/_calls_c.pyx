# cython: language_level=3, binding=False
"""The compiled core's hot methods: one C-level awaitable per call, no coroutine.

Why this file exists (measured; README, "How the cores are built"):
Cython awaits a CPython coroutine through its ``__await__()`` wrapper and
fetches the result from a ``StopIteration``: two allocations and an exception
per server call, which made a Cython ``async def`` cost as much as Python's.
Here each public call returns a ``_Call``, which drives the server's
coroutine with ``PyIter_Send`` and answers its own awaiter without a frame
of its own.

How the awaiter steps a ``_Call`` depends on the interpreter, and both ways
are served:

- CPython 3.11's ``SEND`` (and asyncio's tasks, and ``PyIter_Send`` callers
  everywhere) use the ``am_send`` slot: the result comes back as a value,
  no exception at all;
- from CPython 3.12, ``SEND`` steps anything that is not a generator or a
  coroutine through ``tp_iternext``, and the result must come back inside a
  ``StopIteration`` (or nothing raised, for ``None``). Allocating one per
  result cost as much as the rest of the call, so a spare instance is reused
  while nothing else holds it (``turbows_return`` below).

A ``_Call`` is reused too: each WebSocket keeps its last one and hands it out
again once nothing else refers to it (the awaiter dropped it), so a round
trip allocates nothing but the messages. Both reuses rest on the reference
count, as CPython's own ``zip`` and ``enumerate`` reuse their result tuples;
free-threaded builds, where counts are not exact, allocate every time.

No behaviour lives here. Every check, state move and conversion is a call
into ``_state_c`` (``_state_py`` compiled: the source the pure core shares) or, for JSON,
``_json_c``; this file only sequences them around the server's ``receive``
and ``send``, in the order the pure core's ``async def`` methods do. The
shared test suite keeps the two in step.

``binding=False``: the public methods are plain method descriptors, which
CPython's specialising interpreter calls without a generic call path.
"""

cimport cython
from cpython.object cimport Py_TYPE, PyObject, PyTypeObject
from cpython.exc cimport PyErr_ExceptionMatches
from cpython.ref cimport Py_DECREF, Py_INCREF

from turbows._state_c cimport ACCEPT as _ACCEPT
from turbows._state_c cimport CLOSE as _CLOSE
from turbows._state_c cimport SEND as _SEND
from turbows._state_c cimport StateMachine, _bytes_of, _check_mode, _raise_on_disconnect, _text_of
from turbows._json_c cimport dumps_bytes, dumps_text, loads_bytes, loads_text

cdef extern from "Python.h":
    # Python >= 3.10: what PyIter_Send and am_send return (PYGEN_ERROR with an exception set).
    ctypedef enum PySendResult:
        PYGEN_RETURN
        PYGEN_ERROR
        PYGEN_NEXT

    ctypedef PySendResult (*sendfunc)(PyObject *iterator, PyObject *value, PyObject **result) noexcept
    ctypedef struct PyAsyncMethods:
        sendfunc am_send
    ctypedef PyObject *(*iternextfunc)(PyObject *) noexcept
    ctypedef struct _Type "PyTypeObject":
        PyAsyncMethods *tp_as_async
        iternextfunc tp_iternext
        unsigned int tp_version_tag

    Py_ssize_t Py_REFCNT(PyObject *o)

    # With a NULL value: delete. Cython's own declaration takes `object`.
    int _generic_setattr "PyObject_GenericSetAttr"(object target, object name, PyObject *value) except -1


cdef extern from *:
    """
    /* Reuse of objects by their reference count, and module-level caches:
       only where the GIL serialises them. */
    #ifdef Py_GIL_DISABLED
    #  define TURBOWS_REUSE 0
    #else
    #  define TURBOWS_REUSE 1
    #endif

    /* _Call's step and release, set at module init; its am_send and
       tp_iternext are built on them. */
    static sendfunc turbows_call_advance = NULL;
    static int (*turbows_call_release)(PyObject *call) = NULL;

    #if TURBOWS_REUSE
    /* The spare StopIteration: this module's one reference, or NULL. */
    static PyObject *turbows_spare_stop = NULL;
    #endif

    static void turbows_raise_stop(PyObject *stop)  /* steals `stop` */
    {
    #if PY_VERSION_HEX >= 0x030C0000
        PyErr_SetRaisedException(stop);
    #else
        PyErr_Restore(Py_NewRef(PyExc_StopIteration), stop, NULL);
    #endif
    }

    /* End tp_iternext with `value` (a new reference, stolen): NULL, with
       StopIteration(value) raised unless `value` is None (nothing raised
       means None to SEND, to next() and to every caller of tp_iternext). */
    static PyObject *turbows_return(PyObject *value)
    {
        PyObject *stop;
        if (value == Py_None) {
            Py_DECREF(value);
            return NULL;
        }
    #if TURBOWS_REUSE
        stop = turbows_spare_stop;
        if (stop != NULL && Py_REFCNT(stop) == 1) {
            /* Nobody else holds it: make it StopIteration(value) afresh.
               Its args tuple is ours too when its count is 1; a tuple the
               collector stopped tracking (it held an atomic value) is
               tracked again before it holds an arbitrary one. */
            PyStopIterationObject *spare = (PyStopIterationObject *)stop;
            PyObject *args = spare->args;
            if (args != NULL && PyTuple_CheckExact(args) && PyTuple_GET_SIZE(args) == 1
                    && Py_REFCNT(args) == 1) {
                PyObject *old = PyTuple_GET_ITEM(args, 0);
                PyTuple_SET_ITEM(args, 0, Py_NewRef(value));
                Py_DECREF(old);
                if (!PyObject_GC_IsTracked(args)) {
                    PyObject_GC_Track(args);
                }
            } else {
                args = PyTuple_Pack(1, value);
                if (args == NULL) {
                    Py_DECREF(value);
                    return NULL;
                }
                Py_XSETREF(spare->args, args);
            }
            Py_XSETREF(spare->value, value);
            /* What a previous holder may have attached to it. */
            Py_CLEAR(spare->traceback);
            Py_CLEAR(spare->context);
            Py_CLEAR(spare->cause);
            Py_CLEAR(spare->notes);
            Py_CLEAR(spare->dict);
            spare->suppress_context = 0;
            turbows_raise_stop(Py_NewRef(stop));
            return NULL;
        }
    #endif
        stop = PyObject_CallOneArg(PyExc_StopIteration, value);
        Py_DECREF(value);
        if (stop == NULL) {
            return NULL;
        }
    #if TURBOWS_REUSE
        if (turbows_spare_stop == NULL) {
            turbows_spare_stop = Py_NewRef(stop);
        }
    #endif
        turbows_raise_stop(stop);
        return NULL;
    }

    /* One step of a _Call; once it has ended (returned or raised) it lets
       go of what it held. */
    static PySendResult turbows_call_am_send(PyObject *call, PyObject *value, PyObject **result)
    {
        PySendResult status = turbows_call_advance(call, value, result);
        if (status != PYGEN_NEXT) {
            turbows_call_release(call);
        }
        return status;
    }

    static PyObject *turbows_call_iternext(PyObject *call)
    {
        PyObject *result = NULL;
        switch (turbows_call_am_send(call, Py_None, &result)) {
        case PYGEN_NEXT:
            return result;
        case PYGEN_RETURN:
            return turbows_return(result);
        default:
            return NULL;
        }
    }

    /* PyIter_Send, without Cython's exception check: the caller looks at the status. */
    #define turbows_send_into(iterator, value, result) PyIter_Send((iterator), (value), (result))

    /* The exception being raised, taken (a new reference; it is no longer set). */
    static PyObject *turbows_take_exception(void)
    {
    #if PY_VERSION_HEX >= 0x030C0000
        return PyErr_GetRaisedException();
    #else
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        return value;
    #endif
    }
    """
    bint TURBOWS_REUSE
    sendfunc turbows_call_advance
    int (*turbows_call_release)(PyObject *call) noexcept
    PySendResult turbows_call_am_send(PyObject *call, PyObject *value, PyObject **result) noexcept
    PyObject *turbows_call_iternext(PyObject *call) noexcept
    PySendResult _send_into "turbows_send_into"(object iterator, object value, PyObject **result) noexcept
    object _take_exception "turbows_take_exception"()


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
    cdef PyAsyncMethods *slots = (<_Type *>Py_TYPE(awaitable)).tp_as_async
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
    accepts it, as it accepts Cython's own coroutines. Only the WebSocket's
    methods make working ones; one made any other way refuses to run.
    """

    # All None once DONE: a finished call holds nothing (it may wait as its
    # WebSocket's spare, and must not keep a message, or the WebSocket, alive).
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
        cdef PySendResult status
        try:
            status = self._advance(value, &result)
        except BaseException:
            self._release()
            raise
        returned = _steal(result)
        if status == PYGEN_RETURN:
            self._release()
            if returned is None:
                raise StopIteration
            raise StopIteration(returned)
        return returned

    def throw(self, error_type, error=None, traceback=None):
        """Raise an exception where the call waits, as ``coroutine.throw`` does."""
        if self.stage == NEW or self.stage == DONE or self.inner is None:
            self._release()
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
            disconnect = self._disconnect_for(raised)
            self._release()
            if disconnect is not None:
                disconnect.__context__ = raised
                raise disconnect
            raise
        return yielded

    def close(self):
        inner = self.inner
        self._release()
        if inner is not None:
            closer = getattr(inner, "close", None)
            if closer is not None:
                closer()

    def __repr__(self):
        return f"<turbows call {_OP_NAMES[self.op]}>"

    # -- stepping ------------------------------------------------------------
    # _advance runs one step and leaves the call as it is; whoever stepped it
    # releases it once it ended, returned or raised (turbows_call_am_send,
    # send, throw), so the hot path needs no exception handler of its own.

    cdef int _release(self) noexcept:
        self.stage = DONE
        self.inner = None
        self.first = None
        self.second = None
        self.ws = None
        return 0

    cdef PySendResult _advance(self, object value, PyObject **result) except PYGEN_ERROR:
        """One step: PYGEN_NEXT with what the server yields, or PYGEN_RETURN with the result."""
        cdef PySendResult status
        if self.stage == NEW:
            if self.ws is None:
                raise TypeError("a turbows call is made by a WebSocket method, not directly")
            if value is not None:
                raise TypeError("can't send non-None value to a just-started coroutine")
            self.stage = DONE  # until the server's call starts: a failed check ends the call
            self._start()  # the checks, and the server's call
        elif self.stage == DONE:
            raise RuntimeError("cannot reuse already awaited coroutine")
        while True:
            status = _send_into(self.inner, value, result)
            if status == PYGEN_NEXT:
                return PYGEN_NEXT
            if status == PYGEN_ERROR:
                return self._failed()
            final = self._finish(_steal(result[0]))
            if self.stage == DONE:
                Py_INCREF(final)
                result[0] = <PyObject *>final
                return PYGEN_RETURN
            value = None  # ACCEPT: the connect arrived, now send the accept

    cdef object _resume_after(self, object returned):
        """``throw`` ended the server's call with a value: finish, or go on stepping."""
        try:
            final = self._finish(returned)
        except BaseException:
            self._release()
            raise
        if self.stage == DONE:
            self._release()
            if final is None:
                raise StopIteration
            raise StopIteration(final)
        return self.send(None)

    cdef PySendResult _failed(self) except PYGEN_ERROR:
        """The server's call raised (the exception is set): pass it on, or what Starlette makes of it."""
        if self.stage == SENDING and self.sending_connected and PyErr_ExceptionMatches(OSError):
            raised = _take_exception()
            disconnect = self._disconnect_for(raised)
            disconnect.__context__ = raised
            raise disconnect
        return PYGEN_ERROR  # the server's exception, still set

    cdef object _disconnect_for(self, BaseException raised):
        """Starlette's ``except OSError: raise WebSocketDisconnect(code=1006)`` around
        its send on an open connection (the OSError becomes the context); else None."""
        if self.stage == SENDING and self.sending_connected and isinstance(raised, OSError):
            return self.ws._lost()
        return None

    # -- what happens before and after the server's call, per operation --------
    # Each mirrors the pure core's async method of the same name, in order.

    cdef int _start(self) except -1:
        cdef WebSocketCore ws = self.ws
        cdef Op op = self.op
        # Starlette's typed methods call self.receive() and self.send(); where
        # either is overridden, go through them too. receive() and send()
        # themselves never do: an override calling super() would recurse.
        cdef bint through_methods = op != RECEIVE and op != SEND and _delegates(ws)
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
            message = {"type": _SEND, "text": self.first}
        elif op == SEND_BYTES:
            message = {"type": _SEND, "bytes": self.first}
        elif op == SEND_JSON:
            if _check_mode(self.second):
                message = {"type": _SEND, "bytes": dumps_bytes(self.first)}
            else:
                message = {"type": _SEND, "text": dumps_text(self.first)}
        elif op == CLOSE:
            message = {"type": _CLOSE, "code": self.first, "reason": self.second or ""}
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
        return {"type": _ACCEPT, "subprotocol": self.first, "headers": self.second}

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


cdef PySendResult _call_advance(PyObject *call, PyObject *value, PyObject **result) except PYGEN_ERROR:
    # An exception leaves as PYGEN_ERROR with the error set, which is what
    # `except PYGEN_ERROR` compiles to: the signature of am_send.
    return (<_Call>call)._advance(<object>value, result)


cdef int _call_release(PyObject *call) noexcept:
    return (<_Call>call)._release()


turbows_call_advance = <sendfunc>_call_advance
turbows_call_release = _call_release
# am_send: how an awaiting coroutine steps a _Call on 3.11, and how
# PyIter_Send (asyncio's tasks) does everywhere, with no StopIteration.
(<_Type *>_Call).tp_as_async.am_send = turbows_call_am_send
# tp_iternext: what SEND uses from CPython 3.12, and next() everywhere.
(<_Type *>_Call).tp_iternext = turbows_call_iternext


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
    """A ready call: the WebSocket's spare one when nothing else holds it, else a new one."""
    cdef _Call call = ws._spare
    # Counted: ws._spare and `call` here. More means an awaiter (or anyone) still has it.
    if call is None or not TURBOWS_REUSE or Py_REFCNT(<PyObject *>call) != 2:
        call = _Call.__new__(_Call)
        if ws._spare is None:
            ws._spare = call
    else:
        call.sending_connected = False
        call.binary = False
        call.connecting = False
        call.through_methods = False
        call.inner = None
    call.ws = ws
    call.op = op
    call.stage = NEW
    call.first = first
    call.second = second
    return call


cdef bint _overrides_receive_or_send(type cls) except -1:
    return cls.receive is not _PLAIN_RECEIVE or cls.send is not _PLAIN_SEND


# The answer for the last class asked: its version tag, shifted, and the
# answer in the low bit. A tag names one version of one class (CPython never
# hands the same tag out twice), so the tag alone says the answer still holds.
# Module state read and written under the GIL; free-threaded builds, which
# have none, ask every time.
cdef unsigned long long _last_answer = 0


cdef inline bint _delegates(WebSocketCore ws) except -1:
    """Whether ``receive()`` or ``send()`` is overridden, on the instance or its
    class, now: a class patched after its instances exist counts (Starlette
    looks the methods up on every call). The answer for the class is kept
    with the type's version tag, which CPython changes whenever the class or
    one of its bases is modified; tag 0 (none assigned) means ask again."""
    global _last_answer
    cdef unsigned int tag
    cdef bint overrides
    cdef unsigned long long answer
    if ws._instance_overrides:
        return True
    tag = (<_Type *>Py_TYPE(ws)).tp_version_tag
    answer = _last_answer
    if TURBOWS_REUSE and tag != 0 and (answer >> 1) == tag:
        return answer & 1
    overrides = _overrides_receive_or_send(type(ws))
    # The lookups above assign a tag where the type had none.
    tag = (<_Type *>Py_TYPE(ws)).tp_version_tag
    if TURBOWS_REUSE and tag != 0:
        _last_answer = ((<unsigned long long>tag) << 1) | overrides
    return overrides


cdef class WebSocketCore(StateMachine):
    """The compiled core: the compiled state machine, its methods returning ``_Call``s."""

    # receive() or send() set on the instance: the typed methods go through
    # them, as Starlette's do. For the class, see _delegates.
    cdef bint _instance_overrides
    # The last call made, handed out again once nothing else holds it.
    cdef _Call _spare

    def __setattr__(self, name, value):
        if name == "receive" or name == "send":
            self._instance_overrides = True
        _generic_setattr(self, name, <PyObject *>value)

    def __delattr__(self, name):
        _generic_setattr(self, name, NULL)

    @cython.always_allow_keywords(False)  # METH_NOARGS: the interpreter's fastest call
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

    @cython.always_allow_keywords(False)  # METH_NOARGS: the interpreter's fastest call
    def receive_text(self):
        return _call(self, RECEIVE_TEXT, None, None)

    @cython.always_allow_keywords(False)  # METH_NOARGS: the interpreter's fastest call
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


# -- for the compiled core's other shape (_coroutines, CPython 3.12+) -----------

cdef extern from "Python.h":
    object PyMethod_New(object function, object instance)


@cython.final
cdef class Overridable:
    """``receive`` or ``send`` of ``_coroutines.WebSocketCore``: a method an
    instance may replace (Responder's ``ws_idle_timeout`` does).

    Read from an instance, it is that instance's own override or the bound
    method, as for a plain method; read from the class, the function. Setting
    it on an instance keeps the override and turns that instance's direct
    paths off (``_direct``); deleting it brings the method back.
    """

    cdef readonly object function
    cdef str slot
    # Called on every override set, so the class can stop trusting its shortcut.
    cdef object on_override

    def __init__(self, function, str slot, on_override):
        self.function = function
        self.slot = slot
        self.on_override = on_override

    def __get__(self, instance, owner):
        if instance is None:
            return self.function
        override = getattr(instance, self.slot)
        if override is not None:
            return override
        return PyMethod_New(self.function, instance)

    def __set__(self, instance, value):
        _generic_setattr(instance, self.slot, <PyObject *>value)
        cdef object direct = False  # an object: a C 0 would cast to NULL, which deletes
        _generic_setattr(instance, "_direct", <PyObject *>direct)
        self.on_override()

    def __delete__(self, instance):
        if getattr(instance, self.slot) is None:
            raise AttributeError(self.function.__name__)
        cdef object nothing = None
        _generic_setattr(instance, self.slot, <PyObject *>nothing)

    @property
    def __doc__(self):
        return self.function.__doc__
