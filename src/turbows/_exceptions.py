"""The exceptions turbows adds to Starlette's.

They live in a plain Python module so that both cores raise the very same classes.
"""

from __future__ import annotations

__all__ = ["HubUnavailable", "WebSocketFrameTypeError"]


class WebSocketFrameTypeError(KeyError):
    """A ``receive_*`` call got a message of the other kind.

    ``receive_text()`` on a binary message, ``receive_bytes()`` on a text one,
    or ``receive_json()`` in a mode that does not match the frame. Starlette
    raises a bare ``KeyError('text')`` for this on some servers and returns
    ``None`` on others; turbows always raises this, naming what arrived.

    It subclasses ``KeyError``, and no other built-in exception, so the
    handler that catches Starlette's ``KeyError('text')`` on uvicorn catches
    it here: an app's ``except ValueError`` for bad JSON, written before its
    ``except KeyError``, must not take a frame of the wrong type.
    """

    def __init__(self, expected: str, message: object) -> None:
        self.expected = expected
        self.message = message
        super().__init__(f"expected a {expected} message, but {_describe(message)} arrived")

    # KeyError.__str__ quotes its argument as a dict key; this is a sentence.
    def __str__(self) -> str:
        return str(self.args[0])

    # Rebuilt from what __init__ takes, not from args (the sentence), so the
    # error pickles, as exceptions crossing process pools must.
    def __reduce__(self) -> tuple[type, tuple[str, object]]:
        return (type(self), (self.expected, self.message))


def _describe(message: object) -> str:
    if not isinstance(message, dict):
        return f"a {type(message).__name__}"
    message_type = message.get("type")
    if message_type != "websocket.receive":
        return f"a {message_type!r} message"
    if message.get("bytes") is not None:
        return "a binary message"
    if message.get("text") is not None:
        return "a text message"
    return "a 'websocket.receive' message with neither 'text' nor 'bytes'"


class HubUnavailable(Exception):
    """A ``turbows.Hub`` publish that its backend cannot take now.

    Raised promptly, never after a hang, while the backend is out of reach
    (with Redis: disconnected, or not answering in time). Members stay
    connected and the hub reconnects by itself; what was published meanwhile
    is not delivered (at most once). An in-process hub never raises it.
    """
