"""turbows behind real ASGI servers, driven by a real client (``websockets``' asyncio client).

Each test runs per server and per core (see ``conftest.server``). Where a
server's own behaviour shapes what the app or the client sees, ``TRAITS``
says what that server does (found by running each); the scenarios that
record what the app observed also run on Starlette's own class
(``?impl=starlette``) on the same server and must observe the same.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import ServerProcess, new_key, recv, reset, run
from launch import MAX_MESSAGE

MIB = 1024 * 1024


@dataclass(frozen=True)
class Traits:
    """What one server does where the ASGI spec leaves it room (or where the server falls short)."""

    #: It offers the websocket.http.response extension (denial responses).
    denial: bool = True
    #: The client sees the extra headers of ``websocket.accept``.
    accept_headers: bool = True
    #: The client sees the reason of the app's close.
    app_close_reason: bool = True
    #: The app sees the code and reason of the client's close frame; else ``client_close_seen_as``.
    client_close: bool = True
    client_close_seen_as: tuple[int, str] = (0, "")
    #: The code of the ``websocket.disconnect`` a vanished client (TCP reset) produces.
    vanished_code: int = 1006
    #: What a send to a vanished client may do: "raises OSError" (which Starlette and turbows
    #: turn into ``WebSocketDisconnect(1006)``), "dropped" (silently), or a RuntimeError's message.
    send_to_vanished: tuple[str, ...] = ("dropped",)
    #: An empty text or binary message the app sends reaches the client (daphne drops them:
    #: its handle_reply tests ``message.get("text")`` for truth).
    sends_empty: bool = True
    #: The scope's extensions besides the denial one.
    other_extensions: tuple[str, ...] = ()
    #: The status the client gets when the app raises before accepting.
    app_error_status: int = 500
    #: The type of the port in the scope's ``client`` and ``server`` (the ASGI spec's int).
    port_type: type = int
    #: The optional websocket scope keys the server leaves out.
    scope_lacks: frozenset[str] = frozenset()
    #: A message over the server's limit: the code of the close frame it answers with (None: it
    #: drops the connection without one), and the code of the disconnect the app gets.
    oversize_close: int | None = 1009
    oversize_disconnect: int = 1009


TRAITS = {
    # connection_lost after the handshake queues code 1005; its send raises ClientDisconnected (an OSError).
    "uvicorn": Traits(vanished_code=1005, send_to_vanished=("raises OSError",)),
    "uvicorn-wsproto": Traits(vanished_code=1005, send_to_vanished=("raises OSError",)),
    # turbows' native protocol behaves as uvicorn's sansio one, and offers the hub's fan-out writer.
    "uvicorn-turbows": Traits(
        vanished_code=1005, send_to_vanished=("raises OSError",), other_extensions=("turbows.fanout",)
    ),
    # ws="websockets" (websockets.legacy): the disconnect's code is websockets' CloseCode enum, its
    # reason ""; a send after the loss raises ClientDisconnected (an OSError) or, once the protocol
    # has seen the loss, a RuntimeError as if the app had closed: a race inside uvicorn. A message
    # over its limit: the client gets 1009, the app 1006.
    "uvicorn-legacy": Traits(
        send_to_vanished=(
            "raises OSError",
            "Unexpected ASGI message 'websocket.send', after sending 'websocket.close' "
            "or response already completed.",
        ),
        oversize_disconnect=1006,
    ),
    # hypercorn reports any close the app did not start as 1006 (a message over its limit too) and
    # drops the client's code and reason.
    "hypercorn": Traits(client_close=False, client_close_seen_as=(1006, ""), oversize_disconnect=1006),
    "hypercorn-trio": Traits(client_close=False, client_close_seen_as=(1006, ""), oversize_disconnect=1006),
    # daphne: no denial extension, ignores accept headers and close reasons both ways; a message
    # over its limit drops the connection without a close frame.
    "daphne": Traits(
        denial=False,
        accept_headers=False,
        app_close_reason=False,
        client_close=False,
        client_close_seen_as=(4002, ""),
        sends_empty=False,
        # so Starlette's URL for the connection falls back to the "http" scheme
        scope_lacks=frozenset({"extensions", "http_version", "scheme", "state"}),
        oversize_close=None,
        oversize_disconnect=1006,
    ),
    # granian (2.8): its accept ignores "headers"; its websocket.disconnect has the client's close
    # code but no reason; a vanished client's disconnect is 1005, and sends to it are dropped; an
    # app that raises before accepting gets the client a 403, as a close before accepting does;
    # every scope, websocket ones too, offers the HTTP extension http.response.pathsend; the
    # scope's client and server ports are strings (so is ``WebSocket.client.port``); its limit is
    # a fixed 16 MiB frame (no setting), and a message over it gets a close frame without a code.
    "granian": Traits(
        accept_headers=False,
        client_close=False,
        client_close_seen_as=(4002, ""),
        vanished_code=1005,
        other_extensions=("http.response.pathsend",),
        app_error_status=403,
        port_type=str,
        oversize_close=1005,
        oversize_disconnect=1005,
    ),
}
# The same Rust server on asyncio's own loop, and on rloop (granian's author's Rust loop, which
# its `--loop auto` picks first where installed).
TRAITS["granian-asyncio"] = TRAITS["granian-rloop"] = TRAITS["granian"]

DENIAL_MESSAGE = "The server doesn't support the Websocket Denial Response extension."


def traits(server: ServerProcess) -> Traits:
    return TRAITS[server.server]


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON values, exactly: NaN equals NaN, 1 is not 1.0, -0.0 is not 0.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return repr(left) == repr(right)
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right))
    return left == right


JSON_VALUES = [
    {"text": "hello", "n": 1, "pi": 3.14159, "ok": True, "nothing": None, "list": [1, "two", 3.0]},
    {"unicode": "żółw 🐢 \u2028", "nested": {"deep": [[[{"x": -0.0}]]]}},
    # orjson refuses or alters these; turbows must still match json.dumps/json.loads
    {"big": 2**70, "negative big": -(2**80), "u64 max": 2**64 - 1},
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    [],
    "a bare string",
    12345678901234567890123,
]


# -- the served core ------------------------------------------------------------


def other_extensions(server: ServerProcess) -> list[str]:
    """The extensions in every connection's scope besides the denial one (turbows' protocol: the hub's fan-out writer)."""
    return list(traits(server).other_extensions)


