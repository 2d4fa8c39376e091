"""The native uvicorn protocol's tests: compiled-only (it has no pure twin; the
fallback is uvicorn's own sansio protocol)."""

from __future__ import annotations

from turbows._cores import NO_EXTENSIONS

if NO_EXTENSIONS:
    # Only the fallback test applies to a pure run.
    collect_ignore = [
        "test_frames.py",
        "test_hostile.py",
        "test_parser_differential.py",
        "test_protocol_differential.py",
        "test_protocol.py",
        "test_protocol_leaks.py",
        "test_real_server.py",
    ]
