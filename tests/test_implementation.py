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
    # The shape measured fastest on this interpreter (see turbows._cores).
    expected = "turbows._coroutines" if sys.version_info >= (3, 12) else "turbows._calls_c"
    assert _implementation_in_subprocess() == f"speedups {expected}"


@pytest.mark.speedups
def test_compiled_modules_are_extensions() -> None:
    from turbows import _calls_c, _json_c, _state_c

    for module in (_calls_c, _json_c, _state_c):
        assert not module.__file__.endswith(".py"), module.__file__


@pytest.mark.speedups
def test_the_compiled_core_uses_the_compiled_json() -> None:
    # On 3.12+ the compiled core's methods are Python coroutines: its JSON
    # must still be the extension's, not the standard library's.
    from turbows import _coroutines, _json_c

    assert _coroutines.dumps_text is _json_c.dumps_text
    assert _coroutines.loads_bytes is _json_c.loads_bytes


def test_no_extensions_variable_loads_the_pure_core() -> None:
    assert _implementation_in_subprocess(TURBOWS_NO_EXTENSIONS="1") == "pure turbows._core_py"


def test_selected_core_is_the_first(core: str) -> None:
    assert turbows.WebSocket is next(iter(CORES.values()))
    assert turbows.IMPLEMENTATION in CORES


def test_each_core_is_a_starlette_websocket(websocket_class: type) -> None:
    assert issubclass(websocket_class, StarletteWebSocket)
    assert websocket_class.__name__ == "WebSocket"
    assert websocket_class.__module__ == "turbows"
