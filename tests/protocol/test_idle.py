"""What an idle connection holds on turbows' native protocol (accepted, its app
waiting in ``receive``), over real loopback connections to a real uvicorn: no
per-connection deque, Event or keepalive timer, and the keepalive pings of many
connections sharing one timer per bucket, each ping still its own."""

from __future__ import annotations

import asyncio
import collections
import gc
from typing import Any

from realserver import accept_and_wait, raw_client, serve

from turbows.uvicorn import WebSocketProtocol

CONNECTIONS = 20


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def idle_clients(port: int, n: int) -> list[Any]:
    return [await raw_client(port) for _ in range(n)]


def test_an_idle_connection_holds_no_queue_event_or_timer_of_its_own() -> None:
    # Each of these was half a KiB or more of every idle connection (a deque is 760 bytes).
    async def main() -> None:
        async with serve(accept_and_wait, ws_ping_interval=20.0) as served:
            clients = await idle_clients(served.port, CONNECTIONS)
            await asyncio.sleep(0.05)
            protocols = served.protocols()
            assert len(protocols) == CONNECTIONS
            for protocol in protocols:
                held = gc.get_referents(protocol)
                kinds = {type(value) for value in held}
                assert collections.deque not in kinds and asyncio.Event not in kinds, kinds
                assert protocol.ping_timer is not None  # a ping is scheduled...
            # ...on a timer the connections due in the same tick share (20 s / 10: a second;
            # the connections above opened within far less, so in one or two ticks).
            assert len({id(protocol.ping_timer) for protocol in protocols}) <= 2
            for _, writer in clients:
                writer.close()

    run(main())


def test_a_closed_connection_leaves_the_keepalive_clock() -> None:
    async def main() -> None:
        async with serve(accept_and_wait, ws_ping_interval=20.0) as served:
            clients = await idle_clients(served.port, CONNECTIONS)
            await asyncio.sleep(0.05)
            timers = {protocol.ping_timer for protocol in served.protocols()}
            for _, writer in clients:
                writer.close()
            for _ in range(100):
                if not served.protocols():
                    break
                await asyncio.sleep(0.02)
            assert served.protocols() == []
            # The last connection out of a bucket cancels its timer: nothing is left to fire.
            assert all(timer.cancelled() for timer in timers)

    run(main())


class FirstPingFails(WebSocketProtocol):  # type: ignore[misc, valid-type]
    """The first connection's keepalive ping raises (a bug in a subclass); the others' do not."""

    failed = False

    def send_keepalive_ping(self) -> None:
        if not FirstPingFails.failed:
            FirstPingFails.failed = True
            raise RuntimeError("a bug in a subclass")
        super().send_keepalive_ping()


def test_a_failing_ping_is_reported_and_the_other_connections_are_still_pinged() -> None:
    async def main() -> None:
        async with serve(accept_and_wait, ws=FirstPingFails, ws_ping_interval=0.2, ws_ping_timeout=None) as served:
            clients = await idle_clients(served.port, 4)

            async def first_bytes(reader: asyncio.StreamReader) -> bytes | None:
                try:
                    return await asyncio.wait_for(reader.readexactly(2), 1.5)  # 7 intervals
                except asyncio.TimeoutError:
                    return None

            heads = await asyncio.gather(*(first_bytes(reader) for reader, _ in clients))
            # The failing connection gets none (its ping raised); every other one, its ping.
            assert sorted(head[0] if head else 0 for head in heads) == [0, 0x89, 0x89, 0x89]
            assert [context["message"] for context in served.loop_errors] == ["Exception in a WebSocket keepalive ping"]
            assert isinstance(served.loop_errors[0]["exception"], RuntimeError)
            for _, writer in clients:
                writer.close()

    run(main())
