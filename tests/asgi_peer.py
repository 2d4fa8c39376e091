"""A scripted ASGI peer, and a runner that turns a script into a comparable trace.

The differential and behaviour tests drive Starlette's ``WebSocket`` and
turbows with the very same peer and script, then compare the traces.

- ``ScriptedPeer``: delivers a fixed list of messages from ``receive()``,
  raises chosen exceptions from chosen ``send()`` calls, records every
  message sent. ``receive`` and ``send`` are plain ``async def`` functions
  with no event-loop import, so they work under asyncio, trio, or no loop at
  all (``run_sync``); pass ``checkpoint`` (e.g. ``anyio.lowlevel.checkpoint``)
  to make every call really suspend inside an event loop.
- ``run_script`` / ``run_script_sync``: run operations against a WebSocket
  class and return a ``Trace``: per operation its outcome and the state pair
  after it, then every message sent (JSON payloads parsed, so orjson's and
  the standard library's spellings of one value compare equal).
- ``StarletteReference``: Starlette's class with turbows' documented
  differences applied through ``documented_difference``, the one place
  that says where turbows may part from Starlette. The expected trace of any
  script is this class's trace.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY

from starlette.responses import Response
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

from turbows import WebSocketFrameTypeError

__all__ = [
    "PeerExhausted",
    "ScriptedPeer",
    "StarletteReference",
    "SubclassOf",
    "Trace",
    "canonical",
    "documented_difference",
    "make_scope",
    "outcome_of",
    "run_script",
    "run_script_sync",
    "run_sync",
]


class PeerExhausted(Exception):
    """``receive()`` was called once more than the script has messages."""


def make_scope(*, denial: bool = True, **overrides: Any) -> dict[str, Any]:
    """A websocket scope as a server builds it; ``denial`` offers the denial-response extension."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("203.0.113.7", 50123),
        "root_path": "",
        "path": "/rooms/7",
        "raw_path": b"/rooms/7",
        "query_string": b"a=1&b=two&a=3",
        "headers": [
            (b"host", b"testserver"),
            (b"cookie", b"session=abc; theme=dark"),
            (b"x-custom", b"one"),
            (b"x-custom", b"two"),
            (b"sec-websocket-protocol", b"chat, superchat"),
        ],
        "subprotocols": ["chat", "superchat"],
        "path_params": {"room": 7},
        "state": {},
        "extensions": {"websocket.http.response": {}} if denial else {},
    }
    scope.update(overrides)
    return scope


