# cython: language_level=3
"""A native websocket protocol for uvicorn: frame reader and writer, handshake,
connection state machine.

Behavioural reference: uvicorn's websockets-sansio protocol
(``uvicorn/protocols/websockets/websockets_sansio_impl.py``), itself built on
the ``websockets`` library's sans-I/O ``ServerProtocol``. Every ASGI message,
close code, log line and HTTP response here is chosen to match it; the
difference is that the per-frame work (header parsing, unmasking, UTF-8
validation, framing) is C, and no intermediate ``Frame`` objects, generators
or queues exist on the hot path.

Layout:

- ``FrameReader``: RFC 6455 section 5 parsing, incremental. Every check the
  ``websockets`` parser and protocol make (opcode, masking, size limits,
  reserved bits, control frame rules, fragmentation sequencing, close
  payloads) is made as soon as the header is in, so bad input fails fast.
  Payload bytes are unmasked straight into a buffer the subclass hands out,
  always one this code allocated (``_data_start``): CPython shares cached
  1-byte and empty ``bytes`` objects, so nothing is ever written into an
  object that came from elsewhere.
- ``FrameParser``: the reader that only records frames; the tests fuzz it
  against ``websockets``' parser.
- ``WebSocketProtocol``: the asyncio protocol uvicorn runs.

Deliberate differences from sansio, each for conformance or robustness:

- a close frame between the fragments of a message closes normally (RFC 6455
  5.4; websockets fails it with 1002, Autobahn case 7.1.5 FAILS sansio);
- invalid UTF-8 fails as soon as the bad byte arrives, not at the frame's
  end (Autobahn 6.4.x: NON-STRICT for sansio, OK here);
- the handshake also requires exactly one Host header (RFC 6455 4.2.1);
- reading pauses once ``ws_max_queue`` messages or 1 MiB wait for the app,
  not after every message (sansio pauses and resumes per message);
- nothing (pong, close) is written before the 101 response;
- the 101 response carries uvicorn's default headers, not websockets' own
  ``Server`` header besides them.

Threading: a protocol is driven by one event loop's thread, as every asyncio
protocol is; nothing here is shared between connections except immutable
module constants.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX

import asyncio
import base64
import binascii
import email.utils
import hashlib
import logging
import random
import struct
import zlib
from collections import deque
from http import HTTPStatus
from urllib.parse import unquote

from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)

cdef extern from "Python.h":
    # The UTF-8 of a str, cached on the object (ASCII strings: their own data): no copy.
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

cdef extern from *:
    """
    /* Portable C (C99, no compiler extensions). */
    #include <string.h>
    #include <stdint.h>

    /* XOR `n` bytes of `src` with the 4-byte `mask` starting at mask offset
       `phase` (0..3) into `dst`; returns the phase after the last byte.
       `dst` and `src` may be the same pointer, never otherwise overlapping.
       Eight bytes at a time through memcpy: no unaligned access, no
       aliasing violation; compilers turn the memcpy into plain moves. */
    static Py_ssize_t turbows_unmask(unsigned char *dst, const unsigned char *src,
                                     Py_ssize_t n, const unsigned char *mask, Py_ssize_t phase)
    {
        Py_ssize_t i = 0;
        unsigned char rotated[8];
        uint64_t m, chunk;
        int k;
        for (k = 0; k < 8; k++) rotated[k] = mask[(phase + k) & 3];
        memcpy(&m, rotated, 8);
        for (; i + 8 <= n; i += 8) {
            memcpy(&chunk, src + i, 8);
            chunk ^= m;
            memcpy(dst + i, &chunk, 8);
        }
        for (; i < n; i++) dst[i] = src[i] ^ mask[(phase + i) & 3];
        return (phase + n) & 3;
    }

    /* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates,
       nothing above U+10FFFF). The state is 0 between characters, else
       need | lo << 8 | hi << 16: the continuation bytes still needed and the
       range the next one must fall in. TURBOWS_UTF8_REJECT is sticky. */
    #define TURBOWS_UTF8_REJECT 0xFFFFFFFFu
    static uint32_t turbows_utf8(uint32_t state, const unsigned char *s, Py_ssize_t n)
    {
        Py_ssize_t i = 0;
        uint32_t need, lo, hi;
        uint64_t chunk;
        unsigned char b;
        if (state == TURBOWS_UTF8_REJECT) return state;
        need = state & 0xFF; lo = (state >> 8) & 0xFF; hi = (state >> 16) & 0xFF;
        while (i < n) {
            if (need == 0) {
                /* ASCII runs, eight bytes at a time */
                while (i + 8 <= n) {
                    memcpy(&chunk, s + i, 8);
                    if (chunk & UINT64_C(0x8080808080808080)) break;
                    i += 8;
                }
                if (i >= n) break;
                b = s[i++];
                if (b < 0x80) continue;
                if (b >= 0xC2 && b <= 0xDF) { need = 1; lo = 0x80; hi = 0xBF; }
                else if (b == 0xE0) { need = 2; lo = 0xA0; hi = 0xBF; }
                else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) { need = 2; lo = 0x80; hi = 0xBF; }
                else if (b == 0xED) { need = 2; lo = 0x80; hi = 0x9F; }
                else if (b == 0xF0) { need = 3; lo = 0x90; hi = 0xBF; }
                else if (b >= 0xF1 && b <= 0xF3) { need = 3; lo = 0x80; hi = 0xBF; }
                else if (b == 0xF4) { need = 3; lo = 0x80; hi = 0x8F; }
                else return TURBOWS_UTF8_REJECT;
            } else {
                b = s[i++];
                if (b < lo || b > hi) return TURBOWS_UTF8_REJECT;
                need--; lo = 0x80; hi = 0xBF;
            }
        }
        if (need == 0) return 0;
        return need | (lo << 8) | (hi << 16);
    }
    """
    Py_ssize_t turbows_unmask(unsigned char *dst, const unsigned char *src,
                              Py_ssize_t n, const unsigned char *mask, Py_ssize_t phase) noexcept nogil
    uint32_t turbows_utf8(uint32_t state, const unsigned char *s, Py_ssize_t n) noexcept nogil
    uint32_t TURBOWS_UTF8_REJECT


# Opcodes (RFC 6455 section 5.2).
cdef enum:
    OP_CONT = 0x0
    OP_TEXT = 0x1
    OP_BINARY = 0x2
    OP_CLOSE = 0x8
    OP_PING = 0x9
    OP_PONG = 0xA

# Close codes a peer may send (websockets' EXTERNAL_CLOSE_CODES) besides 3000-4999.
cdef bint _valid_close_code(long code) noexcept:
    if 3000 <= code < 5000:
        return True
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)


# -- the frame reader --------------------------------------------------------


cdef class FrameReader:
    """Incremental RFC 6455 frame parser for the server side (clients must mask).

    Subclasses receive: ``_data_start`` (a data frame's header is in: set
    ``self.dst`` to ``self.length`` writable bytes this code owns),
    ``_data_chunk`` (that many bytes were unmasked at ``self.dst + offset``),
    ``_data_end``, ``_control`` (a whole ping/pong), ``_closed`` (a valid
    close frame) and ``_fail`` (a protocol error: the code and reason the
    server closes with). After ``_closed`` or ``_fail`` the reader ignores all
    further input, as websockets' parser discards it.
    """

    cdef public Py_ssize_t max_size
    # permessage-deflate negotiated: RSV1 allowed on a message's first frame.
    cdef bint deflate
    cdef bint stopped

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
    cdef unsigned char *dst
    # Control frame payloads (at most 125 bytes) land here.
    cdef unsigned char control[125]

    # The message being received: its first opcode (0 outside a fragmented
    # message), whether it is compressed, and the bytes it holds so far
    # (decompressed), which subclasses add at each frame's end.
    cdef int msg_opcode
    cdef bint fragmented
    cdef bint compressed
    cdef public Py_ssize_t msg_size

    def __cinit__(self):
        self.max_size = 1 << 20
        self.stopped = False
        self.head_len = 0
        self.in_payload = False
        self.fragmented = False
        self.msg_opcode = 0

    cdef int feed(self, const unsigned char *data, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = 0, need, take
        while pos < n and not self.stopped:
            if not self.in_payload:
                if self.head_len == 0:
                    need = _header_length(data + pos, n - pos)
                    if need and n - pos >= need:
                        # The whole header is here: parse it in place.
                        self._header(data + pos)
                        pos += need
                        continue
                # Straddling reads: collect the 2 fixed bytes, then the rest.
                while self.head_len < 2 and pos < n:
                    self.head[self.head_len] = data[pos]
                    self.head_len += 1
                    pos += 1
                if self.head_len < 2:
                    return 0
                need = _header_length(self.head, self.head_len)
                take = min(need - self.head_len, n - pos)
                memcpy(self.head + self.head_len, data + pos, take)
                self.head_len += take
                pos += take
                if self.head_len < need:
                    # Fail as early as websockets does: on the opcode and mask
                    # bit at once, on the size before the masking key arrives.
                    self._early_checks(self.head, self.head_len)
                    return 0
                self.head_len = 0
                self._header(self.head)
                continue
            take = min(self.length - self.received, n - pos)
            turbows_unmask(self.dst + self.received, data + pos, take, self.mask, self.received & 3)
            self.received += take
            pos += take
            if self.opcode < OP_CLOSE:
                self._data_chunk(self.received - take, take)
                if self.stopped:
                    return 0
            if self.received == self.length:
                self._payload_done()
        return 0

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
        if (limit >= 0 and length > <uint64_t>limit) or length > <uint64_t>PY_SSIZE_T_MAX:
            return self._fail(1009, f"frame with {length} bytes exceeds limit of {limit} bytes")
        return 0

    cdef int _header(self, const unsigned char *h) except -1:
        """A complete header at ``h``: check it, then start the payload."""
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
        else:
            self.dst = self.control
        if self.length == 0:
            return self._payload_done()
        self.in_payload = True
        return 0

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
        if not _valid_close_code(code):
            return self._fail(1002, "invalid status code")
        # A close inside a fragmented message (RFC 6455 5.4 lets control frames
        # interleave) ends the connection normally; the partial message is dropped.
        # websockets fails it with 1002 instead: Autobahn case 7.1.5 flags that.
        self.stopped = True
        return self._closed(code, reason, PyBytes_FromStringAndSize(<char *>self.control, self.length))

    # -- what subclasses do --------------------------------------------------

    cdef int _data_start(self) except -1:
        return 0

    cdef int _data_chunk(self, Py_ssize_t offset, Py_ssize_t n) except -1:
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


cdef int _feed_object(FrameReader reader, object data) except -1:
    cdef Py_buffer view
    if type(data) is bytes:
        return reader.feed(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        reader.feed(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


@cython.final
cdef class FrameParser(FrameReader):
    """A reader that records what it parses, for tests: ``feed(data)`` returns
    a list of ``(opcode, fin, rsv1, payload)`` tuples and ``("error", code)``.

    Frame-level rules only (as websockets' ``Frame.parse`` plus its
    protocol's sequencing): text payloads are not UTF-8 checked here, that is
    the protocol's job; the message size counts raw payload bytes.
    """

    cdef list events
    cdef bytes payload

    def __init__(self, max_size=1 << 20, deflate=False):
        self.max_size = max_size
        self.deflate = deflate
        self.events = []

    def feed_data(self, data):
        _feed_object(self, data)
        events, self.events = self.events, []
        return events

    cdef int _data_start(self) except -1:
        # A new object of our own even for 0 or 1 byte (PyBytes_FromStringAndSize
        # with NULL never returns a shared one for a length above 0).
        self.payload = PyBytes_FromStringAndSize(NULL, self.length)
        self.dst = <unsigned char *>PyBytes_AS_STRING(self.payload)
        return 0

    cdef int _data_end(self) except -1:
        self.msg_size += self.length
        self.events.append((self.opcode, self.fin, self.rsv1, self.payload))
        self.payload = None
        return 0

    cdef int _control(self, int opcode, bytes payload) except -1:
        self.events.append((opcode, True, False, payload))
        return 0

    cdef int _closed(self, long code, str reason, bytes payload) except -1:
        self.events.append((OP_CLOSE, True, False, payload))
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        self.stopped = True
        self.events.append(("error", code))
        return 0


def utf8_valid(data, bint final=True):
    """Whether ``data`` is valid UTF-8 (``final=False``: a valid prefix). For tests."""
    cdef const unsigned char[:] view = data
    cdef uint32_t state = turbows_utf8(0, &view[0] if len(view) else NULL, len(view))
    if state == TURBOWS_UTF8_REJECT:
        return False
    return state == 0 or not final


# -- writing frames ----------------------------------------------------------


cdef bytes _frame(int first, const char *payload, Py_ssize_t n):
    """One unmasked frame: ``first`` is the first byte (FIN, RSV1, opcode)."""
    cdef Py_ssize_t head = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, head + n)
    cdef unsigned char *out = <unsigned char *>PyBytes_AS_STRING(frame)
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
    if n:
        memcpy(out + head, payload, n)
    return frame


def encode_frame(int opcode, data, bint fin=True, bint rsv1=False):
    """An unmasked server frame, for tests."""
    cdef const unsigned char[:] view = data
    return _frame(opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0),
                  <const char *>&view[0] if len(view) else NULL, len(view))


cdef bytes _close_payload(long code, str reason):
    if code == 1005:
        return b""
    return struct.pack("!H", code) + reason.encode()


# -- the handshake -------------------------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_EMPTY_BLOCK = b"\x00\x00\xff\xff"


def _status_phrase(int status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


cdef bytes _http_response(int status, list headers, bytes body):
    """``headers``: (str, str) pairs, written as latin-1."""
    lines = [f"HTTP/1.1 {status} {_status_phrase(status)}\r\n".encode("latin-1")]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


cdef bytes _reject(int status, str text, list extra=None):
    """websockets' ``ServerProtocol.reject``: a plain-text response that closes the connection."""
    body = text.encode()
    headers = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    if extra:
        headers.extend(extra)
    return _http_response(status, headers, body)


class _Refused(Exception):
    """The upgrade request is not a valid websocket handshake (RFC 6455 section 4.2.1)."""

    def __init__(self, status, text, headers=None):
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or []


def _tokens(values):
    """Comma-separated header values, stripped, lower-cased, empty items dropped."""
    return [token.strip().lower() for value in values for token in value.split(",") if token.strip()]


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(value):
    return bool(value) and all(c in _TCHAR for c in value)


def parse_request(bytes data):
    """``(method, target, version, headers)`` from an HTTP/1.1 request head; ``headers``
    as (name, value) latin-1 str pairs in order. Raises ``_Refused`` (400) on malformed input."""
    head = data.decode("latin-1")
    lines = head.split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _Refused(400, "Failed to open a WebSocket connection: invalid request line.\n") from None
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _is_token(name):
            raise _Refused(400, "Failed to open a WebSocket connection: invalid HTTP header line.\n")
        headers.append((name, value.strip(" \t")))
    return method, target, version, headers


def _get_all(list headers, str lname):
    return [value for name, value in headers if name.lower() == lname]


def _fail_text(message):
    return f"Failed to open a WebSocket connection: {message}.\n"


def check_handshake(str method, str version, list headers):
    """RFC 6455 section 4.2.1, with websockets' status codes; returns the
    Sec-WebSocket-Accept value or raises ``_Refused``."""
    if method != "GET":
        raise _Refused(405, _fail_text(f"invalid HTTP method; expected GET; got {method}"), [("Allow", "GET")])
    if version != "HTTP/1.1":
        raise _Refused(505, _fail_text(f"unsupported protocol; expected HTTP/1.1: {version}"))
    upgrade_help = (
        "\nYou cannot access a WebSocket server directly with a browser. You need a WebSocket client.\n"
    )
    connection = _tokens(_get_all(headers, "connection"))
    if "upgrade" not in connection:
        value = ", ".join(_get_all(headers, "connection"))
        raise _Refused(
            426, _fail_text(f"invalid Connection header: {value}" if value else "missing Connection header") + upgrade_help,
            [("Upgrade", "websocket")],
        )
    upgrade = _tokens(_get_all(headers, "upgrade"))
    if upgrade != ["websocket"]:
        value = ", ".join(_get_all(headers, "upgrade"))
        raise _Refused(
            426, _fail_text(f"invalid Upgrade header: {value}" if value else "missing Upgrade header") + upgrade_help,
            [("Upgrade", "websocket")],
        )
    hosts = _get_all(headers, "host")
    if len(hosts) != 1 or not hosts[0]:
        raise _Refused(400, _fail_text("missing Host header" if not hosts else "invalid Host header"))
    keys = _get_all(headers, "sec-websocket-key")
    if len(keys) != 1:
        raise _Refused(400, _fail_text("missing Sec-WebSocket-Key header" if not keys
                                       else "invalid Sec-WebSocket-Key header: multiple values"))
    key = keys[0]
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Key header: {key}")) from None
    if len(raw_key) != 16:
        raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Key header: {key}"))
    versions = _get_all(headers, "sec-websocket-version")
    if len(versions) != 1:
        raise _Refused(400, _fail_text("missing Sec-WebSocket-Version header" if not versions
                                       else "invalid Sec-WebSocket-Version header: multiple values"))
    if versions[0] != "13":
        raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Version header: {versions[0]}"),
                       [("Sec-WebSocket-Version", "13")])
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


