"""The fault table: what a broken, hung, full or poisoned Redis costs the callers of the cache.

    python benchmarks/faults.py                 # every scenario, then the table
    python benchmarks/faults.py kill sigstop    # some scenarios (the healthy baseline always runs)
    python benchmarks/faults.py --soak          # also the full soak: 10,000 requests, 4 processes x 8 threads
    python benchmarks/faults.py --json          # one JSON document instead of the table
    python benchmarks/faults.py --topologies    # also the topology table: {standalone, Sentinel, Cluster} x
                                                # {refused/hung at start, killed, paused, restarted, failover,
                                                # partial}, through the core and (at start) both doors

Each scenario runs the same ~1 s workload (60 distinct requests, half already in Redis, 3 cache instances,
6 threads, every miss a real HTTP call to the local stand-in provider) against a private Redis with one fault
injected; the scenarios and the figures are those of ``tests/support/faults.py``, the code the test
suite in ``tests/fault`` asserts on. The exit status is 1 when a goal was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# The fault harnesses are test machinery, not shipped: they live in tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.faults import (
    SCENARIOS,
    FaultHarness,
    format_soak,
    format_table,
    run_soak,
)
from support.topology_faults import (
    CELLS,
    TOPOLOGIES,
    CellResult,
    expected_answers,
    format_cells,
    run_cell,
    run_door_cell,
)

from dspy_tiered_cache.testing.provider import StandInProvider


def run_topologies(*, doors: bool, verbose: bool) -> list[CellResult]:
    """Every cell through the core; the at-start cells also through both doors, sync and async."""
    results: list[CellResult] = []
    expected = expected_answers()
    with StandInProvider(latency=0.0) as provider:
        for topology, fault in CELLS:
            results.append(run_cell(topology, fault, provider, expected))
            if verbose:
                print(f"  ran {topology} {fault}", file=sys.stderr, flush=True)
        if doors:
            for topology in TOPOLOGIES:
                for fault in ("refused-at-start", "hung-at-start"):
                    for door in ("litellm", "dspy"):
                        results += run_door_cell(topology, fault, door, provider)
                        if verbose:
                            print(f"  ran {topology} {fault} via {door}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--soak", action="store_true", help="also run the soak (Redis restarted mid-run)")
    parser.add_argument("--soak-requests", type=int, default=10_000, help="requests in the soak (default 10000)")
    parser.add_argument("--no-table", action="store_true", help="skip the fault scenarios (with --soak/--topologies)")
    parser.add_argument("--topologies", action="store_true", help="also run the topology x fault table")
    parser.add_argument("--no-doors", action="store_true", help="topology table through the core only")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")

    report: dict[str, Any] = {}
    ok = True
    if not args.no_table:
        names = ["healthy", *[n for n in (args.scenarios or SCENARIOS) if n != "healthy"]]
        with FaultHarness() as harness:
            results = []
            for name in names:
                results.append(harness.run(name))
                if not args.json:
                    print(f"  ran {name}", file=sys.stderr, flush=True)
        report["scenarios"] = [r.to_dict() for r in results]
        ok = all(r.ok for r in results)
        if not args.json:
            print(format_table(results))
    if args.topologies:
        cells = run_topologies(doors=not args.no_doors, verbose=not args.json)
        report["topologies"] = [c.to_dict() for c in cells]
        ok = ok and all(c.ok for c in cells)
        if not args.json:
            print()
            print(format_cells(cells))
    if args.soak:
        if not args.json:
            print(f"\nsoak: {args.soak_requests} requests...", file=sys.stderr, flush=True)
        soak = run_soak(args.soak_requests)
        report["soak"] = soak.to_dict()
        ok = ok and soak.ok
        if not args.json:
            print()
            print(format_soak(soak))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
