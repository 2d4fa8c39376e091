"""RFC 6455 frames for turbows' native uvicorn protocol: the reader and the writer.

- ``FrameReader``: section 5 parsing, incremental, server side (clients must
  mask). Every check the ``websockets`` parser and protocol make (opcode,
  masking, size limits, reserved bits, control frame rules, fragmentation
  sequencing, close payloads) is made as soon as the header is in, so bad
  input fails fast. Payload bytes are unmasked straight into memory this
  code allocated, sized by the bytes received, never by the length a header
  announces (see ``FrameReader``); CPython shares cached 1-byte and empty
  ``bytes`` objects, so nothing is ever written into an object that came
  from elsewhere.
- ``FrameParser``: the reader that only records frames; the tests fuzz it
  against ``websockets``' parser.
- ``frame()``: one unmasked server frame; ``ServerFrame``: one message's
  frame built once, for writing to many connections (the hub's fan-out).

The byte loops (unmasking, UTF-8) are C, in ``unmask_utf8.h``.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_CLEAR, Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX
    # Resizes a bytes object whose only reference is *obj, in place where the
    # allocator can; on failure frees it, sets *obj to NULL and returns -1.
    int _PyBytes_Resize(PyObject **obj, Py_ssize_t size)
    # The UTF-8 of a str, cached on the object (ASCII strings: their own data): no copy.
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

import struct


# Close codes a peer may send (websockets' EXTERNAL_CLOSE_CODES) besides 3000-4999.
cdef bint valid_close_code(long code) noexcept:
    if 3000 <= code < 5000:
        return True
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)


# -- reading -------------------------------------------------------------------


cdef class FrameReader:
    """Incremental RFC 6455 frame parser for the server side (clients must mask).

    Subclasses receive: ``_data_start`` (a data frame's header is in),
    ``_data_chunk`` (that many payload bytes were unmasked at ``data``),
    ``_data_end`` (the frame is complete: its payload is held, after any
    earlier frames' not yet taken), ``_control`` (a whole ping/pong),
    ``_closed`` (a valid close frame) and ``_fail`` (a protocol error: the
    code and reason the server closes with). After ``_closed`` or ``_fail``
    the reader ignores all further input, as websockets' parser discards it.

    A subclass takes the data held with ``take_bytes``, ``take_text`` or
    ``discard``, at least at the end of each message: per frame to see
    frames, per message to have fragments assembled in one buffer. Memory
    follows the bytes received: a frame's payload buffer grows as its bytes
    arrive, at most doubling, so a header announcing 16 MiB (or 2**44 bytes
    with no size limit) followed by 1 KiB holds about 1 KiB.
    """

    def __cinit__(self):
        self.max_size = 1 << 20
        self.buf_bytes = NULL
        self.buf = NULL

    def __dealloc__(self):
        Py_CLEAR(self.buf_bytes)

    cdef Py_ssize_t feed(self, const unsigned char *data, Py_ssize_t n) except -1:
        """Parse ``n`` bytes; returns how many were consumed: all of them unless
        the subclass set ``paused``, then those up to the end of that frame."""
        cdef Py_ssize_t pos = 0, need, take
        cdef unsigned char *out
        if self.feeding:
            raise RuntimeError("FrameReader.feed() re-entered from one of its own hooks")
        self.feeding = True
        try:
            while pos < n:
                if self.stopped:
                    return n
                if not self.in_payload:
                    if self.head_len == 0:
                        if self.paused:
                            return pos
                        need = _header_length(data + pos, n - pos)
                        if need and n - pos >= need:
                            # The whole header is here: parse it in place.
                            pos += need
                            self._header(data + pos - need, n - pos)
                            continue
                    # Straddling reads: collect the 2 fixed bytes, then the rest.
                    while self.head_len < 2 and pos < n:
                        self.head[self.head_len] = data[pos]
                        self.head_len += 1
                        pos += 1
                    if self.head_len < 2:
                        return n
                    need = _header_length(self.head, self.head_len)
                    take = min(need - self.head_len, n - pos)
                    memcpy(self.head + self.head_len, data + pos, take)
                    self.head_len += take
                    pos += take
                    if self.head_len < need:
                        # Fail as early as websockets does: on the opcode and mask
                        # bit at once, on the size before the masking key arrives.
                        self._early_checks(self.head, self.head_len)
                        return n
                    self.head_len = 0
                    self._header(self.head, n - pos)
                    continue
                take = min(self.length - self.received, n - pos)
                out = self.dst + self.received if self.dst != NULL else self._reserve(take)
                turbows_unmask(out, data + pos, <size_t>take, self.mask, <size_t>(self.received & 3))
                self.received += take
                pos += take
                if self.opcode < OP_CLOSE:
                    if self.dst == NULL:
                        self.buf_len += take
                    self._data_chunk(out, take)
                    if self.stopped:
                        return n
                if self.received == self.length:
                    self._payload_done()
            return n
        finally:
            self.feeding = False

    cdef int _early_checks(self, const unsigned char *h, Py_ssize_t available) except -1:
        """The checks websockets makes before the whole header is in, on what is:
        opcode and masking on the first two bytes, the size once the length is in."""
        cdef int opcode = h[0] & 0x0F
        cdef int short_length = h[1] & 0x7F
        cdef uint64_t length = short_length
        cdef Py_ssize_t limit
        cdef int k
        if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            return self._fail(1002, "invalid opcode")
        if not (h[1] & 0x80):
            return self._fail(1002, "incorrect masking")
        if short_length == 126:
            if available < 4:
                return 0
            length = (<uint64_t>h[2] << 8) | h[3]
        elif short_length == 127:
            if available < 10:
                return 0
            length = 0
            for k in range(2, 10):
                length = (length << 8) | h[k]
        limit = self.max_size - self.msg_size if self.fragmented else self.max_size
        # The second bound keeps every size below (held + length) a Py_ssize_t.
        if (limit >= 0 and length > <uint64_t>limit) or length > <uint64_t>(PY_SSIZE_T_MAX - self.held()):
            return self._fail(1009, f"frame with {length} bytes exceeds limit of {limit} bytes")
        return 0

    cdef int _header(self, const unsigned char *h, Py_ssize_t available) except -1:
        """A complete header at ``h``, with ``available`` bytes of the read after it:
        check it, then start the payload."""
        cdef int opcode = h[0] & 0x0F
        cdef bint fin = (h[0] & 0x80) != 0
        cdef bint rsv1 = (h[0] & 0x40) != 0
        cdef bint rsv23 = (h[0] & 0x30) != 0
        cdef uint64_t length = h[1] & 0x7F
        cdef Py_ssize_t offset = 2
        cdef int k
        # websockets' order: opcode, masking, size, then reserved bits and control rules.
        self._early_checks(h, 14)
        if self.stopped:
            return 0
        if length == 126:
            length = (<uint64_t>h[2] << 8) | h[3]
            offset = 4
        elif length == 127:
            length = 0
            for k in range(2, 10):
                length = (length << 8) | h[k]
            offset = 10
        memcpy(self.mask, h + offset, 4)
        if rsv23:
            return self._fail(1002, "reserved bits must be 0")
        if opcode >= OP_CLOSE:
            if rsv1:
                return self._fail(1002, "reserved bits must be 0")
            if not fin:
                return self._fail(1002, "fragmented control frame")
            if length > 125:
                return self._fail(1002, "control frame too long")
        elif opcode == OP_CONT:
            if not self.fragmented:
                return self._fail(1002, "unexpected continuation frame")
            if rsv1:
                return self._fail(1002, "reserved bits must be 0" if not self.compressed else "RSV1 bit set in continuation frame")
        else:
            if self.fragmented:
                return self._fail(1002, "expected a continuation frame")
            if rsv1 and not self.deflate:
                return self._fail(1002, "reserved bits must be 0")
            self.msg_opcode = opcode
            self.compressed = rsv1
            self.msg_size = 0
        self.opcode = opcode
        self.fin = fin
        self.rsv1 = rsv1
        self.length = <Py_ssize_t>length
        self.received = 0
        if opcode < OP_CLOSE:
            self.fragmented = not fin
            self._data_start()
            if self.stopped:
                return 0
            if self.exact is not None:
                # Held but not taken: keep it, ahead of this frame, in buf.
                memcpy(self._reserve(PyBytes_GET_SIZE(self.exact)), PyBytes_AS_STRING(self.exact),
                       PyBytes_GET_SIZE(self.exact))
                self.buf_len += PyBytes_GET_SIZE(self.exact)
                self.exact = None
            if fin and self.buf_len == 0 and 0 < self.length <= available:
                # The whole payload is in hand: unmask it straight into its own
                # object. Never a shared one: PyBytes_FromStringAndSize(NULL, n)
                # allocates for every n > 0, where CPython caches 1-byte objects.
                self.exact = PyBytes_FromStringAndSize(NULL, self.length)
                self.dst = <unsigned char *>PyBytes_AS_STRING(self.exact)
            else:
                self.dst = NULL  # appended to buf as it arrives
        else:
            self.dst = self.control
        if self.length == 0:
            return self._payload_done()
        self.in_payload = True
        return 0

    cdef unsigned char *_reserve(self, Py_ssize_t n) except NULL:
        """Room for ``n`` more bytes at the end of buf. Capacity at most doubles,
        and never passes what the current frame still announces, so it stays
        within twice the bytes received."""
        cdef Py_ssize_t need = self.buf_len + n
        cdef Py_ssize_t cap, frame_end
        if need > self.buf_cap:
            frame_end = self.buf_len + (self.length - self.received)
            cap = self.buf_cap * 2 if self.buf_cap <= PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
            if cap > frame_end:
                cap = frame_end
            if cap < need:
                cap = need
            if self.buf_bytes == NULL:
                fresh = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(fresh)
                self.buf_bytes = <PyObject *>fresh
            elif _PyBytes_Resize(&self.buf_bytes, cap) < 0:
                self._lost()  # the bytes held went with it; MemoryError is set
                raise MemoryError
            self.buf = <unsigned char *>PyBytes_AS_STRING(<object>self.buf_bytes)
            self.buf_cap = cap
        return self.buf + self.buf_len

    cdef void _lost(self) noexcept:
        self.buf_bytes = NULL
        self.buf = NULL
        self.buf_len = 0
        self.buf_cap = 0

    cdef int _payload_done(self) except -1:
        self.in_payload = False
        cdef int opcode = self.opcode
        if opcode < OP_CLOSE:
            return self._data_end()
        if opcode == OP_CLOSE:
            return self._close_frame()
        return self._control(opcode, PyBytes_FromStringAndSize(<char *>self.control, self.length))

    cdef int _close_frame(self) except -1:
        cdef long code
        if self.length == 0:
            self.stopped = True
            return self._closed(1005, "", b"")
        if self.length == 1:
            return self._fail(1002, "close frame too short")
        code = (self.control[0] << 8) | self.control[1]
        try:
            reason = PyUnicode_DecodeUTF8(<char *>self.control + 2, self.length - 2, NULL)
        except UnicodeDecodeError:
            return self._fail(1007, "invalid close reason")
        if not valid_close_code(code):
            return self._fail(1002, "invalid status code")
        # A close inside a fragmented message (RFC 6455 5.4 lets control frames
        # interleave) ends the connection normally; the partial message is dropped.
        # websockets fails it with 1002 instead: Autobahn case 7.1.5 flags that.
        self.stopped = True
        return self._closed(code, reason, PyBytes_FromStringAndSize(<char *>self.control, self.length))

    # -- the data held -------------------------------------------------------

    cdef Py_ssize_t held(self) noexcept:
        """Payload bytes of data frames held, not yet taken."""
        if self.exact is not None:
            return PyBytes_GET_SIZE(self.exact)
        return self.buf_len

    cdef object take_bytes(self):
        """The data held, as bytes; nothing is held after."""
        cdef object data
        if self.exact is not None:
            data, self.exact = self.exact, None
            return data
        if self.buf_len == 0:
            self.discard()
            return b""
        # The buffer becomes the message: cut to its length (in place; the
        # capacity is within twice the bytes received), no copy.
        if self.buf_len != self.buf_cap and _PyBytes_Resize(&self.buf_bytes, self.buf_len) < 0:
            self._lost()
            raise MemoryError
        data = <object>self.buf_bytes  # our reference, handed over
        Py_CLEAR(self.buf_bytes)
        self._lost()
        return data

    cdef object take_text(self):
        """The data held, decoded as UTF-8 (the subclass validated it); nothing is held after."""
        cdef object text
        if self.exact is not None:
            text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(self.exact), PyBytes_GET_SIZE(self.exact), NULL)
            self.exact = None
            return text
        text = PyUnicode_DecodeUTF8(<char *>self.buf, self.buf_len, NULL)
        self.discard()
        return text

    cdef int discard(self) noexcept:
        """Hold nothing; give the buffer's memory back."""
        self.exact = None
        Py_CLEAR(self.buf_bytes)
        self._lost()
        return 0

    # -- what subclasses do --------------------------------------------------

    cdef int _data_start(self) except -1:
        return 0

    cdef int _data_chunk(self, const unsigned char *data, Py_ssize_t n) except -1:
        return 0

    cdef int _data_end(self) except -1:
        return 0

    cdef int _control(self, int opcode, bytes payload) except -1:
        return 0

    cdef int _closed(self, long code, str reason, bytes payload) except -1:
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        self.stopped = True
        return 0


cdef inline Py_ssize_t _header_length(const unsigned char *h, Py_ssize_t available) noexcept:
    """The header's full length once its first two bytes are in, else 0."""
    if available < 2:
        return 0
    cdef Py_ssize_t length = 2
    cdef int short_length = h[1] & 0x7F
    if short_length == 126:
        length += 2
    elif short_length == 127:
        length += 8
    if h[1] & 0x80:
        length += 4
    return length


cdef object feed_object(FrameReader reader, object data):
    """Feed any bytes-like object; returns the bytes the reader did not consume
    (it paused: they start at a frame boundary), or None."""
    cdef Py_buffer view
    cdef Py_ssize_t used
    if type(data) is bytes:
        used = reader.feed(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return None if used == PyBytes_GET_SIZE(data) else data[used:]
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        used = reader.feed(<const unsigned char *>view.buf, view.len)
        return None if used == view.len else PyBytes_FromStringAndSize(<char *>view.buf + used, view.len - used)
    finally:
        PyBuffer_Release(&view)


@cython.final
cdef class FrameParser(FrameReader):
    """A reader that records what it parses, for tests: ``feed(data)`` returns
    a list of ``(opcode, fin, rsv1, payload)`` tuples and ``("error", code)``.

    Frame-level rules only (as websockets' ``Frame.parse`` plus its
    protocol's sequencing): text payloads are not UTF-8 checked here, that is
    the protocol's job; the message size counts raw payload bytes.
    ``held_capacity()``: the bytes the payload buffer has reserved.
    """

    cdef list events

    def __init__(self, max_size=1 << 20, deflate=False):
        self.max_size = max_size
        self.deflate = deflate
        self.events = []

    def feed_data(self, data):
        feed_object(self, data)
        events, self.events = self.events, []
        return events

    def held_capacity(self):
        return self.buf_cap

    cdef int _data_end(self) except -1:
        self.msg_size += self.length
        self.events.append((self.opcode, self.fin, self.rsv1, self.take_bytes()))
        return 0

    cdef int _control(self, int opcode, bytes payload) except -1:
        self.events.append((opcode, True, False, payload))
        return 0

    cdef int _closed(self, long code, str reason, bytes payload) except -1:
        self.events.append((OP_CLOSE, True, False, payload))
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        self.stopped = True
        self.discard()
        self.events.append(("error", code))
        return 0


def utf8_valid(data, bint final=True):
    """Whether ``data`` is valid UTF-8 (``final=False``: a valid prefix). For tests."""
    cdef const unsigned char[:] view = data
    cdef uint32_t state = turbows_utf8(0, &view[0] if len(view) else NULL, <size_t>len(view))
    if state == TURBOWS_UTF8_REJECT:
        return False
    return state == 0 or not final


# -- writing -------------------------------------------------------------------


cdef inline void _write_header(unsigned char *out, int first, Py_ssize_t n) noexcept:
    cdef int k
    out[0] = <unsigned char>first
    if n < 126:
        out[1] = <unsigned char>n
    elif n < 65536:
        out[1] = 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>(n & 0xFF)
    else:
        out[1] = 127
        for k in range(8):
            out[2 + k] = <unsigned char>((<uint64_t>n >> (56 - 8 * k)) & 0xFF)


cdef bytes frame(int first, const char *payload, Py_ssize_t n):
    """One unmasked frame: ``first`` is the first byte (FIN, RSV1, opcode)."""
    cdef Py_ssize_t head = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef bytes result = PyBytes_FromStringAndSize(NULL, head + n)
    cdef unsigned char *out = <unsigned char *>PyBytes_AS_STRING(result)
    _write_header(out, first, n)
    if n:
        memcpy(out + head, payload, n)
    return result


cdef bytes frame_header(int first, Py_ssize_t n):
    """The header alone of an unmasked frame of ``n`` payload bytes."""
    cdef Py_ssize_t head = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef bytes result = PyBytes_FromStringAndSize(NULL, head)
    _write_header(<unsigned char *>PyBytes_AS_STRING(result), first, n)
    return result


@cython.final
cdef class ServerFrame:
    """One message's unmasked server frame (FIN, text or binary), built once
    for every connection it is written to: ``ServerFrame(payload)``, a str
    (text) or bytes (binary). A str that is not valid Unicode (a lone
    surrogate) raises ``UnicodeEncodeError`` here, as sending it would."""

    def __cinit__(self, payload):
        cdef Py_ssize_t n
        if type(payload) is str:
            self.raw = PyUnicode_AsUTF8AndSize(payload, &n)
            self.opcode = OP_TEXT
        elif type(payload) is bytes:
            self.raw = PyBytes_AS_STRING(payload)
            n = PyBytes_GET_SIZE(payload)
            self.opcode = OP_BINARY
        else:
            # Exactly str or bytes: a subclass or a mutable buffer could change
            # under the frames already built from it.
            raise TypeError(f"a ServerFrame is built from str or bytes, got {type(payload).__name__}")
        self.payload = payload
        self.size = n
        self.data = frame(0x80 | self.opcode, self.raw, n)
        self.compressed = None

    def __repr__(self):
        kind = "text" if self.opcode == OP_TEXT else "binary"
        return f"<turbows ServerFrame {kind}, {self.size} bytes>"


def encode_frame(int opcode, data, bint fin=True, bint rsv1=False):
    """An unmasked server frame, for tests."""
    cdef const unsigned char[:] view = data
    return frame(<int>(opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)),
                 <const char *>&view[0] if len(view) else NULL, len(view))


cdef bytes close_payload(long code, str reason):
    """A close frame's payload: the code and the UTF-8 reason (nothing for 1005)."""
    if code == 1005:
        return b""
    return struct.pack("!H", code) + reason.encode()