def test_serves_the_requested_core(server: ServerProcess) -> None:
    info = server.info
    assert info["server"] == server.server
    assert info["implementation"] == server.core
    assert info["class"] == "turbows.WebSocket"
    if server.server == "uvicorn":
        assert info["protocol"] == "WebSocketsSansIOProtocol"  # uvicorn's default, "auto"
    if server.server == "uvicorn-turbows":
        assert info["protocol"] == "native"  # the compiled protocol, not the sansio fallback
    if server.server.startswith("granian"):  # the loop asked for
        loop = {"granian": "uvloop", "granian-asyncio": "asyncio", "granian-rloop": "rloop"}[server.server]
        assert info["loop"].split(".")[0] == loop, info
    expected = ["websocket.http.response"] if traits(server).denial else []
    assert info["extensions"] == sorted(expected + other_extensions(server))


#: The keys Starlette's router adds to the scope, and those a websocket scope may have (ASGI 3).
ROUTER_KEYS = {"app", "router", "route", "endpoint", "path_params", "starlette.exception_handlers"}
ASGI_KEYS = {
    *("type", "asgi", "http_version", "scheme", "path", "raw_path", "query_string", "root_path"),
    *("headers", "client", "server", "subprotocols", "state", "extensions"),
}


def test_the_connection_as_the_app_sees_it(server: ServerProcess) -> None:
    """The scope's keys, and what the class makes of them: URL, client, parameters, headers, cookies."""

    async def scenario(impl: str) -> Any:
        headers = {"cookie": "c=1; d=2", "x-turbows": "h"}
        async with server.connect(f"/connection/żółw?impl={impl}&a=1&a=2", additional_headers=headers) as ws:
            local_port = ws.local_address[1]
            report = json.loads(await recv(ws))
        # what depends on the class asked for, or on the connection's own port, made comparable
        report["url"] = report["url"].replace(f"impl={impl}", "impl=IMPL")
        report["query_params"].remove(["impl", impl])
        host, port = report["client"]
        report["client"] = [host, str(port) == str(local_port), type(port).__name__]
        return report

    report = _both(server, scenario)
    lacks = traits(server).scope_lacks
    port = server.port
    served_port = port if traits(server).port_type is int else str(port)
    assert set(report["scope_keys"]) - ROUTER_KEYS == ASGI_KEYS - lacks
    scheme = "http" if "scheme" in lacks else "ws"  # Starlette's URL, where the scope has no scheme
    assert report == {
        "scope_keys": report["scope_keys"],
        "url": f"{scheme}://127.0.0.1:{port}/connection/żółw?impl=IMPL&a=1&a=2",
        "client": ["127.0.0.1", True, traits(server).port_type.__name__],
        "server": ["127.0.0.1", served_port],
        "query_params": [["a", "1"], ["a", "2"]],
        "path_params": {"name": "żółw"},
        "headers": [["host", [f"127.0.0.1:{port}"]], ["x-turbows", ["h"]]],
        "cookies": {"c": "1", "d": "2"},
        "subprotocols": [],
        "http_version": None if "http_version" in lacks else "1.1",
        "scheme": None if "scheme" in lacks else "ws",
    }


