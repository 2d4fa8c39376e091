"""``turbows.Hub("redis+cluster://...")`` in process, on a real 3-node Redis Cluster (and a Valkey one).

Sharded pub/sub: a room's channel lives on the primary that owns its slot.
Two hubs on one cluster stand for two workers, as in test_redis.py. One
cluster per server kind serves the whole module (forming one takes seconds),
each test on a prefix of its own, so no test hears another's rooms; the
restart test stops a node and brings the same node back, leaving the cluster
as it found it.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import shutil
from collections.abc import Iterator

import anyio
import pytest

redis = pytest.importorskip("redis.asyncio", reason='the Redis hub needs redis-py: pip install "turbows[redis]"')

import turbows  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from turbows import _redis  # noqa: E402
from hub_peer import Connection  # noqa: E402
from redis_server import _MISSING, RedisCluster, RedisServer, binaries, cluster_support  # noqa: E402
from test_redis import WAIT, member_of, until  # noqa: E402

pytestmark = pytest.mark.anyio

#: redis-py 8 reads the slot map from any node that answers, where earlier ones use their default node.
REDIS_PY_8 = int(importlib.metadata.version("redis").split(".")[0]) >= 8
#: The module's cluster asks for one: every URL here carries auth, as redis:// would.
PASSWORD = "s3cret"

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(request: pytest.FixtureRequest) -> Iterator[RedisCluster]:
    binary = binaries()[request.param]
    if binary is None:
        pytest.skip(_MISSING[request.param])
    reason = cluster_support(request.param, binary)
    if reason:
        pytest.skip(reason)
    started = RedisCluster(request.param, binary, password=PASSWORD).start()
    try:
        yield started
    finally:
        started.remove()


_prefixes = itertools.count()


@pytest.fixture
def prefix(cluster: RedisCluster) -> str:
    """This test's channel prefix: nothing it publishes reaches another test's hubs."""
    return f"t{next(_prefixes)}:"


def hub(cluster: RedisCluster, prefix: str, **query: str) -> turbows.Hub:
    return turbows.Hub(cluster.url(prefix=prefix, **query))


def rooms_on_each_node(cluster: RedisCluster, prefix: str) -> list[str]:
    """A room name per node, each room's channel hashing to a slot that node owns."""
    rooms: dict[int, str] = {}
    for n in itertools.count():
        owner = cluster.nodes.index(cluster.owner(key_slot(f"{prefix}room{n}".encode())))
        rooms.setdefault(owner, f"room{n}")
        if len(rooms) == len(cluster.nodes):
            return [rooms[index] for index in range(len(cluster.nodes))]
    raise AssertionError("unreachable")


async def shardnumsub(node: RedisServer, channel: str) -> int:
    """Subscribers of ``channel`` on ``node`` itself (PUBSUB SHARDNUMSUB counts the node's own)."""
    client = redis.Redis(host="127.0.0.1", port=node.port, password=node.password)
    try:
        _, count = await client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(count)
    finally:
        await client.aclose()


# -- one order per room, on every shard --------------------------------------------------------


