# cython: language_level=3
"""JSON for the compiled core: orjson, wherever its result is the standard library's.

The contract (README, "Deliberate differences from Starlette"; held by
tests/test_json.py): for every value, what Starlette's
``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` and
``json.loads`` give, or the same exception class. orjson diverges in known
ways, each handled here:

- it serialises values the standard library rejects (enums, UUIDs,
  dataclasses, datetimes; subclasses whose ``items()`` or ``__iter__`` the
  standard library would call), and writes NaN and the infinities as
  ``null``. So only the exact JSON types with finite floats reach orjson;
  the check below is a C walk over the value, a few nanoseconds per item;
- it refuses integers beyond 64 bits, lone surrogates, non-string keys and
  nesting deeper than 255: it raises, and the standard library takes over;
- it decodes integer literals beyond 64 bits as floats: such a float fails
  the decoded-value check, and the standard library decodes the text again;
- it rejects NaN/Infinity literals, numbers that overflow to infinity, lone
  surrogate escapes: it raises, and ``json.loads`` gives Starlette's result
  or error (``UnicodeDecodeError`` for invalid UTF-8 in binary mode, as
  Starlette's ``bytes.decode`` raises).

Where orjson is not installed, the standard library does all the work.

The walks borrow references (PyDict_Next, PyList_GET_ITEM) and call no
Python code, so nothing can mutate the value under them with the GIL held.
On a free-threaded build, mutating a value from another thread while it is
being sent is a data race for orjson and the standard library alike.
"""

cimport cython
from cpython.dict cimport PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

import json

try:
    import orjson
except ImportError:
    orjson = None

# Exactly what Starlette's json.dumps(data, separators=(",", ":"), ensure_ascii=False)
# builds on every call, built once.
cdef object _json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
cdef object _json_loads = json.loads

cdef object _orjson_dumps = None
cdef object _orjson_loads = None
cdef object _OrjsonEncodeError = None
cdef object _OrjsonDecodeError = None
if orjson is not None:
    _orjson_dumps = orjson.dumps
    _orjson_loads = orjson.loads
    _OrjsonEncodeError = orjson.JSONEncodeError
    _OrjsonDecodeError = orjson.JSONDecodeError

# orjson refuses nesting deeper than 255 levels; deeper values (and cycles)
# go to the standard library, which gives Starlette's result or error.
cdef enum:
    _MAX_DEPTH = 254

# orjson decodes an integer literal outside [-2**63, 2**64) as a float; every
# such float lies outside this open interval, so a float inside it is exact.
cdef double _EXACT_FLOAT_LOW = -9223372036854775808.0
cdef double _EXACT_FLOAT_HIGH = 18446744073709551616.0


cdef bint _encodes_exactly(object value, int depth) except -1:
    """Whether orjson's output for ``value`` parses to what ``json.dumps``' does (or orjson raises)."""
    cdef double number
    cdef Py_ssize_t position = 0
    cdef Py_ssize_t index
    cdef PyObject *key
    cdef PyObject *item
    value_type = type(value)
    if value_type is str or value_type is int or value_type is bool or value is None:
        return True
    if value_type is float:
        number = PyFloat_AS_DOUBLE(value)
        return number - number == 0.0  # NaN and the infinities give NaN
    if depth >= _MAX_DEPTH:
        return False
    if value_type is dict:
        while PyDict_Next(value, &position, &key, &item):
            if type(<object>key) is not str or not _encodes_exactly(<object>item, depth + 1):
                return False
        return True
    if value_type is list:
        for index in range(PyList_GET_SIZE(value)):
            if not _encodes_exactly(<object>PyList_GET_ITEM(value, index), depth + 1):
                return False
        return True
    if value_type is tuple:
        for index in range(PyTuple_GET_SIZE(value)):
            if not _encodes_exactly(<object>PyTuple_GET_ITEM(value, index), depth + 1):
                return False
        return True
    return False


cdef bint _decoded_exactly(object value) except -1:
    """Whether orjson's decoded ``value`` is what ``json.loads`` gives (its depth is orjson's, <= 1024)."""
    cdef double number
    cdef Py_ssize_t position = 0
    cdef Py_ssize_t index
    cdef PyObject *key
    cdef PyObject *item
    value_type = type(value)
    if value_type is float:
        number = PyFloat_AS_DOUBLE(value)
        return _EXACT_FLOAT_LOW < number < _EXACT_FLOAT_HIGH
    if value_type is dict:
        while PyDict_Next(value, &position, &key, &item):
            if not _decoded_exactly(<object>item):
                return False
    elif value_type is list:
        for index in range(PyList_GET_SIZE(value)):
            if not _decoded_exactly(<object>PyList_GET_ITEM(value, index)):
                return False
    return True


cpdef str dumps_text(object value):
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``, through orjson where exact."""
    cdef bytes encoded
    if _orjson_dumps is not None and _encodes_exactly(value, 0):
        try:
            encoded = _orjson_dumps(value)
        except _OrjsonEncodeError:
            pass  # the standard library below gives Starlette's result or error
        else:
            return encoded.decode("utf-8")
    return _json_encode(value)


cpdef bytes dumps_bytes(object value):
    """``dumps_text(value).encode("utf-8")``, with no text in between where orjson is exact."""
    if _orjson_dumps is not None and _encodes_exactly(value, 0):
        try:
            return _orjson_dumps(value)
        except _OrjsonEncodeError:
            pass
    return (<str>_json_encode(value)).encode("utf-8")


cpdef object loads_text(object text):
    """``json.loads(text)``, through orjson where exact."""
    if _orjson_loads is not None and type(text) is str:
        try:
            value = _orjson_loads(text)
        except _OrjsonDecodeError:
            pass  # NaN, 1e400, lone surrogates or bad JSON: json.loads decides
        else:
            if _decoded_exactly(value):
                return value
    return _json_loads(text)


cpdef object loads_bytes(object data):
    """``json.loads(data.decode("utf-8"))``, straight from the bytes where orjson is exact."""
    if _orjson_loads is not None and type(data) is bytes:
        try:
            value = _orjson_loads(data)
        except _OrjsonDecodeError:
            pass  # invalid UTF-8 raises UnicodeDecodeError below, as in Starlette
        else:
            if _decoded_exactly(value):
                return value
    return _json_loads(data.decode("utf-8"))
