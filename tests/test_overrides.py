"""Overrides of receive() and send() are honoured, as in Starlette.

Starlette's typed methods (``receive_text``, ``send_json``, ``accept``,
``close``...) go through ``self.receive()`` and ``self.send()``, so code that
wraps either, on an instance (Responder's ``ws_idle_timeout`` does) or in a
subclass, sees every message. turbows' compiled core awaits the server
directly only while neither is overridden. Each test runs one script on
Starlette's class and on turbows' and compares what the overrides saw.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.websockets import WebSocket as StarletteWebSocket

pytestmark = pytest.mark.anyio

SCOPE = {"type": "websocket", "path": "/ws"}
INCOMING = [
    {"type": "websocket.connect"},
    {"type": "websocket.receive", "text": "hello"},
    {"type": "websocket.receive", "bytes": b"\x01\x02"},
    {"type": "websocket.receive", "text": '{"a": [1, 2]}'},
    {"type": "websocket.receive", "bytes": b'{"b": null}'},
    {"type": "websocket.receive", "text": "last"},
    {"type": "websocket.disconnect", "code": 1001},
]


async def _script(websocket: Any) -> list[Any]:
    results: list[Any] = []
    await websocket.accept(subprotocol="chat")
    results.append(await websocket.receive_text())
    results.append(await websocket.receive_bytes())
    results.append(await websocket.receive_json())
    results.append(await websocket.receive_json(mode="binary"))
    await websocket.send_text("t")
    await websocket.send_bytes(b"b")
    await websocket.send_json({"j": 1})
    await websocket.send_json({"j": 2}, mode="binary")
    results.extend([text async for text in websocket.iter_text()])
    await websocket.close(4000, "done")
    return results


def _peer() -> tuple[Any, Any, list[dict]]:
    incoming = list(INCOMING)
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    return receive, send, sent


async def _with_instance_overrides(cls: type) -> tuple[list[Any], list[str], list[dict]]:
    receive, send, sent = _peer()
    websocket = cls(SCOPE, receive, send)
    seen: list[str] = []
    original_receive, original_send = websocket.receive, websocket.send

    async def receive_override() -> dict:
        message = await original_receive()
        seen.append(f"received {message['type']}")
        return message

    async def send_override(message: dict) -> None:
        seen.append(f"sending {message['type']}")
        await original_send(message)

    websocket.receive = receive_override
    websocket.send = send_override
    return await _script(websocket), seen, sent


async def _with_subclass_overrides(cls: type) -> tuple[list[Any], list[str], list[dict]]:
    receive, send, sent = _peer()
    seen: list[str] = []

    class Logged(cls):  # type: ignore[misc, valid-type]
        async def receive(self) -> dict:
            message = await super().receive()
            seen.append(f"received {message['type']}")
            return message

        async def send(self, message: dict) -> None:
            seen.append(f"sending {message['type']}")
            await super().send({**message, "logged": True})

    return await _script(Logged(SCOPE, receive, send)), seen, sent


@pytest.mark.parametrize("override", [_with_instance_overrides, _with_subclass_overrides], ids=["instance", "subclass"])
async def test_overrides_see_every_message(websocket_class: type, override: Any) -> None:
    expected = await override(StarletteWebSocket)
    actual = await override(websocket_class)
    assert actual == expected
    results, seen, _sent = actual
    assert results[-1] == "last" and "received websocket.disconnect" in seen  # the script really ran


async def test_without_overrides_nothing_goes_through_them(websocket_class: type) -> None:
    # The fast path stays the fast path: a plain instance and a subclass that
    # overrides something else give Starlette's results.
    class Unrelated(websocket_class):  # type: ignore[misc, valid-type]
        def helper(self) -> str:
            return "unrelated"

    for cls in (websocket_class, Unrelated):
        receive, send, sent = _peer()
        reference_receive, reference_send, reference_sent = _peer()
        assert await _script(cls(SCOPE, receive, send)) == await _script(
            StarletteWebSocket(SCOPE, reference_receive, reference_send)
        )
        assert sent == reference_sent


async def _with_class_patched_after_an_instance_exists(cls: type) -> tuple[list[Any], list[str], list[dict]]:
    # A class is patched while its instances live (a monkeypatch in a test, a
    # plugin that wraps send): Starlette looks the method up on every call,
    # so the existing instance goes through the patch from then on, and goes
    # back to the plain path once the patch is undone.
    receive, send, sent = _peer()
    seen: list[str] = []

    class Patched(cls):  # type: ignore[misc, valid-type]
        pass

    websocket = Patched(SCOPE, receive, send)
    await websocket.accept()  # the plain path, before any patch
    plain_send = cls.send

    async def send_patch(self: Any, message: dict) -> None:
        seen.append(f"sending {message['type']}")
        await plain_send(self, message)

    Patched.send = send_patch
    try:
        results = [await websocket.receive_text()]
        await websocket.send_text("patched")
    finally:
        del Patched.send
    await websocket.send_text("plain again")
    results.append(await websocket.receive_bytes())
    return results, seen, sent


async def test_a_class_patched_after_its_instances_exist(websocket_class: type) -> None:
    expected = await _with_class_patched_after_an_instance_exists(StarletteWebSocket)
    actual = await _with_class_patched_after_an_instance_exists(websocket_class)
    assert actual == expected
    assert actual[1] == ["sending websocket.send"]  # the patch saw exactly the send made while it was there
