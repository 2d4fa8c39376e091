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
  tagged messages or a list of values), reads ``stats`` and ``members``,
  runs a join/leave ``race``; answers each command with one JSON reply.

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
    for payload in payloads:
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
    return {"published": len(payloads), "errors": errors, "peak_pending": peak, "stats": hub.stats()}


async def member(ws: Any) -> None:
    key, name = ws.path_params["key"], ws.path_params["id"]
    hub = await _hub(ws)
    rooms = [room for room in ws.query_params.get("rooms", "").split(",") if room]
    await ws.accept()
    _MEMBERS[(key, name)] = ws
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