class ScriptedPeer:
    """The server side of one connection, scripted.

    ``messages``: what ``receive()`` delivers, in order (a fresh shallow copy
    of each, so one script can serve several runs); once they run out it
    raises ``PeerExhausted``. ``send_errors``: ``{n: exception factory}``,
    the ``n``-th call of ``send()`` (from 0) raises ``factory()`` instead of
    sending. ``sent`` records each message sent (a shallow copy), ``failed``
    each ``(n, message)`` whose send raised.
    """

    def __init__(
        self,
        messages: Iterable[Any] = (),
        send_errors: Mapping[int, Callable[[], BaseException]] | None = None,
        checkpoint: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.messages = list(messages)
        self.send_errors = dict(send_errors or {})
        self.checkpoint = checkpoint
        self.delivered = 0
        self.send_calls = 0
        self.sent: list[Any] = []
        self.failed: list[tuple[int, Any]] = []

    async def receive(self) -> Any:
        if self.checkpoint is not None:
            await self.checkpoint()
        if self.delivered >= len(self.messages):
            raise PeerExhausted(f"the script has only {len(self.messages)} messages")
        message = self.messages[self.delivered]
        self.delivered += 1
        return dict(message) if isinstance(message, dict) else message

    async def send(self, message: Any) -> None:
        if self.checkpoint is not None:
            await self.checkpoint()
        index = self.send_calls
        self.send_calls += 1
        copy = dict(message) if isinstance(message, dict) else message
        if index in self.send_errors:
            self.failed.append((index, copy))
            raise self.send_errors[index]()
        self.sent.append(copy)


# -- comparing values --------------------------------------------------------


def canonical(value: Any) -> Any:
    """A form of ``value`` whose ``==`` is exact: NaN equals NaN, -0.0 is not 0.0, 1 is not 1.0 nor True.

    Dicts whose keys are all strings compare regardless of order, as JSON
    objects do; lists and tuples stay apart.
    """
    # From CPython 3.12, json.loads nests as deep as the C stack allows,
    # deeper than Python's default recursion limit: walk with room to spare
    # (Python-to-Python calls use no C stack there).
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    try:
        return _canonical(value)
    finally:
        sys.setrecursionlimit(limit)


def _canonical(value: Any) -> Any:
    canonical = _canonical
    kind = type(value)
    if kind is float:
        return ("float", repr(value))
    if value is None or kind in (bool, int, str, bytes):
        return (kind.__name__, value)
    if kind is list:
        return ("list", [canonical(item) for item in value])
    if kind is tuple:
        return ("tuple", tuple(canonical(item) for item in value))
    if kind is dict:
        if all(type(key) is str for key in value):
            return ("dict", {key: canonical(item) for key, item in value.items()})
        return ("dict-pairs", [(canonical(key), canonical(item)) for key, item in value.items()])
    if kind is bytearray:
        return ("bytearray", bytes(value))
    return (kind, value)  # WebSocketState members, responses, ...: their own ==


class SubclassOf:
    """Stands for an exception class in an expected outcome: equal to ``base`` and its subclasses."""

    def __init__(self, base: type[BaseException]) -> None:
        self.base = base

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type) and issubclass(other, self.base)

    def __hash__(self) -> int:
        return hash(self.base)

    def __repr__(self) -> str:
        return f"SubclassOf({self.base.__name__})"


class _ExpectedValueError(Exception):
    """Raised by ``StarletteReference`` where turbows may raise any ``base`` subclass."""

    def __init__(self, base: type[ValueError], starlette_error: BaseException) -> None:
        super().__init__(base, starlette_error)
        self.base = base


def outcome_of(exc: BaseException) -> tuple[Any, ...]:
    """``("raise", class, str, extra)``; ``extra`` is ``(code, reason)`` for ``WebSocketDisconnect``."""
    if isinstance(exc, _ExpectedValueError):
        return ("raise", SubclassOf(exc.base), ANY, None)
    extra = (exc.code, exc.reason) if isinstance(exc, WebSocketDisconnect) else None
    return ("raise", type(exc), str(exc), extra)


# -- the documented differences ------------------------------------------------

_FRAME_KEYS = {"text": "text", "binary": "bytes"}


def documented_difference(
    method: str, mode: str, message: Any, result: Any, error: BaseException | None
) -> BaseException | None:
    """The exception turbows raises where Starlette's ``receive_*`` gave ``result``/``error``, or ``None``.

    ``method`` is ``receive_text``, ``receive_bytes`` or ``receive_json``;
    ``mode`` the frame kind it wants (``"text"`` or ``"binary"``);
    ``message`` what it received. A disconnect message raises before any
    payload is read, in both (``WebSocketDisconnect``, or ``KeyError('code')``
    where it has no code): never mapped.
    The documented differences (README, "Deliberate differences from Starlette"):

    1. The message has no payload of the wanted kind (key absent, or None):
       Starlette's ``receive_text``/``receive_bytes`` return ``None`` or raise
       ``KeyError``, its ``receive_json`` raises ``KeyError`` (key absent),
       ``TypeError`` (``json.loads(None)``) or ``AttributeError``
       (``None.decode``). turbows raises ``WebSocketFrameTypeError`` naming
       what arrived.
    3. ``receive_json`` on a payload that is not valid JSON (or not UTF-8):
       where Starlette raises a ``ValueError``, turbows raises some
       ``ValueError`` subclass, ``json.JSONDecodeError`` where Starlette's is
       one; the message is not fixed.

    Everything else, turbows does exactly as Starlette; so ``None``.
    """
    if message.get("type") == "websocket.disconnect":
        return None
    key = _FRAME_KEYS[mode]
    if message.get(key) is None:
        if method == "receive_json":
            allowed = (KeyError, TypeError, AttributeError)
            assert isinstance(error, allowed), f"Starlette's {method} gave {result!r}/{error!r} on {message!r}"
        else:
            assert (error is None and result is None) or (
                type(error) is KeyError and error.args == (key,)
            ), f"Starlette's {method} gave {result!r}/{error!r} on {message!r}"
        return WebSocketFrameTypeError(mode, message)
    if method == "receive_json" and isinstance(error, ValueError):
        return _ExpectedValueError(
            json.JSONDecodeError if isinstance(error, json.JSONDecodeError) else ValueError, error
        )
    return None


