"""The bad-input catalogue: one test per kind of bad input, on both cores, against Starlette.

A scripted ASGI peer (a fake server: ``async def receive`` and ``send``)
feeds the exact bad input. Each test plays the same steps on turbows' class
and on Starlette's, and asserts the same outcome (exception class and
message, the messages sent, the states after each step), except the one
documented difference (a frame of the wrong type). Where Starlette's
semantics let the connection go on (malformed JSON, a wrong frame type, a
payload that cannot be sent), the next receive or send must work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows
from turbows import WebSocketDisconnected, WebSocketFrameTypeError

from harness import run

CONNECT = {"type": "websocket.connect"}
ACCEPT = {"type": "websocket.accept", "subprotocol": None, "headers": []}


def text(payload: Any) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": payload}


def binary(payload: Any) -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": payload}


def scope(*, denial: bool = False) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }


class Peer:
    """The server side, scripted: ``receive`` hands out ``messages`` in order, ``send`` records."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = list(messages)
        self.sent: list[Any] = []

    async def receive(self) -> Any:
        assert self.messages, "the app asked for a message the script does not have"
        message = self.messages.pop(0)
        return dict(message) if isinstance(message, dict) else message

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))


Step = Callable[[Any], Awaitable[Any]]


@dataclass
class Trace:
    """Per step: the outcome (``("ok", value)`` or ``("raise", exception)``) and the states after it."""

    outcomes: list[tuple[str, Any]] = field(default_factory=list)
    states: list[tuple[str, str]] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)

    def comparable(self) -> Any:
        """Values by ``repr`` (NaN equals NaN), exceptions by class and message."""
        outcomes = [
            (kind, (type(value), str(value)) if kind == "raise" else repr(value)) for kind, value in self.outcomes
        ]
        return outcomes, self.states, repr(self.sent)

    def error(self, index: int) -> BaseException:
        kind, value = self.outcomes[index]
        assert kind == "raise", f"step {index} did not raise: it returned {value!r}"
        return value

    def value(self, index: int) -> Any:
        kind, value = self.outcomes[index]
        assert kind == "ok", f"step {index} raised {value!r}"
        return value


def play(websocket_class: type, steps: list[Step], messages: list[Any], *, denial: bool = False) -> Trace:
    peer = Peer(messages)
    ws = websocket_class(scope(denial=denial), peer.receive, peer.send)
    trace = Trace(sent=peer.sent)

    async def each() -> None:
        for step in steps:
            try:
                trace.outcomes.append(("ok", await step(ws)))
            except Exception as exc:
                trace.outcomes.append(("raise", exc))
            trace.states.append((ws.client_state.name, ws.application_state.name))

    run(each(), timeout=10)
    return trace


def play_both(websocket_class: type, steps: list[Step], messages: list[Any], **kwargs: Any) -> Trace:
    """Play on turbows and on Starlette; they must agree exactly. Returns turbows' trace."""
    observed = play(websocket_class, steps, messages, **kwargs)
    reference = play(StarletteWebSocket, steps, messages, **kwargs)
    assert observed.comparable() == reference.comparable()
    return observed


def accept(ws: Any) -> Any:
    return ws.accept()


# -- malformed JSON ----------------------------------------------------------------


def _json_error(payload: str) -> str:
    """The message json.loads gives (it words some differently from one Python version to the next)."""
    with pytest.raises(json.JSONDecodeError) as raised:
        json.loads(payload)
    return str(raised.value)


@pytest.mark.parametrize("payload", ["{not json", "", "[1,]", '{"a": 1} trailing', "\ufeff{}", '"\x01"', "[NaN"])
def test_malformed_json(websocket_class: type, payload: str) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_json(), lambda ws: ws.receive_json(), lambda ws: ws.send_json({"after": "error"})],
        [CONNECT, text(payload), text('{"ok": true}')],
    )
    error = trace.error(1)
    assert type(error) is json.JSONDecodeError
    assert str(error) == _json_error(payload)  # names what is wrong, and where
    # the connection goes on
    assert trace.value(2) == {"ok": True}
    assert trace.sent[-1] == {"type": "websocket.send", "text": '{"after":"error"}'}
    assert trace.states[-1] == ("CONNECTED", "CONNECTED")


