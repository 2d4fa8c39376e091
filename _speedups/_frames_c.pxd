# RFC 6455 frames for turbows' native uvicorn protocol: the incremental
# reader (server side), the writer, and the byte loops they run on. cimported
# by _protocol_c, which subclasses FrameReader.

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport uint32_t

cdef extern from "unmask_utf8.h":
    size_t turbows_unmask(unsigned char *dst, const unsigned char *src, size_t n,
                          const unsigned char *mask, size_t phase) noexcept nogil
    uint32_t turbows_utf8(uint32_t state, const unsigned char *s, size_t n) noexcept nogil
    uint32_t TURBOWS_UTF8_REJECT


# Opcodes (RFC 6455 section 5.2).
cdef enum:
    OP_CONT = 0x0
    OP_TEXT = 0x1
    OP_BINARY = 0x2
    OP_CLOSE = 0x8
    OP_PING = 0x9
    OP_PONG = 0xA


cdef class FrameReader:
    # ws_max_size (-1: no limit); the message's size so far is what it bounds.
    cdef public Py_ssize_t max_size
    # permessage-deflate negotiated: RSV1 allowed on a message's first frame.
    cdef bint deflate
    # After a close frame or a failure: all further input is ignored.
    cdef bint stopped
    # Set by the subclass (flow control): feed() returns at the next frame boundary.
    cdef bint paused
    # Inside feed(), which a hook must not re-enter (a transport calling back into
    # data_received from write(), say): it would move the buffer being written.
    cdef bint feeding

    # The header being accumulated when it straddles reads.
    cdef unsigned char head[14]
    cdef Py_ssize_t head_len
    cdef bint in_payload

    # The current frame.
    cdef int opcode
    cdef bint fin
    cdef bint rsv1
    cdef unsigned char mask[4]
    cdef Py_ssize_t length
    cdef Py_ssize_t received
    # Where the current frame's payload is unmasked to: control, exact or buf.
    cdef unsigned char *dst
    # Control frame payloads (at most 125 bytes) land here.
    cdef unsigned char control[125]

    # Data frame payloads held until the subclass takes them (take_bytes,
    # take_text, discard): a message's final frame whose payload is already
    # wholly in the read at hand goes into `exact`, a bytes object of its
    # size; everything else is appended to `buf`, which grows with the bytes
    # received, never to a size a header announces. `buf` is the storage of
    # `buf_bytes` (an owned reference, or NULL), a bytes object resized as it
    # grows, so a large message's bytes are handed over with no copy.
    cdef bytes exact
    cdef PyObject *buf_bytes
    cdef unsigned char *buf
    cdef Py_ssize_t buf_len
    cdef Py_ssize_t buf_cap

    # The message being received: its first opcode (0 outside a fragmented
    # message), whether it is compressed, and the bytes it holds so far
    # (decompressed), which subclasses add at each frame's end.
    cdef int msg_opcode
    cdef bint fragmented
    cdef bint compressed
    cdef readonly Py_ssize_t msg_size

    cdef Py_ssize_t feed(self, const unsigned char *data, Py_ssize_t n) except -1
    cdef int _early_checks(self, const unsigned char *h, Py_ssize_t available) except -1
    cdef int _header(self, const unsigned char *h, Py_ssize_t available) except -1
    cdef unsigned char *_reserve(self, Py_ssize_t n) except NULL
    cdef void _lost(self) noexcept
    cdef int _payload_done(self) except -1
    cdef int _close_frame(self) except -1

    # The data held (see above).
    cdef Py_ssize_t held(self) noexcept
    cdef object take_bytes(self)
    cdef object take_text(self)
    cdef int discard(self) noexcept

    # What subclasses do.
    cdef int _data_start(self) except -1
    cdef int _data_chunk(self, const unsigned char *data, Py_ssize_t n) except -1
    cdef int _data_end(self) except -1
    cdef int _control(self, int opcode, bytes payload) except -1
    cdef int _closed(self, long code, str reason, bytes payload) except -1
    cdef int _fail(self, int code, str reason) except -1


# One message's server frame, built once and written to many connections (the
# hub's fan-out, through _protocol_c.FanoutWriter).
@cython.final
cdef class ServerFrame:
    # The message: a str (its UTF-8 cached by CPython, read in place) or bytes.
    cdef readonly object payload
    cdef readonly int opcode
    # The whole uncompressed frame: header + payload.
    cdef readonly bytes data
    # The payload's bytes (UTF-8 for text): inside `payload`, which keeps them alive.
    cdef const char *raw
    cdef readonly Py_ssize_t size
    # permessage-deflate frames shared by every connection that compresses
    # without context takeover, by window bits (filled by the writers; None
    # until the first one).
    cdef dict compressed


cdef object feed_object(FrameReader reader, object data)
cdef bint valid_close_code(long code) noexcept
cdef bytes frame(int first, const char *payload, Py_ssize_t n)
cdef bytes frame_header(int first, Py_ssize_t n)
cdef bytes close_payload(long code, str reason)
