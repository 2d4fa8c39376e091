"""Differential tests: random scripts and random server messages, Starlette against turbows.

Each example runs one script (random operations) over one scripted peer
(random messages: well-formed, malformed, out of order, keys missing,
odd ``type`` values, a few that are not dicts; random send failures;
scopes with and without the denial-response extension) through ``StarletteReference``
and through turbows, and asserts equal traces: every return value,
exception class and message, the state pair after every step, and every
message sent (JSON payloads by the value they parse to).

``StarletteReference`` is Starlette's own class with the documented
differences applied by ``asgi_peer.documented_difference``, the one
explicit mapping: a frame of the other kind gives ``WebSocketFrameTypeError``
where Starlette returns ``None`` or raises ``KeyError``/``TypeError``/
``AttributeError``, and bad JSON gives any ``ValueError`` subclass
(``JSONDecodeError`` where Starlette's is one).

Known divergence, not generated: a message ``type`` (or a ``mode``) that is
unhashable, such as a list, makes Starlette's set lookups raise
``TypeError`` where turbows compares and raises its ``RuntimeError``.

The coroutines never really suspend (the peer does not checkpoint), so each
example runs synchronously, with no event loop; the behaviour tests cover
asyncio and trio.
"""

from __future__ import annotations

import json
from collections import UserDict
from types import MappingProxyType
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st
from starlette.websockets import WebSocketState

from asgi_peer import StarletteReference, documented_difference, make_scope, run_script_sync
from turbows import WebSocketFrameTypeError


