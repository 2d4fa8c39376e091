"""One fixture over every core, as multidict and propcache do.

Every test that takes ``websocket_class`` runs once per core: the compiled
``speedups`` core and the ``pure`` one. A default install must load the
compiled core, so a missing extension fails the speedups runs rather than
skipping them; only ``TURBOWS_NO_EXTENSIONS=1`` (a deliberately pure run)
skips them.
"""

from __future__ import annotations

import pytest

from redis_server import redis_binary, redis_server  # noqa: F401  (fixtures: a real Redis per test)
from turbows._cores import CORES, NO_EXTENSIONS

CORE_NAMES = ("speedups", "pure")


def _require(core: str) -> None:
    if core == "speedups" and NO_EXTENSIONS:
        pytest.skip("TURBOWS_NO_EXTENSIONS is set: the compiled core is not loaded")
    if core not in CORES:
        pytest.fail(f"the {core} core did not load: the compiled extension is missing from this install")


@pytest.fixture(params=CORE_NAMES)
def core(request: pytest.FixtureRequest) -> str:
    """The name of the core under test."""
    _require(request.param)
    return request.param


@pytest.fixture
def websocket_class(core: str) -> type:
    """``turbows.WebSocket`` built on the core under test."""
    return CORES[core]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Compiled-only tests are marked; they skip only in a deliberately pure run.
    for item in items:
        if item.get_closest_marker("speedups") and NO_EXTENSIONS:
            item.add_marker(pytest.mark.skip(reason="TURBOWS_NO_EXTENSIONS is set"))


# -- hypothesis profiles ---------------------------------------------------------
# "default": the differential and JSON property tests run at least 1,000
# examples each. "ci": more. Pick one with HYPOTHESIS_PROFILE.
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

# Function-scoped fixtures (the core) are the point of these tests, and their
# generated values are large by design: those health checks do not apply.
_UNCHECKED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("default", max_examples=1000, deadline=None, suppress_health_check=_UNCHECKED)
settings.register_profile("ci", max_examples=2500, deadline=None, print_blob=True, suppress_health_check=_UNCHECKED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
