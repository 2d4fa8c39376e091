"""``Hub("redis://...")``: the hub's backend on Redis pub/sub, so a room spans every worker and host.

One Redis channel per room, ``prefix + room`` (``prefix`` defaults to
``"turbows:"``, ``"turbows:<db>:"`` on a database other than 0, since pub/sub
ignores the database number; ``?prefix=...`` in the URL is used as given). A worker is
subscribed to a room's channel while it has members there: the hub tells the
backend (``subscribe``/``unsubscribe``, plain calls), and the listener task
brings the subscriber connection's SUBSCRIBE/UNSUBSCRIBE in line.

Two connections' worth of traffic, never mixed:

- publishing goes through a small redis-py pool: one PUBLISH per message,
  bounded by ``timeout`` (connect and reply), with redis-py's own retries
  off, so ``publish`` raises ``HubUnavailable`` promptly and never hangs;
- the listener owns one subscriber connection. It reads every channel
  message and hands it to the hub, in the channel's order, including the
  messages this worker published itself (the hub delivers nothing on its
  own): so every member in every worker gets a room's messages in that one
  order. On any error it drops the connection, reconnects with capped,
  jittered backoff and subscribes to every room again. Messages published
  while it was away are lost to this worker (at-most-once, as Redis pub/sub).

The envelope is a fixed header and the payload, encoded once by the
publisher and decoded once per worker (see ``encode``/``decode``): no JSON
around it, no base64.

redis-py's client is asyncio's, so this backend runs on asyncio only;
``start()`` says so under trio.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import random
import struct
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._backend import Backend, Deliver, Envelope
from ._exceptions import HubUnavailable

__all__ = ["DEFAULT_PREFIX", "MAX_MESSAGE", "RedisBackend", "decode", "default_prefix", "encode"]

logger = logging.getLogger("turbows.hub")

#: Channel names are this prefix and the room name, unless the URL says ``?prefix=``.
DEFAULT_PREFIX = "turbows:"


def default_prefix(db: int) -> str:
    """The prefix of a hub on database ``db`` whose URL names none. Redis pub/sub ignores the database
    number (a PUBLISH on db 1 reaches a subscriber on db 0), so hubs on /0 and /1, as two apps sharing
    a Redis by database would be, get prefixes of their own; db 0 keeps the plain one."""
    return DEFAULT_PREFIX if db == 0 else f"{DEFAULT_PREFIX}{db}:"
#: The longest prefix, in characters.
MAX_PREFIX = 128
#: The largest message (payload bytes) published through Redis: a bound well under Redis'
#: own 512 MiB, since every worker in the room holds each one in memory.
MAX_MESSAGE = 16 * 1024 * 1024
#: Seconds a publish (connecting included) and a subscription may take before giving up.
DEFAULT_TIMEOUT = 1.0
#: The listener's reconnect backoff: from the first delay, doubled per failure, up to the cap.
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 1.0
#: Seconds a subscriber connection stays up before the backoff starts again from the first delay
#: (as does a confirmed SUBSCRIBE on it): one that opens and fails at once (a SUBSCRIBE the ACL
#: refuses, a Redis still LOADING, a proxy that accepts and drops) is retried ever more slowly.
HEALTHY_AFTER = 3.0
#: Connections a hub publishes through, at most (each publish holds one until Redis replies).
POOL_SIZE = 32
#: Seconds of silence on the subscriber connection before the listener sends a PING.
PING_INTERVAL = 1.0

# The envelope: version, kind, the publishing hub's token (16 bytes), the serial number of
# the member to leave out (0: nobody); then the payload (UTF-8 for text).
_HEADER = struct.Struct(">BB16sQ")
HEADER_SIZE = _HEADER.size
_VERSION = 1
_TEXT = 0
_BINARY = 1

#: Connections only: what a listener or a publish may meet when Redis goes away or stalls.
_OUTAGE: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, ConnectionError)


def encode(envelope: Envelope) -> bytes:
    """The bytes published for ``envelope``: header, then the payload."""
    payload = envelope.payload
    if type(payload) is str:
        return _HEADER.pack(_VERSION, _TEXT, envelope.origin, envelope.exclude) + payload.encode("utf-8")
    return _HEADER.pack(_VERSION, _BINARY, envelope.origin, envelope.exclude) + payload


def decode(data: bytes) -> Envelope | None:
    """The envelope in a channel message, or ``None`` for one that is not turbows' (or not this version)."""
    if len(data) < HEADER_SIZE:
        return None
    version, kind, origin, exclude = _HEADER.unpack_from(data)
    if version != _VERSION or kind not in (_TEXT, _BINARY):
        return None
    view = memoryview(data)[HEADER_SIZE:]
    size = len(view)
    if kind == _TEXT:
        try:
            payload: str | bytes = str(view, "utf-8")
        except UnicodeDecodeError:
            return None
    else:
        payload = bytes(view)
    return Envelope(payload, size, origin, exclude)