class StarletteReference(StarletteWebSocket):
    """Starlette's ``WebSocket`` with the documented differences applied: the expected behaviour.

    ``receive_text``/``receive_bytes``/``receive_json`` run Starlette's own
    code, then ``documented_difference`` decides whether turbows raises
    instead. ``iter_json`` takes ``mode`` (difference 2) and otherwise is
    Starlette's loop. ``iter_text``/``iter_bytes`` are Starlette's, calling
    the methods above, so a frame-type error ends them as it ends turbows'.
    """

    async def receive(self) -> Any:
        self._last_message = None
        message = await super().receive()
        self._last_message = message
        return message

    async def _mapped(self, method: str, mode: str, call: Callable[[], Awaitable[Any]]) -> Any:
        self._last_message = None
        try:
            result = await call()
        except WebSocketDisconnect:
            raise
        except Exception as error:
            if self._last_message is None:
                raise  # raised before a message arrived: nothing to map
            replacement = documented_difference(method, mode, self._last_message, None, error)
            if replacement is None:
                raise
            raise replacement from error
        if self._last_message is not None:
            replacement = documented_difference(method, mode, self._last_message, result, None)
            if replacement is not None:
                raise replacement
        return result

    async def receive_text(self) -> Any:
        return await self._mapped("receive_text", "text", super().receive_text)

    async def receive_bytes(self) -> Any:
        return await self._mapped("receive_bytes", "binary", super().receive_bytes)

    async def receive_json(self, mode: str = "text") -> Any:
        call = super().receive_json
        return await self._mapped("receive_json", mode, lambda: call(mode))

    async def iter_json(self, mode: str = "text") -> Any:  # type: ignore[override]
        try:
            while True:
                yield await self.receive_json(mode)
        except WebSocketDisconnect:
            pass


# -- running scripts ----------------------------------------------------------

#: Operations (first item of each tuple) that ``run_script`` understands:
#: ("receive",) ("send", message) ("accept"[, subprotocol[, headers]])
#: ("close"[, code[, reason]]) ("receive_text",) ("receive_bytes",)
#: ("receive_json"[, mode]) ("send_text", data) ("send_bytes", data)
#: ("send_json", data[, mode]) ("iter_text",) ("iter_bytes",)
#: ("iter_json"[, mode]) ("state",) ("set_client_state", member)
#: ("set_application_state", member)
#: ("send_denial_response", status, body[, headers]).
OPERATIONS = frozenset(
    "receive send accept close receive_text receive_bytes receive_json send_text send_bytes "
    "send_json iter_text iter_bytes iter_json state set_client_state set_application_state "
    "send_denial_response".split()
)
_ITERATORS = {"iter_text", "iter_bytes", "iter_json"}


@dataclass
class Trace:
    """What a script did: per step ``(operation, outcome, (client_state, application_state))``."""

    steps: list[tuple[str, tuple[Any, ...], tuple[Any, Any]]] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)
    failed_sends: list[Any] = field(default_factory=list)


