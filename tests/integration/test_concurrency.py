"""500 connections open at once on one server process: one echo each, then all close.

Runs per server and per core (about 1-2 s a pair on 2 cores). Should that
grow too slow for CI, mark it to run on uvicorn only: ``CONCURRENT_SERVERS``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

import pytest

from harness import ServerProcess, new_key, recv, run
from launch import SERVERS

CONNECTIONS = 500
#: How many handshakes are in flight at once (all CONNECTIONS stay open together regardless).
OPENING = 100
#: The servers this runs on; every one by default.
CONCURRENT_SERVERS = SERVERS


@pytest.fixture(autouse=True)
def _enough_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTIONS * 2 + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the open-files limit ({hard}) is below the {wanted} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _stats(server: ServerProcess, key: str) -> dict[str, int]:
    async with server.connect(f"/stats/{key}") as ws:
        return json.loads(await recv(ws))


async def _many(server: ServerProcess) -> tuple[dict[str, int], dict[str, int], list[str]]:
    key = new_key()
    opening = asyncio.Semaphore(OPENING)

    async def one(n: int) -> tuple[Any, str]:
        async with opening:
            ws = await server.connect(f"/many/{key}")
        await ws.send(f"message {n}")
        return ws, await recv(ws, timeout=30)

    results = await asyncio.gather(*(one(n) for n in range(CONNECTIONS)), return_exceptions=True)
    connections = [result[0] for result in results if not isinstance(result, BaseException)]
    try:
        failures = [repr(result) for result in results if isinstance(result, BaseException)]
        assert not failures, f"{len(failures)} connections failed: {failures[:3]}"
        replies = [result[1] for result in results]  # type: ignore[index]
        while_open = await _stats(server, key)
    finally:
        await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    deadline = time.monotonic() + 20
    while True:
        after = await _stats(server, key)
        if after["served"] == CONNECTIONS or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return while_open, after, replies


def test_500_concurrent_connections(server: ServerProcess) -> None:
    if server.server not in CONCURRENT_SERVERS:
        pytest.skip(f"the {CONNECTIONS}-connection run is limited to {CONCURRENT_SERVERS}")
    while_open, after, replies = run(_many(server), timeout=90)
    assert replies == [f"message {n}" for n in range(CONNECTIONS)]
    assert while_open == {"open": CONNECTIONS, "peak": CONNECTIONS, "served": 0}
    assert after == {"open": 0, "peak": CONNECTIONS, "served": CONNECTIONS}
