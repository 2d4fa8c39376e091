"""No leak on the wire: 100,000 messages through turbows' protocol over real loopback.

The protocol's buffers, frames and ASGI messages live in C and in objects the
cycle collector does not track, so the check is ``sys.getallocatedblocks()``:
every live allocation of CPython's allocator, the server's and the client's
(both run in this process). It stays flat from 10,000 messages to 110,000
unless something per message or per frame is kept. Both cores serve the app.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

from realserver import mask_frame, raw_client, serving

BATCH = 1000
WARM_UP = 10_000
MESSAGES = 100_000
TEXTS = [f"message {index}: turbows on the wire".encode() for index in range(BATCH)]


def _frames_in(data: bytearray, start: int) -> tuple[int, int]:
    """How many whole unmasked server frames ``data`` holds from ``start``, and where the next begins."""
    count = 0
    while len(data) - start >= 2:
        length, header = data[start + 1] & 0x7F, 2
        if length == 126:
            length, header = int.from_bytes(data[start + 2 : start + 4], "big"), 4
        assert length < 127, "the echoes are short"
        if len(data) - start < header + length:
            break
        start += header + length
        count += 1
    return count, start


async def _round_trips(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, messages: int) -> None:
    """``messages`` text frames, pipelined a batch at a time, each echoed back."""
    batch = b"".join(mask_frame(0x1, text) for text in TEXTS)
    for _ in range(messages // BATCH):
        writer.write(batch)
        await writer.drain()
        buffer, position, echoed = bytearray(), 0, 0
        while echoed < BATCH:
            buffer += await asyncio.wait_for(reader.read(1 << 16), 10)
            count, position = _frames_in(buffer, position)
            echoed += count
        assert echoed == BATCH and position == len(buffer)


def test_allocated_blocks_stay_flat_over_100k_messages(websocket_class: type) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = websocket_class(scope, receive, send)
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    async def main() -> tuple[int, int]:
        async with serving(app, log_level="warning") as port:
            reader, writer = await raw_client(port)
            await _round_trips(reader, writer, WARM_UP)  # freelists, caches, buffers at their size
            gc.collect()
            before = sys.getallocatedblocks()
            await _round_trips(reader, writer, MESSAGES)
            gc.collect()
            after = sys.getallocatedblocks()
            writer.close()
            return before, after

    before, after = asyncio.run(main())
    # One block kept per message would be 100,000, one per hundred messages 1,000;
    # the rest of a long test session leaves caches that move by about a hundred.
    assert after - before < 1000, (before, after)