def test_malformed_json_in_binary_mode(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_json(mode="binary"), lambda ws: ws.receive_json(mode="binary")],
        [CONNECT, binary(b'{"a": '), binary(b'{"ok": [1, 2]}')],
    )
    error = trace.error(1)
    assert type(error) is json.JSONDecodeError
    assert str(error) == _json_error('{"a": ')
    assert trace.value(2) == {"ok": [1, 2]}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff{}", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        (b'{"a": "\xe2\x82"}', "'utf-8' codec can't decode bytes in position 7-8: invalid continuation byte"),
        (b'"\xed\xa0\x80"', "'utf-8' codec can't decode byte 0xed in position 1: invalid continuation byte"),
    ],
)
def test_invalid_utf8_in_binary_json(websocket_class: type, payload: bytes, message: str) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_json(mode="binary"), lambda ws: ws.receive_json(mode="binary")],
        [CONNECT, binary(payload), binary(b'"fine"')],
    )
    error = trace.error(1)
    assert type(error) is UnicodeDecodeError and isinstance(error, ValueError)
    assert str(error) == message
    assert trace.value(2) == "fine"


# -- a frame of the wrong type (the documented difference) ---------------------------

WRONG_FRAMES = [
    # (call, message, what Starlette does, turbows' message)
    ("receive_text", binary(b"raw"), ("raise", KeyError("text")), "expected a text message, but a binary message arrived"),
    (
        "receive_text",
        {"type": "websocket.receive", "bytes": b"raw", "text": None},
        ("ok", None),
        "expected a text message, but a binary message arrived",
    ),
    ("receive_bytes", text("words"), ("raise", KeyError("bytes")), "expected a binary message, but a text message arrived"),
    (
        "receive_bytes",
        {"type": "websocket.receive", "bytes": None, "text": "words"},
        ("ok", None),
        "expected a binary message, but a text message arrived",
    ),
    ("receive_json", binary(b"{}"), ("raise", KeyError("text")), "expected a text message, but a binary message arrived"),
    (
        "receive_json_binary",
        text("{}"),
        ("raise", KeyError("bytes")),
        "expected a binary message, but a text message arrived",
    ),
    (
        "receive_text",
        {"type": "websocket.receive"},
        ("raise", KeyError("text")),
        "expected a text message, but a 'websocket.receive' message with neither 'text' nor 'bytes' arrived",
    ),
]


def _receive_call(name: str) -> Step:
    if name == "receive_json_binary":
        return lambda ws: ws.receive_json(mode="binary")
    return lambda ws: getattr(ws, name)()


WRONG_FRAME_IDS = [
    "text-on-binary",
    "text-on-binary-with-text-None",
    "bytes-on-text",
    "bytes-on-text-with-bytes-None",
    "json-on-binary",
    "binary-json-on-text",
    "text-on-empty-receive",
]


@pytest.mark.parametrize(("call", "message", "starlette", "expected"), WRONG_FRAMES, ids=WRONG_FRAME_IDS)
def test_wrong_frame_type(websocket_class: type, call: str, message: Any, starlette: Any, expected: str) -> None:
    follow_up = text("next") if call in ("receive_text", "receive_json") else binary(b"next")
    follow_up = text('"next"') if call == "receive_json" else follow_up
    follow_up = binary(b'"next"') if call == "receive_json_binary" else follow_up
    steps = [accept, _receive_call(call), _receive_call(call)]
    messages = [CONNECT, message, follow_up]

    trace = play(websocket_class, steps, messages)
    error = trace.error(1)
    assert type(error) is WebSocketFrameTypeError
    assert isinstance(error, KeyError) and not isinstance(error, ValueError)  # Starlette's `except KeyError` takes it, as on uvicorn
    assert str(error) == expected
    assert error.message == message  # the message that arrived, for the app to inspect
    # the connection goes on
    assert trace.value(2) in ("next", b"next")
    assert trace.states[-1] == ("CONNECTED", "CONNECTED")

    # Starlette, on the same input: None or a bare KeyError; the rest is the same.
    reference = play(StarletteWebSocket, steps, messages)
    kind, value = reference.outcomes[1]
    if starlette[0] == "ok":
        assert (kind, value) == starlette
    else:
        assert kind == "raise" and type(value) is KeyError and value.args == starlette[1].args
    assert reference.outcomes[2] == trace.outcomes[2]
    assert reference.states == trace.states
    assert reference.sent == trace.sent


# -- ASGI messages out of order, or of unknown type -------------------------------------


def test_first_message_is_not_connect(websocket_class: type) -> None:
    trace = play_both(websocket_class, [accept], [text("too early")])
    error = trace.error(0)
    assert type(error) is RuntimeError
    assert str(error) == "Expected ASGI message \"websocket.connect\", but got 'websocket.receive'"
    assert trace.sent == []


@pytest.mark.parametrize("message_type", ["websocket.connect", "websocket.bogus", "http.request", "lifespan.startup"])
def test_unexpected_message_after_accept(websocket_class: type, message_type: str) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_text(), lambda ws: ws.receive()],
        [CONNECT, {"type": message_type}, text("x")],
    )
    error = trace.error(1)
    assert type(error) is RuntimeError
    assert str(error) == (
        f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {message_type!r}'
    )


