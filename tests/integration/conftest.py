"""Fixtures for the integration tests: real servers in subprocesses, one per server and core.

``server`` runs each test once per (server, core): uvicorn with its default
websocket protocol (websockets-sansio), with wsproto, with the legacy
websockets protocol and with turbows' native protocol (``uvicorn-turbows``,
compiled: with the pure core the app runs pure on it), hypercorn
on asyncio and on trio, daphne where it is installed, and granian (its ASGI
interface, on each loop its ``--loop`` offers: uvloop, asyncio's own and
rloop); each on the compiled (``speedups``) and the ``pure`` core. One process serves every test of its
pair (pytest groups the tests by pair, so at most one runs at a time).

Every test is bounded: the harness puts a timeout on each await and on
each server start, and a watchdog dumps every thread's stack and ends the
run should a test still hang after ``WATCHDOG_SECONDS``.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import sys
from collections.abc import Iterator

import pytest

from turbows._cores import NO_EXTENSIONS

from harness import ServerProcess
from launch import SERVERS

#: Per test, a hard bound: nothing can hang CI.
WATCHDOG_SECONDS = 150

SERVER_NAMES = SERVERS  # every server launch.py can start
CORE_NAMES = ("speedups", "pure")


#: The modules each server needs.
REQUIRES = {
    "uvicorn": ("uvicorn", "websockets"),
    "uvicorn-wsproto": ("uvicorn", "wsproto"),
    "uvicorn-legacy": ("uvicorn", "websockets"),
    "uvicorn-turbows": ("uvicorn",),
    "hypercorn": ("hypercorn",),
    "hypercorn-trio": ("hypercorn", "trio"),
    "daphne": ("daphne",),
    "granian": ("granian", "uvloop"),
    "granian-asyncio": ("granian",),
    "granian-rloop": ("granian", "rloop"),
}


def _installed(server: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in REQUIRES[server])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium through selenium")


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _pair_skip(server: str, core: str) -> None:
    if core == "speedups" and NO_EXTENSIONS:
        pytest.skip("TURBOWS_NO_EXTENSIONS is set: the compiled core is not loaded")
    if server == "uvicorn-turbows" and NO_EXTENSIONS:
        pytest.skip("TURBOWS_NO_EXTENSIONS is set: turbows.uvicorn is uvicorn's sansio protocol")
    if not _installed(server):
        pytest.skip(f"{server} needs {', '.join(REQUIRES[server])}, not all installed (daphne is optional)")


@pytest.fixture(
    scope="session",
    params=[(server, core) for server in SERVER_NAMES for core in CORE_NAMES],
    ids=lambda pair: f"{pair[0]}-{pair[1]}",
)
def _served(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server, core = request.param
    _pair_skip(server, core)
    process = ServerProcess(server, core)
    try:
        process.start().check()
        yield process
    finally:
        process.stop()
        process.discard_log()


@pytest.fixture
def server(_served: ServerProcess) -> Iterator[ServerProcess]:
    """A running server on one core; a test that brings it down fails, and the next one gets a new process."""
    if not _served.alive():
        _served.start().check()
    yield _served
    if not _served.alive():
        pytest.fail(f"{_served!r} died during the test\n{_served.log_text()}")
