"""Which core an import loads: the compiled one by default, the pure one on request."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows
from turbows._cores import CORES


def _implementation_in_subprocess(**environment: str) -> str:
    code = (
        "import turbows; "
        "core = next(c for c in turbows.WebSocket.__mro__ if c.__name__ == 'WebSocketCore'); "
        "print(turbows.IMPLEMENTATION, core.__module__)"
    )
    env = {key: value for key, value in os.environ.items() if key != "TURBOWS_NO_EXTENSIONS"}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.speedups
def test_default_install_loads_the_compiled_core() -> None:
    # A wheel or build that silently fell back to pure Python fails here.
    assert turbows.IMPLEMENTATION == "speedups"
    assert _implementation_in_subprocess() == "speedups turbows._calls_c"


@pytest.mark.speedups
def test_compiled_modules_are_extensions() -> None:
    from turbows import _calls_c, _json_c, _state_c

    for module in (_calls_c, _json_c, _state_c):
        assert not module.__file__.endswith(".py"), module.__file__


def test_no_extensions_variable_loads_the_pure_core() -> None:
    assert _implementation_in_subprocess(TURBOWS_NO_EXTENSIONS="1") == "pure turbows._core_py"


def test_selected_core_is_the_first(core: str) -> None:
    assert turbows.WebSocket is next(iter(CORES.values()))
    assert turbows.IMPLEMENTATION in CORES


def test_each_core_is_a_starlette_websocket(websocket_class: type) -> None:
    assert issubclass(websocket_class, StarletteWebSocket)
    assert websocket_class.__name__ == "WebSocket"
    assert websocket_class.__module__ == "turbows"