def test_message_without_a_type(websocket_class: type) -> None:
    trace = play_both(websocket_class, [accept, lambda ws: ws.receive_text()], [CONNECT, {"text": "no type"}])
    error = trace.error(1)
    assert type(error) is KeyError and error.args == ("type",)


def test_message_that_is_not_a_dict(websocket_class: type) -> None:
    trace = play_both(websocket_class, [accept, lambda ws: ws.receive_text()], [CONNECT, "a bare string"])
    error = trace.error(1)
    assert type(error) is TypeError and str(error) == "string indices must be integers, not 'str'"


def test_app_sends_before_accepting(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [lambda ws: ws.send_text("too early"), lambda ws: ws.receive_text(), accept, lambda ws: ws.send_text("now")],
        [CONNECT],
    )
    assert type(trace.error(0)) is RuntimeError
    assert str(trace.error(0)) == (
        'Expected ASGI message "websocket.accept", "websocket.close" or "websocket.http.response.start", '
        "but got 'websocket.send'"
    )
    assert type(trace.error(1)) is WebSocketDisconnected
    assert str(trace.error(1)) == 'WebSocket is not connected. Need to call "accept" first.'
    assert trace.sent == [ACCEPT, {"type": "websocket.send", "text": "now"}]  # nothing went out early


def test_app_sends_an_unknown_message_type(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.send({"type": "websocket.bogus"}), lambda ws: ws.send_text("after")],
        [CONNECT],
    )
    assert str(trace.error(1)) == (
        "Expected ASGI message \"websocket.send\" or \"websocket.close\", but got 'websocket.bogus'"
    )
    assert trace.sent == [ACCEPT, {"type": "websocket.send", "text": "after"}]


# -- disconnect without a code ---------------------------------------------------------


def test_disconnect_without_code(websocket_class: type) -> None:
    """Starlette raises KeyError('code') from receive_*; turbows keeps that (receive() returns the message)."""
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_text()],
        [CONNECT, {"type": "websocket.disconnect"}],
    )
    error = trace.error(1)
    assert type(error) is KeyError and error.args == ("code",)
    assert trace.states[-1] == ("DISCONNECTED", "CONNECTED")

    trace = play_both(websocket_class, [accept, lambda ws: ws.receive()], [CONNECT, {"type": "websocket.disconnect"}])
    assert trace.value(1) == {"type": "websocket.disconnect"}


# -- after the end ------------------------------------------------------------------


def test_send_after_close(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [
            accept,
            lambda ws: ws.close(code=4000, reason="done"),
            lambda ws: ws.send_text("late"),
            lambda ws: ws.send_json({"late": True}),
            lambda ws: ws.close(),
        ],
        [CONNECT],
    )
    for index in (2, 3, 4):
        error = trace.error(index)
        assert type(error) is turbows.WebSocketDisconnected and isinstance(error, RuntimeError)
        assert str(error) == 'Cannot call "send" once a close message has been sent.'
    assert trace.sent == [ACCEPT, {"type": "websocket.close", "code": 4000, "reason": "done"}]


def test_receive_after_disconnect(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.receive_text(), lambda ws: ws.receive_text()],
        [CONNECT, {"type": "websocket.disconnect", "code": 1001}],
    )
    first = trace.error(1)
    assert type(first) is turbows.WebSocketDisconnect and (first.code, first.reason) == (1001, "")
    second = trace.error(2)
    assert type(second) is WebSocketDisconnected
    assert str(second) == 'Cannot call "receive" once a disconnect message has been received.'


def test_accept_twice(websocket_class: type) -> None:
    trace = play_both(websocket_class, [accept, accept, lambda ws: ws.send_text("still open")], [CONNECT])
    error = trace.error(1)
    assert type(error) is RuntimeError
    assert str(error) == "Expected ASGI message \"websocket.send\" or \"websocket.close\", but got 'websocket.accept'"
    assert trace.states[1] == ("CONNECTED", "CONNECTED")
    assert trace.sent == [ACCEPT, {"type": "websocket.send", "text": "still open"}]


# -- denial -------------------------------------------------------------------------


def test_denial_response_without_the_extension(websocket_class: type) -> None:
    """A RuntimeError before anything is sent; the app can still close (the server then answers 403)."""
    trace = play_both(
        websocket_class,
        [lambda ws: ws.send_denial_response(PlainTextResponse("no", status_code=401)), lambda ws: ws.close(code=1008)],
        [CONNECT],
        denial=False,
    )
    error = trace.error(0)
    assert type(error) is RuntimeError
    assert str(error) == "The server doesn't support the Websocket Denial Response extension."
    assert trace.states[0] == ("CONNECTING", "CONNECTING")
    assert trace.sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def test_denial_response_after_accepting(websocket_class: type) -> None:
    trace = play_both(
        websocket_class,
        [
            accept,
            lambda ws: ws.send_denial_response(PlainTextResponse("no", status_code=401)),
            lambda ws: ws.send_text("on"),
        ],
        [CONNECT],
        denial=True,
    )
    assert str(trace.error(1)) == (
        "Expected ASGI message \"websocket.send\" or \"websocket.close\", but got 'websocket.http.response.start'"
    )
    assert trace.sent == [ACCEPT, {"type": "websocket.send", "text": "on"}]


