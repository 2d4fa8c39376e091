"""Client frames for the protocol tests."""

from __future__ import annotations

import os


def mask_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    masked: bool = True,
) -> bytes:
    """A client frame: masked with ``key`` (random by default)."""
    first = opcode | (0x80 if fin else 0) | (rsv << 4)
    n = len(payload)
    if n < 126:
        head = bytes([first, (0x80 if masked else 0) | n])
    elif n < 65536:
        head = bytes([first, (0x80 if masked else 0) | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, (0x80 if masked else 0) | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
