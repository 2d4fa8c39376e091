"""``Hub("redis+cluster://host:port,host:port")``: the Redis backend on a Redis Cluster, through sharded pub/sub.

Everything but the cluster's specifics is ``_redis.RedisBackend``'s: the
envelope, the prefix, subscribing while the worker has members, the bounded
publish and ``HubUnavailable``, the listener's reconnects with capped backoff,
``stats()`` and ``connected``. What differs:

- a room's channel lives on one shard: the primary that owns its hash slot
  (``CRC16(prefix + room) mod 16384``, hash tags included). A publish is one
  SPUBLISH there, through redis-py's ``RedisCluster``, which follows the slot
  map (and MOVED); SPUBLISH reaches only the subscribers of that shard, so
  traffic does not cross every node as cluster-wide PUBLISH would;
- the listener holds one subscriber connection per primary, and sends a
  room's SSUBSCRIBE/SUNSUBSCRIBE on the connection to the primary owning its
  slot (one command per slot: Redis refuses a cross-slot SSUBSCRIBE). Each
  connection has its reader, so a room's messages come in its shard's one
  order, as they do on one Redis. The slot map is read when the listener
  connects; a slot that moved since (a MOVED reply to SSUBSCRIBE, or Redis
  ending a subscription itself with SUNSUBSCRIBE when the slot migrates)
  makes the listener reconnect and read it again.

Any failure on any node's connection drops them all and starts again (as a
cluster that requires full coverage stops serving every slot while one is
lost): while one node is down, the worker receives from none, and publishes to
rooms on the other shards still go through.

redis-py's asyncio ``ClusterPubSub`` (sharded since redis-py 8.0) is not used:
it reads its nodes' connections in turn, each with a timeout, where this
listener reads every connection as it receives and shares the single-Redis
listener's confirmation counting and liveness PINGs.
"""

from __future__ import annotations

import asyncio
import codecs
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._backend import Deliver
from ._redis import POOL_SIZE, RedisBackend, _redacted

__all__ = ["SCHEMES", "RedisClusterBackend", "split_nodes"]

#: The URL schemes of a cluster hub, and the redis-py scheme each stands for.
SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

_DEFAULT_PORT = 6379


def split_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL as redis-py's URL for its first node, and every node given (host, port).

    ``redis+cluster://[user:password@]host:port[,host:port...][/0][?options]``: the nodes are where
    the client first asks for the slot map (any one that answers will do); the rest is as ``redis://``.
    """
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"turbows.Hub(url): a cluster URL starts with redis+cluster:// or rediss+cluster://, got {url!r}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for host in hosts.split(","):
        try:
            node = urlsplit(f"//{host}")
            hostname, port = node.hostname, node.port or _DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"turbows.Hub(url): {host!r} in {_redacted(url)!r} is not host:port ({exc})") from None
        if not hostname:
            raise ValueError(f"turbows.Hub(url): {_redacted(url)!r} names no node (host:port[,host:port...])")
        nodes.append((hostname, port))
    first = hosts.split(",")[0]
    return urlunsplit(parts._replace(scheme=scheme, netloc=f"{userinfo}{at}{first}")), nodes


def _import_cluster() -> Any:
    try:
        from redis.asyncio import cluster
    except ImportError:
        raise ImportError(
            'turbows.Hub("redis+cluster://..."): needs redis-py\'s asyncio cluster client; pip install "turbows[redis]"'
        ) from None
    return cluster


class RedisClusterBackend(RedisBackend):
    """Rooms across processes on a Redis Cluster, each room on the shard of its slot (see the module's docstring)."""

    _SUBSCRIBE, _UNSUBSCRIBE = "SSUBSCRIBE", "SUNSUBSCRIBE"
    _MESSAGE, _SUBSCRIBED, _UNSUBSCRIBED = b"smessage", b"ssubscribe", b"sunsubscribe"

    def __init__(self, url: str, deliver: Deliver) -> None:
        #: Slot -> the name of the primary that owned it when the listener connected.
        self._owners: dict[int, str] = {}
        self._initialized = False
        super().__init__(url, deliver)

    def _make_client(self, redis_url: str) -> int:
        cluster = _import_cluster()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.crc import key_slot

        # redis-py's cluster errors (no node reachable, no slot map) are not RedisErrors: outages too.
        self._errors = (*self._errors, self._redis.exceptions.RedisClusterException)
        redis_url, nodes = split_nodes(redis_url)
        self._nodes = nodes
        self._key_slot = key_slot
        try:
            # redis-py's retries off, as on one Redis: publish fails fast (the hub's bound), and the
            # listener reconnects by itself. The other nodes given are more places to ask for the slot map.
            self._client = cluster.RedisCluster.from_url(
                redis_url,
                startup_nodes=[cluster.ClusterNode(host, port) for host, port in nodes[1:]],
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                max_connections=POOL_SIZE,
            )
            codecs.lookup(self._client.connection_kwargs.get("encoding", "utf-8"))  # see RedisBackend
        except (ValueError, TypeError, LookupError, *self._errors) as exc:
            # redis-py's own checks (a database other than 0: a cluster has only one).
            raise ValueError(
                f"turbows.Hub(url): {_redacted(redis_url)!r} is not a usable Redis Cluster URL: {exc}"
            ) from None
        # A cluster node's pool has no wait for a free connection (it raises "Too many connections"):
        # publishes beyond the pool's size wait here instead, within the publish's bound.
        self._free = asyncio.Semaphore(POOL_SIZE)
        self._publish = self._spublish
        return 0

    async def _spublish(self, channel: bytes, data: bytes) -> None:
        async with self._free:
            await self._client.execute_command("SPUBLISH", channel, data)

    def _where(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self._nodes)

    async def _aclose_pool(self) -> None:
        close = getattr(self._client, "aclose", None) or self._client.close
        await close()

    # -- the listener: one subscriber connection per primary -----------------------------------

    async def _open(self) -> dict[Any, Any]:
        client = self._client
        async with asyncio.timeout(self._timeout * 2):
            if self._initialized:
                await client.nodes_manager.initialize()  # the slot map now: it may have changed
            else:
                await client.initialize()
                self._initialized = True
            slots = client.nodes_manager.slots_cache
            self._owners = {slot: nodes[0].name for slot, nodes in slots.items()}
            primaries = {nodes[0].name: nodes[0] for nodes in slots.values()}
            self._connections = {
                name: self._subscriber(node.connection_kwargs, node.connection_class) for name, node in primaries.items()
            }
            # Every connect ends (each within its connect timeout) before a failure is raised, so
            # none is left connecting behind the _close_connection that follows a failure.
            results = await asyncio.gather(
                *(connection.connect() for connection in self._connections.values()), return_exceptions=True
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return self._connections

    def _route(self, channel: bytes) -> tuple[Any, Any]:
        slot = self._key_slot(channel)
        return self._owners.get(slot), slot

    def _unsubscribed(self, room: str) -> None:
        # Only a room whose latest SSUBSCRIBE is confirmed and that is still wanted can be ended by
        # Redis itself: the slot moved to another shard. The new owner is found on a new connection.
        if self._in_effect(room) and room in self._wanted:
            raise self._redis.ConnectionError(f"Redis ended the subscription to room {room!r}: its slot moved")
