"""The native uvicorn protocol's tests: compiled-only (it has no pure twin; the
fallback is uvicorn's own sansio protocol)."""

from __future__ import annotations

from pathlib import Path

from turbows._cores import NO_EXTENSIONS

if NO_EXTENSIONS:
    # Only the fallback test applies to a pure run (every other module here tests the native protocol).
    collect_ignore = sorted(path.name for path in Path(__file__).parent.glob("test_*.py") if path.name != "test_fallback.py")
