"""The event loop the hub runs on: asyncio or trio, found at run time.

The hub needs three things of the async library under it, and nothing more:
a task that outlives the call that started it (one sender per member), a way
for that task to sleep until a publisher hands it work, and a scheduling
point after each in-process publish. ``anyio`` offers the last but not the
first (its tasks live in task groups, and ``Hub.add`` has none to give), so
each library is used directly: asyncio's ``create_task`` and futures, trio's
system tasks and ``wait_task_rescheduled``. trio is never imported here: it is
looked up in ``sys.modules`` (code running under trio has imported it).

A ``Runtime`` stands for one running loop (an asyncio loop or a trio run), so
the hub can tell that every member and publisher shares it: its objects are
not thread-safe, and Starlette's ``TestClient`` outside a ``with`` block runs
each connection on an event loop of its own, in its own thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Parker", "Runtime", "current"]


class Runtime:
    """One running event loop: spawns tasks on it and parks them."""

    __slots__ = ("loop",)

    #: "asyncio" or "trio".
    name = ""

    def __init__(self, loop: object) -> None:
        #: The asyncio loop, or the trio run's token: what identifies the loop.
        self.loop = loop

    def is_current(self) -> bool:
        """Whether the calling code runs on this loop."""
        raise NotImplementedError

    def spawn(self, function: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run ``function()`` as a task of its own on this loop (the caller keeps no handle)."""
        raise NotImplementedError

    def parker(self) -> Parker:
        raise NotImplementedError

    async def checkpoint(self) -> None:
        """Let the loop run its other tasks once (under trio, a checkpoint that cannot be cancelled)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"the {self.name} event loop {self.loop!r}"


class Parker:
    """Where one task sleeps until another wakes it; one sleeper at a time.

    ``unpark()`` is a plain call from the same loop (a publisher never awaits
    a member); it does nothing when nobody is parked.
    """

    __slots__ = ()

    async def park(self) -> None:
        raise NotImplementedError

    def unpark(self) -> None:
        raise NotImplementedError


# -- asyncio ---------------------------------------------------------------------


class _AsyncioRuntime(Runtime):
    __slots__ = ("_tasks",)
    name = "asyncio"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        # asyncio keeps only weak references to tasks: these keep them alive.
        self._tasks: set[asyncio.Task[None]] = set()

    def is_current(self) -> bool:
        # get_running_loop() without the exception: asyncio.events exports it for this.
        return asyncio._get_running_loop() is self.loop

    def spawn(self, function: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        task = self.loop.create_task(function(), name=name)  # type: ignore[attr-defined]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def parker(self) -> Parker:
        return _AsyncioParker(self.loop)  # type: ignore[arg-type]

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)


class _AsyncioParker(Parker):
    __slots__ = ("_loop", "_future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    async def park(self) -> None:
        self._future = future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None

    def unpark(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)


# -- trio ------------------------------------------------------------------------


class _TrioRuntime(Runtime):
    __slots__ = ("_lowlevel",)
    name = "trio"

    def __init__(self, token: object, lowlevel: Any) -> None:
        super().__init__(token)
        self._lowlevel = lowlevel

    def is_current(self) -> bool:
        try:
            return self._lowlevel.current_trio_token() is self.loop
        except RuntimeError:  # not in a trio run at all
            return False

    def spawn(self, function: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        # A system task: trio's only task that needs no nursery. It must never
        # raise (trio would crash the run); the hub's tasks catch everything
        # but cancellation. Unlike asyncio, trio would start it with an empty
        # context; give it the caller's, as asyncio does.
        self._lowlevel.spawn_system_task(function, name=name, context=contextvars.copy_context())

    def parker(self) -> Parker:
        return _TrioParker(self._lowlevel)

    async def checkpoint(self) -> None:
        # After the work is done: a cancellation arriving here must not claim it was not.
        await self._lowlevel.cancel_shielded_checkpoint()


class _TrioParker(Parker):
    __slots__ = ("_lowlevel", "_task")

    def __init__(self, lowlevel: Any) -> None:
        self._lowlevel = lowlevel
        self._task: object | None = None

    def _abort(self, raise_cancel: object) -> object:
        self._task = None  # cancelled while parked: nothing to reschedule any more
        return self._lowlevel.Abort.SUCCEEDED

    async def park(self) -> None:
        lowlevel = self._lowlevel
        self._task = lowlevel.current_task()
        await lowlevel.wait_task_rescheduled(self._abort)

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            self._lowlevel.reschedule(task)


# -- which one is running ----------------------------------------------------------

_NO_LOOP = "turbows.Hub must be used from code running on an asyncio or trio event loop"

# The runtime of the loop seen last: servers run one loop per process, so this
# is nearly always a hit, and a hit keeps the asyncio runtime's task set.
_last: Runtime | None = None


def _trio_token() -> tuple[object, Any] | None:
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_trio_token(), trio.lowlevel
    except RuntimeError:  # trio is imported, but this code is not in a trio run
        return None


def current() -> Runtime:
    """The runtime of the event loop the caller runs on (``RuntimeError`` where there is none)."""
    global _last
    last = _last
    if last is not None and last.is_current():
        return last
    found = _trio_token()
    if found is not None:
        runtime: Runtime = _TrioRuntime(*found)
    else:
        loop = asyncio._get_running_loop()
        if loop is None:
            raise RuntimeError(_NO_LOOP)
        runtime = _AsyncioRuntime(loop)
    _last = runtime
    return runtime

