# cython: language_level=3
#
# Declarations that turn src/turbows/_state_py.py into the compiled state machine.
#
# setup.py copies that source beside this file as _state_c.py; Cython reads
# these declarations and compiles the same code with C types (aiohttp's
# reader_py.py + reader_c.pxd pattern). Nothing here changes behaviour: the
# pure core runs the very same lines without it.

cimport cython

cdef int _CONNECTING
cdef int _CONNECTED
cdef int _DISCONNECTED
cdef int _RESPONSE
cdef tuple _STATES

# The message types: _calls_c builds its messages with these very objects.
cdef str CONNECT
cdef str RECEIVE
cdef str DISCONNECT
cdef str ACCEPT
cdef str SEND
cdef str CLOSE
cdef str RESPONSE_START
cdef str RESPONSE_BODY

cdef str _NOT_ACCEPTED
cdef str _BAD_MODE

cdef int _state_number(object state) except -1
cdef int _raise_on_disconnect(object message) except -1
cdef object _item(object message, str key)
@cython.locals(exact=dict)
cdef object _text_of(object message)
@cython.locals(exact=dict)
cdef object _bytes_of(object message)
cdef bint _check_mode(object mode) except -1


cdef class StateMachine:
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
