"""JSON for the pure core: Starlette's own calls.

The compiled core replaces these with orjson wherever its result is provably
the same (``_speedups/_json_c.pyx``); proving that means walking the value,
which in Python costs more than the standard library's C encoder saves.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps_bytes", "dumps_text", "loads_bytes", "loads_text"]

# Exactly what Starlette's json.dumps(data, separators=(",", ":"), ensure_ascii=False)
# builds on every call, built once.
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_loads = json.loads


def dumps_text(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``."""
    return _json_encode(value)


def dumps_bytes(value: Any) -> bytes:
    """Starlette's binary-mode ``send_json`` payload."""
    return _json_encode(value).encode("utf-8")


def loads_text(text: Any) -> Any:
    """Starlette's text-mode ``receive_json`` decoding."""
    return _json_loads(text)


def loads_bytes(data: Any) -> Any:
    """Starlette's binary-mode ``receive_json`` decoding."""
    return _json_loads(data.decode("utf-8"))
