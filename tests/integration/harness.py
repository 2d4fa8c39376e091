"""Real servers in subprocesses, and a real client, for the integration tests.

``ServerProcess`` starts ``launch.py`` (one server, one turbows core),
reads the port it bound, and checks over a websocket that the process
really serves the core asked for. Every wait here has a timeout; a server
subprocess dies with the test process (``PR_SET_PDEATHSIG``), so nothing
outlives or hangs a run.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "launch.py"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
#: The client accepts messages up to this size (the 1 MiB tests need more than its 1 MiB default).
CLIENT_MAX_SIZE = 4 * 1024 * 1024

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not glibc: the fixtures' finalizers still stop the server
        pass


def run(awaitable: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``awaitable`` in a fresh event loop, failing after ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout)

    return asyncio.run(bounded())


class ServerProcess:
    """One server (``launch.SERVERS``) serving ``wsapp:app`` (or ``app``) on one core, in a subprocess."""

    def __init__(
        self, server: str, core: str, *, app: str = "wsapp:app", app_dir: Path = HERE, env: dict[str, str] | None = None
    ) -> None:
        self.server = server
        #: Added to the server's environment (the Redis tests name their Redis here).
        self.env = dict(env or {})
        self.core = core
        self.app = app
        self.app_dir = app_dir
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"turbows-{server}-{core}-", suffix=".log", delete=False)
        self.info: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> ServerProcess:
        env = dict(os.environ)
        env.update(self.env)
        env.pop("TURBOWS_NO_EXTENSIONS", None)
        if self.core == "pure" and self.server == "uvicorn-turbows":
            # The native protocol is compiled; TURBOWS_NO_EXTENSIONS would swap it
            # for uvicorn's sansio one. Keep it, and name the app's core outright.
            env["TURBOWS_APP_CORE"] = "pure"
        elif self.core == "pure":
            env["TURBOWS_NO_EXTENSIONS"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, str(LAUNCH), self.server, "--app", self.app, "--app-dir", str(self.app_dir)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"{self.server} did not bind within {START_TIMEOUT}s\n{self.log_text()}")
                if not selector.select(remaining):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    self.process.wait(timeout=STOP_TIMEOUT)
                    raise RuntimeError(
                        f"{self.server} exited with {self.process.returncode} before binding\n{self.log_text()}"
                    )
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        assert line.startswith("LISTENING "), line
        return int(line.split()[1])

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if process is not None and process.stdout is not None:
            process.stdout.close()

    def discard_log(self) -> None:
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self, limit: int = 6000) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def __repr__(self) -> str:
        return f"<{self.server} on the {self.core} core, port {self.port}>"

    # -- client side ------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def connect(self, path: str, **kwargs: Any) -> Any:
        """The ``websockets`` asyncio client, bounded: ``async with server.connect(path) as ws``."""
        kwargs.setdefault("open_timeout", 10)
        kwargs.setdefault("close_timeout", 5)
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("max_size", CLIENT_MAX_SIZE)
        return connect(self.url(path), **kwargs)

    async def events(self, key: str, timeout: float = 10.0) -> list[Any]:
        """What the handler for ``key`` recorded, once it has finished."""
        async with self.connect(f"/events/{key}?timeout={timeout}") as ws:
            report = json.loads(await asyncio.wait_for(ws.recv(), timeout + 5))
        assert report["done"], f"the handler for {key} did not finish within {timeout}s: {report['events']}"
        return report["events"]

    async def describe(self) -> dict[str, Any]:
        async with self.connect("/core") as ws:
            return json.loads(await ws.recv())

    def check(self) -> None:
        """The process serves, with the core it was asked for (a silent fallback fails here)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.info = run(self.describe(), timeout=10)
                break
            except (OSError, asyncio.TimeoutError):
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{self!r} does not answer\n{self.log_text()}") from None
                time.sleep(0.1)
        assert self.info["implementation"] == self.core, self.info
        assert self.info["class"] == "turbows.WebSocket", self.info
        # The class's bases name the core: the compiled one is _calls_c's (3.11) or
        # _coroutines' (3.12+), the pure one _core_py's.
        compiled = bool({"turbows._calls_c", "turbows._coroutines"} & set(self.info["mro_modules"]))
        assert compiled == (self.core == "speedups"), self.info
        assert "turbows._core_py" in self.info["mro_modules"] or compiled, self.info
        assert self.info["is_starlette_websocket"], self.info


def new_key() -> str:
    return uuid.uuid4().hex


async def recv(ws: ClientConnection, timeout: float = 10.0) -> Any:
    return await asyncio.wait_for(ws.recv(), timeout)


def reset(ws: ClientConnection) -> None:
    """Kill the client's TCP connection abruptly: no close frame, an RST (SO_LINGER 0)."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()
