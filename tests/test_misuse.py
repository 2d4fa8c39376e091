"""No C type crashes the interpreter from Python, however it is misused.

The compiled core's awaitable type (``turbows._calls_c._Call``) is reachable
from Python; made any way but by a WebSocket method, driven out of order or
after it ended, it raises, as a coroutine would.
"""

from __future__ import annotations

import pytest

def _call_type() -> type:
    from turbows import _calls_c

    return _calls_c._Call


@pytest.mark.speedups
@pytest.mark.parametrize("step", ["send", "next", "throw", "close", "await"])
def test_a_call_made_directly_refuses_to_run(step: str) -> None:
    call = _call_type()()
    if step == "send":
        with pytest.raises(TypeError, match="made by a WebSocket method"):
            call.send(None)
    elif step == "next":
        with pytest.raises(TypeError, match="made by a WebSocket method"):
            next(call)
    elif step == "throw":
        with pytest.raises(ValueError):
            call.throw(ValueError("boom"))
    elif step == "close":
        call.close()
        with pytest.raises(RuntimeError, match="already awaited"):
            call.send(None)
    else:
        with pytest.raises(TypeError, match="made by a WebSocket method"):
            call.__await__().send(None)


@pytest.mark.speedups
def test_a_call_made_with_new_refuses_to_run() -> None:
    call_type = _call_type()
    call = call_type.__new__(call_type)
    with pytest.raises(TypeError, match="made by a WebSocket method"):
        call.send(None)
    repr(call)


def test_a_finished_call_cannot_run_again(websocket_class: type) -> None:
    # As a coroutine: both cores.
    async def receive() -> dict:
        return {"type": "websocket.receive", "text": "hi"}

    async def send(message: dict) -> None:
        pass

    from starlette.websockets import WebSocketState

    websocket = websocket_class({"type": "websocket"}, receive, send)
    websocket.client_state = websocket.application_state = WebSocketState.CONNECTED
    call = websocket.receive_text()
    with pytest.raises(StopIteration) as stopped:
        call.send(None)
    assert stopped.value.value == "hi" and stopped.value.args == ("hi",)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        call.send(None)
    # Held here, it is not handed out again: the next call is another object.
    another = websocket.receive_text()
    assert another is not call
    another.close()
