"""Which of this process's connections are in which rooms, and the fan-out to them.

Every change is a plain call, made on the hub's one event loop, so the
registry needs no lock. The backend hears of a room's first member and of
its last one leaving (``on_first``, ``on_empty``), in the order they happen.

A room's members are iterated from a snapshot (tuples, rebuilt only after
its membership changed): a member that a publish finds too slow leaves every
room during that very fan-out, and the others still get the message. The
snapshot keeps native members (turbows' protocol) apart, with their
writers, so one call into the protocol reaches all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._delivery import Member, NativeMember, Outgoing, offer_native

__all__ = ["Registry", "Room"]


class Room:
    """The members of one room in this process."""

    __slots__ = ("name", "members", "_snapshot", "_native", "_writers", "_generic")

    def __init__(self, name: str) -> None:
        self.name = name
        # A dict as an ordered set: O(1) removal, members in the order they joined.
        self.members: dict[Member, None] = {}
        self._snapshot: tuple[Member, ...] | None = None
        # The snapshot split: native members and their writers, then the rest.
        self._native: tuple[NativeMember, ...] = ()
        self._writers: tuple[Any, ...] = ()
        self._generic: tuple[Member, ...] = ()

    def add(self, member: Member) -> None:
        self.members[member] = None
        self._snapshot = None

    def remove(self, member: Member) -> None:
        del self.members[member]
        self._snapshot = None

    def snapshot(self) -> tuple[Member, ...]:
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self.members)
            self._native = tuple(member for member in snapshot if type(member) is NativeMember)
            self._writers = tuple(member.writer for member in self._native)
            self._generic = tuple(member for member in snapshot if type(member) is not NativeMember)
        return snapshot

    def offer(self, outgoing: Outgoing, skip: Member | None) -> None:
        """Offer one message to every member but ``skip``."""
        if self._snapshot is None:
            self.snapshot()
        # Taken before anyone is offered it: a member that ends meanwhile changes the room, not these.
        native, writers, generic = self._native, self._writers, self._generic
        if native:
            offer_native(native, writers, outgoing, skip)
        for member in generic:
            if member is not skip:
                member.offer(outgoing)


class Registry:
    """Rooms and members, both ways, plus each member by connection and by serial number."""

    __slots__ = ("rooms", "members", "by_serial", "_on_first", "_on_empty")

    def __init__(self, on_first: Callable[[str], None], on_empty: Callable[[str], None]) -> None:
        self.rooms: dict[str, Room] = {}
        #: Every member with a sender at work: in rooms, or delivering what it had when it left its last one.
        self.members: dict[Any, Member] = {}
        self.by_serial: dict[int, Member] = {}
        self._on_first = on_first
        self._on_empty = on_empty

    def in_rooms(self) -> int:
        """How many members are in a room now (the rest are delivering what they had when they left)."""
        return sum(1 for member in self.members.values() if member.rooms)

    def register(self, member: Member) -> None:
        self.members[member.websocket] = member
        self.by_serial[member.serial] = member

    def join(self, name: str, member: Member) -> bool:
        """Whether ``member`` joined ``name`` now (False: it was a member already)."""
        if name in member.rooms:
            return False
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            self._on_first(name)
        room.add(member)
        member.rooms.add(name)
        return True

    def leave(self, name: str, member: Member) -> None:
        """``member`` leaves ``name`` (if it is in it); once in no room, it delivers what it has, then goes."""
        if name in member.rooms:
            self._leave(name, member)
            if not member.rooms:
                member.left_every_room()

    def remove(self, member: Member) -> None:
        """Take ``member`` out of every room and forget it (it may be gone already)."""
        for name in tuple(member.rooms):
            self._leave(name, member)
        if self.members.get(member.websocket) is member:
            del self.members[member.websocket]
            del self.by_serial[member.serial]

    def _leave(self, name: str, member: Member) -> None:
        member.rooms.discard(name)
        room = self.rooms[name]
        room.remove(member)
        if not room.members:
            del self.rooms[name]
            self._on_empty(name)
