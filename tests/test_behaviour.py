"""Behaviour of every method and state transition, checked against Starlette's own class.

Most tests run one script through ``StarletteReference`` (Starlette's
``WebSocket`` with the documented differences applied, see
``asgi_peer.documented_difference``) and through turbows, over the same
scripted peer, and assert equal traces; then they check that the script
really reached the path it is about. The peer checkpoints on every call, so
each test really suspends under asyncio and under trio.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import starlette.requests
import starlette.websockets
from starlette.datastructures import Address, State
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Router, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState

import turbows
from asgi_peer import (
    PeerExhausted,
    ScriptedPeer,
    StarletteReference,
    Trace,
    canonical,
    make_scope,
    run_script,
)
from turbows import WebSocketFrameTypeError

pytestmark = pytest.mark.anyio

CONNECTING, CONNECTED, DISCONNECTED, RESPONSE = (
    WebSocketState.CONNECTING,
    WebSocketState.CONNECTED,
    WebSocketState.DISCONNECTED,
    WebSocketState.RESPONSE,
)
CONNECT = {"type": "websocket.connect"}
RESPONSE_START = {"type": "websocket.http.response.start", "status": 403, "headers": [(b"x-why", b"no")]}


def text(data: Any = "hello") -> dict[str, Any]:
    return {"type": "websocket.receive", "text": data}


def binary(data: Any = b"\x00\xff") -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": data}


def disconnect(code: int = 1001, reason: str | None = "going away") -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


# How to reach each application state, with the client side connected.
APP_STATE_PREFIXES: dict[str, list[tuple[Any, ...]]] = {
    "CONNECTING": [("receive",)],
    "CONNECTED": [("accept",)],
    "RESPONSE": [("receive",), ("send", RESPONSE_START)],
    "DISCONNECTED": [("accept",), ("close",)],
}
APP_STATE_OF = {"CONNECTING": CONNECTING, "CONNECTED": CONNECTED, "RESPONSE": RESPONSE, "DISCONNECTED": DISCONNECTED}


async def check(
    websocket_class: type, script: Sequence[Sequence[Any]], messages: Sequence[Any] = (), **kwargs: Any
) -> Trace:
    """Run ``script`` on Starlette (with the documented differences) and on turbows; assert equal traces."""
    kwargs.setdefault("checkpoint", anyio.lowlevel.checkpoint)
    expected = await run_script(StarletteReference, script, messages, **kwargs)
    actual = await run_script(websocket_class, script, messages, **kwargs)
    assert actual == expected
    return actual


def outcome(trace: Trace, step: int = -1) -> tuple[Any, ...]:
    return trace.steps[step][1]


def states(trace: Trace, step: int = -1) -> tuple[Any, Any]:
    return trace.steps[step][2]


def raised(trace: Trace, step: int = -1) -> type | None:
    result = outcome(trace, step)
    return result[1] if result[0] == "raise" else None


def make(cls: type, messages: Sequence[Any] = (), **kwargs: Any) -> tuple[Any, ScriptedPeer]:
    peer = ScriptedPeer(messages, checkpoint=anyio.lowlevel.checkpoint, **kwargs)
    return cls(make_scope(), peer.receive, peer.send), peer


# -- receive -----------------------------------------------------------------------


async def test_receive_connect_messages_disconnect(websocket_class: type) -> None:
    script = [("state",), ("receive",), ("receive",), ("receive",), ("receive",), ("receive",)]
    trace = await check(websocket_class, script, [CONNECT, text("a"), binary(b"b"), disconnect(), text("late")])
    assert [states(trace, i)[0] for i in range(6)] == [CONNECTING, CONNECTED, CONNECTED, CONNECTED, DISCONNECTED, DISCONNECTED]
    assert outcome(trace, 2) == ("ok", canonical(text("a")))
    assert raised(trace) is WebSocketDisconnected


async def test_receive_returns_the_servers_message_object(websocket_class: type) -> None:
    for cls in (StarletteWebSocket, websocket_class):
        connect = {"type": "websocket.connect", "extra": object()}
        message = {"type": "websocket.receive", "text": "x", "extra": object()}
        pending = [connect, message]

        async def receive() -> dict[str, Any]:
            return pending.pop(0)

        async def send(message: Any) -> None:  # pragma: no cover - never called
            raise AssertionError

        ws = cls(make_scope(), receive, send)
        assert await ws.receive() is connect
        assert await ws.receive() is message


WRONG_FIRST_MESSAGES = [
    text("x"),
    binary(b"x"),
    disconnect(),
    {"type": "websocket.accept"},
    {"type": "http.request", "body": b""},
    {"type": "lifespan.startup"},
    {"type": ""},
    {"type": None},
    {"type": 0},
    {"type": b"websocket.connect"},
    {},
    {"text": "no type"},
]
WRONG_LATER_MESSAGES = [
    CONNECT,
    {"type": "websocket.accept"},
    {"type": "websocket.send", "text": "x"},
    {"type": "http.disconnect"},
    {"type": "websocket.close", "code": 1000},
    {"type": None},
    {"type": 7},
    {"type": b"websocket.receive", "text": "x"},
    {"type": "websocket.receive ", "text": "x"},
    {},
]


@pytest.mark.parametrize("message", WRONG_FIRST_MESSAGES, ids=repr)
async def test_receive_wrong_first_message(websocket_class: type, message: dict[str, Any]) -> None:
    trace = await check(websocket_class, [("receive",), ("receive",)], [message, CONNECT])
    assert raised(trace, 0) in (RuntimeError, KeyError)
    assert states(trace, 0) == (CONNECTING, CONNECTING)
    # The client state did not move, so the next receive still wants the connect message.
    assert outcome(trace) == ("ok", canonical(CONNECT))


@pytest.mark.parametrize("message", WRONG_LATER_MESSAGES, ids=repr)
async def test_receive_wrong_later_message(websocket_class: type, message: dict[str, Any]) -> None:
    trace = await check(websocket_class, [("receive",), ("receive",), ("receive",)], [CONNECT, message, text("ok")])
    assert raised(trace, 1) in (RuntimeError, KeyError)
    assert outcome(trace) == ("ok", canonical(text("ok")))


@pytest.mark.parametrize("client_state", [DISCONNECTED, RESPONSE])
async def test_receive_once_disconnected(websocket_class: type, client_state: WebSocketState) -> None:
    script = [("set_client_state", client_state), ("receive",), ("receive_text",), ("accept",)]
    trace = await check(websocket_class, script, [CONNECT, text()])
    assert raised(trace, 1) is WebSocketDisconnected
    assert "Cannot call \"receive\"" in outcome(trace, 1)[2]


async def test_receive_errors_from_the_server_propagate(websocket_class: type) -> None:
    trace = await check(websocket_class, [("receive",), ("accept",), ("receive_text",), ("receive",)], [CONNECT])
    assert raised(trace, 2) is PeerExhausted
    assert states(trace) == (CONNECTED, CONNECTED)


# -- send in each application state, with each message type ----------------------------

SEND_MESSAGES = [
    {"type": "websocket.accept", "subprotocol": None, "headers": []},
    {"type": "websocket.send", "text": "t"},
    {"type": "websocket.send", "bytes": b"b"},
    {"type": "websocket.close", "code": 1000, "reason": ""},
    RESPONSE_START,
    {"type": "websocket.http.response.body", "body": b"part", "more_body": True},
    {"type": "websocket.http.response.body", "body": b"last", "more_body": False},
    {"type": "websocket.http.response.body", "body": b"implicit last"},
    {"type": "http.response.start", "status": 200},
    {"type": "websocket.receive", "text": "wrong direction"},
    {"type": "nonsense"},
    {"type": None},
    {"type": 3},
    {},
]


@pytest.mark.parametrize("state", list(APP_STATE_PREFIXES))
@pytest.mark.parametrize("message", SEND_MESSAGES, ids=repr)
async def test_send_in_each_state(websocket_class: type, state: str, message: dict[str, Any]) -> None:
    script = [*APP_STATE_PREFIXES[state], ("state",), ("send", message), ("send", message)]
    trace = await check(websocket_class, script, [CONNECT])
    assert states(trace, -3)[1] is APP_STATE_OF[state]


async def test_send_on_a_disconnected_websocket_reads_no_key(websocket_class: type) -> None:
    # Starlette checks the state before it looks at the message at all.
    script = [("accept",), ("close",), ("send", {}), ("send", {"type": "websocket.send"})]
    trace = await check(websocket_class, script, [CONNECT])
    assert raised(trace, 2) is WebSocketDisconnected
    assert raised(trace, 3) is WebSocketDisconnected


async def test_send_passes_the_message_object_through(websocket_class: type) -> None:
    for cls in (StarletteWebSocket, websocket_class):
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            sent.append(message)

        ws = cls(make_scope(), receive, send)
        await ws.accept()
        message = {"type": "websocket.send", "text": "x", "extra": "kept"}
        await ws.send(message)
        assert sent[-1] is message


# -- accept ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        ("accept",),
        ("accept", None, None),
        ("accept", "chat"),
        ("accept", "superchat", [(b"x-one", b"1"), (b"set-cookie", b"a=b")]),
        ("accept", None, ()),
        ("accept", "", []),
    ],
    ids=repr,
)
@pytest.mark.parametrize("receive_first", [False, True])
async def test_accept(websocket_class: type, accept: tuple[Any, ...], receive_first: bool) -> None:
    script = [("receive",)] if receive_first else []
    script += [accept, ("send_text", "after")]
    trace = await check(websocket_class, script, [CONNECT])
    assert states(trace) == (CONNECTED, CONNECTED)
    sent_accept = trace.sent[0][1]
    assert sent_accept["type"] == ("str", "websocket.accept")
    if len(accept) < 3 or not accept[2]:
        assert sent_accept["headers"] == ("list", [])  # headers=None (or empty) goes out as []


async def test_accept_keyword_arguments(websocket_class: type) -> None:
    for cls in (StarletteWebSocket, websocket_class):
        ws, peer = make(cls, [CONNECT])
        await ws.accept(subprotocol="chat", headers=[(b"a", b"b")])
        assert peer.sent == [{"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"a", b"b")]}]


@pytest.mark.parametrize(
    "messages",
    [[text()], [disconnect()], [{}], [{"type": None}], []],
    ids=["text first", "disconnect first", "no type", "None type", "nothing"],
)
async def test_accept_without_a_connect_message(websocket_class: type, messages: list[Any]) -> None:
    trace = await check(websocket_class, [("accept",), ("state",)], messages)
    assert raised(trace, 0) is not None
    assert states(trace) == (CONNECTING, CONNECTING)
    assert trace.sent == []


@pytest.mark.parametrize(
    "prefix",
    [
        [("accept",)],
        [("accept",), ("close",)],
        [("close",)],
        [("receive",), ("send", RESPONSE_START)],
        [("accept",), ("receive",)],
        [("set_client_state", DISCONNECTED)],
    ],
    ids=["accepted", "closed", "closed before accept", "responding", "client gone", "client state set"],
)
async def test_accept_in_other_states(websocket_class: type, prefix: list[tuple[Any, ...]]) -> None:
    trace = await check(websocket_class, [*prefix, ("accept",), ("accept", "chat")], [CONNECT, disconnect()])
    assert len(trace.steps) == len(prefix) + 2


# -- close ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "close",
    [("close",), ("close", 1001), ("close", 4000, "bye"), ("close", 1000, None), ("close", 1000, ""), ("close", 3000, "ünï")],
    ids=repr,
)
@pytest.mark.parametrize("state", list(APP_STATE_PREFIXES))
async def test_close(websocket_class: type, close: tuple[Any, ...], state: str) -> None:
    trace = await check(websocket_class, [*APP_STATE_PREFIXES[state], close, close], [CONNECT])
    if state in ("CONNECTING", "CONNECTED"):
        assert outcome(trace, -2)[0] == "ok"
        assert states(trace, -2)[1] is DISCONNECTED
        reason = close[2] if len(close) > 2 else None
        assert trace.sent[-1][1]["reason"] == ("str", reason or "")  # reason None goes out as ""
    assert raised(trace) is (RuntimeError if state == "RESPONSE" else WebSocketDisconnected)


# -- receive_text / receive_bytes / receive_json -----------------------------------------------

RECEIVERS = [("receive_text",), ("receive_bytes",), ("receive_json",), ("receive_json", "text"), ("receive_json", "binary")]


@pytest.mark.parametrize("receiver", RECEIVERS, ids=repr)
@pytest.mark.parametrize("state", list(APP_STATE_PREFIXES))
async def test_receivers_in_each_application_state(websocket_class: type, receiver: tuple[Any, ...], state: str) -> None:
    wants_binary = receiver in (("receive_bytes",), ("receive_json", "binary"))
    messages = [CONNECT, binary(b'{"a": 1}') if wants_binary else text('{"a": 1}')]
    trace = await check(websocket_class, [*APP_STATE_PREFIXES[state], receiver], messages)
    if state != "CONNECTED":
        assert raised(trace) is WebSocketDisconnected
        assert outcome(trace)[2] == 'WebSocket is not connected. Need to call "accept" first.'
    else:
        assert outcome(trace)[0] == "ok"


@pytest.mark.parametrize("receiver", RECEIVERS, ids=repr)
async def test_receivers_after_the_client_disconnected(websocket_class: type, receiver: tuple[Any, ...]) -> None:
    trace = await check(websocket_class, [("accept",), receiver, receiver, receiver], [CONNECT, disconnect(), text()])
    assert raised(trace, 1) is WebSocketDisconnect
    assert outcome(trace, 1)[3] == (1001, "going away")
    assert raised(trace, 2) is WebSocketDisconnected
    assert states(trace) == (DISCONNECTED, CONNECTED)


@pytest.mark.parametrize("receiver", RECEIVERS, ids=repr)
async def test_receivers_before_the_connect_message(websocket_class: type, receiver: tuple[Any, ...]) -> None:
    # Accepted by hand without receiving "websocket.connect": the receiver gets it.
    script = [("send", {"type": "websocket.accept"}), receiver, receiver]
    trace = await check(websocket_class, script, [CONNECT, text("[1]"), binary(b"[2]")])
    assert raised(trace, 1) is WebSocketFrameTypeError
    assert "'websocket.connect'" in outcome(trace, 1)[2]


@pytest.mark.parametrize(
    "message",
    [
        disconnect(1000, "bye"),
        disconnect(1006, None),
        {"type": "websocket.disconnect", "code": 4001},  # no "reason"
        {"type": "websocket.disconnect", "reason": "no code"},  # Starlette: KeyError('code')
        {"type": "websocket.disconnect"},
        {"type": "websocket.disconnect", "code": 1000, "reason": "", "text": "ignored"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("receiver", RECEIVERS, ids=repr)
async def test_receivers_on_disconnect(websocket_class: type, message: dict[str, Any], receiver: tuple[Any, ...]) -> None:
    trace = await check(websocket_class, [("accept",), receiver, ("state",)], [CONNECT, message])
    assert states(trace) == (DISCONNECTED, CONNECTED)
    if "code" in message:
        assert raised(trace, 1) is WebSocketDisconnect
        assert outcome(trace, 1)[3] == (message["code"], message.get("reason") or "")
    else:
        assert outcome(trace, 1)[1:3] == (KeyError, "'code'")


async def test_disconnect_without_code_raises_keyerror_code(websocket_class: type) -> None:
    ws, _ = make(websocket_class, [CONNECT, {"type": "websocket.disconnect"}])
    await ws.accept()
    with pytest.raises(KeyError) as info:
        await ws.receive_text()
    assert info.value.args == ("code",)
    assert type(info.value) is KeyError


@pytest.mark.parametrize(
    "message",
    [
        text("plain"),
        text(""),
        text('{"a": [1, 2.5, null]}'),
        text("ünïcödé \ud800"),
        binary(b"raw"),
        binary(b""),
        binary(b'{"a": [1, 2.5, null]}'),
        binary(b"\xff\xfe"),
        {"type": "websocket.receive", "text": "both", "bytes": b"both"},
        {"type": "websocket.receive", "text": "[1]", "bytes": None},
        {"type": "websocket.receive", "text": None, "bytes": b"[2]"},
        {"type": "websocket.receive", "text": 5},  # Starlette passes odd payloads through
        {"type": "websocket.receive", "bytes": "str in bytes"},
        {"type": "websocket.receive", "text": b'{"b": 1}'},
        {"type": "websocket.receive", "bytes": bytearray(b"[3]")},
        {"type": "websocket.receive"},
        {"type": "websocket.receive", "text": None, "bytes": None},
    ],
    ids=repr,
)
@pytest.mark.parametrize("receiver", RECEIVERS, ids=repr)
async def test_receivers_on_each_payload(websocket_class: type, message: dict[str, Any], receiver: tuple[Any, ...]) -> None:
    trace = await check(websocket_class, [("accept",), receiver, ("receive",)], [CONNECT, message, text("next")])
    assert outcome(trace) == ("ok", canonical(text("next")))


async def test_receive_text_bytes_json_values(websocket_class: type) -> None:
    script = [("accept",), ("receive_text",), ("receive_bytes",), ("receive_json",), ("receive_json", "binary")]
    messages = [CONNECT, text("héllo"), binary(b"\x00\x01"), text('{"k": [1, 2.0, "x", null, true]}'), binary(b"[18446744073709551616]")]
    trace = await check(websocket_class, script, messages)
    assert [outcome(trace, i) for i in range(1, 5)] == [
        ("ok", ("str", "héllo")),
        ("ok", ("bytes", b"\x00\x01")),
        ("ok", canonical({"k": [1, 2.0, "x", None, True]})),
        ("ok", canonical([18446744073709551616])),
    ]


@pytest.mark.parametrize("mode", ["", "TEXT", "bytes", None, 1])
async def test_json_modes_are_checked_first(websocket_class: type, mode: Any) -> None:
    # Before the state: even a websocket that was never accepted says so.
    script = [("receive_json", mode), ("send_json", {"a": 1}, mode), ("iter_json", mode), ("accept",), ("receive_json", mode), ("send_json", [1], mode)]
    trace = await check(websocket_class, script, [CONNECT, text("[1]")])
    assert {raised(trace, i) for i in (0, 1, 2, 4, 5)} == {RuntimeError}
    assert outcome(trace, 0)[2] == 'The "mode" argument should be "text" or "binary".'


# -- difference 1: the wrong kind of frame ------------------------------------------------------

FRAME_MISMATCHES = [
    # (call, message, the kind that arrived)
    (("receive_text",), {"type": "websocket.receive", "bytes": b"x"}, "a binary message"),
    (("receive_text",), {"type": "websocket.receive", "text": None, "bytes": b"x"}, "a binary message"),
    (("receive_bytes",), {"type": "websocket.receive", "text": "x"}, "a text message"),
    (("receive_bytes",), {"type": "websocket.receive", "bytes": None, "text": "x"}, "a text message"),
    (("receive_json",), {"type": "websocket.receive", "bytes": b"[1]"}, "a binary message"),
    (("receive_json", "text"), {"type": "websocket.receive", "text": None, "bytes": b"[1]"}, "a binary message"),
    (("receive_json", "binary"), {"type": "websocket.receive", "text": "[1]"}, "a text message"),
    (("receive_json", "binary"), {"type": "websocket.receive", "bytes": None, "text": "[1]"}, "a text message"),
    (("receive_text",), {"type": "websocket.receive"}, "neither 'text' nor 'bytes'"),
    (("receive_bytes",), {"type": "websocket.receive", "bytes": None, "text": None}, "neither 'text' nor 'bytes'"),
]


@pytest.mark.parametrize(("call", "message", "arrived"), FRAME_MISMATCHES, ids=repr)
async def test_wrong_frame_kind_raises_frame_type_error(
    websocket_class: type, call: tuple[Any, ...], message: dict[str, Any], arrived: str
) -> None:
    # Starlette returns None or raises a bare KeyError/TypeError/AttributeError here.
    starlette_ws, _ = make(StarletteWebSocket, [CONNECT, message])
    await starlette_ws.accept()
    try:
        starlette_result = await getattr(starlette_ws, call[0])(*call[1:])
    except (KeyError, TypeError, AttributeError) as exc:
        assert not isinstance(exc, WebSocketFrameTypeError)
    else:
        assert starlette_result is None

    # turbows raises one clear error, which code written against Starlette still catches.
    ws, _ = make(websocket_class, [CONNECT, message, text("next")])
    await ws.accept()
    with pytest.raises(WebSocketFrameTypeError) as info:
        await getattr(ws, call[0])(*call[1:])
    error = info.value
    assert isinstance(error, KeyError)
    assert not isinstance(error, ValueError)
    assert arrived in str(error)
    expected = "binary" if (call[1:] == ("binary",) or call[0] == "receive_bytes") else "text"
    assert str(error).startswith(f"expected a {expected} message")
    assert error.message == message
    # The connection is still usable.
    assert (ws.client_state, ws.application_state) == (CONNECTED, CONNECTED)
    assert await ws.receive_text() == "next"

    await check(websocket_class, [("accept",), call, ("receive_text",)], [CONNECT, message, text("next")])


async def test_frame_type_error_is_caught_as_keyerror(websocket_class: type) -> None:
    ws, _ = make(websocket_class, [CONNECT, binary(b"x")])
    await ws.accept()
    try:
        await ws.receive_text()
    except KeyError as exc:  # what Starlette code catches
        caught: BaseException = exc
    assert type(caught) is turbows.WebSocketFrameTypeError


async def _branch_taken(cls: type, message: dict[str, Any]) -> str:
    """An app that handles bad JSON before a frame of the wrong kind, as apps do."""
    ws, _ = make(cls, [CONNECT, message])
    await ws.accept()
    try:
        await ws.receive_json()
    except ValueError:
        return "bad JSON"
    except KeyError:
        return "wrong frame"
    return "value"


@pytest.mark.parametrize(
    ("message", "branch"),
    [
        # uvicorn leaves the other key out: Starlette raises KeyError('text').
        ({"type": "websocket.receive", "bytes": b"[1]"}, "wrong frame"),
        ({"type": "websocket.receive", "text": "[1"}, "bad JSON"),
        ({"type": "websocket.receive", "text": "[1]"}, "value"),
    ],
    ids=["binary frame", "bad JSON", "good JSON"],
)
async def test_handlers_take_the_branch_they_take_on_starlette(
    websocket_class: type, message: dict[str, Any], branch: str
) -> None:
    assert await _branch_taken(StarletteWebSocket, message) == branch
    assert await _branch_taken(websocket_class, message) == branch


async def test_frame_type_error_pickles(websocket_class: type) -> None:
    ws, _ = make(websocket_class, [CONNECT, binary(b"x")])
    await ws.accept()
    with pytest.raises(WebSocketFrameTypeError) as info:
        await ws.receive_text()
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is WebSocketFrameTypeError
    assert (str(copy), copy.expected, copy.message) == (str(info.value), "text", info.value.message)


# -- send_text / send_bytes / send_json ------------------------------------------------------

SENDERS = [
    ("send_text", "héllo"),
    ("send_text", ""),
    ("send_bytes", b"\x00\xff"),
    ("send_bytes", b""),
    ("send_json", {"a": [1, 2.5, None, True, "ü"]}),
    ("send_json", {"a": [1, 2.5]}, "text"),
    ("send_json", {"a": [1, 2.5]}, "binary"),
    ("send_json", [float("nan"), float("inf"), -0.0, 2**80], "text"),
    ("send_json", [float("nan"), float("inf"), -0.0, 2**80], "binary"),
    ("send_json", {1: "int key", None: "null key"}),
    ("send_json", "\ud800 lone", "text"),
    ("send_json", "\ud800 lone", "binary"),  # UnicodeEncodeError, as in Starlette
    ("send_json", {"not": {1, 2}}),  # TypeError before any state check
]


@pytest.mark.parametrize("sender", SENDERS, ids=repr)
@pytest.mark.parametrize("state", list(APP_STATE_PREFIXES))
async def test_senders_in_each_state(websocket_class: type, sender: tuple[Any, ...], state: str) -> None:
    trace = await check(websocket_class, [*APP_STATE_PREFIXES[state], sender, ("state",)], [CONNECT])
    if state == "CONNECTED" and outcome(trace, -2)[0] == "ok":
        payload = trace.sent[-1][1]
        assert payload["type"] == ("str", "websocket.send")


async def test_send_json_payload_kinds(websocket_class: type) -> None:
    ws, peer = make(websocket_class, [CONNECT])
    reference, reference_peer = make(StarletteWebSocket, [CONNECT])
    for websocket in (ws, reference):
        await websocket.accept()
        await websocket.send_json({"a": "ü", "b": [1.5, None]})
        await websocket.send_json({"a": "ü", "b": [1.5, None]}, mode="binary")
    for sent in (peer.sent, reference_peer.sent):
        assert set(sent[1]) == {"type", "text"} and type(sent[1]["text"]) is str
        assert set(sent[2]) == {"type", "bytes"} and type(sent[2]["bytes"]) is bytes
    assert json.loads(peer.sent[1]["text"]) == json.loads(reference_peer.sent[1]["text"])
    assert json.loads(peer.sent[2]["bytes"]) == json.loads(reference_peer.sent[2]["bytes"])


# -- iteration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iterator", "payloads"),
    [
        (("iter_text",), [text("a"), text("b"), text("")]),
        (("iter_bytes",), [binary(b"a"), binary(b""), binary(b"\xff")]),
        (("iter_json",), [text("[1]"), text('{"a": null}'), text("1e400")]),
        (("iter_json", "text"), [text("[1]"), text('"x"')]),
        (("iter_json", "binary"), [binary(b"[1]"), binary(b'{"a": 2}'), binary(b"18446744073709551617")]),
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    "end",
    [disconnect(), {"type": "websocket.disconnect", "code": 1000}, None],
    ids=["disconnect", "disconnect without reason", "server exhausted"],
)
async def test_iterators(websocket_class: type, iterator: tuple[Any, ...], payloads: list[Any], end: Any) -> None:
    messages = [CONNECT, *payloads] + ([end] if end else [])
    trace = await check(websocket_class, [("accept",), iterator, iterator, ("state",)], messages)
    yielded = outcome(trace, 1)[-1][1]
    assert len(yielded) == len(payloads)
    if end is not None:
        assert outcome(trace, 1)[0] == "ok"  # the disconnect ends the loop quietly
        assert raised(trace, 2) is WebSocketDisconnected
        assert states(trace) == (DISCONNECTED, CONNECTED)
    else:
        assert raised(trace, 1) is PeerExhausted


@pytest.mark.parametrize(
    ("iterator", "bad"),
    [
        (("iter_text",), binary(b"x")),
        (("iter_bytes",), text("x")),
        (("iter_json",), binary(b"[1]")),
        (("iter_json", "binary"), text("[1]")),
        (("iter_json",), text("{not json")),
        (("iter_json", "binary"), binary(b"\xff")),
        (("iter_text",), {"type": "websocket.connect"}),
        (("iter_text",), {"type": "websocket.disconnect"}),
    ],
    ids=repr,
)
async def test_iterators_stop_on_errors(websocket_class: type, iterator: tuple[Any, ...], bad: Any) -> None:
    good = binary(b"[0]") if iterator in (("iter_bytes",), ("iter_json", "binary")) else text("[0]")
    trace = await check(websocket_class, [("accept",), iterator, ("receive_text",)], [CONNECT, good, bad, text("after")])
    assert outcome(trace, 1)[0] == "raise"
    assert len(outcome(trace, 1)[-1][1]) == 1  # the good message was yielded first
    if bad["type"] != "websocket.disconnect":
        assert outcome(trace) == ("ok", ("str", "after"))


@pytest.mark.parametrize("state", ["CONNECTING", "RESPONSE", "DISCONNECTED"])
@pytest.mark.parametrize("iterator", [("iter_text",), ("iter_bytes",), ("iter_json",), ("iter_json", "binary")], ids=repr)
async def test_iterators_when_not_accepted(websocket_class: type, state: str, iterator: tuple[Any, ...]) -> None:
    trace = await check(websocket_class, [*APP_STATE_PREFIXES[state], iterator], [CONNECT, text("[1]")])
    assert raised(trace) is WebSocketDisconnected


async def test_iter_json_binary_mode(websocket_class: type) -> None:
    # Difference 2: Starlette's iter_json takes no mode.
    ws, _ = make(websocket_class, [CONNECT, binary(b'{"n": 1}'), binary("[true, 2.5]".encode()), disconnect()])
    await ws.accept()
    assert [value async for value in ws.iter_json(mode="binary")] == [{"n": 1}, [True, 2.5]]
    starlette_ws, _ = make(StarletteWebSocket, [CONNECT])
    with pytest.raises(TypeError):
        starlette_ws.iter_json(mode="binary")  # type: ignore[call-arg]
    # The same messages read one by one with Starlette's receive_json("binary").
    reference, _ = make(StarletteWebSocket, [CONNECT, binary(b'{"n": 1}'), binary("[true, 2.5]".encode()), disconnect()])
    await reference.accept()
    assert [await reference.receive_json("binary"), await reference.receive_json("binary")] == [{"n": 1}, [True, 2.5]]


# -- denial response ---------------------------------------------------------------------------


class _StateRecorder:
    """A send callable that records each message with the websocket's application state at that moment."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.log: list[tuple[Any, WebSocketState]] = []

    async def send(self, message: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append((canonical(dict(message)), self.ws.application_state))


def _denial_responses() -> list[Response]:
    async def chunks() -> Any:
        yield b"one"
        yield b"two"

    return [
        PlainTextResponse("forbidden", status_code=403, headers={"x-reason": "no"}),
        Response(b"", status_code=401),
        StreamingResponse(chunks(), status_code=429),
    ]


@pytest.mark.parametrize("which", range(3), ids=["plain", "empty", "streaming"])
@pytest.mark.parametrize("receive_first", [False, True])
async def test_send_denial_response(websocket_class: type, which: int, receive_first: bool) -> None:
    logs = []
    for cls in (StarletteWebSocket, websocket_class):
        recorder = _StateRecorder()
        peer = ScriptedPeer([CONNECT], checkpoint=anyio.lowlevel.checkpoint)
        ws = recorder.ws = cls(make_scope(), peer.receive, recorder.send)
        if receive_first:
            await ws.receive()
        await ws.send_denial_response(_denial_responses()[which])
        logs.append((recorder.log, ws.client_state, ws.application_state))
    assert logs[1] == logs[0]
    log, _, application_state = logs[1]
    assert application_state is DISCONNECTED
    assert log[0][0][1]["type"] == ("str", "websocket.http.response.start")
    assert log[0][1] is RESPONSE  # moved to RESPONSE as the start went out
    assert all(message[1]["type"] == ("str", "websocket.http.response.body") for message, _ in log[1:])
    assert log[-1][1] is DISCONNECTED


@pytest.mark.parametrize("state", list(APP_STATE_PREFIXES))
@pytest.mark.parametrize("denial", [True, False], ids=["extension", "no extension"])
async def test_send_denial_response_in_each_state(websocket_class: type, state: str, denial: bool) -> None:
    script = [*APP_STATE_PREFIXES[state], ("send_denial_response", 403, b"no", {"x-a": "b"}), ("state",)]
    trace = await check(websocket_class, script, [CONNECT], scope=make_scope(denial=denial))
    if not denial:
        assert outcome(trace, -2)[1:3] == (RuntimeError, "The server doesn't support the Websocket Denial Response extension.")


async def test_send_denial_response_without_extensions_key(websocket_class: type) -> None:
    scope = make_scope()
    del scope["extensions"]
    trace = await check(websocket_class, [("send_denial_response", 403, b"no")], [CONNECT], scope=scope)
    assert raised(trace) is RuntimeError


# -- the server's send failing ---------------------------------------------------------------


@pytest.mark.parametrize("error", [OSError, ConnectionResetError, BrokenPipeError, ValueError, PeerExhausted])
@pytest.mark.parametrize(
    "op",
    [("send_text", "x"), ("send_bytes", b"x"), ("send_json", {"a": 1}), ("send_json", [1], "binary"), ("close", 1001, "x"), ("send", {"type": "websocket.send", "text": "x"})],
    ids=repr,
)
async def test_send_errors_on_an_open_connection(websocket_class: type, error: type, op: tuple[Any, ...]) -> None:
    trace = await check(websocket_class, [("accept",), op, op, ("send_text", "y")], [CONNECT], send_errors={1: error})
    if issubclass(error, OSError):
        assert raised(trace, 1) is WebSocketDisconnect
        assert outcome(trace, 1)[3] == (1006, "")
        assert states(trace, 1) == (CONNECTED, DISCONNECTED)
        assert raised(trace) is WebSocketDisconnected
    else:
        assert raised(trace, 1) is error
    assert len(trace.failed_sends) == 1


@pytest.mark.parametrize(
    ("script", "failing"),
    [
        ([("accept",)], 0),
        ([("close",)], 0),
        ([("send_denial_response", 403, b"no")], 0),
        ([("send_denial_response", 403, b"no")], 1),
        ([("receive",), ("send", RESPONSE_START), ("send", {"type": "websocket.http.response.body", "body": b""})], 1),
    ],
    ids=["accept", "close before accept", "denial start", "denial body", "response body"],
)
@pytest.mark.parametrize("error", [OSError, ConnectionResetError])
async def test_send_errors_outside_an_open_connection_propagate(
    websocket_class: type, script: list[Any], failing: int, error: type
) -> None:
    # Starlette turns OSError into WebSocketDisconnect(1006) only while CONNECTED.
    trace = await check(websocket_class, [*script, ("state",), ("send_text", "x")], [CONNECT], send_errors={failing: error})
    assert raised(trace, len(script) - 1) is error
    assert len(trace.failed_sends) == 1


async def test_oserror_becomes_disconnect_1006_with_context(websocket_class: type) -> None:
    for cls in (StarletteWebSocket, websocket_class):
        ws, _ = make(cls, [CONNECT], send_errors={1: ConnectionResetError})
        await ws.accept()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.send_text("x")
        assert info.value.code == 1006
        assert info.value.reason == ""
        assert type(info.value.__context__) is ConnectionResetError
        assert ws.application_state is DISCONNECTED
        assert ws.client_state is CONNECTED


# -- the Starlette class and its metadata ---------------------------------------------------------


def test_is_a_starlette_websocket(websocket_class: type) -> None:
    ws = websocket_class(make_scope(), None, None)
    assert isinstance(ws, StarletteWebSocket)
    assert issubclass(websocket_class, starlette.requests.HTTPConnection)
    assert websocket_class.__doc__ == StarletteWebSocket.__doc__
    # Every public name of Starlette's class is there.
    assert {name for name in dir(StarletteWebSocket) if not name.startswith("_")} <= set(dir(ws))


def test_reexports_are_starlettes_objects() -> None:
    assert turbows.WebSocketState is starlette.websockets.WebSocketState
    assert turbows.WebSocketDisconnect is starlette.websockets.WebSocketDisconnect
    assert turbows.WebSocketDisconnected is starlette.websockets.WebSocketDisconnected
    assert turbows.WebSocketClose is starlette.websockets.WebSocketClose
    # KeyError, as Starlette raises on uvicorn, and no other built-in exception.
    builtin_bases = [cls for cls in turbows.WebSocketFrameTypeError.__mro__ if cls.__module__ == "builtins"]
    assert builtin_bases == [KeyError, LookupError, Exception, BaseException, object]
    assert turbows.IMPLEMENTATION in ("speedups", "pure")
    assert isinstance(turbows.WebSocket(make_scope(), None, None), StarletteWebSocket)


def test_http_connection_metadata(websocket_class: type) -> None:
    scope = make_scope()
    ws = websocket_class(scope, None, None)
    reference = StarletteWebSocket(make_scope(), None, None)
    assert ws.url == reference.url
    assert str(ws.url) == "ws://testserver/rooms/7?a=1&b=two&a=3"
    assert ws.base_url == reference.base_url
    assert ws.headers == reference.headers
    assert ws.headers.getlist("x-custom") == ["one", "two"]
    assert ws.query_params.multi_items() == reference.query_params.multi_items() == [("a", "1"), ("b", "two"), ("a", "3")]
    assert ws.path_params == reference.path_params == {"room": 7}
    assert ws.cookies == reference.cookies == {"session": "abc", "theme": "dark"}
    assert ws.client == reference.client == Address("203.0.113.7", 50123)
    assert isinstance(ws.state, State)
    ws.state.user_id = 42
    assert scope["state"] == {"user_id": 42}
    assert ws.scope is scope
    # The mapping interface reads the scope.
    assert ws["type"] == reference["type"] == "websocket"
    assert ws["path"] == "/rooms/7"
    assert len(ws) == len(reference) == len(scope)
    assert list(ws) == list(reference) == list(scope)
    assert dict(ws.items()) == scope
    assert "headers" in ws
    assert ws.get("missing", "default") == "default"
    # Equality is identity, so websockets can be dict keys.
    twin = websocket_class(scope, None, None)
    assert ws == ws and ws != twin and not (ws == twin)
    assert len({ws, twin, ws}) == 2


@pytest.mark.parametrize("name", ["session", "auth", "user"])
def test_middleware_attributes(websocket_class: type, name: str) -> None:
    with pytest.raises(AssertionError) as expected:
        getattr(StarletteWebSocket(make_scope(), None, None), name)
    with pytest.raises(AssertionError) as actual:
        getattr(websocket_class(make_scope(), None, None), name)
    assert str(actual.value) == str(expected.value)
    value = object()
    assert getattr(websocket_class(make_scope(**{name: value}), None, None), name) is value


def test_url_for(websocket_class: type) -> None:
    async def endpoint(websocket: Any) -> None:  # pragma: no cover - never served
        pass

    router = Router(routes=[WebSocketRoute("/rooms/{room:int}", endpoint, name="room")])
    ws = websocket_class(make_scope(router=router), None, None)
    reference = StarletteWebSocket(make_scope(router=router), None, None)
    assert ws.url_for("room", room=9) == reference.url_for("room", room=9)
    assert str(ws.url_for("room", room=9)) == "ws://testserver/rooms/9"


@pytest.mark.parametrize("scope_type", ["http", "lifespan", "websocket.connect"])
def test_constructor_asserts_a_websocket_scope(websocket_class: type, scope_type: str) -> None:
    with pytest.raises(AssertionError):
        StarletteWebSocket(make_scope(type=scope_type), None, None)
    with pytest.raises(AssertionError):
        websocket_class(make_scope(type=scope_type), None, None)


async def test_constructor_keywords(websocket_class: type) -> None:
    peer = ScriptedPeer([CONNECT, text("k")], checkpoint=anyio.lowlevel.checkpoint)
    ws = websocket_class(make_scope(), receive=peer.receive, send=peer.send)  # as FastAPI calls it
    await ws.accept()
    assert await ws.receive_text() == "k"
    ws = websocket_class(scope=make_scope(), receive=peer.receive, send=peer.send)
    assert ws.scope["type"] == "websocket"
    assert StarletteWebSocket(scope=make_scope(), receive=peer.receive, send=peer.send).scope["type"] == "websocket"
    assert ws._receive == peer.receive and ws._send == peer.send
    with pytest.raises(TypeError):
        websocket_class(make_scope(), peer.receive)  # type: ignore[call-arg]


async def test_rebinding_receive_and_send(websocket_class: type) -> None:
    # Middleware-style code swaps the callables after construction.
    for cls in (StarletteWebSocket, websocket_class):
        ws, first = make(cls, [CONNECT])
        second = ScriptedPeer([text("from second")], checkpoint=anyio.lowlevel.checkpoint)
        await ws.accept()
        ws._receive, ws._send = second.receive, second.send
        assert await ws.receive_text() == "from second"
        await ws.send_text("to second")
        assert [m["type"] for m in first.sent] == ["websocket.accept"]
        assert second.sent == [{"type": "websocket.send", "text": "to second"}]


@pytest.mark.parametrize("attribute", ["client_state", "application_state"])
async def test_state_setters_and_getters(websocket_class: type, attribute: str) -> None:
    ws = websocket_class(make_scope(), None, None)
    assert getattr(ws, attribute) is CONNECTING
    for member in WebSocketState:
        setattr(ws, attribute, member)
        assert getattr(ws, attribute) is member
        assert getattr(ws, attribute) == member
    # Setting a state drives behaviour exactly as in Starlette.
    for member in WebSocketState:
        script = [(f"set_{attribute}", member), ("receive",), ("send_text", "x"), ("accept",), ("receive_text",), ("close",)]
        await check(websocket_class, script, [CONNECT, text("a"), text("b")])


async def test_calls_not_awaited_do_nothing(websocket_class: type) -> None:
    # As with a coroutine, nothing runs until the call is awaited.
    for cls in (StarletteWebSocket, websocket_class):
        ws, peer = make(cls, [CONNECT, text("x")])
        calls = [
            ws.receive(), ws.send({"type": "websocket.accept"}), ws.accept(), ws.close(), ws.receive_text(),
            ws.receive_bytes(), ws.receive_json(), ws.send_text("x"), ws.send_bytes(b"x"), ws.send_json(1),
            ws.send_json(1, mode="bogus"), ws.receive_json(mode="bogus"),
        ]
        for call in calls:
            call.close()
        assert (peer.delivered, peer.send_calls) == (0, 0)
        assert (ws.client_state, ws.application_state) == (CONNECTING, CONNECTING)


async def test_methods_run_as_tasks(websocket_class: type) -> None:
    results = []
    for cls in (StarletteWebSocket, websocket_class):
        ws, peer = make(cls, [CONNECT, text("a"), binary(b"b"), text("[1]")])
        received: list[Any] = []

        async def receive_all(ws: Any = ws, received: list[Any] = received) -> None:
            received.append(await ws.receive_text())
            received.append(await ws.receive_bytes())
            received.append(await ws.receive_json())

        await ws.accept()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ws.send_text, "one")
            tg.start_soon(ws.send_json, {"two": 2})
            tg.start_soon(receive_all)
        await ws.close(1000, "done")
        results.append((received, sorted(map(repr, peer.sent))))
    assert results[1] == results[0]
    assert results[1][0] == ["a", b"b", [1]]


async def test_concurrent_senders_all_get_through(websocket_class: type) -> None:
    # Each send checkpoints in the server, so two tasks' sends interleave.
    outcomes = []
    for cls in (StarletteWebSocket, websocket_class):
        ws, peer = make(cls, [CONNECT])
        await ws.accept()

        async def burst(tag: str, ws: Any = ws) -> None:
            for i in range(5):
                await ws.send_text(f"{tag}{i}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(burst, "a")
            tg.start_soon(burst, "b")
        outcomes.append(sorted(m["text"] for m in peer.sent[1:]))
    assert outcomes[0] == outcomes[1] == sorted(f"{t}{i}" for t in "ab" for i in range(5))
