"""Where a hub's published messages go, and where they come back from.

A backend carries ``Envelope``s between publishers and the processes that
have members in a room. The hub never delivers a message it published
itself: it hands the envelope to its backend, and delivers what the backend
hands back through ``deliver(room, envelope)``, in the order the backend
gives. So every member of a room, in every process, gets that room's
messages in the backend's one order (with Redis, the channel's order).

``LocalBackend`` serves one process: ``publish`` hands the envelope straight
back. ``_redis.RedisBackend`` serves many processes on one Redis (and
``_redis_cluster.RedisClusterBackend``, its subclass, on a Redis Cluster); it implements the same few
methods and nothing else in the hub changes:

- ``publish(room, envelope)``: send it on, or raise ``HubUnavailable``
  promptly when it cannot;
- ``subscribe(room)`` / ``unsubscribe(room)``: this process now has members
  in ``room`` / no longer has any. Plain calls, never blocking: the hub
  makes them as membership changes (including a dead member leaving by
  itself, with no one to await anything), in the order of the changes; the
  backend brings its subscriptions in line in its own task, and again after
  a reconnect;
- ``subscribed(room)``: returns once a ``subscribe(room)`` is in effect, so
  a member that ``add`` returned for receives everything published after;
- ``start()`` / ``stop()``, ``connected`` and ``stats()``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Backend", "Deliver", "Envelope", "LocalBackend", "backend_for"]


class Envelope:
    """One published message, as it crosses the backend: encoded once, by the publishing process."""

    __slots__ = ("payload", "size", "origin", "exclude")

    def __init__(self, payload: str | bytes, size: int, origin: bytes, exclude: int) -> None:
        #: A text message (``str``) or a binary one (``bytes``), as every member will get it.
        self.payload = payload
        #: Its length in bytes (UTF-8 for text): what it adds to a member's pending bytes.
        self.size = size
        #: The publishing hub's token, so ``exclude`` is read only by the hub that wrote it.
        self.origin = origin
        #: That hub's serial number for the member to leave out; 0 leaves out nobody.
        self.exclude = exclude

    def __repr__(self) -> str:
        kind = "text" if type(self.payload) is str else "binary"
        return f"<Envelope {kind}, {self.size} bytes, exclude={self.exclude}>"


#: The hub's side of the boundary: deliver one envelope to this process's members of a room.
Deliver = Callable[[str, Envelope], None]


class Backend:
    """The interface a hub's backend implements (see the module's docstring)."""

    #: Whether the hub must be started (``await hub.start()``, ``async with hub``) before use.
    needs_start = True
    #: Whether ``publish`` suspends (on I/O); where it does not, the hub yields to the loop after it.
    suspends = True

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    @property
    def connected(self) -> bool:
        """Whether a publish now would reach the backend."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect, and start delivering what the backend carries."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop delivering and disconnect; the hub is not used afterwards."""
        raise NotImplementedError

    async def publish(self, room: str, envelope: Envelope) -> None:
        """Hand ``envelope`` on to every process with members in ``room``; ``HubUnavailable`` if it cannot."""
        raise NotImplementedError

    def subscribe(self, room: str) -> None:
        """This process has its first member in ``room``."""
        raise NotImplementedError

    def unsubscribe(self, room: str) -> None:
        """This process's last member of ``room`` left."""
        raise NotImplementedError

    async def subscribed(self, room: str) -> None:
        """Return once the latest ``subscribe(room)`` is in effect."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """The backend's own counters, merged into ``Hub.stats()``."""
        return {}


class LocalBackend(Backend):
    """One process: each publish is delivered at once, before ``publish`` returns.

    Nothing to connect, so it works unstarted, is always connected, and a
    room's order is simply the order of the ``publish`` calls. It never
    suspends: the hub gives the loop a turn after each publish.
    """

    needs_start = False
    suspends = False

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, room: str, envelope: Envelope) -> None:
        self._deliver(room, envelope)

    def subscribe(self, room: str) -> None:
        pass

    def unsubscribe(self, room: str) -> None:
        pass

    async def subscribed(self, room: str) -> None:
        pass


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: A Redis Cluster, through sharded pub/sub (``_redis_cluster``).
_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def backend_for(url: object, deliver: Deliver) -> Backend:
    """The backend ``Hub(url)`` names: ``None`` for one process."""
    if url is None:
        return LocalBackend(deliver)
    if not isinstance(url, str):
        raise TypeError(f"turbows.Hub(url): expected a str URL or None, got {type(url).__name__}")
    if url.startswith(_REDIS_SCHEMES):
        from ._redis import RedisBackend  # redis-py is an extra: imported only for a Redis hub

        return RedisBackend(url, deliver)
    if url.startswith(_CLUSTER_SCHEMES):
        from ._redis_cluster import RedisClusterBackend

        return RedisClusterBackend(url, deliver)
    raise ValueError(
        f"turbows.Hub(url): unsupported URL {url!r}; expected redis://, rediss://, unix://, "
        "redis+cluster:// or rediss+cluster://, or None"
    )