# -- permessage-deflate (RFC 7692): negotiation as websockets' ServerPerMessageDeflateFactory
# with uvicorn's settings (server_max_window_bits=12, client_max_window_bits=12, memLevel=5).

_SERVER_MAX_WINDOW_BITS = 12
_CLIENT_MAX_WINDOW_BITS = 12
_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))


def parse_extensions(list values):
    """Sec-WebSocket-Extensions values: ``[(name, [(param, value or None), ...]), ...]``.
    Raises ``_Refused`` (400) where the header does not parse."""
    offers = []
    for header in values:
        for item in header.split(","):
            item = item.strip()
            if not item:
                continue
            parts = [part.strip() for part in item.split(";")]
            name = parts[0]
            if not _is_token(name):
                raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
            params = []
            for part in parts[1:]:
                pname, sep, pvalue = part.partition("=")
                pname = pname.strip()
                if not _is_token(pname):
                    raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
                if sep:
                    pvalue = pvalue.strip()
                    if len(pvalue) >= 2 and pvalue.startswith('"') and pvalue.endswith('"'):
                        pvalue = pvalue[1:len(pvalue) - 1]
                    if not _is_token(pvalue):
                        raise _Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
                    params.append((pname, pvalue))
                else:
                    params.append((pname, None))
            offers.append((name, params))
    return offers


