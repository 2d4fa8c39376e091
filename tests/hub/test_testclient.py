"""A Starlette app with a hub, through Starlette's ``TestClient``, under asyncio and trio, on both cores.

The app is the README's hub example: a connection joins the room its path names
and publishes what it receives to the others.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

import turbows


def chat_app(websocket_class: type, hub: turbows.Hub) -> Starlette:
    class Chat:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            websocket = websocket_class(scope, receive, send)
            room = websocket.path_params["room"]
            await websocket.accept()
            async with hub.join(room, websocket):
                await websocket.send_text("joined")
                async for message in websocket.iter_json():
                    await hub.publish_json(room, message, exclude=websocket)

    return Starlette(routes=[WebSocketRoute("/ws/{room}", Chat())])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_chat_room_through_the_test_client(websocket_class: type, backend: str) -> None:
    hub = turbows.Hub()
    with TestClient(chat_app(websocket_class, hub), backend=backend) as client:
        with (
            client.websocket_connect("/ws/one") as alice,
            client.websocket_connect("/ws/one") as bob,
            client.websocket_connect("/ws/two") as carol,
        ):
            for ws in (alice, bob, carol):
                assert ws.receive_text() == "joined"
            assert (hub.members("one"), hub.members("two")) == (2, 1)
            alice.send_json({"from": "alice", "text": "żółw 🐢"})
            assert bob.receive_json() == {"from": "alice", "text": "żółw 🐢"}
            carol.send_json({"from": "carol"})  # alone in her room: nobody receives it
            bob.send_json({"from": "bob", "n": 2**70})
            assert alice.receive_json() == {"from": "bob", "n": 2**70}
            assert hub.stats()["published"] == 3 and hub.stats()["delivered"] == 2
        # Each connection's join block ended with it.
        assert hub.rooms() == [] and hub.stats()["members"] == 0


def test_one_hub_serves_one_event_loop_at_a_time(websocket_class: type) -> None:
    """Outside ``with TestClient(app)``, each connection gets an event loop of its own: a hub
    shared by two at once says why it cannot; one after the other is fine."""
    hub = turbows.Hub()
    client = TestClient(chat_app(websocket_class, hub))
    with client.websocket_connect("/ws/one") as first:
        assert first.receive_text() == "joined"
        with pytest.raises(RuntimeError, match="with TestClient\\(app\\) as client:"):
            with client.websocket_connect("/ws/one") as second:
                second.receive_text()
    for _ in range(2):  # the hub is free again once its members are gone
        with client.websocket_connect("/ws/one") as again:
            assert again.receive_text() == "joined"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_members_left_behind_by_a_finished_loop_do_not_bind_the_hub(websocket_class: type, backend: str) -> None:
    """A member that never leaves (``add`` with no ``discard``) on a loop that then ends (each
    connection's own ``TestClient`` portal): the next loop can use the hub."""
    hub = turbows.Hub()

    class Stays:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            websocket = websocket_class(scope, receive, send)
            await websocket.accept()
            await hub.add("room", websocket)
            await websocket.send_text("joined")
            async for _ in websocket.iter_text():
                pass

    client = TestClient(Starlette(routes=[WebSocketRoute("/ws", Stays())]), backend=backend)
    for _ in range(3):
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "joined"
            assert hub.members("room") == 1
