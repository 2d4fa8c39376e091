"""The hub's side of the real-server tests: routes that ``wsapp`` serves under ``/hub/``.

Each test names a hub by a fresh key (its ``max_pending`` and ``on_slow``
from the query string of whichever connection comes first), so tests do not
share counters. Connections:

- ``/hub/{key}/member/{id}?rooms=a,b&via=add|join``: accepts, joins the
  rooms, sends ``"ack:joined"``, then takes commands from its client
  (JSON: ``join``, ``leave``, ``publish`` as itself, ``send_json`` on its own
  connection) until it disconnects. ``via=add`` never leaves by itself: the
  hub must notice the connection end on its own.
- ``/hub/{key}/control``: publishes on command (``publish``: a count of
  tagged messages or a list of values; ``concurrent``: each from a task of
  its own, all in one loop turn), reads ``stats`` and ``members``, runs a
  join/leave ``race``, reads a member's fan-out ``writer`` (turbows'
  protocol) and tries ``misuse`` of it; answers each command with one JSON
  reply.

With ``TURBOWS_IT_REDIS`` set (a Redis URL) in the server's environment,
every hub is a Redis hub on that server, its channels under the test's key
(``?prefix={key}:``), so the same key on several workers names one hub
across them; it is started by the first connection that uses it.

Messages a test publishes are tagged ``"{tag}:{sequence}"`` (text or the
same as bytes), so a client can check order and completeness.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import anyio

import turbows
from turbows import WebSocketDisconnect

HANDLER_TIMEOUT = 30.0

_HUBS: dict[str, turbows.Hub] = {}
_MEMBERS: dict[tuple[str, str], Any] = {}
#: Each member's fan-out writer, kept after its connection ends (so a test can look at it then).
_WRITERS: dict[tuple[str, str], Any] = {}


_STARTED: dict[str, anyio.Event] = {}


async def _hub(ws: Any) -> turbows.Hub:
    key = ws.path_params["key"]
    hub = _HUBS.get(key)
    if hub is None:
        query = ws.query_params
        redis = os.environ.get("TURBOWS_IT_REDIS")
        hub = _HUBS[key] = turbows.Hub(
            f"{redis}?prefix={key}:" if redis else None,
            max_pending=int(query.get("max_pending", 1_048_576)),
            on_slow=query.get("on_slow", "close"),
        )
        if redis:
            started = _STARTED[key] = anyio.Event()
            try:
                await hub.start()
            finally:
                started.set()
    if key in _STARTED:
        await _STARTED[key].wait()  # a connection that came while the first one was starting it
    return hub


def _tagged(tag: str, sequence: int, size: int) -> str:
    text = f"{tag}:{sequence}"
    return text + "." * (size - len(text)) if size > len(text) else text


async def _publish(hub: turbows.Hub, command: dict[str, Any], exclude: Any) -> dict[str, Any]:
    """Publish what ``command`` says; report how many, the errors, and the peak of any member's pending bytes."""
    room = command["room"]
    kind = command.get("kind", "text")
    if "values" in command:
        payloads = command["values"]
    else:
        start = command.get("start", 0)
        payloads = [_tagged(command["tag"], n, command.get("size", 0)) for n in range(start, start + command["count"])]
    errors: list[str] = []
    peak = 0

    async def publish(payload: Any) -> None:
        nonlocal peak
        try:
            if kind == "text":
                await hub.publish_text(room, payload, exclude=exclude)
            elif kind == "bytes":
                await hub.publish_bytes(room, payload.encode(), exclude=exclude)
            else:
                await hub.publish_json(room, payload, mode="binary" if kind == "json-binary" else "text", exclude=exclude)
        except Exception as exc:  # the test asserts there were none
            errors.append(f"{type(exc).__name__}: {exc}")
        if command.get("sample"):
            peak = max(peak, hub.stats()["pending_bytes_max"])

    if command.get("concurrent"):
        # Tasks started together take their first step in one loop turn: every publish happens in it.
        async with anyio.create_task_group() as group:
            for payload in payloads:
                group.start_soon(publish, payload)
    else:
        for payload in payloads:
            await publish(payload)
    return {"published": len(payloads), "errors": errors, "peak_pending": peak, "stats": hub.stats()}


def _writer(ws: Any) -> Any:
    return ws.scope.get("extensions", {}).get("turbows.fanout")


def _writer_state(writer: Any) -> dict[str, Any]:
    return {"writes": writer.writes, "frames": writer.frames_written, "pending": writer.pending, "closed": writer.closed}