def _split_url(url: str) -> tuple[str, str | None, float]:
    """redis-py's URL, and turbows' own query parameters taken out of it: ``prefix`` (``None``: not
    given), ``timeout``."""
    parts = urlsplit(url)
    redis_query = []
    prefix: str | None = None
    timeout = DEFAULT_TIMEOUT
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "timeout":  # redis-py's own name for a socket timeout: here, the bound on a publish
            try:
                timeout = float(value)
            except ValueError:
                raise ValueError(f"turbows.Hub(url): timeout= is a number of seconds, got {value!r}") from None
            if not 0 < timeout <= 60:
                raise ValueError(f"turbows.Hub(url): timeout= must be over 0 and at most 60 seconds, got {value}")
        else:
            redis_query.append((name, value))
    if prefix is not None and len(prefix) > MAX_PREFIX:
        raise ValueError(f"turbows.Hub(url): prefix= is at most {MAX_PREFIX} characters, got {len(prefix)}")
    return urlunsplit(parts._replace(query=urlencode(redis_query))), prefix, timeout


def _jittered(delay: float) -> float:
    """Equal jitter: workers that lost the same Redis do not all come back at once."""
    return delay / 2 + random.uniform(0, delay / 2)


def _redacted(url: str) -> str:
    """``url`` with its password, if any, replaced: error messages end up in logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise ImportError(
            'turbows.Hub("redis://..."): needs redis-py; pip install "turbows[redis]"'
        ) from None
    return redis


class RedisBackend(Backend):
    """Rooms across processes on one Redis (see the module's docstring)."""

    needs_start = True
    suspends = True

    def __init__(self, url: str, deliver: Deliver) -> None:
        super().__init__(deliver)
        redis = _import_redis()
        redis_url, prefix, self._timeout = _split_url(url)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, *_OUTAGE)
        self._redis = redis
        db = self._make_client(redis_url)
        self._prefix = prefix if prefix is not None else default_prefix(db)
        self._prefix_bytes = self._prefix.encode("utf-8")

        #: Rooms this process has members in: what the subscriber connection should be subscribed to.
        self._wanted: set[str] = set()
        #: Rooms whose latest command sent on this connection is SUBSCRIBE.
        self._requested: set[str] = set()
        #: Per room, SUBSCRIBE commands sent on this connection, and confirmations read back.
        self._sent: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}

        self._connected = False
        #: The subscriber connection has had a SUBSCRIBE confirmed: it works, not only opens.
        self._proven = False
        self._running = False
        self._listener: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        #: The subscriber connection(s), by ``_route``'s key; empty while disconnected.
        self._connections: dict[Any, Any] = {}

        self._stats = {
            "redis_connected": 0,
            "redis_reconnects": 0,
            "redis_disconnects": 0,
            "redis_publish_failures": 0,
            "redis_received": 0,
            "redis_malformed": 0,
            "redis_stale": 0,
        }

    def _make_client(self, redis_url: str) -> int:
        """Make ``self._client`` (and its pool) for ``redis_url``; the database number it names."""
        redis = self._redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # redis-py's retries off: the hub's publish fails fast, the listener reconnects by itself.
        # Concurrent publishes beyond the pool's size wait for a connection (within the publish's
        # bound) rather than fail, as redis-py's default pool would ("Too many connections").
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(NoBackoff(), 0),
            "max_connections": POOL_SIZE,
            "timeout": self._timeout,
        }
        try:
            self._pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, **options)
            # Replies as bytes, whatever the URL says (redis-py lets the URL's decode_responses= win
            # over from_url's keywords): the hub reads them itself and never hands one to the app,
            # and the listener matches channel messages as bytes.
            self._pool.connection_kwargs["decode_responses"] = False
            # encoding= still encodes redis-py's own str arguments (AUTH, CLIENT SETINFO): a codec
            # Python does not know would fail every connection with a LookupError.
            codecs.lookup(self._pool.connection_kwargs.get("encoding", "utf-8"))
            # A connection made now (not connected) checks the URL's options here, not at the first publish.
            self._pool.make_connection()
        except (ValueError, TypeError, LookupError) as exc:
            raise ValueError(f"turbows.Hub(url): {_redacted(redis_url)!r} is not a usable Redis URL: {exc}") from None
        self._client = redis.asyncio.Redis(connection_pool=self._pool)
        self._publish = self._client.publish
        return int(self._pool.connection_kwargs.get("db") or 0)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<{type(self).__name__} {state}, prefix {self._prefix!r}, {len(self._wanted)} rooms>"

    # -- lifetime ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        try:
            import sniffio

            library = sniffio.current_async_library()
        except Exception:  # sniffio comes with anyio; without it, asyncio is all there is
            library = "asyncio"
        if library != "asyncio":
            raise RuntimeError(
                f'turbows.Hub("redis://..."): runs on asyncio only (redis-py\'s client is asyncio\'s), '
                f"and this is {library}; Hub() serves one process on any loop"
            )
        self._changed = asyncio.Event()
        self._progress = asyncio.Event()
        self._running = True
        # The first connection is made here, so a wrong host or password fails the app's startup.
        try:
            await self._connect()
        except Exception as exc:  # whatever it was, nothing is left open behind it
            self._running = False
            await self._close_connection()
            await self._aclose_pool()
            if isinstance(exc, self._errors):
                raise HubUnavailable(f"turbows.Hub: cannot reach Redis at {self._where()}: {exc}") from exc
            raise
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="turbows.Hub Redis listener")
        self._listener.add_done_callback(self._listener_ended)

    def _listener_ended(self, listener: asyncio.Task[None]) -> None:
        """The listener ends only when ``stop`` ends it: any other end is said, loudly, and the hub
        reads as disconnected, rather than a hub that quietly delivers nothing from Redis again."""
        if listener.cancelled() or not self._running:
            return
        exc = listener.exception()
        logger.error(
            "turbows.Hub: the Redis listener ended; nothing more arrives from Redis until the hub is restarted",
            exc_info=exc,
        )
        self._running = False
        self._set_disconnected()

    async def stop(self) -> None:
        self._running = False
        listener, self._listener = self._listener, None
        while listener is not None and not listener.done():  # cancelled again until done (see _serve)
            listener.cancel()
            await asyncio.wait({listener}, timeout=0.1)
        if listener is not None and not listener.cancelled():
            listener.exception()
        await self._close_connection()
        self._set_disconnected()
        await self._aclose_pool()

    async def _aclose_pool(self) -> None:
        close = getattr(self._client, "aclose", None) or self._client.close
        await close()
        await self._pool.disconnect()

    def _where(self) -> str:
        kwargs = self._pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    # -- publishing ----------------------------------------------------------------

    async def publish(self, room: str, envelope: Envelope) -> None:
        if envelope.size > MAX_MESSAGE:
            raise ValueError(
                f"a message published through Redis is at most {MAX_MESSAGE} bytes, got one of {envelope.size}"
            )
        data = encode(envelope)
        channel = self._prefix_bytes + room.encode("utf-8")
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    await self._publish(channel, data)
                except self._redis.ConnectionError:
                    # Once more, on a new connection, within the same bound: a pooled connection
                    # from before a Redis restart fails on first use though Redis is back (that
                    # message never reached the new Redis). Only a connection that drops between
                    # Redis taking the PUBLISH and its reply could deliver one message twice.
                    await self._publish(channel, data)
        except self._errors as exc:
            self._stats["redis_publish_failures"] += 1
            reason = "no reply in time" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
            raise HubUnavailable(f"turbows.Hub: Redis at {self._where()} did not take the message: {reason}") from exc

    # -- subscriptions: what the hub asks for ----------------------------------------

    def subscribe(self, room: str) -> None:
        self._wanted.add(room)
        if self._changed is not None:
            self._changed.set()

    def unsubscribe(self, room: str) -> None:
        self._wanted.discard(room)
        if self._changed is not None:
            self._changed.set()

    def _in_effect(self, room: str) -> bool:
        return room in self._requested and self._confirmed.get(room, 0) == self._sent.get(room, -1)

    async def subscribed(self, room: str) -> None:
        """Returns once Redis confirmed the subscription; or at once while Redis is out of reach (the
        listener subscribes when it is back), and after ``timeout`` at most: a join never hangs on Redis."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while self._connected and room in self._wanted and not self._in_effect(room):
            progress = self._progress
            assert progress is not None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await progress.wait()
            except asyncio.TimeoutError:
                return

    def _advance(self) -> None:
        """Wake every ``subscribed`` waiter: a confirmation came, or the connection went."""
        progress = self._progress
        if progress is not None:
            progress.set()
            self._progress = asyncio.Event()

    # -- the listener ----------------------------------------------------------------
    # One subscriber connection (a cluster backend: one per primary, each room's channel on the
    # node that owns its slot). Any error on any of them drops them all and starts again.

    #: The commands and reply kinds of (sharded, for a cluster) pub/sub.
    _SUBSCRIBE, _UNSUBSCRIBE = "SUBSCRIBE", "UNSUBSCRIBE"
    _MESSAGE, _SUBSCRIBED, _UNSUBSCRIBED = b"message", b"subscribe", b"unsubscribe"

    def _subscriber(self, kwargs: dict[str, Any], connection_class: Any) -> Any:
        kwargs = dict(kwargs)
        kwargs["protocol"] = 2  # channel messages as plain replies, whatever the URL asks of the pool
        kwargs["decode_responses"] = False  # and as bytes (see __init__)
        return connection_class(**kwargs)

    async def _open(self) -> dict[Any, Any]:
        """Connect the subscriber connection(s), by the key ``_route`` gives a channel."""
        connection = self._subscriber(self._pool.connection_kwargs, self._pool.connection_class)
        self._connections = {None: connection}
        async with asyncio.timeout(self._timeout * 2):  # connect, AUTH, SELECT: redis-py's own steps
            await connection.connect()
        return self._connections

    def _route(self, channel: bytes) -> tuple[Any, Any]:
        """Which subscriber connection carries ``channel`` (its key in ``_connections``), and which
        channels one (UN)SUBSCRIBE command may name together with it (those with the same second item)."""
        return None, None

    async def _connect(self) -> None:
        await self._open()
        self._requested.clear()
        self._sent.clear()
        self._confirmed.clear()
        self._connected = True
        self._stats["redis_connected"] = 1
        assert self._changed is not None
        self._changed.set()  # subscribe to every room, on a new connection

    async def _close_connection(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            try:
                await connection.disconnect(nowait=True)
            except Exception:  # it is being dropped: nothing to tell anyone
                pass

    def _set_disconnected(self) -> None:
        if self._connected:
            self._connected = False
            self._stats["redis_connected"] = 0
            self._stats["redis_disconnects"] += 1
        self._advance()

    async def _listen(self) -> None:
        """Serve the subscriber connection; whenever it fails, reconnect with backoff and resubscribe."""
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        while self._running:
            if not self._connections:
                try:
                    await self._connect()
                except Exception as exc:  # an error no one expected too: retried, never a listener gone quiet
                    await self._close_connection()
                    wait = _jittered(delay)
                    if isinstance(exc, self._errors):
                        logger.debug("turbows.Hub: Redis at %s: %s; retrying in %.2fs", self._where(), exc, wait)
                    else:
                        logger.exception(
                            "turbows.Hub: connecting to Redis at %s failed unexpectedly; retrying in %.2fs",
                            self._where(), wait,
                        )
                    delay = min(delay * 2, BACKOFF_CAP)
                    await asyncio.sleep(wait)
                    continue
                self._stats["redis_reconnects"] += 1
                logger.info("turbows.Hub: reconnected to Redis at %s", self._where())
            # The backoff goes back to its first delay only once this connection proved itself; one
            # that opens and fails at once does not reset it (or it would be retried at round-trip speed).
            self._proven = False
            opened = loop.time()
            try:
                await self._serve(dict(self._connections))
            except self._errors as exc:
                logger.warning("turbows.Hub: lost Redis at %s (%s); reconnecting", self._where(), exc)
            except Exception:  # anything else (a reply no one expected): a new connection, not a dead listener
                logger.exception("turbows.Hub: the Redis listener failed; reconnecting")
            await self._close_connection()
            self._set_disconnected()
            if self._proven or loop.time() - opened >= HEALTHY_AFTER:
                delay = BACKOFF_FIRST
            wait = _jittered(delay)
            delay = min(delay * 2, BACKOFF_CAP)
            await asyncio.sleep(wait)

    async def _serve(self, connections: dict[Any, Any]) -> None:
        """A reader per connection; a writer task sends (UN)SUBSCRIBE as rooms change. Returns (raises)
        with the first of them to fail."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._write_subscriptions(connections))]
        tasks += [loop.create_task(self._read(connection)) for connection in connections.values()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("the subscriber connection ended")
        finally:
            # Cancelled again until done: on Python 3.11, a cancel that lands as redis-py's internal
            # wait_for completes is swallowed, and the task would go on (and wait forever).
            # And stop() cancels the listener again until it is done: a cancel that lands here must
            # not cut this short, or the reader and writer would outlive the listener (and stop()).
            pending = set(tasks)
            cancelled = False
            while pending:
                for task in pending:
                    task.cancel()
                try:
                    _, pending = await asyncio.wait(pending, timeout=0.1)
                except asyncio.CancelledError:
                    cancelled = True
                    pending = {task for task in pending if not task.done()}
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved: a failure on a connection being dropped anyway
            if cancelled:
                raise asyncio.CancelledError  # once they are done, the cancel goes on

    async def _write_subscriptions(self, connections: dict[Any, Any]) -> None:
        changed = self._changed
        assert changed is not None
        while True:
            await changed.wait()
            changed.clear()
            wanted, requested = self._wanted, self._requested
            joined = [room for room in wanted if room not in requested]
            left = [room for room in requested if room not in wanted]
            if not joined and not left:
                continue
            commands: dict[Any, list[tuple[Any, ...]]] = {}
            for rooms, command in ((joined, self._SUBSCRIBE), (left, self._UNSUBSCRIBE)):
                channels: dict[tuple[Any, Any], list[bytes]] = {}
                for room in rooms:
                    channel = self._prefix_bytes + room.encode("utf-8")
                    channels.setdefault(self._route(channel), []).append(channel)
                for (key, _), names in channels.items():
                    commands.setdefault(key, []).append((command, *names))
            for room in joined:
                requested.add(room)
                self._sent[room] = self._sent.get(room, 0) + 1
            for room in left:
                requested.discard(room)
            for key, batch in commands.items():
                connection = connections.get(key)
                if connection is None or not connection.is_connected:
                    # Closed (redis-py would quietly open a new one, unsubscribed), or a node
                    # this listener did not connect to: the topology changed; start again.
                    raise ConnectionError("no subscriber connection for a channel")
                await connection.send_packed_command(connection.pack_commands(batch), check_health=False)

    async def _read(self, connection: Any) -> None:
        prefix_length = len(self._prefix_bytes)
        deliver = self._deliver
        stats = self._stats
        message_kind, subscribed_kind, unsubscribed_kind = self._MESSAGE, self._SUBSCRIBED, self._UNSUBSCRIBED
        pinged = False
        while True:
            reply = await connection.read_response(timeout=PING_INTERVAL)
            if reply is None:
                # Silence: is Redis still there? A PING it must answer within the next interval.
                if pinged:
                    raise asyncio.TimeoutError("no reply to PING")
                pinged = True
                await connection.send_command("PING", check_health=False)
                continue
            pinged = False
            if not isinstance(reply, list):  # PONG, while subscribed to nothing
                continue
            kind = reply[0]
            if kind == message_kind:
                stats["redis_received"] += 1
                envelope = decode(reply[2])
                if envelope is None:
                    stats["redis_malformed"] += 1
                    continue
                room = reply[1][prefix_length:].decode("utf-8", "surrogateescape")
                if not self._in_effect(room):
                    # Sent before the latest SUBSCRIBE took effect (still on the wire from a
                    # subscription since left): the members there now joined after it.
                    stats["redis_stale"] += 1
                    continue
                try:
                    deliver(room, envelope)
                except Exception:  # a bug in delivery must not stop every room's listener
                    logger.exception("turbows.Hub: delivering a message from Redis failed")
            elif kind == subscribed_kind:
                room = reply[1][prefix_length:].decode("utf-8", "surrogateescape")
                self._confirmed[room] = self._confirmed.get(room, 0) + 1
                self._proven = True
                self._advance()
            elif kind == unsubscribed_kind:
                self._unsubscribed(reply[1][prefix_length:].decode("utf-8", "surrogateescape"))
            elif kind == b"pong":
                pass
            else:
                raise self._redis.ConnectionError(f"unexpected reply on the subscriber connection: {reply!r}")

    def _unsubscribed(self, room: str) -> None:
        """An UNSUBSCRIBE confirmed: on one Redis, always the reply to this listener's own."""

    def stats(self) -> dict[str, int]:
        stats = dict(self._stats)
        stats["redis_subscriptions"] = sum(1 for room in self._requested if self._in_effect(room))
        return stats
