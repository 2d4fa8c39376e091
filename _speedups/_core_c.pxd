# cython: language_level=3
#
# Declarations that turn src/turbows/_core_py.py into the compiled core.
#
# setup.py copies that source beside this file as _core_c.py; Cython reads
# these declarations and compiles the same code with C types (aiohttp's
# reader_py.py + reader_c.pxd pattern). Nothing here changes behaviour: the
# pure core runs the very same lines without it.

cimport cython

# -- JSON (Starlette's calls; the compiled core's orjson path is _json_c) ---

cdef object _json_encode
cdef object _json_loads

cpdef str dumps_text(object value)
cpdef bytes dumps_bytes(object value)
cpdef object loads_text(object text)
cpdef object loads_bytes(object data)

# -- the state machine -----------------------------------------------------

cdef int _CONNECTING
cdef int _CONNECTED
cdef int _DISCONNECTED
cdef int _RESPONSE
cdef tuple _STATES
cdef str _NOT_ACCEPTED
cdef str _BAD_MODE

cdef int _state_number(object state) except -1
cdef int _raise_on_disconnect(object message) except -1
cdef object _text_of(object message)
cdef object _bytes_of(object message)
cdef object _decode_json(object message, bint binary)
cdef bint _check_mode(object mode) except -1


cdef class WebSocketCore:
    # Starlette keeps these as plain attributes; some code reads or rebinds
    # them (middleware wrapping receive, for one), so they stay public.
    cdef public object scope
    cdef public object _receive
    cdef public object _send
    # WebSocketState values: _STATES[n] is the member the API shows.
    cdef int _client_state
    cdef int _application_state

    cdef object _connected(self, object message)
    cdef object _received(self, object message)
    @cython.locals(state=int)
    cdef bint _sending(self, object message) except -1
    cdef object _lost(self)
    cdef int _check_receiving(self) except -1
    @cython.locals(state=int)
    cdef int _check_client(self) except -1
