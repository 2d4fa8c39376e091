"""Where the compiled protocol is missing (here: TURBOWS_NO_EXTENSIONS=1), turbows.uvicorn's
WebSocketProtocol is uvicorn's websockets-sansio protocol, with a warning; otherwise it is
the compiled one (a build that silently fell back fails here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from turbows._cores import NO_EXTENSIONS

PROBE = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import turbows.uvicorn as u
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
print(u.NATIVE, issubclass(u.WebSocketProtocol, WebSocketsSansIOProtocol),
      any("websockets-sansio" in str(w.message) for w in caught))
"""


def probe(env_extra: dict[str, str]) -> str:
    env = dict(os.environ)
    env.pop("TURBOWS_NO_EXTENSIONS", None)
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_falls_back_to_sansio_with_a_warning() -> None:
    assert probe({"TURBOWS_NO_EXTENSIONS": "1"}) == "False True True"


@pytest.mark.skipif(NO_EXTENSIONS, reason="a pure run")
def test_default_import_is_the_compiled_protocol() -> None:
    assert probe({}) == "True False False"
    from turbows import _protocol_c, uvicorn

    assert issubclass(uvicorn.WebSocketProtocol, _protocol_c.WebSocketProtocol)
