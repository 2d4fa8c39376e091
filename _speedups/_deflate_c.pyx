"""permessage-deflate (RFC 7692) for one connection: the client's messages
inflated, ours deflated, each side keeping or dropping its context as
negotiated. The compressor's settings are uvicorn's (memLevel=5)."""

from cpython.bytes cimport PyBytes_FromStringAndSize

import zlib

# What a sender strips from the end of each compressed message and the
# receiver appends again (RFC 7692 section 7.2.1): an empty stored block.
cdef bytes _EMPTY_BLOCK = b"\x00\x00\xff\xff"


cdef class PerMessageDeflate:
    def __init__(self, bint remote_no_context_takeover, bint local_no_context_takeover,
                 int remote_max_window_bits, int local_max_window_bits):
        # zlib inflates with windows of 8 to 15 bits, but deflates with 9 to 15.
        if not (8 <= remote_max_window_bits <= 15 and 9 <= local_max_window_bits <= 15):
            raise ValueError("window bits out of range")
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_max_window_bits = remote_max_window_bits
        self.local_max_window_bits = local_max_window_bits
        # Without context takeover a side's (de)compressor lives for one message only.
        self.decoder = None if remote_no_context_takeover else self._new_decoder()
        self.encoder = None if local_no_context_takeover else self._new_encoder()

    cdef object _new_decoder(self):
        return zlib.decompressobj(wbits=-self.remote_max_window_bits)

    cdef object _new_encoder(self):
        return zlib.compressobj(wbits=-self.local_max_window_bits, memLevel=5)

    cdef int start_message(self) except -1:
        """A compressed message from the client begins."""
        if self.remote_no_context_takeover:
            self.decoder = self._new_decoder()
        return 0

    cdef object decompress(self, object data, bint fin, Py_ssize_t limit):
        """One frame's payload inflated; ``fin``: the message's last frame.
        ``limit``: the most output allowed (-1: no limit). Returns None where
        the output would exceed it; raises ``zlib.error`` on corrupt data."""
        decoder = self.decoder
        if decoder is None:
            decoder = self.decoder = self._new_decoder()
        if fin:
            data = data + _EMPTY_BLOCK
        if limit < 0:
            out = decoder.decompress(data)
        elif limit == 0:
            # Nothing more may come; any output at all is too much.
            out = decoder.decompress(data, 1)
            if out:
                return None
        else:
            out = decoder.decompress(data, limit)
            if decoder.unconsumed_tail:
                return None
        if fin and self.remote_no_context_takeover:
            self.decoder = None
        return out

    cdef bytes compress(self, const char *data, Py_ssize_t n):
        """One message deflated: the payload of a frame with RSV1 set."""
        encoder = self.encoder
        if encoder is None:
            encoder = self._new_encoder()
        compressed = encoder.compress(PyBytes_FromStringAndSize(data, n)) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if not self.local_no_context_takeover:
            self.encoder = encoder
        # The sync flush ends with the empty stored block, which the peer re-appends.
        return compressed[:len(compressed) - 4]
