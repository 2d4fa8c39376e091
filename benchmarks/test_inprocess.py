"""In-process benchmarks: raw ASGI calls, Starlette, turbows pure, turbows compiled.

Each operation is timed for every implementation in the same run, so the
ratios printed at the end (see conftest.py) compare like with like on a noisy
machine. Run: ``pytest benchmarks/test_inprocess.py``.
"""

from __future__ import annotations

import pytest

from workloads import OPERATIONS, implementations, run_to_completion

IMPLEMENTATIONS = implementations()


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_operation(benchmark, operation: str, implementation: str) -> None:
    make, count = OPERATIONS[operation]
    workload = make(IMPLEMENTATIONS[implementation])
    benchmark.group = operation
    benchmark.extra_info.update(operation=operation, implementation=implementation, count=count)
    benchmark.pedantic(lambda: run_to_completion(workload(count)), warmup_rounds=3, rounds=30, iterations=1)