# -- echo -------------------------------------------------------------------------


async def _echo_each(server: ServerProcess, path: str, messages: list[Any]) -> list[Any]:
    """Send each message and read its echo; where the server drops empty messages, read on past them."""
    async with server.connect(path) as ws:
        replies = []
        for message in messages:
            await ws.send(message)
            if message or traits(server).sends_empty:
                replies.append(await recv(ws))
        await ws.send(messages[0])  # an empty echo dropped, not delayed: the next reply is this one
        assert await recv(ws) == messages[0]
        return replies


def _expected_echoes(server: ServerProcess, messages: list[Any]) -> list[Any]:
    return [message for message in messages if message or traits(server).sends_empty]


def test_text_echo(server: ServerProcess) -> None:
    messages = ["hello", "", "żółw 🐢", "x" * 70_000, "\x00 nul and \u2028 separators"]
    assert run(_echo_each(server, "/echo/text", messages)) == _expected_echoes(server, messages)


def test_bytes_echo(server: ServerProcess) -> None:
    messages = [b"hello", b"", bytes(range(256)), b"\xff\xfe not utf-8", b"y" * 70_000]
    assert run(_echo_each(server, "/echo/bytes", messages)) == _expected_echoes(server, messages)


def test_json_echo(server: ServerProcess) -> None:
    async def scenario() -> list[Any]:
        async with server.connect("/echo/json") as ws:
            replies = []
            for value in JSON_VALUES:
                await ws.send(json.dumps(value, ensure_ascii=False))
                replies.append(await recv(ws))
            return replies

    replies = run(scenario())
    for value, reply in zip(JSON_VALUES, replies):
        assert isinstance(reply, str), "send_json sends a text frame"
        assert same_json(json.loads(reply), value), (value, reply)


def test_binary_json_echo(server: ServerProcess) -> None:
    async def scenario() -> list[Any]:
        async with server.connect("/echo/json-binary") as ws:
            replies = []
            for value in JSON_VALUES:
                await ws.send(json.dumps(value, ensure_ascii=False).encode("utf-8"))
                replies.append(await recv(ws))
            return replies

    replies = run(scenario())
    for value, reply in zip(JSON_VALUES, replies):
        assert isinstance(reply, bytes), "send_json(mode='binary') sends a binary frame"
        assert same_json(json.loads(reply.decode("utf-8")), value), (value, reply)


