# permessage-deflate (RFC 7692) for one connection of turbows' native uvicorn
# protocol: cimported by _protocol_c.

cdef class PerMessageDeflate:
    # Negotiated in turbows._handshake.negotiate_deflate. "remote": the
    # client's compressor, which we inflate; "local": ours.
    cdef readonly bint remote_no_context_takeover
    cdef readonly bint local_no_context_takeover
    cdef readonly int remote_max_window_bits
    cdef readonly int local_max_window_bits
    cdef object decoder
    cdef object encoder

    cdef object _new_decoder(self)
    cdef object _new_encoder(self)
    cdef int start_message(self) except -1
    cdef object decompress(self, object data, bint fin, Py_ssize_t limit)
    cdef bytes compress(self, const char *data, Py_ssize_t n)
