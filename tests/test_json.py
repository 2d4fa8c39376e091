"""JSON property tests against Starlette.

The contract (README, "Deliberate differences from Starlette"), which
``_speedups/_json_c.pyx`` implements:

- ``send_json(v)``: where Starlette's ``send_json`` accepts ``v``, the text or
  bytes turbows sends parse (``json.loads``) to the same value, NaN and the
  infinities included; where Starlette rejects ``v``, turbows raises the same
  exception class.
- ``receive_json()``: where Starlette accepts the message, the same value,
  type for type (an int stays an int); where it rejects it, a ``ValueError``
  subclass (``json.JSONDecodeError`` where Starlette's is one); any other
  exception (``RecursionError``), the same class.

Values compare through ``canonical``: NaN equals NaN, -0.0 is not 0.0, 1 is
neither 1.0 nor True. The module-level ``dumps_text``/``dumps_bytes``/
``loads_text``/``loads_bytes`` of each core are held to the same contract
against Starlette's own calls.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import importlib
import json
import sys
import uuid
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.websockets import WebSocket as StarletteWebSocket

from asgi_peer import ScriptedPeer, canonical, make_scope, run_sync
from turbows._cores import NO_EXTENSIONS

CONNECT = {"type": "websocket.connect"}


# The modules holding dumps_text/dumps_bytes/loads_text/loads_bytes, per core:
# the compiled core's ``_json_c`` (orjson with exactness checks), which its
# send_json and receive_json call; the pure core's ``_json_py``.
CORE_MODULES = [("speedups", "turbows._json_c"), ("pure", "turbows._json_py")]


@pytest.fixture(params=CORE_MODULES, ids=[name for _, name in CORE_MODULES])
def core_module(request: pytest.FixtureRequest) -> ModuleType:
    """A module of a core, with the four JSON functions."""
    core, name = request.param
    if core == "speedups" and NO_EXTENSIONS:
        pytest.skip("TURBOWS_NO_EXTENSIONS is set: the compiled core is not loaded")
    return importlib.import_module(name)  # missing from a default install: an error, not a skip


# -- outcomes ---------------------------------------------------------------------------------


def send_json_outcome(target: type | ModuleType, value: Any, mode: str, parse: Any = canonical) -> tuple[Any, ...]:
    """``("ok", payload type, parse(parsed value))`` or ``("raise", exception class)``.

    ``target``: a WebSocket class (its ``send_json``) or a core module (its
    ``dumps_text``/``dumps_bytes``).
    """
    key = "text" if mode == "text" else "bytes"
    if isinstance(target, ModuleType):
        try:
            payload = (target.dumps_text if mode == "text" else target.dumps_bytes)(value)
        except Exception as exc:
            return ("raise", type(exc))
    else:
        peer = ScriptedPeer([CONNECT])
        ws = target(make_scope(), peer.receive, peer.send)
        run_sync(ws.accept())
        try:
            run_sync(ws.send_json(value, mode=mode))
        except Exception as exc:
            return ("raise", type(exc))
        (message,) = peer.sent[1:]
        assert set(message) == {"type", key} and message["type"] == "websocket.send"
        payload = message[key]
    return ("ok", type(payload), parse(json.loads(payload)))


def outcome_of(call: Any, *args: Any) -> tuple[Any, ...]:
    try:
        result = call(*args)
    except Exception as exc:
        return ("raise", type(exc), exc)
    return ("ok", canonical(result))


def receive_json_outcome(cls: type, message: dict[str, Any], mode: str) -> tuple[Any, ...]:
    peer = ScriptedPeer([CONNECT, message])
    ws = cls(make_scope(), peer.receive, peer.send)
    run_sync(ws.accept())
    return outcome_of(lambda: run_sync(ws.receive_json(mode=mode)))


def assert_same_load(expected: tuple[Any, ...], actual: tuple[Any, ...]) -> None:
    """Same value; or where Starlette raises a ValueError, a ValueError subclass (JSONDecodeError for JSONDecodeError)."""
    if expected[0] == "ok":
        assert actual == expected
        return
    assert actual[0] == "raise", f"Starlette raised {expected[2]!r}, turbows returned {actual[1]!r}"
    starlette_error = expected[1]
    if issubclass(starlette_error, json.JSONDecodeError):
        assert issubclass(actual[1], json.JSONDecodeError), actual[2]
    elif issubclass(starlette_error, ValueError):
        assert issubclass(actual[1], ValueError), actual[2]
    else:
        assert actual[1] is starlette_error, actual[2]


# -- values ---------------------------------------------------------------------------------------

characters = st.characters(exclude_categories=()) | st.integers(0xD800, 0xDFFF).map(chr)  # lone surrogates too
strings = st.text() | st.text(characters, max_size=8)
integers = st.one_of(
    st.integers(),
    st.integers(-(2**63) - 3, -(2**63) + 3),
    st.integers(2**63 - 3, 2**64 + 3),
    st.integers(2**64, 2**300),
    st.integers(-(2**300), -(2**63)),
)
floats = st.floats() | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e16, 5e-324, 1.7976931348623157e308])
scalars = st.none() | st.booleans() | integers | floats | strings
other_keys = st.one_of(integers, floats, st.booleans(), st.none())
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(strings, children, max_size=4),
        st.dictionaries(st.one_of(strings, other_keys), children, max_size=3),
    ),
    max_leaves=16,
)
modes = st.sampled_from(["text", "binary"])


# -- send_json ------------------------------------------------------------------------------------


@given(value=json_values, mode=modes)
@example(value=[float("nan"), float("inf"), float("-inf"), -0.0], mode="text")
@example(value={"k": 2**64, "j": -(2**63) - 1, "i": 2**63 - 1}, mode="binary")
@example(value={1: "a", "1": "b", None: 1, 1.5: 3, float("nan"): 4}, mode="text")
@example(value={True: 2, False: 0, "true": 1}, mode="text")
@example(value="\ud800", mode="text")
@example(value="\ud800", mode="binary")
@example(value={"\udfff": "x"}, mode="text")
def test_send_json_matches_starlette(websocket_class: type, value: Any, mode: str) -> None:
    assert send_json_outcome(websocket_class, value, mode) == send_json_outcome(StarletteWebSocket, value, mode)


@given(value=json_values)
@example(value=[float("nan"), 2**64, "\ud800", {1: 2}])
def test_dumps_functions_match_starlette(core_module: ModuleType, value: Any) -> None:
    for mode in ("text", "binary"):
        assert send_json_outcome(core_module, value, mode) == send_json_outcome(StarletteWebSocket, value, mode)


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Flags(enum.IntFlag):
    A = 1
    B = 2


class Name(str, enum.Enum):
    ALICE = "alice"


class Kind(enum.StrEnum):
    TEXT = "text"


class LoudInt(int):
    def __repr__(self) -> str:
        return "LOUD"

    __str__ = __repr__


class LoudFloat(float):
    def __repr__(self) -> str:
        return "LOUD"


class LoudStr(str):
    def __str__(self) -> str:
        return "LOUD"


class ItemsDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:  # the standard library's encoder calls it
        return [("overridden", True)]


class MyList(list):  # type: ignore[type-arg]
    pass


class MyTuple(tuple):  # type: ignore[type-arg]
    pass


class Point(NamedTuple):
    x: int
    y: float


@dataclasses.dataclass
class Pair:
    a: int
    b: str


class Custom:
    pass


REJECTED = [
    Color.RED,
    uuid.UUID(int=7),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2),
    datetime.time(1, 2),
    datetime.timedelta(seconds=1),
    Pair(1, "x"),
    {1, 2},
    frozenset({1}),
    b"bytes",
    bytearray(b"bytes"),
    memoryview(b"bytes"),
    Custom(),
    object(),
    1j,
    decimal.Decimal("1.5"),
    {"nested": [Color.RED]},
    [uuid.UUID(int=1)],
    {"when": datetime.datetime(2024, 1, 1)},
    {(1, 2): "tuple key"},
    {Custom(): 1},
    {b"k": 1},
    {"deep": [[[{1, 2}]]]},
    collections.ChainMap({"a": 1}),
]
SUBCLASSES = [
    Level.HIGH,
    Flags.A | Flags.B,
    Name.ALICE,
    Kind.TEXT,
    LoudInt(5),
    LoudFloat(1.5),
    LoudStr("s"),
    {"level": Level.HIGH, "kind": Kind.TEXT, "name": Name.ALICE},
    {Level.HIGH: "int enum key", Kind.TEXT: "str enum key", LoudInt(2): "x", LoudFloat(2.5): "y", LoudStr("k"): "z"},
    collections.OrderedDict([("b", 1), ("a", [1, 2])]),
    collections.defaultdict(list, {"a": [1]}),
    collections.Counter("aab"),
    ItemsDict(real=1),
    MyList([1, MyList([2])]),
    MyTuple((1, 2)),
    Point(1, 2.5),
    {"p": Point(3, float("nan"))},
    [True, False, None],
]


def check_rejected(target: type | ModuleType, value: Any, mode: str) -> None:
    # orjson serializes most of these; turbows must not.
    expected = send_json_outcome(StarletteWebSocket, value, mode)
    assert expected[0] == "raise"
    assert send_json_outcome(target, value, mode) == expected


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("value", REJECTED, ids=lambda value: type(value).__name__)
def test_send_json_rejects_what_starlette_rejects(websocket_class: type, value: Any, mode: str) -> None:
    check_rejected(websocket_class, value, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("value", REJECTED, ids=lambda value: type(value).__name__)
def test_dumps_rejects_what_starlette_rejects(core_module: ModuleType, value: Any, mode: str) -> None:
    check_rejected(core_module, value, mode)


def check_subclass(target: type | ModuleType, value: Any, mode: str) -> None:
    expected = send_json_outcome(StarletteWebSocket, value, mode)
    assert expected[0] == "ok" or value.__class__ is collections.ChainMap
    assert send_json_outcome(target, value, mode) == expected


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("value", SUBCLASSES, ids=lambda value: type(value).__name__)
def test_send_json_subclasses_as_starlette(websocket_class: type, value: Any, mode: str) -> None:
    check_subclass(websocket_class, value, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("value", SUBCLASSES, ids=lambda value: type(value).__name__)
def test_dumps_subclasses_as_starlette(core_module: ModuleType, value: Any, mode: str) -> None:
    check_subclass(core_module, value, mode)


def _cycles() -> list[Any]:
    in_list: list[Any] = [1]
    in_list.append(in_list)
    in_dict: dict[str, Any] = {"a": 1}
    in_dict["self"] = in_dict
    deep: list[Any] = []
    node = deep
    for _ in range(300):
        node.append([])
        node = node[0]
    node.append(deep)
    via_dict: dict[str, Any] = {}
    via_dict["list"] = [{"back": via_dict}]
    return [in_list, in_dict, deep, via_dict]


CYCLES = pytest.mark.parametrize("which", range(4), ids=["list", "dict", "300 deep", "dict-list-dict"])


def check_cycle(target: type | ModuleType, which: int, mode: str) -> None:
    value = _cycles()[which]
    expected = send_json_outcome(StarletteWebSocket, value, mode)
    assert expected == ("raise", ValueError)  # Circular reference detected
    assert send_json_outcome(target, value, mode) == expected


@pytest.mark.parametrize("mode", ["text", "binary"])
@CYCLES
def test_send_json_circular_references(websocket_class: type, which: int, mode: str) -> None:
    check_cycle(websocket_class, which, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@CYCLES
def test_dumps_circular_references(core_module: ModuleType, which: int, mode: str) -> None:
    check_cycle(core_module, which, mode)


def nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


DEPTHS = pytest.mark.parametrize("depth", [253, 254, 255, 256, 257, 300, 500, 100_000])


def check_deep(target: type | ModuleType, depth: int, kind: str, mode: str) -> None:
    # orjson refuses more than 255 levels; Starlette's json goes on to the recursion limit.
    value = nested(depth, kind)
    identity = lambda parsed_value: parsed_value  # noqa: E731 - no NaN here: plain ==, no deep canonical()
    expected = send_json_outcome(StarletteWebSocket, value, mode, parse=identity)
    assert expected[0] == ("raise" if depth == 100_000 else "ok")
    assert send_json_outcome(target, value, mode, parse=identity) == expected


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("kind", ["list", "dict"])
@DEPTHS
def test_send_json_deep_nesting(websocket_class: type, depth: int, kind: str, mode: str) -> None:
    check_deep(websocket_class, depth, kind, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("kind", ["list", "dict"])
@DEPTHS
def test_dumps_deep_nesting(core_module: ModuleType, depth: int, kind: str, mode: str) -> None:
    check_deep(core_module, depth, kind, mode)


# -- receive_json -----------------------------------------------------------------------------------


def _spell(value: Any, indent: int | None, compact: bool, ensure_ascii: bool) -> str:
    separators = (",", ":") if compact else None
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=ensure_ascii)


whitespace = st.text(st.sampled_from(" \t\n\r"), max_size=3)
valid_json_texts = st.builds(_spell, json_values, st.none() | st.integers(0, 2), st.booleans(), st.booleans())
json_texts = st.one_of(
    valid_json_texts,
    st.builds(lambda a, text, b: a + text + b, whitespace, valid_json_texts, whitespace),
    st.text(),
    st.text(characters, max_size=10),
    st.builds(lambda text: "\ufeff" + text, valid_json_texts),
    st.builds(lambda text: text[: len(text) // 2], valid_json_texts),  # truncated
    st.sampled_from(
        [
            "NaN", "Infinity", "-Infinity", "[NaN, -Infinity]", "1e400", "-1e400", "1e-400", "[1e309]",
            '"\\ud800"', '"\\udc00\\ud800"', '["\\ud83d\\ude00"]', '{"a": 1, "a": 2}', '{"a": 1, "a": [2]}',
            "\ufeff{}", " \t\n\r[1] \n", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
            "-9223372036854775809", "123456789012345678901234567890", "[1.0, -0, -0.0, 1E+2, 1e2]",
            "9007199254740993", "0.1", "1.7976931348623157e308", "2.2250738585072014e-308", "5e-324",
            '"\\u0000"', '"\x00"', "[1,]", "{'a': 1}", "01", "+1", ".5", "true", "null", "", " ",
            '"\u2028\u2029"', "[" * 600 + "]" * 600, "[" * 3000 + "]" * 3000,
        ]
    ),
)


@given(text=json_texts)
def test_receive_json_text_matches_starlette(websocket_class: type, text: str) -> None:
    message = {"type": "websocket.receive", "text": text}
    expected = receive_json_outcome(StarletteWebSocket, message, "text")
    assert_same_load(expected, receive_json_outcome(websocket_class, message, "text"))


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "surrogatepass")


json_bytes = st.one_of(
    st.builds(_encode, json_texts, st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32", "utf-16-le"])),
    st.builds(lambda text: b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass"), valid_json_texts),  # BOM
    st.binary(),
    st.builds(lambda text, junk: text.encode("utf-8", "surrogatepass") + junk, valid_json_texts, st.binary(min_size=1, max_size=3)),
)


@given(data=json_bytes)
@example(data=b'"\xed\xa0\x80"')  # an encoded lone surrogate: not UTF-8
@example(data=b"\xef\xbb\xbf[1]")
@example(data=b"[18446744073709551616, 1e400, NaN]")
def test_receive_json_binary_matches_starlette(websocket_class: type, data: bytes) -> None:
    message = {"type": "websocket.receive", "bytes": data}
    expected = receive_json_outcome(StarletteWebSocket, message, "binary")
    assert_same_load(expected, receive_json_outcome(websocket_class, message, "binary"))


@given(text=json_texts)
def test_loads_text_matches_json_loads(core_module: ModuleType, text: str) -> None:
    assert_same_load(outcome_of(json.loads, text), outcome_of(core_module.loads_text, text))


@given(data=json_bytes)
def test_loads_bytes_matches_starlette(core_module: ModuleType, data: bytes) -> None:
    assert_same_load(outcome_of(lambda: json.loads(data.decode("utf-8"))), outcome_of(core_module.loads_bytes, data))


HARD_LOADS = pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18446744073709551616", 18446744073709551616),
        ("-9223372036854775809", -9223372036854775809),
        ("[123456789012345678901234567890]", [123456789012345678901234567890]),
        ('{"n": 340282366920938463463374607431768211456}', {"n": 2**128}),
        ("18446744073709551615", 2**64 - 1),
        ("-9223372036854775808", -(2**63)),
        ("[1, 18446744073709551616.0]", [1, 1.8446744073709552e19]),
        ("-0", 0),
        ("-0.0", -0.0),
        ("1.0", 1.0),
        ("1E2", 100.0),
        ("1e400", float("inf")),
        ("[-1e400]", [float("-inf")]),
        ("NaN", float("nan")),
        ("[Infinity, -Infinity]", [float("inf"), float("-inf")]),
        ('"\\ud800"', "\ud800"),
        ('{"\\udfff": "\\ud83d\\ude00"}', {"\udfff": "\U0001f600"}),
        ('{"a": 1, "a": 2}', {"a": 2}),
    ],
    ids=repr,
)


def loaded(target: type | ModuleType, payload: str | bytes, mode: str) -> tuple[Any, ...]:
    if isinstance(target, ModuleType):
        return outcome_of(target.loads_text if mode == "text" else target.loads_bytes, payload)
    message = {"type": "websocket.receive", ("text" if mode == "text" else "bytes"): payload}
    return receive_json_outcome(target, message, mode)


def check_hard_load(target: type | ModuleType, text: str, value: Any, mode: str) -> None:
    # orjson turns integers beyond 64 bits into floats and refuses NaN, 1e400
    # and lone surrogate escapes: turbows must give json.loads' value, type for type.
    payload: str | bytes = text if mode == "text" else text.encode()
    assert loaded(StarletteWebSocket, payload, mode) == ("ok", canonical(value))
    assert loaded(target, payload, mode) == ("ok", canonical(value))


@pytest.mark.parametrize("mode", ["text", "binary"])
@HARD_LOADS
def test_receive_json_hard_values_are_exact(websocket_class: type, text: str, value: Any, mode: str) -> None:
    check_hard_load(websocket_class, text, value, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@HARD_LOADS
def test_loads_hard_values_are_exact(core_module: ModuleType, text: str, value: Any, mode: str) -> None:
    check_hard_load(core_module, text, value, mode)


@pytest.mark.parametrize("mode", ["text", "binary"])
@pytest.mark.parametrize("depth", [600, 1023, 1024, 1025, 100_000])
def test_receive_json_deep_nesting(websocket_class: type, depth: int, mode: str) -> None:
    # orjson stops at 1024 levels; json.loads at the recursion limit.
    text = "[" * depth + "]" * depth
    payload: str | bytes = text if mode == "text" else text.encode()
    message = {"type": "websocket.receive", ("text" if mode == "text" else "bytes"): payload}

    def received(cls: type) -> Any:
        peer = ScriptedPeer([CONNECT, message])
        ws = cls(make_scope(), peer.receive, peer.send)
        run_sync(ws.accept())
        try:
            return ("ok", run_sync(ws.receive_json(mode=mode)))
        except Exception as exc:
            return ("raise", type(exc))

    expected = received(StarletteWebSocket)
    actual = received(websocket_class)
    if expected == ("raise", RecursionError) and actual[0] == "ok":
        # Starlette ran out of stack, not out of JSON: json.loads' depth limit is
        # the interpreter's recursion limit less the frames already in use, so
        # whether it fails depends on where it is called. orjson decodes up to
        # 1024 levels. Where turbows decodes, it must be json.loads' value with
        # room to recurse.
        assert depth <= 1024
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + 2 * depth)
        try:
            same = actual[1] == json.loads(text)
        finally:
            sys.setrecursionlimit(limit)
        assert same
    else:
        assert actual == expected


def test_recursion_limit_is_untouched() -> None:
    # The deep-nesting tests above rely on the default limit.
    assert sys.getrecursionlimit() >= 1000


# -- the orjson path is the one taken ------------------------------------------
# The exactness walk sends a value to the standard library whenever it cannot
# prove orjson's result is the same; a walk that rejected everything would pass
# every test above, slowly. These see which encoder and decoder ran.


def _orjson_or_skip() -> Any:
    try:
        import orjson
    except ImportError:  # free-threaded CPython: no orjson wheels; the standard library serves
        pytest.skip("orjson is not installed: the compiled JSON uses the standard library")
    return orjson


@pytest.mark.speedups
def test_exact_values_are_encoded_by_orjson() -> None:
    orjson = _orjson_or_skip()
    from turbows import _json_c

    # orjson writes 1e-7 as "1e-7", the standard library as "1e-07": the same value,
    # so within the contract, and it tells the encoders apart.
    value = {"id": 1, "tags": ["a", "b"], "small": 1e-7, "nested": {"ok": True, "none": None}}
    assert json.dumps(value, separators=(",", ":"), ensure_ascii=False) != orjson.dumps(value).decode()
    assert _json_c.dumps_text(value) == orjson.dumps(value).decode()
    assert _json_c.dumps_bytes(value) == orjson.dumps(value)
    # and a value the walk must refuse (NaN: orjson writes null) goes to the standard library
    assert _json_c.dumps_text({"x": float("nan")}) == '{"x":NaN}'


@pytest.mark.speedups
def test_exact_documents_are_decoded_by_orjson() -> None:
    _orjson_or_skip()
    from turbows import _json_c

    # orjson keeps the keys it decodes in a cache, so two decodes share their key
    # objects; json.loads builds new ones on every call.
    document = '{"a_key_longer_than_one_character": [1, 2.5, "x", null, true]}'
    assert next(iter(json.loads(document))) is not next(iter(json.loads(document)))
    for loads, encoded in ((_json_c.loads_text, document), (_json_c.loads_bytes, document.encode())):
        first, second = loads(encoded), loads(encoded)
        assert first == json.loads(document)
        assert next(iter(first)) is next(iter(second)), loads