async def test_rooms_on_three_shards_each_in_one_order(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """A room on each node; two hubs publish to all three at once. Each room's members, on both hubs,
    get that room's 300 messages in one order (its shard's), each publisher's in the order it
    published them, and nothing of the other rooms; each hub subscribed on the room's node only."""
    rooms = rooms_on_each_node(cluster, prefix)
    slots = [key_slot(f"{prefix}{room}".encode()) for room in rooms]
    assert len({cluster.owner(slot).port for slot in slots}) == 3, "the rooms are not on three nodes"
    async with hub(cluster, prefix) as one, hub(cluster, prefix) as two:
        members = {room: [await member_of(h, websocket_class, room) for h in (one, two, one, two)] for room in rooms}
        for room, slot in zip(rooms, slots):
            owner = cluster.owner(slot)
            assert one._backend._route(f"{prefix}{room}".encode()) == (f"127.0.0.1:{owner.port}", slot)
            assert await shardnumsub(owner, f"{prefix}{room}") == 2
            for node in cluster.nodes:
                if node is not owner:
                    assert await shardnumsub(node, f"{prefix}{room}") == 0

        async def publish(h: turbows.Hub, tag: str) -> None:
            for n in range(50):
                for room in rooms:
                    await h.publish_text(room, f"{room}:{tag}:{n}")

        async with anyio.create_task_group() as group:
            for h, tag in ((one, "a"), (two, "b"), (one, "c")):
                group.start_soon(publish, h, tag)
        everyone = [m for room in rooms for m in members[room]]
        await until(lambda: all(len(m.payloads) == 150 for m in everyone), "150 messages each")
        for room in rooms:
            first = members[room][0].payloads
            assert all(m.payloads == first for m in members[room]), f"members of {room} disagree on the order"
            for tag in "abc":
                assert [p for p in first if p.startswith(f"{room}:{tag}:")] == [f"{room}:{tag}:{n}" for n in range(50)]
        assert one.stats()["redis_subscriptions"] == two.stats()["redis_subscriptions"] == 3
        assert one.stats()["redis_publish_failures"] == 0


async def test_exclude_across_hubs(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """The publishing hub's member left out, not the other hub's member with the same serial number."""
    async with hub(cluster, prefix) as one, hub(cluster, prefix) as two:
        mine, theirs = await member_of(one, websocket_class, "room"), await member_of(two, websocket_class, "room")
        assert one._registry.members[mine.websocket].serial == two._registry.members[theirs.websocket].serial
        await one.publish_text("room", "not to mine", exclude=mine.websocket)
        await one.publish_bytes("room", b"to all")
        await until(lambda: len(theirs.payloads) == 2 and len(mine.payloads) == 1, "the messages")
        assert theirs.payloads == ["not to mine", b"to all"] and mine.payloads == [b"to all"]


async def test_prefixes_are_isolated(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    async with hub(cluster, prefix) as one, hub(cluster, f"other{prefix}") as other:
        here, there = await member_of(one, websocket_class, "room"), await member_of(other, websocket_class, "room")
        await one.publish_text("room", "here")
        await other.publish_text("room", "there")
        await until(lambda: here.payloads and there.payloads, "each prefix's message")
        await one.publish_text("room", "here again")
        await until(lambda: len(here.payloads) == 2, "the second message")
        assert here.payloads == ["here", "here again"] and there.payloads == ["there"]


async def test_a_worker_is_subscribed_while_it_has_members(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """SSUBSCRIBE with the first member, SUNSUBSCRIBE when the last leaves, on the room's node; joined
    again, subscribed again before add returns."""
    channel = f"{prefix}room"
    owner = cluster.owner(key_slot(channel.encode()))
    async with hub(cluster, prefix) as h:
        first, second = [await member_of(h, websocket_class, "room") for _ in range(2)]
        assert await shardnumsub(owner, channel) == 1
        await h.discard("room", first.websocket)
        assert await shardnumsub(owner, channel) == 1
        await h.discard("room", second.websocket)
        with anyio.fail_after(WAIT):
            while await shardnumsub(owner, channel):
                await anyio.sleep(0.01)
        await until(lambda: h.stats()["redis_subscriptions"] == 0, "the unsubscription")
        await h.add("room", first.websocket)
        await h.publish_text("room", "again")
        await until(lambda: first.payloads == ["again"], "the message")
        assert h.stats()["redis_reconnects"] == 0  # its own SUNSUBSCRIBE is not taken for a moved slot


async def test_concurrent_publishes_beyond_the_pool_wait_for_a_connection(
    cluster: RedisCluster, prefix: str, websocket_class: type
) -> None:
    async with hub(cluster, prefix) as h:
        member = await member_of(h, websocket_class, "room")
        count = _redis.POOL_SIZE * 4
        async with anyio.create_task_group() as group:
            for n in range(count):
                group.start_soon(h.publish_text, "room", f"m{n}")
        await until(lambda: len(member.payloads) == count, "every message")
        assert sorted(member.payloads) == sorted(f"m{n}" for n in range(count))
        assert h.stats()["redis_publish_failures"] == 0


# -- URLs -------------------------------------------------------------------------------------


async def test_url_forms(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """Several nodes in the URL, the first of them not there: any node that answers gives the slot map."""
    from redis_server import free_port

    first, second = cluster.nodes[:2]
    for url in (
        f"redis+cluster://:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{second.port}?prefix={prefix}",
        f"redis+cluster://:{PASSWORD}@127.0.0.1:{first.port},127.0.0.1:{second.port}/0?prefix={prefix}&timeout=2.5",
        f"redis+cluster://default:{PASSWORD}@localhost:{first.port}?prefix={prefix}",
    ):
        async with turbows.Hub(url) as h, hub(cluster, prefix) as publisher:
            assert h.connected
            member = await member_of(h, websocket_class, "room")
            await publisher.publish_text("room", url)
            await until(lambda: member.payloads == [url], "the message")


async def test_a_wrong_password_fails_start(cluster: RedisCluster) -> None:
    """Auth is in the URL as for redis:// (every URL in this module has it); a wrong one fails at
    start, saying where, not what."""
    wrong = turbows.Hub(f"redis+cluster://:hunter2@127.0.0.1:{cluster.nodes[0].port}")
    with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="cannot reach Redis at 127.0.0.1") as raised:
        await wrong.start()
    assert "hunter2" not in str(raised.value) and not wrong.connected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/1", "not a usable Redis Cluster URL: .*db"),
        ("redis+cluster://127.0.0.1:notaport", "'127.0.0.1:notaport' .* is not host:port"),
        ("redis+cluster://", "names no node"),
        ("redis+cluster://127.0.0.1:7000,", "names no node"),
        ("redis+cluster://:hunter2@127.0.0.1:7000/1", r"'redis://:\*\*\*@127.0.0.1:7000/1' is not a usable"),
        ("redis+cluster://127.0.0.1:7000?timeout=0", "timeout= must be over 0"),
        ("redis+cluster://127.0.0.1:7000?encoding=no-such-codec", "unknown encoding: no-such-codec"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        turbows.Hub(url)
    assert "hunter2" not in str(raised.value)


async def test_a_cluster_that_is_not_there_fails_start() -> None:
    from redis_server import free_port

    h = turbows.Hub(f"redis+cluster://127.0.0.1:{free_port()}")
    with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="cannot reach Redis"):
        await h.start()
    assert not h.connected


# -- a node stopped and started again -----------------------------------------------------------


async def test_a_node_stopped_and_started_again(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """The node owning a room's slot stops: members stay, a publish to that room raises HubUnavailable
    within the bound, both hubs read as disconnected; the same node back, the listeners reconnect and
    subscribe again on every shard, and delivery resumes with nobody joining again."""
    down_room, up_room, _ = rooms_on_each_node(cluster, prefix)
    node = cluster.owner(key_slot(f"{prefix}{down_room}".encode()))
    async with hub(cluster, prefix, timeout="0.5") as one, hub(cluster, prefix, timeout="0.5") as two:
        a = await member_of(one, websocket_class, down_room, up_room)
        b = await member_of(two, websocket_class, down_room, up_room)
        await one.publish_text(down_room, "down: before")
        await two.publish_text(up_room, "up: before")
        await until(lambda: len(a.payloads) == len(b.payloads) == 2, "the first messages")
        node.stop()
        try:
            await until(lambda: not one.connected and not two.connected, "both hubs to see the node go")
            for h in (one, two):
                with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="did not take the message"):
                    await h.publish_text(down_room, "lost")
            # A room on a shard that is up still takes publishes; no worker hears it (each listener
            # waits for every node), as at most once allows. Before redis-py 8.0, RedisCluster reads
            # the slot map again through its default node, and while that is the node down every
            # publish fails: still within the bound.
            up_failed = 0
            with anyio.fail_after(WAIT):
                try:
                    await one.publish_text(up_room, "up: while a node is down")
                except turbows.HubUnavailable:
                    if REDIS_PY_8:
                        raise
                    up_failed = 1
            with anyio.fail_after(WAIT):  # joining while a node is away does not hang
                late = await member_of(two, websocket_class, down_room)
            assert (one.members(down_room), one.members(up_room), two.members(down_room)) == (1, 1, 2)
        finally:
            cluster.restart(node)
        await until(lambda: one.connected and two.connected, "both hubs to reconnect")
        await until(
            lambda: one.stats()["redis_subscriptions"] == two.stats()["redis_subscriptions"] == 2, "resubscribed"
        )
        await one.publish_text(down_room, "down: after")
        await two.publish_text(up_room, "up: after")
        await until(lambda: len(a.payloads) == len(b.payloads) == 4 and late.payloads == ["down: after"], "resumed")
        for member in (a, b):  # each room in its order; the two rooms' shards keep no order between them
            assert [p for p in member.payloads if p.startswith("down")] == ["down: before", "down: after"]
            assert [p for p in member.payloads if p.startswith("up")] == ["up: before", "up: after"]
        for h in (one, two):
            stats = h.stats()
            assert stats["redis_reconnects"] >= 1 and stats["redis_disconnects"] >= 1, stats
            assert stats["redis_publish_failures"] == 1 + (up_failed if h is one else 0), stats
            assert stats["disconnected"] == 0, stats


async def test_a_room_whose_slot_moves_to_another_node(cluster: RedisCluster, prefix: str, websocket_class: type) -> None:
    """The room's slot reassigned to another node (CLUSTER SETSLOT ... NODE, on every node): Redis ends
    the subscription there with SUNSUBSCRIBE; the listeners read the slot map again and subscribe on
    the new owner, and the room's members, still in it, get what is published after."""
    room = "room"
    channel = f"{prefix}{room}"
    slot = key_slot(channel.encode())
    source = cluster.owner(slot)
    target = next(node for node in cluster.nodes if node is not source)
    async with hub(cluster, prefix) as one, hub(cluster, prefix) as two:
        a, b = await member_of(one, websocket_class, room), await member_of(two, websocket_class, room)
        await one.publish_text(room, "before")
        await until(lambda: a.payloads == b.payloads == ["before"], "the first message")
        with cluster.client(target) as client:
            target_id = client.execute_command("CLUSTER", "MYID")
        try:
            for node in (target, source, *(n for n in cluster.nodes if n not in (source, target))):
                with cluster.client(node) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            await until(lambda: one.stats()["redis_reconnects"] >= 1 and two.stats()["redis_reconnects"] >= 1, "reconnects")
            with anyio.fail_after(WAIT):
                while await shardnumsub(target, channel) != 2:
                    await anyio.sleep(0.01)
            assert await shardnumsub(source, channel) == 0
            await until(lambda: one.stats()["redis_subscriptions"] == two.stats()["redis_subscriptions"] == 1, "resubscribed")
            await two.publish_text(room, "after")
            await until(lambda: a.payloads == b.payloads == ["before", "after"], "the message after")
        finally:
            # The slot back where the module's cluster had it (cluster.owner reads the even split).
            with cluster.client(source) as client:
                source_id = client.execute_command("CLUSTER", "MYID")
            for node in (source, target, *(n for n in cluster.nodes if n not in (source, target))):
                with cluster.client(node) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", source_id)
            cluster.wait_ok()


async def test_a_cluster_url_at_a_redis_that_is_not_a_cluster(redis_server: RedisServer) -> None:
    """A plain Redis named as a cluster: the start fails, saying why."""
    h = turbows.Hub(f"redis+cluster://127.0.0.1:{redis_server.port}")
    with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="(?i)cluster"):
        await h.start()


async def test_a_plain_url_at_a_cluster_node_uses_classic_pub_sub(
    cluster: RedisCluster, prefix: str, websocket_class: type
) -> None:
    """``redis://`` naming one node of a cluster works too, unsharded: the cluster carries a PUBLISH
    on one node to subscribers on every node."""
    one = turbows.Hub(f"redis://:{PASSWORD}@127.0.0.1:{cluster.nodes[0].port}/0?prefix={prefix}")
    two = turbows.Hub(f"redis://:{PASSWORD}@127.0.0.1:{cluster.nodes[1].port}/0?prefix={prefix}")
    async with one, two:
        member = await member_of(two, websocket_class, "room")
        await one.publish_text("room", "across nodes")
        await until(lambda: member.payloads == ["across nodes"], "the message")


async def test_tls(redis_binary: tuple[str, str], websocket_class: type) -> None:
    """``rediss+cluster://``: the slot map, the publishes and every node's subscriber connection over TLS."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS servers")
    reason = cluster_support(*redis_binary)
    if reason:
        pytest.skip(reason)
    cluster = RedisCluster(*redis_binary, password=PASSWORD, tls=True)
    try:
        try:
            cluster.start()
        except RuntimeError as exc:
            if "TLS support" not in str(exc):
                raise
            pytest.skip(f"this {redis_binary[0]}-server is built without TLS")
        rooms = rooms_on_each_node(cluster, "turbows:")
        async with turbows.Hub(cluster.tls_url()) as h, turbows.Hub(cluster.tls_url()) as publisher:
            assert set(h._backend._connections) == {f"127.0.0.1:{node.tls_port}" for node in cluster.nodes}
            members = [await member_of(h, websocket_class, room) for room in rooms]
            for room in rooms:
                await publisher.publish_text(room, f"over TLS to {room}")
            await until(lambda: all(m.payloads for m in members), "every room's message")
            assert [m.payloads for m in members] == [[f"over TLS to {room}"] for room in rooms]
    finally:
        cluster.remove()
