# cython: language_level=3
# The compiled core's JSON: orjson where its result is provably the standard
# library's, else Starlette's own call. See _json_c.pyx.

cpdef str dumps_text(object value)
cpdef bytes dumps_bytes(object value)
cpdef object loads_text(object text)
cpdef object loads_bytes(object data)