def negotiate_deflate(list offers):
    """The first acceptable permessage-deflate offer: ``(response header value,
    (remote_no_context_takeover, local_no_context_takeover, remote_bits, local_bits))``, or None."""
    for name, params in offers:
        if name != "permessage-deflate":
            continue
        server_nct = client_nct = False
        server_bits = None
        client_bits = None
        ok = True
        for pname, value in params:
            if pname == "server_no_context_takeover" and not server_nct and value is None:
                server_nct = True
            elif pname == "client_no_context_takeover" and not client_nct and value is None:
                client_nct = True
            elif pname == "server_max_window_bits" and server_bits is None and value in _WINDOW_BITS:
                server_bits = int(value)
            elif pname == "client_max_window_bits" and client_bits is None and (value is None or value in _WINDOW_BITS):
                client_bits = True if value is None else int(value)
            else:
                ok = False  # unknown, duplicate or invalid parameter: decline this offer
                break
        if not ok:
            continue
        if server_bits is None or server_bits > _SERVER_MAX_WINDOW_BITS:
            server_bits = _SERVER_MAX_WINDOW_BITS
        if server_bits == 8:
            continue  # zlib cannot compress with an 8-bit window
        if client_bits is True:
            client_bits = _CLIENT_MAX_WINDOW_BITS
        elif client_bits is not None and client_bits > _CLIENT_MAX_WINDOW_BITS:
            client_bits = _CLIENT_MAX_WINDOW_BITS
        response = ["permessage-deflate"]
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")
        response.append(f"server_max_window_bits={server_bits}")
        if client_bits is not None:
            response.append(f"client_max_window_bits={client_bits}")
        return "; ".join(response), (client_nct, server_nct, client_bits or 15, server_bits)
    return None