def test_bad_json_from_a_real_client_and_the_connection_goes_on(server: ServerProcess) -> None:
    async def scenario() -> list[Any]:
        async with server.connect("/json-errors") as ws:
            replies = []
            for message in ["{not json", b'{"binary": true}', '{"ok": 1}']:
                await ws.send(message)
                replies.append(json.loads(await recv(ws)))
            return replies

    malformed = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert run(scenario()) == [
        {"error": "JSONDecodeError", "message": malformed},
        {"error": "WebSocketFrameTypeError", "message": "expected a text message, but a binary message arrived"},
        {"value": {"ok": 1}},
    ]


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_one_mebibyte_messages_both_ways(server: ServerProcess, kind: str) -> None:
    if kind == "text":
        message: Any = "0123456789abcdż" * (MIB // 16)  # 16 bytes of UTF-8, a two-byte character too
        assert len(message.encode("utf-8")) == MIB
    else:
        message = bytes(range(256)) * (MIB // 256)
        assert len(message) == MIB

    async def scenario() -> list[Any]:
        async with server.connect(f"/echo/{kind}") as ws:
            replies = []
            for _ in range(2):
                await ws.send(message)
                replies.append(await recv(ws, timeout=20))
            return replies

    replies = run(scenario(), timeout=60)
    assert all(type(reply) is type(message) and reply == message for reply in replies)


def test_a_client_ping_gets_its_pong_between_messages(server: ServerProcess) -> None:
    """The server answers a ping with its payload (the app never sees it), and the echo goes on around it."""

    async def scenario() -> list[Any]:
        async with server.connect("/echo/text") as ws:
            await ws.send("before")
            pong = await ws.ping(b"turbows ping")  # websockets matches the pong to this payload
            await ws.send("after")
            replies = [await recv(ws), await recv(ws)]
            await asyncio.wait_for(pong, 10)
            return replies

    assert run(scenario()) == ["before", "after"]


def test_a_message_over_the_limit_ends_the_connection(server: ServerProcess) -> None:
    """One byte over the server's limit (``launch.MAX_MESSAGE``; granian's own, the same 16 MiB): the
    server closes before the app sees the message, and the app gets a disconnect."""

    async def scenario(impl: str) -> Any:
        key = new_key()
        async with server.connect(f"/close-by-client/{key}?impl={impl}") as ws:
            assert await recv(ws) == "ready"
            with pytest.raises(ConnectionClosed) as closed:  # while it sends (the server stops reading), or after
                await ws.send("x" * (MAX_MESSAGE + 1))
                await recv(ws, timeout=30)
        received = closed.value.rcvd
        return (None if received is None else received.code), await server.events(key)

    code, events = _both(server, scenario, timeout=60)
    assert code == traits(server).oversize_close
    (disconnect, states), after = events[0][1:], events[1]
    assert (disconnect["class"], disconnect["code"], states) == (
        "WebSocketDisconnect",
        traits(server).oversize_disconnect,
        ["DISCONNECTED", "CONNECTED"],
    )
    assert after[0] == "receive after disconnect"


# -- the handshake ------------------------------------------------------------------


def test_subprotocol_negotiation(server: ServerProcess) -> None:
    async def scenario(offered: list[str] | None) -> tuple[Any, Any]:
        async with server.connect("/subprotocol", subprotocols=offered) as ws:
            return ws.subprotocol, json.loads(await recv(ws))

    chosen, seen = run(scenario(["chat", "superchat"]))
    assert chosen == "superchat"
    assert seen == {"offered": ["chat", "superchat"], "chosen": "superchat"}

    chosen, seen = run(scenario(None))
    assert chosen is None
    assert seen == {"offered": [], "chosen": None}


def test_accept_headers_reach_the_client(server: ServerProcess) -> None:
    async def scenario(impl: str) -> tuple[Any, Any, Any]:
        async with server.connect(f"/headers?impl={impl}") as ws:
            headers = ws.response.headers
            return headers.get_all("x-turbows"), headers.get_all("set-cookie"), await recv(ws)

    x_turbows, cookies, greeting = _both(server, scenario)
    assert greeting == "hello"
    if traits(server).accept_headers:
        assert (x_turbows, cookies) == (["accepted"], ["turbows=1; Path=/"])
    else:  # daphne drops them (its handle_reply reads only "subprotocol"); granian's accept too
        assert (x_turbows, cookies) == ([], [])


# -- closing, both ways --------------------------------------------------------------


def _both(server: ServerProcess, scenario: Any, timeout: float = 30.0, key: Any = lambda observed: observed) -> Any:
    """Run ``scenario(impl)`` with turbows, then with Starlette's class; they must observe the same (``key`` of)."""
    observed = key(run(scenario("turbows"), timeout))
    reference = key(run(scenario("starlette"), timeout))
    assert observed == reference, f"turbows: {observed}\nStarlette: {reference}"
    return observed


def test_app_closes_with_code_and_reason(server: ServerProcess) -> None:
    async def scenario(impl: str) -> Any:
        key = new_key()
        async with server.connect(f"/close-by-app/{key}?impl={impl}") as ws:
            await ws.send(json.dumps({"code": 4001, "reason": "app says bye"}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
        received = closed.value.rcvd
        return (received.code, received.reason), await server.events(key)

    (code, reason), events = _both(server, scenario)
    assert code == 4001
    assert reason == ("app says bye" if traits(server).app_close_reason else "")
    assert events == [
        ["closed", ["CONNECTED", "DISCONNECTED"]],
        [
            "send after close",
            {"class": "WebSocketDisconnected", "message": 'Cannot call "send" once a close message has been sent.'},
        ],
    ]


def test_client_closes_with_code_and_reason(server: ServerProcess) -> None:
    async def scenario(impl: str) -> Any:
        key = new_key()
        async with server.connect(f"/close-by-client/{key}?impl={impl}") as ws:
            assert await recv(ws) == "ready"
            await ws.close(code=4002, reason="client says bye")
        return await server.events(key)

    events = _both(server, scenario)
    code, reason = (4002, "client says bye") if traits(server).client_close else traits(server).client_close_seen_as
    assert events == [
        [
            "disconnect",
            {"class": "WebSocketDisconnect", "message": str((code, reason or None)), "code": code, "reason": reason},
            ["DISCONNECTED", "CONNECTED"],
        ],
        [
            "receive after disconnect",
            {
                "class": "WebSocketDisconnected",
                "message": 'Cannot call "receive" once a disconnect message has been received.',
            },
        ],
    ]


# -- denial --------------------------------------------------------------------------


async def _handshake_refused(server: ServerProcess, path: str) -> tuple[int, bytes, Any]:
    with pytest.raises(InvalidStatus) as refused:
        async with server.connect(path):
            pass
    response = refused.value.response
    return response.status_code, bytes(response.body or b""), response.headers.get("x-denied")


def test_denial_response(server: ServerProcess) -> None:
    """A 401 with a body and a header where the server has the extension; the fallback's 500 where not."""

    async def scenario(impl: str) -> Any:
        key = new_key()
        refused = await _handshake_refused(server, f"/deny/{key}?impl={impl}")
        return refused, await server.events(key)

    (status, body, header), events = _both(server, scenario)
    if traits(server).denial:
        assert (status, body, header) == (401, b"denied by the app", "yes")
        extensions = sorted(["websocket.http.response", *other_extensions(server)])
        assert events == [["extensions", extensions], ["denial", "sent", ["CONNECTING", "DISCONNECTED"]]]
    else:  # daphne: the RuntimeError leaves the app, and the server answers 500
        assert status == traits(server).app_error_status
        assert events == [
            ["extensions", []],
            ["denial", {"class": "RuntimeError", "message": DENIAL_MESSAGE}, ["CONNECTING", "CONNECTING"]],
        ]


def test_denial_without_the_extension_fails_loudly(server: ServerProcess) -> None:
    """The app raises Starlette's RuntimeError (the scope without the extension); the server answers 500 (granian 403)."""

    async def scenario(impl: str) -> Any:
        key = new_key()
        refused = await _handshake_refused(server, f"/noext/deny/{key}?impl={impl}")
        return refused, await server.events(key)

    (status, _, header), events = _both(server, scenario)
    assert status == traits(server).app_error_status and header is None
    assert events == [
        ["extensions", other_extensions(server)],
        ["denial", {"class": "RuntimeError", "message": DENIAL_MESSAGE}, ["CONNECTING", "CONNECTING"]],
    ]


def test_denial_fallback_closes_before_accepting(server: ServerProcess) -> None:
    """The portable pattern: catch the RuntimeError and close before accepting; the client gets a 403."""

    async def scenario(impl: str) -> Any:
        key = new_key()
        refused = await _handshake_refused(server, f"/noext/deny-or-close/{key}?impl={impl}")
        return refused, await server.events(key)

    (status, _, _), events = _both(server, scenario)
    assert status == 403
    assert events == [
        ["denial", {"class": "RuntimeError", "message": DENIAL_MESSAGE}, ["CONNECTING", "CONNECTING"]],
        ["closed", ["CONNECTING", "DISCONNECTED"]],
    ]


# -- cancellation --------------------------------------------------------------------


def test_cancelled_receive_leaves_the_connection_usable(server: ServerProcess) -> None:
    """A timeout around ``receive_text`` (anyio's, so asyncio's or trio's cancellation) cancels the
    server's receive inside turbows' call; the next receive gets the next message."""

    async def scenario(impl: str) -> Any:
        async with server.connect(f"/cancel-receive?impl={impl}") as ws:
            report = json.loads(await recv(ws))
            await ws.send("hello")
            return report, await recv(ws)

    report, reply = _both(server, scenario)
    assert report == {"cancelled": True, "states": ["CONNECTED", "CONNECTED"]}
    assert reply == "after: hello"


# -- the client vanishes ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["receive", "iterate"])
def test_client_vanishes_mid_stream(server: ServerProcess, mode: str) -> None:
    """The app streams while it listens; the client resets its connection after three messages.

    Its listener gets a disconnect (``receive_text`` raises ``WebSocketDisconnect``;
    ``iter_text`` just ends); its sender gets ``WebSocketDisconnect(1006)``
    where the server's send raises ``OSError``, the server's RuntimeError where
    it refuses the send, else (the server drops the sends) goes on without
    error. Nothing hangs: the handler finishes.
    """

    async def scenario(impl: str) -> Any:
        key = new_key()
        ws = await server.connect(f"/vanish/{key}?impl={impl}&mode={mode}")
        await ws.send("go")
        for _ in range(3):
            await recv(ws)
        reset(ws)
        return await server.events(key, timeout=15)

    # The sender and the listener race to notice; compare what each saw, not in which order.
    # On uvicorn-legacy the send's outcome itself is a race, so each class is checked against
    # what the server may do, and the listener's outcome must be the same for both.
    observed = {impl: {event[0]: event[1:] for event in run(scenario(impl), 45)} for impl in ("turbows", "starlette")}
    listener = "receive" if mode == "receive" else "iteration ended"
    assert observed["turbows"][listener] == observed["starlette"][listener], observed
    for impl, events in observed.items():
        assert set(events) == {listener, "send", "final states"}, (impl, events)
        _check_vanished(server, mode, events)


def _check_vanished(server: ServerProcess, mode: str, events: dict[str, Any]) -> None:
    code = traits(server).vanished_code
    if mode == "receive":
        (disconnect,) = events["receive"]
        assert (disconnect["class"], disconnect["code"], disconnect["reason"]) == ("WebSocketDisconnect", code, "")
    else:
        assert events["iteration ended"] == [0]
    allowed = traits(server).send_to_vanished
    if events["send"] == ["no error after the disconnect"]:
        assert "dropped" in allowed, events
        assert events["final states"] == [["DISCONNECTED", "CONNECTED"]]
    elif events["send"][0]["class"] == "WebSocketDisconnect":
        assert "raises OSError" in allowed, events
        assert events["send"] == [{"class": "WebSocketDisconnect", "message": "", "code": 1006, "reason": ""}]
        assert events["final states"] == [["DISCONNECTED", "DISCONNECTED"]]
    else:
        assert events["send"] == [{"class": "RuntimeError", "message": events["send"][0]["message"]}]
        assert events["send"][0]["message"] in allowed, events
        assert events["final states"] == [["DISCONNECTED", "CONNECTED"]]