async def _perform(ws: Any, op: Sequence[Any]) -> Any:
    name, *args = op
    if name == "receive":
        return await ws.receive()
    if name == "send":
        message = args[0]
        return await ws.send(dict(message) if isinstance(message, dict) else message)
    if name == "accept":
        return await ws.accept(*args)
    if name == "close":
        return await ws.close(*args)
    if name == "receive_text":
        return await ws.receive_text()
    if name == "receive_bytes":
        return await ws.receive_bytes()
    if name == "receive_json":
        return await ws.receive_json(*args)
    if name == "send_text":
        return await ws.send_text(*args)
    if name == "send_bytes":
        return await ws.send_bytes(*args)
    if name == "send_json":
        return await ws.send_json(*args)
    if name == "state":
        return (ws.client_state, ws.application_state)
    if name == "set_client_state":
        ws.client_state = args[0]
        return None
    if name == "set_application_state":
        ws.application_state = args[0]
        return None
    if name == "send_denial_response":
        status, body, *headers = args
        return await ws.send_denial_response(Response(body, status_code=status, headers=headers[0] if headers else None))
    raise ValueError(f"unknown operation {name!r}")


def _iterate(ws: Any, op: Sequence[Any]) -> Any:
    name, *args = op
    if name == "iter_json":
        return ws.iter_json(mode=args[0]) if args else ws.iter_json()
    return getattr(ws, name)()


def _canonical_sent(message: Any, json_payload: bool) -> Any:
    """``canonical(message)``, with a ``send_json`` payload replaced by the value it parses to."""
    if json_payload and isinstance(message, dict) and message.get("type") == "websocket.send":
        message = dict(message)
        for key in ("text", "bytes"):
            if key in message:
                payload = message[key]
                message[key] = ("json", type(payload).__name__, canonical(json.loads(payload)))
    return canonical(message)


async def run_script(
    websocket_class: type,
    script: Iterable[Sequence[Any]],
    messages: Iterable[Any] = (),
    *,
    send_errors: Mapping[int, Callable[[], BaseException]] | None = None,
    scope: dict[str, Any] | None = None,
    checkpoint: Callable[[], Awaitable[None]] | None = None,
) -> Trace:
    """Run ``script`` on a fresh ``websocket_class(scope, receive, send)`` over a ``ScriptedPeer``.

    Each step's outcome is ``("ok", canonical(return value))`` (for ``iter_*``
    the list of values yielded) or ``outcome_of(exception)`` (for ``iter_*``
    with the values yielded before it appended). Every step runs, whatever
    the earlier ones raised.
    """
    peer = ScriptedPeer(messages, send_errors, checkpoint)
    ws = websocket_class(make_scope() if scope is None else scope, peer.receive, peer.send)
    trace = Trace()
    json_sends: set[int] = set()
    for op in script:
        name = op[0]
        before = peer.send_calls
        outcome: tuple[Any, ...]
        if name in _ITERATORS:
            items: list[Any] = []
            try:
                async for item in _iterate(ws, op):
                    items.append(item)
            except Exception as exc:
                outcome = (*outcome_of(exc), canonical(items))
            else:
                outcome = ("ok", canonical(items))
        else:
            try:
                result = await _perform(ws, op)
            except Exception as exc:
                outcome = outcome_of(exc)
            else:
                outcome = ("ok", canonical(result))
        if name == "send_json":
            json_sends.update(range(before, peer.send_calls))
        trace.steps.append((name, outcome, (ws.client_state, ws.application_state)))
    # Message n of the peer's send calls is either in sent or in failed.
    failed = dict(peer.failed)
    succeeded = iter(peer.sent)
    for index in range(peer.send_calls):
        if index in failed:
            trace.failed_sends.append(_canonical_sent(failed[index], index in json_sends))
        else:
            trace.sent.append(_canonical_sent(next(succeeded), index in json_sends))
    return trace


def run_sync(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable that never suspends, with no event loop: one ``send(None)``."""
    iterator = awaitable.__await__()
    try:
        yielded = iterator.send(None)
    except StopIteration as stop:
        return stop.value
    iterator.close()
    raise RuntimeError(f"the awaitable suspended (it yielded {yielded!r}): run it in an event loop")


def run_script_sync(websocket_class: type, script: Iterable[Sequence[Any]], messages: Iterable[Any] = (), **kwargs: Any) -> Trace:
    """``run_script`` with no event loop (the peer must not be given a ``checkpoint``)."""
    assert kwargs.get("checkpoint") is None
    return run_sync(run_script(websocket_class, script, messages, **kwargs))