# -- payloads orjson refuses or alters: sent exactly as json.dumps would ---------------------


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


REFUSED_BY_ORJSON = {
    "2**64": 2**64,
    "-(2**63)-1": -(2**63) - 1,
    "int in a dict": {"id": 2**100, "small": 1},
    "NaN": math.nan,
    "infinities": [math.inf, -math.inf],
    "NaN in a dict": {"x": [math.nan, 1.5]},
    "non-string keys": {1: "one", False: "no", None: "none", 2.5: "x"},
    "nesting beyond 255": _nested(300),
}


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("name", list(REFUSED_BY_ORJSON))
def test_payload_orjson_refuses_is_sent_as_json_dumps(websocket_class: type, name: str, mode: str) -> None:
    value = REFUSED_BY_ORJSON[name]
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.send_json(value, mode=mode), lambda ws: ws.send_json({"next": 1}, mode=mode)],
        [CONNECT],
    )
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    key = "text" if mode == "text" else "bytes"
    payload = expected if mode == "text" else expected.encode("utf-8")
    assert trace.sent[1] == {"type": "websocket.send", key: payload}  # byte for byte
    assert trace.sent[2] == {"type": "websocket.send", key: '{"next":1}' if mode == "text" else b'{"next":1}'}


def test_lone_surrogate(websocket_class: type) -> None:
    """Text mode sends it as json.dumps does; binary mode fails to encode it, as Starlette's does, and goes on."""
    value = {"s": "\ud800"}
    trace = play_both(
        websocket_class,
        [
            accept,
            lambda ws: ws.send_json(value),
            lambda ws: ws.send_json(value, mode="binary"),
            lambda ws: ws.send_json("next", mode="binary"),
        ],
        [CONNECT],
    )
    assert trace.sent[1] == {"type": "websocket.send", "text": '{"s":"\ud800"}'}
    error = trace.error(2)
    assert type(error) is UnicodeEncodeError
    assert str(error) == "'utf-8' codec can't encode character '\\ud800' in position 6: surrogates not allowed"
    assert trace.sent[2:] == [{"type": "websocket.send", "bytes": b'"next"'}]


def _circular() -> Any:
    value: list[Any] = []
    value.append(value)
    return value


REJECTED = {
    "set": ({1, 2}, TypeError, "Object of type set is not JSON serializable"),
    "complex": (1j, TypeError, "Object of type complex is not JSON serializable"),
    "bytes": (b"raw", TypeError, "Object of type bytes is not JSON serializable"),
    "object in a list": ([1, object()], TypeError, "Object of type object is not JSON serializable"),
    "tuple key": ({(1, 2): 3}, TypeError, "keys must be str, int, float, bool or None, not tuple"),
    "circular": (_circular(), ValueError, "Circular reference detected"),
}


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("name", list(REJECTED))
def test_payload_json_rejects(websocket_class: type, name: str, mode: str) -> None:
    value, error_class, message = REJECTED[name]
    trace = play_both(
        websocket_class,
        [accept, lambda ws: ws.send_json(value, mode=mode), lambda ws: ws.send_json("next", mode=mode)],
        [CONNECT],
    )
    error = trace.error(1)
    assert type(error) is error_class and str(error) == message
    # nothing was sent for it, and the connection goes on
    key = "text" if mode == "text" else "bytes"
    assert trace.sent == [ACCEPT, {"type": "websocket.send", key: '"next"' if mode == "text" else b'"next"'}]
    assert trace.states[-1] == ("CONNECTED", "CONNECTED")


@pytest.mark.parametrize("call", ["receive_json", "send_json"])
def test_unknown_json_mode(websocket_class: type, call: str) -> None:
    step: Step = (lambda ws: ws.receive_json(mode="yaml")) if call == "receive_json" else (
        lambda ws: ws.send_json({}, mode="yaml")
    )
    trace = play_both(websocket_class, [accept, step, lambda ws: ws.send_text("on")], [CONNECT])
    error = trace.error(1)
    assert type(error) is RuntimeError and str(error) == 'The "mode" argument should be "text" or "binary".'
    assert trace.sent == [ACCEPT, {"type": "websocket.send", "text": "on"}]
