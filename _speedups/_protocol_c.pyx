"""The connection: uvicorn's websocket protocol, native (asyncio and ASGI state machine).

Behavioural reference: uvicorn's websockets-sansio protocol
(``uvicorn/protocols/websockets/websockets_sansio_impl.py``), itself built on
the ``websockets`` library's sans-I/O ``ServerProtocol``. Every ASGI message,
close code, log line and HTTP response here is chosen to match it; the
difference is that the per-frame work (header parsing, unmasking, UTF-8
validation, framing) is C, and no intermediate ``Frame`` objects, generators
or queues exist on the hot path.

The parts, one job per file:

- ``_frames_c`` (with ``unmask_utf8.h``): frames in and out; this class is
  its ``FrameReader``, so the hot path is ``data_received`` -> ``feed`` ->
  the ``_data_*`` hooks below -> ``_put``, and ``send`` -> ``_send_data``;
- ``turbows._handshake``: the upgrade request, the scope and the HTTP
  responses, with the checks on what the app asks us to write (cold, plain
  Python);
- ``_deflate_c``: permessage-deflate;
- ``FanoutWriter`` (below): the hub's way in, offered to the app as
  ``scope["extensions"]["turbows.fanout"]``.

What a client can make the server hold is bounded: memory for a message
follows the bytes received (``FrameReader``); reading stops, the parser at
the next frame boundary, while ``ws_max_queue`` messages or 1 MiB wait for
the app and while the transport's write buffer is above its high-water mark
(so pongs to a client that never reads cannot pile up); an exception while
reading fails the connection in one place (``_internal_error``).

Deliberate differences from sansio, each for conformance or robustness:

- a close frame between the fragments of a message closes normally (RFC 6455
  5.4; websockets fails it with 1002, Autobahn case 7.1.5 FAILS sansio);
- invalid UTF-8 fails as soon as the bad byte arrives, not at the frame's
  end (Autobahn 6.4.x: NON-STRICT for sansio, OK here);
- the handshake also requires exactly one Host header (RFC 6455 4.2.1);
- reading pauses as above, not after every message (sansio pauses and
  resumes per message, and keeps reading while its write buffer is full);
- nothing (pong, close) is written before the 101 response;
- the 101 response carries uvicorn's default headers, not websockets' own
  ``Server`` header besides them;
- headers and subprotocols with CR, LF or NUL are refused (as h11 refuses
  them under uvicorn's wsproto protocol);
- a denial response whose headers give its length is started when its start
  arrives (as uvicorn's wsproto and legacy protocols do);
- a keepalive timeout hands the app a 1011 disconnect (sansio's app sees 1005).

Threading: a protocol is driven by one event loop's thread, as every asyncio
protocol is; nothing here is shared between connections but immutable module
constants and the keepalive clock of their event loop (``_PingClock``, one per
loop and interval, found through a module-level weak dictionary).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport ceil
from libc.stdint cimport uint32_t

from turbows._deflate_c cimport PerMessageDeflate
from turbows._frames_c cimport (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TURBOWS_UTF8_REJECT,
    FrameReader,
    ServerFrame,
    close_payload,
    feed_object,
    frame,
    frame_header,
    turbows_utf8,
    valid_close_code,
)

cdef extern from "Python.h":
    # The UTF-8 of a str, cached on the object (ASCII strings: their own data): no copy.
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

import asyncio
import logging
import random
import struct
from asyncio import InvalidStateError
from asyncio import _get_running_loop
from weakref import WeakValueDictionary, ref
from zlib import error as ZlibError

from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)

from turbows._handshake import (
    Refused,
    accept_response,
    check_handshake,
    checked_headers,
    checked_subprotocol,
    denial_head,
    get_all,
    negotiate_deflate,
    parse_extensions,
    parse_request,
    reject,
    websocket_scope,
)

cdef object _logger = logging.getLogger("uvicorn.error")
# Reading pauses once this many bytes wait for the app, whatever the message count.
cdef Py_ssize_t _QUEUE_BYTES_HIGH = 1 << 20
# Binary payloads from this size are written apart from their header, not copied into a frame.
cdef Py_ssize_t _WRITE_APART = 1 << 16
# Why reading is paused (WebSocketProtocol.pausing).
cdef enum:
    _PAUSED_BY_QUEUE = 1   # the app lags
    _PAUSED_BY_WRITES = 2  # the transport's write buffer is above its high-water mark


#: The ASGI scope extension under which each connection offers its FanoutWriter.
FANOUT_EXTENSION = "turbows.fanout"

# FanoutWriter.write_frame's answers.
cdef enum:
    _SKIPPED = 0   # over max_pending: not queued
    _QUEUED = 1
    _OVER = -1     # the connection is over for sending (closed, closing or lost)

cdef class FanoutWriter
cdef class _PingClock


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
    # Bound once, so no write looks the method up (about 170 instructions a
    # message, measured with callgrind): every byte out goes through _write.
    cdef object _write
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
    cdef public bint response_started  # the denial response's head is written
    cdef bytearray request_head
    cdef str accept_key
    cdef object extension_header

    # Messages for the app, oldest first, and the futures waiting receive() calls
    # sleep on, one each: the oldest's, then any others' in order (concurrent
    # receive() calls are rare; the common case costs no list operation).
    # A list, not a deque: it holds a few messages at most (parsing pauses at
    # ws_max_queue, 32 by default, so pop(0) moves a few pointers), and an idle
    # connection's empty list is 56 bytes where a deque is 760. `later_waiters`
    # exists only once concurrent receives have waited.
    cdef list queue
    cdef object waiter
    cdef list later_waiters
    cdef Py_ssize_t queue_bytes
    cdef Py_ssize_t max_queue

    # Flow control. Reading stops (the transport's, and parsing at the next
    # frame boundary) while any reason in `pausing` holds and our close is not
    # out; bytes already read wait in `unread`, parsed in order once it clears.
    cdef int pausing
    cdef public bint read_paused
    cdef bytes unread
    cdef bint parse_scheduled
    cdef bint write_paused
    # Set while writing is not paused; created the first time it is (most
    # connections never are: an idle one need not carry an Event and its deque).
    cdef object writable
    cdef Py_ssize_t sends_waiting  # the app's sends waiting on `writable`

    # Keepalive.
    cdef public object ping_interval
    cdef public object ping_timeout
    # The timer of the bucket our next ping is in (shared with the connections due
    # then: never cancel it, stop_keepalive() takes us out), or None.
    cdef public object ping_timer
    cdef _PingClock ping_clock
    cdef long long ping_bucket
    cdef public object pong_timer
    cdef public object pending_ping_payload
    cdef public double ping_sent_at
    cdef public double last_ping_rtt

    # The message being received (its raw bytes are held by FrameReader).
    cdef uint32_t utf8_state
    cdef bytearray inflated      # a fragmented compressed message, inflated so far
    # permessage-deflate, where negotiated (self.deflate)
    cdef PerMessageDeflate deflater

    # The hub's writer, made with the scope (see FanoutWriter)
    cdef FanoutWriter fanout

    def __init__(self, config, server_state, app_state, _loop=None, on_connection_lost=None):
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
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
        self.response_started = False
        self.request_head = bytearray()

        self.queue = []
        self.waiter = None
        self.later_waiters = None
        self.queue_bytes = 0
        # uvicorn's ws_max_queue (32 by default) bounds how far the app may lag.
        self.max_queue = max(1, getattr(config, "ws_max_queue", 32) or 32)
        self.pausing = 0
        self.read_paused = False
        self.unread = None
        self.parse_scheduled = False
        self.write_paused = False
        self.writable = None

        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.ping_timer = None
        self.ping_clock = None
        self.ping_bucket = 0
        self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0

        max_size = config.ws_max_size
        self.max_size = max_size if max_size is not None else -1
        self.deflate = False
        self.deflater = None
        self.inflated = None
        self.fanout = None

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
        self.unread = None
        self.discard()
        self.inflated = None
        if self.fanout is not None:
            # Never to be written; and the writer lets go of us (the scope holds it, it
            # held us: a cycle), so this protocol is freed by its last reference going.
            self.fanout._drop()
            self.fanout.protocol = None
        # Unblock any send() waiting for the buffer to drain: it never will now.
        if self.writable is not None:
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
        # Above the transport's high-water mark: the app's sends wait, and
        # reading stops too, so a peer that sends pings and never reads cannot
        # grow our write buffer with pongs.
        self.write_paused = True
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()
        self._pause(_PAUSED_BY_WRITES)

    def resume_writing(self):
        self.write_paused = False
        if self.writable is not None:
            self.writable.set()
        self._unpause(_PAUSED_BY_WRITES)
        if self.fanout is not None and self.fanout.frames and not self.fanout.scheduled:
            self.fanout._schedule(self)

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
            self._flush_fanout()  # what the hub queued (and counted as delivered) before the close
            if not self.close_rcvd and not self.transport.is_closing():
                self._write(frame(0x80 | OP_CLOSE, b"\x03\xf4", 2))
            self.close_sent = True
        else:
            self.send_500_response()
        self.transport.close()

    def data_received(self, data):
        try:
            if self.unread is None and self.handshake_initiated and not self.stopped:
                self.unread = feed_object(self, data)  # the common case, inline
            else:
                self._received(data)
        except Exception as error:
            self._internal_error(error)

    cdef int _received(self, data) except -1:
        if not self.handshake_initiated:
            data = self._request_head(data)
            if not data:
                return 0
        if self.stopped:
            return 0
        if self.unread is not None:
            # Parsing stopped for flow control: these come after the bytes held.
            self.unread += data
            return 0
        self.unread = feed_object(self, data)
        return 0

    cdef object _request_head(self, data):
        """Collect the upgrade request; once it is in, handle it and return the
        bytes after it (frames a client sent before our 101), else None."""
        self.request_head += data
        end = self.request_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.request_head) > 65536:
                self._refuse(Refused(431, "Failed to open a WebSocket connection: request headers too large.\n"))
            return None
        head = bytes(self.request_head[:end])
        rest = bytes(self.request_head[end + 4:])
        self.request_head = None
        self.handshake_initiated = True
        if not self._handle_connect(head):
            return None
        return rest

    cdef int _internal_error(self, error) except -1:
        """The one place an exception raised while reading ends up: the
        connection fails cleanly, never leaving the reader mid-frame, and
        nothing escapes data_received into asyncio's fatal-error path. Running
        out of memory for a message is a 1009; anything else, a 1011 (a 500
        where the app has not started)."""
        self.stopped = True
        self.unread = None
        try:
            if isinstance(error, MemoryError):
                self.logger.warning("Out of memory while reading a WebSocket connection; closing it")
                code, reason = 1009, "message too big"
            else:
                self.logger.error("Exception while reading a WebSocket connection", exc_info=error)
                code, reason = 1011, "internal error"
            if self.scope is None:
                if not self.transport.is_closing():
                    self._refuse(Refused(500, "Internal Server Error"))
            else:
                self._fail(code, reason)
        except Exception:
            self.transport.abort()
        return 0

    # -- the handshake ------------------------------------------------------

    cdef int _refuse(self, refused) except -1:
        self.handshake_initiated = True
        self.handshake_complete = True
        self.close_sent = True
        self.stopped = True
        self._write(reject(refused.status, refused.text, refused.headers))
        self.transport.close()
        return 0

    cdef bint _handle_connect(self, bytes head) except -1:
        try:
            method, target, version, headers = parse_request(head)
            self.accept_key = check_handshake(method, version, headers)
            self.extension_header = None
            if self.config.ws_per_message_deflate:
                negotiated = negotiate_deflate(parse_extensions(get_all(headers, "sec-websocket-extensions")))
                if negotiated is not None:
                    self.extension_header, params = negotiated
                    self.deflater = PerMessageDeflate(*params)
                    self.deflate = True
        except Refused as refused:
            self._refuse(refused)
            return False
        self.scope = websocket_scope(
            target, headers, scheme=self.scheme, server=self.server, client=self.client,
            root_path=self.root_path, asgi_version=self.asgi_version, state=self.app_state.copy(),
        )
        self.fanout = FanoutWriter.__new__(FanoutWriter)
        self.fanout.protocol = self
        self.scope["extensions"][FANOUT_EXTENSION] = self.fanout
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
            # An app that returns in the turn it published in: the hub's frames, queued for
            # the loop's next turn (and counted as delivered), go out before the transport closes.
            self._flush_fanout()
            self.transport.close()

    cdef int _flush_fanout(self) except -1:
        if self.fanout is not None and self.fanout.frames:
            self.fanout._write_out()
        return 0

    def send_500_response(self):
        if self.initial_response is not None:
            self._flush_denial()
            return
        if self.handshake_complete:
            return
        self._write(reject(500, "Internal Server Error"))

    # -- keepalive ----------------------------------------------------------

    def start_keepalive(self):
        if self.ping_interval is not None and self.ping_interval > 0:
            self.schedule_ping()

    def stop_keepalive(self):
        if self.ping_timer is not None:
            self.ping_clock.discard(self)
            self.ping_timer = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        self.pending_ping_payload = None

    def schedule_ping(self):
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        if self.ping_clock is None:
            self.ping_clock = _ping_clock(self.loop, self.ping_interval)
        if self.ping_timer is not None:
            self.ping_clock.discard(self)
        self.ping_timer = self.ping_clock.add(self, delay)

    def send_keepalive_ping(self):
        self.ping_timer = None
        if self.close_sent or self.close_rcvd or self.transport.is_closing():
            return
        # A random payload identifies this ping; stale or unsolicited pongs are ignored.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self._write(frame(0x80 | OP_PING, self.pending_ping_payload, 4))
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
        # The app learns why, as from any failure we close with (sansio's app sees 1005 here).
        self._put({"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}, 0)
        self._write_close(1011, "keepalive ping timeout")
        self.close_sent = True
        self.stopped = True
        self.transport.close()

    # -- frames in ------------------------------------------------------------

    cdef int _data_start(self) except -1:
        if self.opcode != OP_CONT:
            self.utf8_state = 0
            if self.compressed:
                # self.compressed implies permessage-deflate was negotiated (FrameReader checks RSV1).
                self.deflater.start_message()
        return 0

    cdef int _data_chunk(self, const unsigned char *data, Py_ssize_t n) except -1:
        # Validate text as it arrives, so invalid UTF-8 fails before the frame ends.
        if self.msg_opcode == OP_TEXT and not self.compressed:
            self.utf8_state = turbows_utf8(self.utf8_state, data, <size_t>n)
            if self.utf8_state == TURBOWS_UTF8_REJECT:
                return self._fail(1007, "invalid UTF-8")
        return 0

    cdef int _data_end(self) except -1:
        cdef object data = None
        cdef Py_ssize_t size
        if self.compressed:
            # Inflated frame by frame; a fragmented message's output gathers in one buffer.
            data = self._inflate(self.take_bytes())
            if data is None:
                return 0
            size = PyBytes_GET_SIZE(data)
            if self.msg_opcode == OP_TEXT:
                self.utf8_state = turbows_utf8(self.utf8_state, <const unsigned char *>PyBytes_AS_STRING(data), <size_t>size)
                if self.utf8_state == TURBOWS_UTF8_REJECT:
                    return self._fail(1007, "invalid UTF-8")
            self.msg_size += size
            if self.inflated is not None or not self.fin:
                if self.inflated is None:
                    self.inflated = bytearray()
                self.inflated += data
                if not self.fin:
                    return 0
                data = bytes(self.inflated)
                self.inflated = None
        else:
            # Fragments stay held by the reader, appended in one buffer, until the last.
            self.msg_size += self.length
            if not self.fin:
                return 0
        if self.close_sent:
            # The app is past websocket.close: discard, keep reading for the peer's close.
            self.discard()
            return 0
        size = self.msg_size
        if self.msg_opcode == OP_TEXT:
            if self.utf8_state != 0:
                return self._fail(1007, "invalid UTF-8")
            if data is None:
                text = self.take_text()
            else:
                text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(data), size, NULL)
            self._put({"type": "websocket.receive", "text": text}, size)
        else:
            self._put({"type": "websocket.receive", "bytes": self.take_bytes() if data is None else data}, size)
        self._flow()
        return 0

    cdef object _inflate(self, bytes data):
        """Decompress one frame's payload, bounded by what is left of ws_max_size; None on failure."""
        cdef Py_ssize_t limit = self.max_size - self.msg_size if self.max_size >= 0 else -1
        try:
            out = self.deflater.decompress(data, self.fin, limit)
        except ZlibError:
            self._fail(1002, "decompression failed")
            return None
        if out is None:
            self._fail(1009, f"message exceeds limit of {self.max_size} bytes")
        return out

    cdef int _control(self, int opcode, bytes payload) except -1:
        if opcode == OP_PING:
            # No pong before our 101 is out, nor after our close.
            if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
                self._write(frame(0x80 | OP_PONG, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
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
                self._write(frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
            self.transport.close()
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        """A protocol error: close with ``code`` and tell the app."""
        self.stopped = True
        self.unread = None
        self.discard()
        self.inflated = None
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
        payload = close_payload(code, reason)
        self._write(frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        return 0

    # -- the app's side ---------------------------------------------------------

    cdef int _put(self, dict message, Py_ssize_t size) except -1:
        self.queue.append(message)
        self.queue_bytes += size
        if self.waiter is not None:
            self._wake()
        return 0

    cdef int _wake(self) except -1:
        """Wake the oldest receive() still waiting. Each has its own future, so
        cancelling one never wakes the others with CancelledError."""
        while self.waiter is not None:
            waiter = self.waiter
            self.waiter = self.later_waiters.pop(0) if self.later_waiters else None
            try:
                waiter.set_result(None)
                return 0
            except InvalidStateError:
                pass  # cancelled while it waited: the next one
        return 0

    cdef int _forget(self, waiter) except -1:
        """A receive() cancelled while it waited leaves the line."""
        if self.waiter is waiter:
            self.waiter = self.later_waiters.pop(0) if self.later_waiters else None
        elif self.later_waiters is not None and waiter in self.later_waiters:
            self.later_waiters.remove(waiter)
        return 0

    cdef int _flow(self) except -1:
        """After every message queued: stop reading while the app lags
        (ws_max_queue messages, or a MiB, wait for it)."""
        if len(self.queue) >= self.max_queue or self.queue_bytes >= _QUEUE_BYTES_HIGH:
            self._pause(_PAUSED_BY_QUEUE)
        return 0

    cdef int _pause(self, int reason) except -1:
        self.pausing |= reason
        if self.close_sent:
            return 0  # closing: keep reading, so the peer's close gets through
        self.paused = True  # FrameReader stops at the next frame boundary
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()
        return 0

    cdef int _unpause(self, int reason) except -1:
        self.pausing &= ~reason
        return self._update_reading()

    cdef int _update_reading(self) except -1:
        """Resume reading if no reason to pause holds (or our close is out):
        the bytes held first, from the event loop, then the transport's."""
        if self.pausing and not self.close_sent:
            return 0
        self.paused = False
        if self.unread is not None and not self.stopped:
            if not self.parse_scheduled:
                self.parse_scheduled = True
                self.loop.call_soon(self._parse_unread)
            return 0
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return 0

    def _parse_unread(self):
        self.parse_scheduled = False
        data, self.unread = self.unread, None
        if data is not None and not self.stopped:
            try:
                self._received(data)
            except Exception as error:
                self._internal_error(error)
        self._update_reading()

    async def receive(self):
        queue = self.queue
        while not queue:
            waiter = self.loop.create_future()
            if self.waiter is None:
                self.waiter = waiter
            elif self.later_waiters is None:
                self.later_waiters = [waiter]
            else:
                self.later_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.cancelled():
                    self._forget(waiter)
                elif queue:
                    self._wake()  # woken, then cancelled: the message is the next waiter's
                raise
        message = queue.pop(0)
        if not queue:
            self.queue_bytes = 0
        elif message["type"] == "websocket.receive":
            # Characters for text: an estimate that errs low; an empty queue resets it.
            self.queue_bytes -= len(message.get("text") or message.get("bytes") or b"")
            if self.queue_bytes < 0:
                self.queue_bytes = 0
        if self.pausing & _PAUSED_BY_QUEUE and len(queue) <= self.max_queue // 2 \
                and self.queue_bytes < _QUEUE_BYTES_HIGH // 2:
            self._unpause(_PAUSED_BY_QUEUE)
        return message

    async def send(self, message):
        cdef Py_ssize_t mark = -1
        if self.write_paused:
            if self.fanout is not None:
                # The hub's frames queued while this send waits come after it, as handed over.
                mark = self.fanout.appended
            # While any send waits, the writer's turn holds its frames: the first send
            # to wake writes those queued before it, then its own (see _write_before).
            self.sends_waiting += 1
            try:
                await self.writable.wait()
            finally:
                self.sends_waiting -= 1
                if self.sends_waiting == 0 and self.fanout is not None and self.fanout.frames \
                        and not self.fanout.scheduled:
                    self.fanout._schedule(self)  # none left to write them: the turn does
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
                    self._send_data(message, mark)
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
                self._write(reject(403, ""))
                self.transport.close()
            elif message_type == "websocket.http.response.start":
                self._start_denial(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{message_type}'."
                )
            return
        if self.initial_response is not None and not self.close_sent:
            if message_type != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{message_type}'.")
            self._denial_body(message)
            return
        raise RuntimeError(f"Unexpected ASGI message '{message_type}', after sending 'websocket.close'.")

    # -- a denial response (the ASGI websocket.http.response extension) ---------
    #
    # As uvicorn's wsproto and legacy protocols do, the response start is
    # written when it arrives, so the client gets the app's status even if the
    # body never comes, where the app's headers say how long the body is.
    # Where they do not, the response is held until the body is complete and
    # written with its Content-Length (sansio's response); should the app end
    # first, what it sent is written then, the body ending with the connection.

    cdef int _start_denial(self, dict message) except -1:
        status = message["status"]
        if not (100 <= status < 600):
            raise RuntimeError("Invalid HTTP status code '%d' in response." % status)
        headers = checked_headers(message.get("headers", []), "websocket.http.response.start")
        self.logger.info('%s - "WebSocket %s" %d', get_client_addr(self.scope),
                         get_path_with_query_string(self.scope), status)
        self.initial_response = (status, headers, b"")
        if any(name.lower() == b"content-length" for name, _ in headers):
            self.response_started = True
            self._write(denial_head(status, headers, None))
        return 0

    cdef int _denial_body(self, dict message) except -1:
        status, headers, body = self.initial_response
        chunk = bytes(message["body"])
        if self.response_started:
            if chunk:
                self._write(chunk)
        else:
            body = body + chunk
            self.initial_response = (status, headers, body)
        if not message.get("more_body", False):
            if not self.response_started:
                self.response_started = True
                self._write(denial_head(status, headers, len(body)) + body)
            self._put({"type": "websocket.disconnect", "code": 1006}, 0)
            self.close_sent = True
            self.handshake_complete = True
            self.stopped = True
            self.transport.close()
        return 0

    cdef int _flush_denial(self) except -1:
        """The app ended with its denial response held: write what it sent."""
        if self.initial_response is not None and not self.response_started and not self.transport.is_closing():
            status, headers, body = self.initial_response
            self.response_started = True
            self._write(denial_head(status, headers, None) + body)
        return 0

    cdef int _accept(self, dict message) except -1:
        self.logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(self.scope),
                         get_path_with_query_string(self.scope))
        response = accept_response(
            self.accept_key, self.extension_header, self.default_headers,
            checked_headers(message.get("headers", []), "websocket.accept"),
            checked_subprotocol(message.get("subprotocol")),
        )
        self.accept_key = None  # needed no longer: an idle connection holds no more than it must
        self.extension_header = None
        if not self.transport.is_closing():
            self.handshake_complete = True
            self._write(response)
            self.start_keepalive()
        return 0

    cdef int _send_data(self, dict message, Py_ssize_t mark=-1) except -1:
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
        if self.fanout is not None and self.fanout.frames:
            # What the hub queued came first (up to `mark`, where this send waited: the
            # frames queued after wait for it); with context takeover, the compressor's
            # order must also be the wire's.
            self.fanout._write_before(mark)
        if self.fanout is not None:
            self.fanout.buffered = -1  # our write below changes the transport's buffer
        if self.deflate:
            return self._send_compressed(opcode, data, n)
        if n >= _WRITE_APART and opcode == OP_BINARY:
            # A large payload goes to the transport as it is, after its own header,
            # with no copy into a frame. Two writes, not writelines(): asyncio's
            # selector transport on 3.12+ does not apply flow control in writelines()
            # (no pause_writing however much it buffers).
            self._write(frame_header(0x80 | opcode, n))
            self._write(payload)
            return 0
        self._write(frame(0x80 | opcode, data, n))
        return 0

    cdef int _send_compressed(self, int opcode, const char *data, Py_ssize_t n) except -1:
        payload = self.deflater.compress(data, n)
        self._write(frame(0xC0 | opcode, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        return 0

    cdef int _send_close(self, dict message) except -1:
        if self.transport.is_closing():
            return 0
        code = message.get("code", 1000)
        reason = message.get("reason", "") or ""
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason}, 0)
        if code != 1005 and not valid_close_code(code):
            raise RuntimeError(f"invalid close code {code}")
        payload = close_payload(code, reason)
        if len(payload) > 125:
            raise RuntimeError("close reason is too long")
        if self.fanout is not None and self.fanout.frames:
            self.fanout._write_out()  # the hub's frames queued before the close go before it
        self._write(frame(0x80 | OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        self.close_sent = True
        # Keep reading, whatever paused it: the peer's close reply must get through.
        self._update_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)
        return 0


# -- keepalive pings -------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class _PingClock:
    """The next keepalive ping of every connection on one event loop (with one
    ping interval), gathered in buckets of ``tick`` seconds with one loop timer
    per bucket rather than one per connection: a timer per connection (uvloop's
    handle, its libuv timer, a context and a bound method) was about half a KiB
    of an idle connection's memory. A ping goes out up to one tick late; a tick
    is a tenth of the interval, at most a second (uvicorn's default interval is
    20 s). Not constructible from Python; _ping_clock() hands them out."""

    cdef object loop_ref   # weakly: the clocks are found by loop, and must not keep one alive
    cdef double tick
    cdef dict buckets      # bucket index -> {protocol: None}, the connections due then, in order
    cdef dict timers       # bucket index -> the loop's timer for it
    cdef object __weakref__

    def __cinit__(self):
        self.buckets = {}
        self.timers = {}

    def __init__(self, *args, **kwargs):
        raise TypeError("_PingClock is internal to turbows' protocol")

    cdef object add(self, WebSocketProtocol protocol, double delay):
        """Schedule ``protocol``'s ping ``delay`` seconds from now (rounded up to a
        tick); the bucket's timer, shared, is returned."""
        cdef long long index = <long long>ceil((protocol.loop.time() + delay) / self.tick)
        due = self.buckets.get(index)
        if due is None:
            due = self.buckets[index] = {}
            self.timers[index] = protocol.loop.call_at(index * self.tick, self._fire, index)
        due[protocol] = None
        protocol.ping_bucket = index
        return self.timers[index]

    cdef int discard(self, WebSocketProtocol protocol) except -1:
        due = self.buckets.get(protocol.ping_bucket)
        if due is not None:
            due.pop(protocol, None)
            if not due:
                del self.buckets[protocol.ping_bucket]
                self.timers.pop(protocol.ping_bucket).cancel()
        return 0

    def _fire(self, long long index):
        due = self.buckets.pop(index, None)
        self.timers.pop(index, None)
        if due is None:
            return
        for protocol in due:
            if (<WebSocketProtocol>protocol).ping_timer is None or (<WebSocketProtocol>protocol).ping_bucket != index:
                continue  # stopped, or moved, by a ping sent before it in this bucket
            (<WebSocketProtocol>protocol).ping_timer = None
            try:
                protocol.send_keepalive_ping()
            except Exception as error:
                # As a failing timer callback of its own would be: reported, the others still pinged.
                (<WebSocketProtocol>protocol).loop.call_exception_handler({
                    "message": "Exception in a WebSocket keepalive ping",
                    "exception": error,
                    "protocol": protocol,
                })


cdef object _clocks = WeakValueDictionary()  # (id(loop), interval) -> _PingClock


cdef _PingClock _ping_clock(object loop, double interval):
    key = (id(loop), interval)
    cdef _PingClock clock = _clocks.get(key)
    if clock is None or clock.loop_ref() is not loop:  # none yet, or a dead loop's id reused
        clock = _PingClock.__new__(_PingClock)
        clock.loop_ref = ref(loop)
        clock.tick = min(1.0, interval / 10)
        _clocks[key] = clock
    return clock


# -- the hub's fan-out ----------------------------------------------------------

@cython.final
@cython.auto_pickle(False)  # a copy would be a second writer on the same connection
cdef class FanoutWriter:
    """One connection's way in for ``turbows.Hub``: pre-built frames written
    with no task, coroutine or ASGI message per connection.

    The protocol makes one with each connection's scope and offers it as
    ``scope["extensions"]["turbows.fanout"]``. ``write_frame`` (or
    ``write_to_all`` below, for many connections at once) queues a
    ``ServerFrame``, compressed for this connection where it negotiated
    permessage-deflate; the frames queued are written once per event-loop
    turn, all in one ``transport.writelines``, and held while the transport
    is paused (above its high-water mark). ``pending``: the bytes queued here
    plus the transport's write buffer, which is what ``max_pending`` bounds.

    The protocol's state rules it: frames go out only once the app accepted
    and until a close is sent or received (after that they are dropped);
    the app's own sends and close write what is queued first, so the wire
    order is the order things were handed to the server, and frames never
    land inside another (every send of this protocol writes whole frames).
    """

    cdef WebSocketProtocol protocol
    # Frames queued for the next write (None until the first), and their bytes.
    cdef list frames
    cdef Py_ssize_t queued
    # Frames ever queued: frames[0] is number `appended - len(frames)` (an app's send marks its place).
    cdef Py_ssize_t appended
    cdef bint scheduled
    # The transport's write buffer as last read, or -1: read it again. It is
    # read once per write of ours (the app's sends mark it stale), not per
    # frame; between two reads it can only have shrunk, but for pongs.
    cdef Py_ssize_t buffered
    # The transport was found closing: nothing will be written again.
    cdef bint dead
    #: Transport writes made, and the frames they carried: what coalescing saves.
    cdef readonly Py_ssize_t writes
    cdef readonly Py_ssize_t frames_written

    def __cinit__(self):
        self.buffered = -1

    def __init__(self, *args, **kwargs):
        raise TypeError("FanoutWriter objects are made by turbows' protocol, one per connection")

    def __repr__(self):
        return (f"<turbows FanoutWriter {'closed' if self._over() else 'open'}, "
                f"{self.queued} bytes queued, {self.writes} writes>")

    cdef inline bint _ended(self) noexcept:
        """The protocol's own word that nothing more may be written (no call into the transport)."""
        cdef WebSocketProtocol protocol = self.protocol
        return (self.dead or protocol is None or protocol.disconnected or protocol.close_sent
                or protocol.close_rcvd or protocol.transport is None)

    cdef int _over(self) except -1:
        """Whether the connection is over for sending: frames would never reach the peer."""
        cdef WebSocketProtocol protocol = self.protocol  # held: is_closing() may run other threads' code
        if self._ended():
            return 1
        if protocol.transport.is_closing():
            self.dead = True
            return 1
        return 0

    @property
    def closed(self):
        """Whether the connection is over for sending (closed, closing or lost)."""
        return bool(self._over())

    @property
    def asgi_send(self):
        """The ASGI ``send`` this connection's app was given (None once the connection is lost):
        the hub bypasses ``send`` only where the app's WebSocket sends through this one."""
        cdef WebSocketProtocol protocol = self.protocol
        return None if protocol is None else protocol.send

    @property
    def pending(self):
        """Bytes queued here plus the transport's write buffer."""
        cdef WebSocketProtocol protocol = self.protocol
        if self._ended():
            return self.queued
        self.buffered = -1
        return self.queued + self._buffered(protocol)

    cdef Py_ssize_t _buffered(self, WebSocketProtocol protocol) except -1:
        """The transport's write buffer (the transport being there: see _ended). ``protocol``
        is the caller's reference, held: ``self.protocol`` may be cleared meanwhile."""
        if self.buffered < 0:
            self.buffered = protocol.transport.get_write_buffer_size()
        return self.buffered

    cdef int _check_thread(self, WebSocketProtocol protocol, object running) except -1:
        """Refuse a call from anywhere but the connection's own loop: a write from another
        thread would interleave with the loop's own (connection_lost among them)."""
        if running is not protocol.loop:
            raise RuntimeError(
                "a FanoutWriter is used from its connection's event loop only "
                "(use loop.call_soon_threadsafe from another thread)")
        return 0

    def write_frame(self, ServerFrame frame not None, Py_ssize_t max_pending=-1):
        """Queue ``frame`` for the next write, unless more than ``max_pending``
        bytes would then be pending (-1: no bound; a connection with nothing
        pending always takes it). Returns 1 (queued), 0 (skipped: over the
        bound) or -1 (the connection is over; nothing is queued)."""
        return self._offer(frame, max_pending, _get_running_loop())

    cdef int _offer(self, ServerFrame message, Py_ssize_t max_pending, object running) except -2:
        cdef bytes data
        cdef Py_ssize_t pending, n
        cdef bint takeover
        cdef WebSocketProtocol protocol = self.protocol
        if self._ended():
            self._drop()
            return _OVER
        self._check_thread(protocol, running)
        if not protocol.handshake_complete:
            raise RuntimeError("this connection is not accepted yet: nothing can be written to it")
        # With context takeover the compressor takes the message for good: a
        # frame compressed and then not queued (skipped, or a call below
        # raising) leaves the peer's inflater behind ours, and its next message
        # refers back to bytes it never got. So compression comes last, once
        # the frame is certain to be queued, and the bound is judged on the
        # uncompressed size (an estimate that errs high).
        takeover = protocol.deflate and not protocol.deflater.local_no_context_takeover
        if takeover or not protocol.deflate:
            data = None
            n = PyBytes_GET_SIZE(message.data)
        else:
            data = self._compressed(protocol, message)  # shared, and no state of ours: safe before the bound
            n = PyBytes_GET_SIZE(data)
        if max_pending >= 0:
            pending = self.queued + self._buffered(protocol)
            if pending and pending + n > max_pending:
                # The buffer read may be old: it may have drained since. Read it again.
                self.buffered = -1
                pending = self.queued + self._buffered(protocol)
                if pending and pending + n > max_pending:
                    return _SKIPPED
        if self.frames is None:
            self.frames = []
        if not self.scheduled:
            self._schedule(protocol)
        if data is None:
            data = self._compressed(protocol, message) if takeover else message.data
            n = PyBytes_GET_SIZE(data)
        self.frames.append(data)
        self.queued += n
        self.appended += 1
        return _QUEUED

    cdef bytes _compressed(self, WebSocketProtocol protocol, ServerFrame message):
        """``message`` for a connection that negotiated permessage-deflate.
        Without context takeover the output depends only on the payload and
        the window bits: compressed once per message and window size, shared.
        With it, this connection's compressor takes the message now, in the
        order the frames are written."""
        cdef PerMessageDeflate deflater = protocol.deflater
        cdef bytes payload
        cdef bytes data
        cdef object bits = deflater.local_max_window_bits
        cdef bint shared = deflater.local_no_context_takeover
        if shared:
            if message.compressed is None:
                message.compressed = {}
            else:
                data = message.compressed.get(bits)
                if data is not None:
                    return data
        payload = deflater.compress(message.raw, message.size)
        data = frame(0xC0 | message.opcode, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
        if shared:
            message.compressed[bits] = data
        return data

    cdef int _schedule(self, WebSocketProtocol protocol) except -1:
        """Have the frames written on the loop's next turn, with every other writer's (see _Turn)."""
        global _turn
        cdef _Turn turn = _turn
        loop = protocol.loop
        if turn is None or turn.loop is not loop:
            turn = _Turn.__new__(_Turn)
            turn.loop = loop
            turn.writers = []
            loop.call_soon(turn.run)
            _turn = turn
        turn.writers.append(self)
        self.scheduled = True
        return 0

    cdef int _flush(self) except -1:
        """On the loop's turn: write what is queued (held while paused: resume_writing comes back)."""
        cdef WebSocketProtocol protocol = self.protocol
        self.scheduled = False
        if self.frames and not (protocol is not None and (protocol.write_paused or protocol.sends_waiting)
                                and not self._over()):
            self._write_out()
        return 0

    cdef int _write_out(self) except -1:
        """Write every frame queued, in one call (or drop them, the connection being over)."""
        cdef list frames = self.frames
        cdef WebSocketProtocol protocol = self.protocol
        if not frames:
            return 0
        if self._over():
            return self._drop()
        self.frames = None
        self.queued = 0
        self.buffered = -1
        self.writes += 1
        self.frames_written += len(frames)
        if len(frames) == 1:
            protocol._write(frames[0])
        else:
            protocol.transport.writelines(frames)
        return 0

    cdef int _write_before(self, Py_ssize_t mark) except -1:
        """Write the frames queued before ``mark`` (a count of ``appended``; -1: all); the rest
        stay queued for the loop's turn."""
        cdef list frames = self.frames
        cdef list later
        cdef Py_ssize_t ahead, n = 0
        cdef WebSocketProtocol protocol = self.protocol
        if not frames:
            return 0
        ahead = len(frames) if mark < 0 else mark - (self.appended - len(frames))
        if ahead >= len(frames):
            return self._write_out()
        if ahead <= 0:
            if not self.scheduled:
                self._schedule(protocol)  # the turn held them for this send: they are the turn's again
            return 0
        later = frames[ahead:]
        for data in later:
            n += PyBytes_GET_SIZE(<bytes>data)
        self.frames = frames[:ahead]
        self.queued -= n
        self._write_out()
        if self.frames is None and not self._ended():  # written, not dropped: the rest wait for their turn
            self.frames = later
            self.queued = n
            if not self.scheduled:
                self._schedule(protocol)
        return 0

    cdef int _drop(self) except -1:
        self.frames = None
        self.queued = 0
        return 0

    def close(self, code=1000, reason=""):
        """Close the connection now with ``code`` and ``reason`` (the app's
        receive gets the disconnect, as after its own close); frames still
        queued are dropped. Returns whether a close was sent (False: the
        connection was over already)."""
        if type(code) is not int:
            raise TypeError(f"a close code is an int, got {type(code).__name__}")
        if type(reason) is not str:
            raise TypeError(f"a close reason is a str, got {type(reason).__name__}")
        if not valid_close_code(code):
            raise ValueError(f"invalid close code {code}")
        if len(close_payload(code, reason)) > 125:
            raise ValueError("close reason is too long (at most 123 bytes of UTF-8)")
        cdef WebSocketProtocol protocol = self.protocol  # held: see _buffered
        if self._ended():
            self._drop()
            return False
        self._check_thread(protocol, _get_running_loop())
        self._drop()
        if self._over():
            return False
        if not protocol.handshake_complete:
            raise RuntimeError("this connection is not accepted yet: it cannot be closed from here")
        protocol._send_close({"type": "websocket.close", "code": code, "reason": reason})
        return True


@cython.final
@cython.auto_pickle(False)
cdef class _Turn:
    """The writers with frames queued on one event loop, written in one
    callback on its next turn: one ``call_soon`` per turn, not one per
    connection. ``_turn`` is the one being filled; a writer on another
    loop (another thread) starts a turn of its own there, and each turn
    writes only its own writers, so nothing is written from the wrong loop."""

    cdef object loop
    cdef list writers

    def __init__(self, *args, **kwargs):
        raise TypeError("made by FanoutWriter")

    def run(self):
        global _turn
        cdef FanoutWriter writer
        cdef list writers
        cdef Py_ssize_t index = 0, count
        if _turn is self:
            _turn = None  # writers queueing from now on go to the next turn
        writers, self.writers = self.writers, None
        if writers is None:
            return
        count = len(writers)
        try:
            while index < count:
                writer = <FanoutWriter>writers[index]
                index += 1
                try:
                    writer._flush()
                except Exception as error:  # one connection's failure: the others still get theirs
                    writer._drop()
                    _logger.error("turbows fan-out: writing to a connection failed", exc_info=error)
        finally:
            # A BaseException (KeyboardInterrupt, a cancelled loop) ends the loop over the writers:
            # the rest are not scheduled any more, or none would ever be again (_offer schedules
            # only a writer that is not), and their frames would wait forever.
            while index < count:
                (<FanoutWriter>writers[index]).scheduled = False
                index += 1


cdef _Turn _turn = None


def write_to_all(ServerFrame frame not None, tuple writers not None, Py_ssize_t max_pending=-1, skip=None):
    """``frame`` to every writer in ``writers`` but ``skip``, as ``write_frame``
    would, in one call: the hub's fan-out to a room's native members.

    Returns how many queued it, and None where every one did, else a list of
    ``(index, answer)`` for the others: 0 (over ``max_pending``), -1 (over),
    or the exception its write raised (one writer's failure is its own: the
    rest still get the frame)."""
    cdef Py_ssize_t index, count = len(writers), queued = 0
    cdef int answer
    cdef WebSocketProtocol protocol
    running = _get_running_loop()  # once: every writer is checked against it
    cdef FanoutWriter writer
    cdef list refused = None
    for index in range(count):
        item = writers[index]
        if type(item) is not FanoutWriter:
            raise TypeError(f"writers holds FanoutWriter objects, got {type(item).__name__} at {index}")
        writer = <FanoutWriter>item
        protocol = writer.protocol
        if protocol is not None:  # the caller's mistake, not a writer's failure: before any is written
            writer._check_thread(protocol, running)
    for index in range(count):
        writer = <FanoutWriter>writers[index]
        if writer is skip:
            continue
        try:
            answer = writer._offer(frame, max_pending, running)
        except Exception as error:
            if refused is None:
                refused = []
            refused.append((index, error))
            continue
        if answer == _QUEUED:
            queued += 1
        else:
            if refused is None:
                refused = []
            refused.append((index, answer))
    return queued, refused