def _misuse(writer: Any) -> dict[str, str]:
    """Every wrong use of a member's fan-out writer from Python, and what each raised (or returned)."""
    from turbows._frames_c import ServerFrame
    from turbows._protocol_c import FanoutWriter, write_to_all

    frame = ServerFrame("misuse")
    attempts: dict[str, Any] = {
        "write_frame(None)": lambda: writer.write_frame(None),
        "write_frame(str)": lambda: writer.write_frame("text"),
        "write_frame(bytes)": lambda: writer.write_frame(b"\x81\x01x"),
        "write_frame(frame, 'a')": lambda: writer.write_frame(frame, "a"),
        "write_frame()": lambda: writer.write_frame(),
        "close('x')": lambda: writer.close("x"),
        "close(1000, 5)": lambda: writer.close(1000, 5),
        "close(999)": lambda: writer.close(999),
        "close(1000, long)": lambda: writer.close(1000, "x" * 200),
        "close(1000, surrogate)": lambda: writer.close(1000, "\ud800"),
        "FanoutWriter()": lambda: FanoutWriter(),
        "orphan.write_frame": lambda: FanoutWriter.__new__(FanoutWriter).write_frame(frame),
        "orphan.close": lambda: FanoutWriter.__new__(FanoutWriter).close(),
        "orphan.pending": lambda: FanoutWriter.__new__(FanoutWriter).pending,
        "write_to_all(None, ())": lambda: write_to_all(None, ()),
        "write_to_all(frame, list)": lambda: write_to_all(frame, [writer]),
        "write_to_all(frame, (str,))": lambda: write_to_all(frame, (writer, "x")),
        "write_to_all(frame, (), 'a')": lambda: write_to_all(frame, (), "a"),
        "write_to_all(frame, (orphan,))": lambda: write_to_all(frame, (FanoutWriter.__new__(FanoutWriter),)),
        "write_to_all(frame, (writer,), skip=writer)": lambda: write_to_all(frame, (writer,), skip=writer),
        "copy(writer)": lambda: __import__("copy").copy(writer),
        "pickle(writer)": lambda: __import__("pickle").dumps(writer),
        "pickle(frame)": lambda: __import__("pickle").dumps(frame),
        "writer.pending": lambda: writer.pending,
        "writer.closed": lambda: writer.closed,
        "writer.write_frame(frame)": lambda: writer.write_frame(frame),
    }
    outcomes = {}
    for name, attempt in attempts.items():
        try:
            outcomes[name] = f"returned {attempt()!r}"
        except Exception as exc:
            outcomes[name] = type(exc).__name__
    return outcomes


async def member(ws: Any) -> None:
    key, name = ws.path_params["key"], ws.path_params["id"]
    hub = await _hub(ws)
    rooms = [room for room in ws.query_params.get("rooms", "").split(",") if room]
    await ws.accept()
    _MEMBERS[(key, name)] = ws
    if _writer(ws) is not None:
        _WRITERS[(key, name)] = _writer(ws)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for room in rooms:
                if ws.query_params.get("via") == "join":
                    await stack.enter_async_context(hub.join(room, ws))
                else:
                    await hub.add(room, ws)
            await ws.send_text("ack:joined")
            while True:
                try:
                    command = json.loads(await ws.receive_text())
                except WebSocketDisconnect:
                    return
                if "join" in command:
                    await hub.add(command["join"], ws)
                    await ws.send_text(f"ack:joined {command['join']}")
                elif "leave" in command:
                    await hub.discard(command["leave"], ws)
                    await ws.send_text(f"ack:left {command['leave']}")
                elif "publish" in command:
                    exclude = ws if command["publish"].get("exclude_self") else None
                    await _publish(hub, command["publish"], exclude)
                elif "send_json" in command:
                    await ws.send_json(command["send_json"], mode=command.get("mode", "text"))
    finally:
        _MEMBERS.pop((key, name), None)


async def _race(hub: turbows.Hub, command: dict[str, Any], key: str) -> dict[str, Any]:
    """One task publishes ``publishes`` numbered messages while another adds and discards a member.

    Membership changes and in-process publishes are plain calls on one loop,
    so the number of messages published when each change happened tells
    exactly which messages the member must receive: the windows returned.
    """
    room, ws = command["room"], _MEMBERS[(key, command["member"])]
    published = 0
    windows: list[list[int]] = []

    async def publisher() -> None:
        nonlocal published
        for sequence in range(command["publishes"]):
            # The call delivers before it first suspends: by the time the churner runs, it has.
            published = sequence + 1
            await hub.publish_text(room, f"race:{sequence}")

    async def churner() -> None:
        for turn in range(command["churns"]):
            await hub.add(room, ws)
            start = published
            for _ in range(turn % 3 + 1):
                await anyio.sleep(0)
            await hub.discard(room, ws)
            windows.append([start, published])
            await anyio.sleep(0)

    with anyio.fail_after(HANDLER_TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(publisher)
            group.start_soon(churner)
        await hub.add(room, ws)
        await hub.publish_text(room, "race:end")
    return {"windows": windows, "members": hub.members(room)}


async def control(ws: Any) -> None:
    key = ws.path_params["key"]
    hub = await _hub(ws)
    await ws.accept()
    while True:
        try:
            command = json.loads(await ws.receive_text())
        except WebSocketDisconnect:
            return
        if "publish" in command:
            publish = command["publish"]
            exclude = _MEMBERS.get((key, publish["exclude"])) if publish.get("exclude") else None
            reply = await _publish(hub, publish, exclude)
        elif "race" in command:
            reply = await _race(hub, command["race"], key)
        elif "writer" in command:
            found = _WRITERS.get((key, command["writer"]))
            reply = {"writer": None if found is None else _writer_state(found)}
        elif "misuse" in command:
            reply = {"outcomes": _misuse(_WRITERS[(key, command["misuse"])])}
        elif "members" in command:
            reply = {"members": hub.members(command["members"]), "stats": hub.stats()}
        else:
            reply = {
                "stats": hub.stats(),
                "rooms": hub.rooms(),
                "connected": hub.connected,
                "implementation": turbows.IMPLEMENTATION,
                "pid": os.getpid(),
            }
        await ws.send_json(reply)


ROUTES = [("/hub/{key}/member/{id}", member), ("/hub/{key}/control", control)]
