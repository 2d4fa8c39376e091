"""What a publish sends, checked and encoded once for every member.

JSON goes through the same functions as ``turbows.WebSocket.send_json``:
the compiled core's (orjson where its result is provably the standard
library's, ``_speedups/_json_c.pyx``) where that core is loaded, else the
pure core's (Starlette's own ``json.dumps`` call). So each member gets the
bytes ``turbows.WebSocket.send_json`` would send it, and a value
``send_json`` rejects raises the same exception here, before anything is
queued.

Text is checked to be encodable as UTF-8, as every server does when it
writes the frame: a lone surrogate raises ``UnicodeEncodeError`` in the
publisher, where a server would raise it in each member's send (and that
member would leave every room).
"""

from __future__ import annotations

from ._state_py import _check_mode
from ._cores import CORES

if "speedups" in CORES:
    from ._json_c import dumps_bytes, dumps_text
else:
    from ._json_py import dumps_bytes, dumps_text

__all__ = ["bytes_payload", "json_payload", "text_payload"]


def text_payload(value: object) -> tuple[str, int]:
    """A text message and its size in UTF-8 bytes."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"publish_text() takes a str, got {type(value).__name__}")
        value = str(value)  # a plain str: a subclass could change under the queue
    # isascii() reads a flag of the string: for ASCII text, no copy at all.
    if value.isascii():
        return value, len(value)
    return value, len(value.encode("utf-8"))


def bytes_payload(value: object) -> tuple[bytes, int]:
    """A binary message and its size; a ``bytearray`` or ``memoryview`` is copied, as the caller may reuse it."""
    if type(value) is not bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"publish_bytes() takes bytes, bytearray or memoryview, got {type(value).__name__}")
        value = bytes(value)
    return value, len(value)


def json_payload(value: object, mode: object) -> tuple[str | bytes, int]:
    """``send_json(value, mode)``'s payload, with its size; its errors, ``mode``'s first."""
    if _check_mode(mode):
        data = dumps_bytes(value)
        return data, len(data)
    return text_payload(dumps_text(value))