# -- the protocol ----------------------------------------------------------------

cdef object _logger = logging.getLogger("uvicorn.error")
# Reading pauses once this many bytes wait for the app, whatever the message count.
cdef Py_ssize_t _QUEUE_BYTES_HIGH = 1 << 20


cdef class WebSocketProtocol(FrameReader):
    """uvicorn's websocket protocol, native. Constructed by uvicorn as
    ``cls(config=..., server_state=..., app_state=...)`` and handed the
    transport and the upgrade request by its HTTP protocol."""

    cdef public object config
    cdef public object app
    cdef public object loop
    cdef public object logger
    cdef public str root_path
    cdef public object asgi_version
    cdef public object app_state
    cdef public object connections
    cdef public object tasks
    cdef public object default_headers
    cdef object on_connection_lost

    cdef public object transport
    # Bound once: the hot path's calls, without a method lookup each time.
    cdef object _write
    cdef object _create_future
    cdef public object server
    cdef public object client
    cdef public str scheme
    cdef public dict scope

    # Handshake and closing state, named as uvicorn's sansio protocol names it.
    cdef public bint handshake_initiated
    cdef public bint handshake_complete
    cdef public bint close_sent
    cdef public bint close_rcvd
    cdef public bint disconnected
    cdef public object close_timer
    cdef public double close_timeout
    cdef public object initial_response
    cdef bytearray request_head
    cdef str accept_key
    cdef object extension_header
    cdef bytes early

    # Messages for the app, and the future a waiting receive() sleeps on.
    cdef object queue  # a deque
    cdef object waiter
    cdef Py_ssize_t queue_bytes
    cdef Py_ssize_t max_queue
    cdef public bint read_paused
    cdef bint write_paused
    cdef object writable

    # Keepalive.
    cdef public object ping_interval
    cdef public object ping_timeout
    cdef public object ping_timer
    cdef public object pong_timer
    cdef public object pending_ping_payload
    cdef double ping_sent_at
    cdef public double last_ping_rtt

    # The message being received.
    cdef object payload          # the bytes object dst points into
    cdef list fragments
    cdef uint32_t utf8_state
    # permessage-deflate
    cdef object decoder
    cdef object encoder
    cdef bint remote_no_context_takeover
    cdef bint local_no_context_takeover
    cdef int remote_bits
    cdef int local_bits

    def __init__(self, config, server_state, app_state, _loop=None, on_connection_lost=None):
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self._create_future = self.loop.create_future
        self.logger = _logger
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.on_connection_lost = on_connection_lost

        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers

        self.transport = None
        self.server = None
        self.client = None
        self.scheme = None
        self.scope = None

        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.close_rcvd = False
        self.disconnected = False
        self.close_timer = None
        self.close_timeout = 10.0
        self.initial_response = None
        self.request_head = bytearray()
        self.early = None

        self.queue = deque()
        self.waiter = None
        self.queue_bytes = 0
        # uvicorn's ws_max_queue (32 by default) bounds how far the app may lag.
        self.max_queue = max(1, getattr(config, "ws_max_queue", 32) or 32)
        self.read_paused = False
        self.write_paused = False
        self.writable = asyncio.Event()
        self.writable.set()

        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.ping_timer = None
        self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0

        max_size = config.ws_max_size
        self.max_size = max_size if max_size is not None else -1
        self.deflate = False
        self.fragments = None
        self.payload = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport):
        self.connections.add(self)
        self.transport = transport
        self._write = transport.write
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "wss" if is_ssl(transport) else "ws"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = "%s:%d - " % self.client if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection made", prefix)

    def connection_lost(self, exc):
        self.stop_keepalive()
        code = 1005 if self.handshake_complete else 1006
        self._put({"type": "websocket.disconnect", "code": code}, 0)
        self.connections.discard(self)
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = "%s:%d - " % self.client if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection lost", prefix)
        self.handshake_complete = True
        self.disconnected = True
        self.stopped = True
        # Unblock any send() waiting for the buffer to drain: it never will now.
        self.writable.set()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if exc is None:
            self.transport.close()
        if self.on_connection_lost is not None:
            self.on_connection_lost()

    def eof_received(self):
        pass

    def pause_writing(self):
        self.write_paused = True
        self.writable.clear()

    def resume_writing(self):
        self.write_paused = False
        self.writable.set()

    def shutdown(self):
        self.stop_keepalive()
        if self.close_sent:
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.close()
            return
        if self.handshake_complete:
            self._put({"type": "websocket.disconnect", "code": 1012}, 0)
            if not self.close_rcvd and not self.transport.is_closing():
                self.transport.write(_frame(0x80 | OP_CLOSE, b"\x03\xf4", 2))
            self.close_sent = True
        else:
            self.send_500_response()
        self.transport.close()

    def data_received(self, data):
        if self.handshake_initiated:
            if not self.stopped:
                _feed_object(self, data)
            return
        self.request_head += data
        end = self.request_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.request_head) > 65536:
                self._refuse(_Refused(431, _fail_text("request headers too large")))
            return
        head = bytes(self.request_head[:end])
        rest = bytes(self.request_head[end + 4:])
        self.request_head = None
        self.handshake_initiated = True
        if not self._handle_connect(head):
            return
        if rest:
            _feed_object(self, rest)

    # -- the handshake ------------------------------------------------------

    cdef int _refuse(self, refused) except -1:
        self.handshake_initiated = True
        self.handshake_complete = True
        self.close_sent = True
        self.stopped = True
        self.transport.write(_reject(refused.status, refused.text, refused.headers))
        self.transport.close()
        return 0

    cdef bint _handle_connect(self, bytes head) except -1:
        try:
            method, target, version, headers = parse_request(head)
            self.accept_key = check_handshake(method, version, headers)
            self.extension_header = None
            if self.config.ws_per_message_deflate:
                negotiated = negotiate_deflate(parse_extensions(_get_all(headers, "sec-websocket-extensions")))
                if negotiated is not None:
                    self.extension_header, params = negotiated
                    (self.remote_no_context_takeover, self.local_no_context_takeover,
                     self.remote_bits, self.local_bits) = params
                    self.deflate = True
                    if not self.remote_no_context_takeover:
                        self.decoder = zlib.decompressobj(wbits=-self.remote_bits)
                    if not self.local_no_context_takeover:
                        self.encoder = zlib.compressobj(wbits=-self.local_bits, memLevel=5)
        except _Refused as refused:
            self._refuse(refused)
            return False
        raw_path, _, query_string = target.partition("?")
        subprotocols = []
        for value in _get_all(headers, "sec-websocket-protocol"):
            subprotocols.extend([token.strip() for token in value.split(",")])
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": self.root_path,
            "path": self.root_path + unquote(raw_path),
            "raw_path": self.root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query_string.encode("ascii"),
            "headers": [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers],
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        self._put({"type": "websocket.connect"}, 0)
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)
        return True

    def on_task_complete(self, task):
        self.tasks.discard(task)

    async def run_asgi(self):
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self.transport.close()

    def send_500_response(self):
        if self.initial_response is not None or self.handshake_complete:
            return
        self.transport.write(_reject(500, "Internal Server Error"))

    # -- keepalive ----------------------------------------------------------

    def start_keepalive(self):
        if self.ping_interval is not None and self.ping_interval > 0:
            self.schedule_ping()

    def stop_keepalive(self):
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        self.pending_ping_payload = None

    def schedule_ping(self):
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = self.loop.call_later(delay, self.send_keepalive_ping)

    def send_keepalive_ping(self):
        self.ping_timer = None
        if self.close_sent or self.close_rcvd or self.transport.is_closing():
            return
        # A random payload identifies this ping; stale or unsolicited pongs are ignored.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.transport.write(_frame(0x80 | OP_PING, self.pending_ping_payload, 4))
        if self.ping_timeout is not None:
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
        else:
            self.schedule_ping()

    def keepalive_timeout(self):
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = "%s:%d - " % self.client if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sWebSocket keepalive ping timeout", prefix)
        self._write_close(1011, "keepalive ping timeout")
        self.close_sent = True
        self.stopped = True
        self.transport.close()

    # -- frames in ------------------------------------------------------------

    cdef int _data_start(self) except -1:
        # Our own new object, written only here (see the module docstring).
        self.payload = PyBytes_FromStringAndSize(NULL, self.length)
        self.dst = <unsigned char *>PyBytes_AS_STRING(self.payload)
        if self.opcode != OP_CONT:
            self.utf8_state = 0
            if self.compressed and self.remote_no_context_takeover:
                self.decoder = zlib.decompressobj(wbits=-self.remote_bits)
        return 0

    cdef int _data_chunk(self, Py_ssize_t offset, Py_ssize_t n) except -1:
        # Validate text as it arrives, so invalid UTF-8 fails before the frame ends.
        if self.msg_opcode == OP_TEXT and not self.compressed:
            self.utf8_state = turbows_utf8(self.utf8_state, self.dst + offset, n)
            if self.utf8_state == TURBOWS_UTF8_REJECT:
                return self._fail(1007, "invalid UTF-8")
        return 0

    cdef int _data_end(self) except -1:
        cdef object data = self.payload
        cdef const unsigned char *p
        self.payload = None
        if self.compressed:
            data = self._inflate(data)
            if data is None:
                return 0
            if self.msg_opcode == OP_TEXT:
                self.utf8_state = turbows_utf8(self.utf8_state, <const unsigned char *>PyBytes_AS_STRING(data),
                                               PyBytes_GET_SIZE(data))
                if self.utf8_state == TURBOWS_UTF8_REJECT:
                    return self._fail(1007, "invalid UTF-8")
        self.msg_size += PyBytes_GET_SIZE(data)
        if not self.fin:
            if self.fragments is None:
                self.fragments = [data]
            else:
                self.fragments.append(data)
            return 0
        if self.fragments is not None:
            self.fragments.append(data)
            data = b"".join(self.fragments)
            self.fragments = None
        if self.close_sent:
            # The app is past websocket.close: discard, keep reading for the peer's close.
            return 0
        if self.msg_opcode == OP_TEXT:
            if self.utf8_state != 0:
                return self._fail(1007, "invalid UTF-8")
            text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), NULL)
            self._put({"type": "websocket.receive", "text": text}, PyBytes_GET_SIZE(data))
        else:
            self._put({"type": "websocket.receive", "bytes": data}, PyBytes_GET_SIZE(data))
        self._flow()
        return 0

    cdef object _inflate(self, bytes data):
        """Decompress one frame's payload, bounded by what is left of ws_max_size; None on failure."""
        cdef Py_ssize_t limit = self.max_size - self.msg_size if self.max_size >= 0 else 0
        decoder = self.decoder
        try:
            if self.fin:
                data = data + _EMPTY_BLOCK
            if limit == 0 and self.max_size >= 0:
                # Nothing more may come; any output at all is too much.
                out = decoder.decompress(data, 1)
                if out:
                    self._fail(1009, "message too big")
                    return None
                return out
            out = decoder.decompress(data, limit)
            if decoder.unconsumed_tail:
                self._fail(1009, f"message exceeds limit of {self.max_size} bytes")
                return None
        except zlib.error:
            self._fail(1002, "decompression failed")
            return None
        if self.fin and self.remote_no_context_takeover:
            self.decoder = None
        return out

    cdef int _control(self, int opcode, bytes payload) except -1:
        if opcode == OP_PING:
            # No pong before our 101 is out, nor after our close.
            if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
                self.transport.write(_frame(0x80 | OP_PONG, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
            return 0
        # A pong: only the one answering the ping in flight counts.
        if self.pending_ping_payload is None or payload != self.pending_ping_payload:
            return 0
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self.schedule_ping()
        return 0

    cdef int _closed(self, long code, str reason, bytes payload) except -1:
        self.close_rcvd = True
        if self.close_sent:
            # The peer answered our close: the closing handshake is complete.
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
                self.transport.close()
            return 0
        if not self.transport.is_closing():
            self._put({"type": "websocket.disconnect", "code": code, "reason": reason}, 0)
            # Echo the peer's close payload, as websockets does (never ahead of our 101).
            if self.handshake_complete:
                self.transport.write(_frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
            self.transport.close()
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        """A protocol error: close with ``code`` and tell the app."""
        self.stopped = True
        self.payload = None
        self.fragments = None
        if self.close_sent:
            # Our close is already out: nothing more to say; drop the connection.
            self.transport.close()
            return 0
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason}, 0)
        if self.handshake_complete:
            self._write_close(code, reason)
        self.close_sent = True
        self.transport.close()
        return 0

    cdef int _write_close(self, long code, str reason) except -1:
        payload = _close_payload(code, reason)
        self.transport.write(_frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        return 0

    # -- the app's side ---------------------------------------------------------

    cdef int _put(self, dict message, Py_ssize_t size) except -1:
        self.queue.append(message)
        self.queue_bytes += size
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return 0

    cdef int _flow(self) except -1:
        """Stop reading while the app lags: ws_max_queue messages or a MiB waiting."""
        if not self.read_paused and (len(self.queue) >= self.max_queue or self.queue_bytes >= _QUEUE_BYTES_HIGH):
            if not self.transport.is_closing():
                self.read_paused = True
                self.transport.pause_reading()
        return 0

    async def receive(self):
        queue = self.queue
        while not queue:
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = self._create_future()
            try:
                await waiter
            finally:
                if self.waiter is waiter and waiter.done():
                    self.waiter = None
        message = queue.popleft()
        if not queue:
            self.queue_bytes = 0
        elif message["type"] == "websocket.receive":
            # Characters for text: an estimate that errs low; an empty queue resets it.
            self.queue_bytes -= len(message.get("text") or message.get("bytes") or b"")
            if self.queue_bytes < 0:
                self.queue_bytes = 0
        if self.read_paused and len(queue) <= self.max_queue // 2 and self.queue_bytes < _QUEUE_BYTES_HIGH // 2:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return message

    async def send(self, message):
        if self.write_paused:
            await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if type(message) is not dict:
            message = dict(message)  # any mapping will do, as with uvicorn's own protocols
        message_type = message["type"]
        if self.handshake_complete and self.initial_response is None:
            if not self.close_sent:
                if message_type == "websocket.send":
                    if self.close_rcvd:
                        raise ClientDisconnected()
                    self._send_data(message)
                    return
                if message_type == "websocket.close":
                    self._send_close(message)
                    return
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{message_type}'."
                )
            raise RuntimeError(f"Unexpected ASGI message '{message_type}', after sending 'websocket.close'.")
        if not self.handshake_complete and self.initial_response is None:
            if message_type == "websocket.accept":
                self._accept(message)
            elif message_type == "websocket.close":
                self._put({"type": "websocket.disconnect", "code": 1006}, 0)
                self.logger.info('%s - "WebSocket %s" 403', get_client_addr(self.scope),
                                 get_path_with_query_string(self.scope))
                self.close_sent = True
                self.handshake_complete = True
                self.stopped = True
                self.transport.write(_reject(403, ""))
                self.transport.close()
            elif message_type == "websocket.http.response.start":
                status = message["status"]
                if not (100 <= status < 600):
                    raise RuntimeError("Invalid HTTP status code '%d' in response." % status)
                self.logger.info('%s - "WebSocket %s" %d', get_client_addr(self.scope),
                                 get_path_with_query_string(self.scope), status)
                headers = [(name.decode("latin-1"), value.decode("latin-1"))
                           for name, value in list(message.get("headers", []))]
                self.initial_response = (status, headers, b"")
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{message_type}'."
                )
            return
        if self.initial_response is not None and not self.close_sent:
            if message_type != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{message_type}'.")
            status, headers, body = self.initial_response
            body = body + message["body"]
            self.initial_response = (status, headers, body)
            if not message.get("more_body", False):
                present = {name.lower() for name, _ in headers}
                for name, value in (
                    ("Date", None),
                    ("Connection", "close"),
                    ("Content-Length", str(len(body))),
                    ("Content-Type", "text/plain; charset=utf-8"),
                ):
                    if name.lower() not in present:
                        headers.append((name, value if value is not None else email.utils.formatdate(usegmt=True)))
                self._put({"type": "websocket.disconnect", "code": 1006}, 0)
                self.close_sent = True
                self.handshake_complete = True
                self.stopped = True
                self.transport.write(_http_response(status, headers, body))
                self.transport.close()
            return
        raise RuntimeError(f"Unexpected ASGI message '{message_type}', after sending 'websocket.close'.")

    cdef int _accept(self, dict message) except -1:
        self.logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(self.scope),
                         get_path_with_query_string(self.scope))
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
            self.accept_key.encode("ascii"), b"\r\n",
        ]
        if self.extension_header is not None:
            lines += [b"Sec-WebSocket-Extensions: ", self.extension_header.encode("ascii"), b"\r\n"]
        for name, value in self.default_headers:
            lines += [name.lower(), b": ", value, b"\r\n"]
        for name, value in message.get("headers", []):
            lines += [name.lower(), b": ", value, b"\r\n"]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            lines += [b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n"]
        lines.append(b"\r\n")
        if not self.transport.is_closing():
            self.handshake_complete = True
            self.transport.write(b"".join(lines))
            self.start_keepalive()
        return 0

    cdef int _send_data(self, dict message) except -1:
        cdef const char *data
        cdef Py_ssize_t n
        cdef int opcode
        payload = message.get("bytes")
        if payload is not None:
            opcode = OP_BINARY
            if type(payload) is not bytes:
                payload = bytes(payload)
            data = PyBytes_AS_STRING(payload)
            n = PyBytes_GET_SIZE(payload)
        else:
            payload = message.get("text")
            if payload is None:
                return 0
            opcode = OP_TEXT
            if type(payload) is str:
                data = PyUnicode_AsUTF8AndSize(payload, &n)
            else:
                payload = payload.encode()
                data = PyBytes_AS_STRING(payload)
                n = PyBytes_GET_SIZE(payload)
        if self.deflate:
            return self._send_compressed(opcode, data, n)
        self._write(_frame(0x80 | opcode, data, n))
        return 0

    cdef int _send_compressed(self, int opcode, const char *data, Py_ssize_t n) except -1:
        if self.local_no_context_takeover or self.encoder is None:
            self.encoder = zlib.compressobj(wbits=-self.local_bits, memLevel=5)
        encoder = self.encoder
        compressed = encoder.compress(PyBytes_FromStringAndSize(data, n)) + encoder.flush(zlib.Z_SYNC_FLUSH)
        # The sync flush ends with an empty stored block, which the peer re-appends (RFC 7692 7.2.1).
        compressed = compressed[:len(compressed) - 4]
        if self.local_no_context_takeover:
            self.encoder = None
        self.transport.write(_frame(0xC0 | opcode, PyBytes_AS_STRING(compressed), PyBytes_GET_SIZE(compressed)))
        return 0

    cdef int _send_close(self, dict message) except -1:
        if self.transport.is_closing():
            return 0
        code = message.get("code", 1000)
        reason = message.get("reason", "") or ""
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason}, 0)
        if code != 1005 and not _valid_close_code(code):
            raise RuntimeError(f"invalid close code {code}")
        payload = _close_payload(code, reason)
        if len(payload) > 125:
            raise RuntimeError("close reason is too long")
        self.transport.write(_frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        self.close_sent = True
        if self.read_paused:
            # Keep reading: the peer's close reply must get through.
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)
        return 0