CONNECT = {"type": "websocket.connect"}


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of ``choices`` (``(weight, strategy)`` pairs), in proportion to the weights.

    ``st.one_of`` flattens nested ``one_of``s and draws a leaf branch, so its
    weights follow how strategies happen to be built; this one is explicit.
    """
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(pool.__getitem__)


# -- values -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)


def _spell(value: Any, compact: bool) -> str:
    return json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=compact)


json_texts = st.one_of(
    st.builds(_spell, json_values, st.booleans()),
    st.text(max_size=8),
    st.sampled_from(["NaN", "-Infinity", "1e400", '"\\ud800"', '{"a":1,"a":2}', "\ufeff[]", " [1] ", "[1]]", "", "18446744073709551616"]),
)
text_payloads = st.one_of(
    st.none(),
    json_texts,
    st.integers(-1, 2),  # odd payloads pass through Starlette untouched
    json_texts.map(lambda text: text.encode("utf-8", "surrogatepass")),
)
bytes_payloads = st.one_of(
    st.none(),
    json_texts.map(lambda text: text.encode("utf-8", "surrogatepass")),  # lone surrogates: invalid UTF-8
    st.binary(max_size=6),
    st.binary(max_size=4).map(bytearray),
    st.text(max_size=3),
)
# Hashable odd types only: see the module docstring.
message_types = st.one_of(
    st.sampled_from(
        [
            "websocket.connect",
            "websocket.receive",
            "websocket.disconnect",
            "websocket.send",
            "websocket.accept",
            "websocket.close",
            "http.request",
            "http.disconnect",
            "lifespan.startup",
            "",
            "websocket.receive ",
        ]
    ),
    st.none(),
    st.integers(-1, 2),
    st.booleans(),
    st.sampled_from([b"websocket.connect", b"websocket.receive", b"websocket.disconnect"]),
    st.text(max_size=3),
)
codes = st.one_of(st.integers(1000, 4999), st.none(), st.text(max_size=2))
reasons = st.one_of(st.none(), st.text(max_size=5))

# -- what the server delivers -----------------------------------------------------------------

text_messages = st.builds(lambda text: {"type": "websocket.receive", "text": text}, json_texts)
binary_messages = st.builds(
    lambda data: {"type": "websocket.receive", "bytes": data},
    st.one_of(json_texts.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=6)),
)
disconnects = st.one_of(
    st.builds(lambda code, reason: {"type": "websocket.disconnect", "code": code, "reason": reason}, st.integers(1000, 4999), reasons),
    st.fixed_dictionaries({"type": st.just("websocket.disconnect")}, optional={"code": codes, "reason": reasons}),
)
any_messages = st.fixed_dictionaries(
    {},
    optional={"type": message_types, "text": text_payloads, "bytes": bytes_payloads, "code": codes, "reason": reasons},
)
# Not dicts at all, or mappings of other types: servers deliver dicts, but a
# middleware may wrap receive.
odd_messages = st.one_of(
    st.sampled_from([None, "websocket.receive", 0, b"", ("type", "websocket.receive")]),
    any_messages.map(MappingProxyType),
    st.one_of(text_messages, binary_messages, disconnects).map(UserDict),
)
server_messages = weighted(
    (6, text_messages), (6, binary_messages), (2, disconnects), (2, st.just(CONNECT)), (4, any_messages), (1, odd_messages)
)

# -- what the application does ---------------------------------------------------------------

app_message_types = st.one_of(
    st.sampled_from(
        [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
            "websocket.http.response.start",
            "websocket.http.response.body",
            "http.response.start",
            "websocket.receive",
        ]
    ),
    st.none(),
    st.integers(0, 1),
    st.just(b"websocket.send"),
)
app_messages = st.fixed_dictionaries(
    {},
    optional={
        "type": app_message_types,
        "text": st.text(max_size=3),
        "bytes": st.binary(max_size=3),
        "code": st.integers(1000, 4999),
        "reason": reasons,
        "status": st.sampled_from([200, 403]),
        "headers": st.just([(b"x-a", b"1")]),
        "body": st.binary(max_size=3),
        "more_body": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
    },
)
modes = st.sampled_from(["text", "binary", "bogus"])
sendable = st.one_of(json_values, st.sets(st.integers(), max_size=2), st.binary(max_size=2))

# Operations that keep a connection going, and those that end or upset it.
live_operations = st.one_of(
    st.just(("receive",)),
    st.sampled_from([("receive_text",), ("receive_bytes",), ("receive_json",)]),
    st.tuples(st.just("receive_json"), modes),
    st.tuples(st.just("send_text"), st.text(max_size=4)),
    st.tuples(st.just("send_bytes"), st.binary(max_size=4)),
    st.tuples(st.just("send_json"), sendable),
    st.tuples(st.just("send_json"), sendable, modes),
    st.just(("state",)),
)
other_operations = st.one_of(
    st.tuples(st.just("send"), app_messages),
    st.tuples(
        st.just("accept"),
        st.one_of(st.none(), st.sampled_from(["chat", ""])),
        st.one_of(st.none(), st.just([]), st.just(()), st.just([(b"x-a", b"1")])),
    ),
    st.one_of(
        st.just(("close",)),
        st.tuples(st.just("close"), st.integers(1000, 4999)),
        st.tuples(st.just("close"), st.integers(1000, 4999), reasons),
    ),
    st.sampled_from([("iter_text",), ("iter_bytes",), ("iter_json",), ("iter_json", "text"), ("iter_json", "binary")]),
    st.tuples(st.sampled_from(["set_client_state", "set_application_state"]), st.sampled_from(list(WebSocketState))),
    st.tuples(st.just("send_denial_response"), st.sampled_from([401, 403]), st.binary(max_size=3)),
)
operations = weighted((4, live_operations), (1, other_operations))
_RECEIVERS = {"receive", "receive_text", "receive_bytes", "receive_json"}
_ITERATORS = {"iter_text", "iter_bytes", "iter_json"}


def _with_messages(op: tuple[Any, ...]) -> st.SearchStrategy[tuple[tuple[Any, ...], list[Any]]]:
    """``op`` with the messages the server delivers for it: one per receive, a few per iteration.

    Keeping the messages roughly in step with the script makes runs reach deep
    states instead of running out of messages or tripping at once; ``extra``
    messages and operations that do not consume theirs put them out of step.
    """
    if op[0] in _RECEIVERS:
        messages = st.lists(server_messages, min_size=1, max_size=1)
    elif op[0] in _ITERATORS:
        messages = st.lists(server_messages, max_size=4)
    else:
        messages = st.one_of(st.just([]), st.just([]), st.just([]), st.lists(server_messages, min_size=1, max_size=1))
    return st.tuples(st.just(op), messages)


def _assemble(prefix: list[Any], connect_first: bool, steps: list[Any], extra: list[Any]) -> tuple[list[Any], list[Any]]:
    script = [*prefix, *(op for op, _ in steps)]
    messages = [CONNECT] if connect_first else []
    messages += [message for _, step_messages in steps for message in step_messages] + extra
    return script, messages


# (script, messages): what the application does, and what the server delivers.
sessions = st.builds(
    _assemble,
    st.sampled_from([[("accept",)], [("accept",)], [("accept",)], [("accept", "chat", [(b"x-a", b"1")])], [("receive",)], []]),
    st.sampled_from([True] * 7 + [False]),
    st.lists(operations.flatmap(_with_messages), min_size=1, max_size=12),
    st.lists(server_messages, max_size=2),
)
send_failures = st.one_of(
    st.just({}),
    st.dictionaries(st.integers(0, 6), st.sampled_from([OSError, ConnectionResetError, BrokenPipeError, ValueError]), max_size=2),
)


def _assert_same(websocket_class: type, script: Any, messages: Any, send_errors: Any, denial: bool) -> None:
    note(f"script={script!r}")
    note(f"messages={messages!r}")
    note(f"send_errors={send_errors!r} denial={denial!r}")
    expected = run_script_sync(StarletteReference, script, messages, send_errors=send_errors, scope=make_scope(denial=denial))
    actual = run_script_sync(websocket_class, script, messages, send_errors=send_errors, scope=make_scope(denial=denial))
    assert actual == expected


@given(session=sessions, send_errors=send_failures, denial=st.booleans())
def test_random_scripts(websocket_class: type, session: Any, send_errors: Any, denial: bool) -> None:
    script, messages = session
    _assert_same(websocket_class, script, messages, send_errors, denial)


state_operations = weighted(
    (3, st.tuples(st.just("send"), app_messages)),
    (2, st.tuples(st.sampled_from(["set_client_state", "set_application_state"]), st.sampled_from(list(WebSocketState)))),
    (1, st.sampled_from([("accept",), ("close",), ("close", 4000, "x"), ("send_denial_response", 403, b"no")])),
    (2, st.sampled_from([("receive",), ("receive_text",), ("receive_bytes",), ("send_text", "t"), ("send_bytes", b"b"), ("state",)])),
)


@given(
    script=st.lists(state_operations, min_size=1, max_size=8),
    messages=st.lists(server_messages, max_size=6),
    send_errors=send_failures,
)
def test_random_state_machine_walks(websocket_class: type, script: Any, messages: Any, send_errors: Any) -> None:
    # Dense on the state machine: raw messages sent in any state, states set by hand.
    _assert_same(websocket_class, script, [CONNECT, *messages], send_errors, True)


receivers = st.sampled_from(
    [
        ("receive",),
        ("receive_text",),
        ("receive_bytes",),
        ("receive_json",),
        ("receive_json", "binary"),
        ("iter_text",),
        ("iter_bytes",),
        ("iter_json",),
        ("iter_json", "binary"),
    ]
)


@given(receiver=receivers, messages=st.lists(server_messages, min_size=1, max_size=4))
def test_receivers_on_random_messages(websocket_class: type, receiver: Any, messages: Any) -> None:
    # Dense on the receive side: an accepted websocket reads random messages.
    script = [("accept",), receiver, receiver, ("receive",)]
    _assert_same(websocket_class, script, [CONNECT, *messages], {}, True)


# -- the mapping itself ----------------------------------------------------------------------


def test_documented_difference_maps_only_frame_kind_and_json_errors() -> None:
    text = {"type": "websocket.receive", "text": "x"}
    binary = {"type": "websocket.receive", "bytes": b"x"}
    # The right kind: no difference.
    assert documented_difference("receive_text", "text", text, "x", None) is None
    assert documented_difference("receive_bytes", "binary", binary, b"x", None) is None
    # Bad JSON: any ValueError subclass, JSONDecodeError where Starlette's is one.
    bad = {"type": "websocket.receive", "text": "{"}
    assert documented_difference("receive_json", "text", bad, None, json.JSONDecodeError("x", "{", 1)).base is json.JSONDecodeError
    bad = {"type": "websocket.receive", "bytes": b"\xff"}
    assert documented_difference("receive_json", "binary", bad, None, UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x")).base is ValueError
    # The other kind: a WebSocketFrameTypeError naming what arrived.
    mapped = documented_difference("receive_text", "text", binary, None, KeyError("text"))
    assert isinstance(mapped, WebSocketFrameTypeError) and "a binary message" in str(mapped)
    mapped = documented_difference("receive_json", "binary", text, None, KeyError("bytes"))
    assert isinstance(mapped, WebSocketFrameTypeError) and "a text message" in str(mapped)
    # A disconnect without a code is Starlette's KeyError('code') in both.
    assert documented_difference("receive_text", "text", {"type": "websocket.disconnect"}, None, KeyError("code")) is None
    # Any other error of Starlette's stays exactly as it is.
    assert documented_difference("receive_json", "text", {"type": "websocket.receive", "text": 5}, None, TypeError("x")) is None
    assert documented_difference("receive_json", "binary", {"type": "websocket.receive", "bytes": "s"}, None, AttributeError("x")) is None
