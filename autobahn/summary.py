"""Summarise an Autobahn fuzzingclient report: counts by behavior; exit 1 on any FAILED."""

from __future__ import annotations

import collections
import json
import sys

with open(sys.argv[1]) as f:
    report = json.load(f)
failed = 0
for agent, cases in report.items():
    counts = collections.Counter()
    bad = []
    for case_id, result in cases.items():
        behavior = result["behavior"]
        close = result.get("behaviorClose", "OK")
        counts[behavior] += 1
        if behavior not in (
            "OK",
            "NON-STRICT",
            "INFORMATIONAL",
            "UNIMPLEMENTED",
        ) or close not in ("OK", "INFORMATIONAL"):
            bad.append((case_id, behavior, close))
    print(
        f"{agent}: {len(cases)} cases: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    for case_id, behavior, close in sorted(
        bad, key=lambda c: [int(x) for x in c[0].split(".")]
    ):
        print(f"  {case_id}: {behavior} (close: {close})")
    failed += len(bad)
sys.exit(1 if failed else 0)
