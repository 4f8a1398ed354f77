"""Every comparison against the caches users would pick instead, on this machine, in one run.

    python benchmarks/run_all.py            # the full run (~5 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # a < 60 s subset: smaller workloads, no door benchmarks
    python benchmarks/run_all.py --smoke    # every workload tiny (< 20 s): keeps the harness from rotting
    python benchmarks/run_all.py --sections hits zipf   # some sections only

Prints one table (comparison, ours, peer, ratio, goal, met?) and writes Markdown + JSON with the machine's
description to ``benchmarks/results/`` (``latest.md``/``latest.json``; ``latest-quick.*`` and ``latest-smoke.*``
for the smaller runs, so they never overwrite a full run). Absolute figures vary by machine: compare ratios,
which come from peers measured side by side in the same run, on the same values and the same private Redis.

Sections, each in its own process so that one peer's imports and threads cannot skew another's figures:
``peers/`` (hits, litellm, zipf, stampede, unreachable, throughput, memory), ``litellm_door.py`` and
``dspy_door.py`` (whole-call hits through each front door). The exit status is 0 when every section ran, whether
or not every goal was met: a missed goal is a finding shown in the table, not a crash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
JSON = dict[str, Any]

PEER_SECTIONS = ["hits", "litellm", "zipf", "stampede", "unreachable", "throughput", "memory"]
DOOR_SECTIONS = ["litellm_door", "dspy_door"]
ALL_SECTIONS = PEER_SECTIONS + DOOR_SECTIONS
TITLES = {
    "hits": "(a) Hit latency per tier: our core get of a key vs each peer's get of the same value",
    "litellm": "LiteLLM disk and DualCache: whole litellm.completion hits (the caches litellm_door.py lacks)",
    "litellm_door": "LiteLLM door: whole litellm.completion / acompletion hits (benchmarks/litellm_door.py)",
    "dspy_door": "DSPy door: whole dspy.ChainOfThought hits (benchmarks/dspy_door.py)",
    "zipf": "(b) Memory tier on a Zipf(1.0) trace: hit ratio and hit cost",
    "stampede": "(c) Stampede: concurrent identical misses across processes",
    "unreachable": "(d) Redis unreachable: latency added per call",
    "throughput": "(e) Async throughput of L1 hits, one core",
    "memory": "(f) Memory per entry, in process and in Redis",
}
#: Door benchmark arguments: scaled so the whole full run stays near 5 minutes on 2 cores.
DOOR_ARGS = {
    "litellm_door": ["--hits", "200", "--uncached", "20", "--litellm-down-calls", "1"],
    "dspy_door": ["--calls", "150", "--rounds", "5", "--engine", "both"],
}
SECTION_TIMEOUT_S = {"full": 420.0, "quick": 120.0, "smoke": 45.0}  # one-process runs get twice this


# -- machine ---------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _redis_server_version() -> str | None:
    try:
        from dspy_tiered_cache.testing.redis_server import find_redis_server

        out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception as exc:
        return f"unknown ({exc!r:.80})"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def machine() -> JSON:
    sys.path.insert(0, str(BENCH_DIR))
    from peers import versions

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _mem_total_gib(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "redis_server": _redis_server_version(),
        "git_commit": _git_commit(),
        "packages": versions(),
    }


# -- running sections --------------------------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.setdefault("PYTHONHASHSEED", "0")  # the W-TinyLFU sketch hashes keys: same seed, same hit ratio
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def _run_child(cmd: list[str], json_path: Path, timeout: float) -> JSON:
    """Run one section in its own process group, so a timeout also ends the processes it spawned."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(), cwd=REPO,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": stderr[-3000:]}
    except BaseException:  # Ctrl-C: do not leave the section's processes running
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not json_path.exists():
        return {"error": f"exit status {proc.returncode}", "stderr_tail": stderr[-3000:], "seconds": elapsed}
    data: JSON = json.loads(json_path.read_text())
    data.setdefault("seconds", elapsed)
    data["wall_seconds"] = elapsed
    return data


def run_peer_sections(names: list[str], scale: str, tmp: Path, one_process: bool) -> dict[str, JSON]:
    peers = str(BENCH_DIR / "peers")  # a package run as a directory: one module per peer
    timeout = SECTION_TIMEOUT_S[scale]
    if one_process and names:
        started = time.perf_counter()
        out = tmp / "peers-all.json"
        _progress(f"peers ({', '.join(names)}) in one process...")
        result = _run_child([sys.executable, peers, "all", "--scale", scale, "--json-out", str(out)], out, timeout * 2)
        _progress(f"  done in {time.perf_counter() - started:.1f} s")
        if "error" in result:
            return dict.fromkeys(names, result)
        return {name: result.get(name, {"error": "missing from the combined run"}) for name in names}
    results: dict[str, JSON] = {}
    for name in names:
        out = tmp / f"{name}.json"
        _progress(f"{name}...")
        results[name] = _run_child(
            [sys.executable, peers, name, "--scale", scale, "--json-out", str(out)], out, timeout
        )
        _progress(
            f"  {name}: {results[name].get('wall_seconds', results[name].get('seconds', 0)):.1f} s"
            + (f"  ERROR {results[name]['error']}" if "error" in results[name] else "")
        )
    return results


def run_door(name: str, scale: str, tmp: Path) -> JSON:
    script = BENCH_DIR / f"{name}.py"
    if scale != "full":
        return {"skipped": f"door benchmarks run only in the full run (scale {scale!r})", "rows": []}
    if not script.exists():
        return {"skipped": f"{script.name} does not exist yet", "rows": []}
    out = tmp / f"{name}.json"
    _progress(f"{name}...")
    result = _run_child(
        [sys.executable, str(script), *DOOR_ARGS[name], "--json", str(out)], out, SECTION_TIMEOUT_S[scale]
    )
    _progress(
        f"  {name}: {result.get('wall_seconds', 0):.1f} s" + (f"  ERROR {result['error']}" if "error" in result else "")
    )
    if "error" not in result:
        result["args"] = DOOR_ARGS[name]
        result["rows"] = DOOR_ROWS[name](result)
    return result


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- rows from the door benchmarks' JSON ---------------------------------------------------------------------------
def _row(section: str, comparison: str, ours: float | None, peer: float | None, unit: str, **kw: Any) -> JSON:
    from peers import row

    return row(section, comparison, ours, peer, unit, **kw)


def litellm_door_rows(d: JSON) -> list[JSON]:
    rows = []
    for ours, theirs, label, goal in (
        ("ours_l1", "litellm_local", 'L1: TieredCache vs Cache(type="local")', 1.0),
        ("ours_l2", "litellm_redis", 'L2: TieredCache(Redis only) vs Cache(type="redis")', 0.8),
    ):
        for mode, what in (
            ("sync", "litellm.completion hit"),
            ("async", "litellm.acompletion hit"),
            ("lookup", "lookup only (Cache.get_cache: key + read + decode)"),
        ):
            rows.append(
                _row(
                    "litellm_door",
                    f"{what}, {label}",
                    d[ours][f"{mode}_ms"] * 1000,
                    d[theirs][f"{mode}_ms"] * 1000,
                    "us",
                    goal=goal,
                )
            )
    base = d["uncached_ms"]
    ours, theirs = d["ours_redis_refused"], d["litellm_redis_refused"]
    rows.append(
        _row(
            "litellm_door",
            "litellm.completion with Redis refused: median added per uncached call",
            max(0.0, ours["median_ms"] - base),
            max(0.0, theirs["median_ms"] - base),
            "ms",
            goal=5.0,
            goal_on="ours",
            note=f"uncached call {base:.1f} ms; LiteLLM: {theirs['calls']} call(s)",
        )
    )
    frozen = d["ours_redis_frozen"]
    rows.append(
        _row(
            "litellm_door",
            "litellm.completion with Redis frozen: our first / max call",
            frozen["first_ms"],
            None,
            "ms",
            goal=400.0,
            goal_on="ours",
            note=f"median {frozen['median_ms']:.1f} ms",
        )
    )
    return rows


def dspy_door_rows(d: JSON) -> list[JSON]:
    rows = []
    for engine, data in d.get("engines", {}).items():
        us, par = data["hit_us"], data["parallel"]
        label = "native engine" if engine == "auto" else "LiteLLM engine"
        for ours, theirs, what, goal in (
            ("ours_l1", "dspy_memory", "CachedLM L1 vs DSPy memory cache", 1.0),
            ("ours_l2_redis", "dspy_memory", "CachedLM L2 (Redis, no L1) vs DSPy memory cache", 1.5),
            ("ours_l2_redis", "dspy_disk", "CachedLM L2 (Redis, no L1) vs DSPy disk cache", 1.0),
            ("ours_disk_tier", "dspy_disk", "CachedLM disk tier vs DSPy disk cache (diskcache + pickle)", 1.0),
        ):
            rows.append(
                _row("dspy_door", f"ChainOfThought hit ({label}): {what}", us[ours], us[theirs], "us", goal=goal)
            )
        rows.append(
            _row(
                "dspy_door",
                f"dspy.Parallel, {par['examples']} examples / {par['distinct']} distinct, 8 "
                f"threads ({label}): upstream calls, CachedLM vs DSPy memory cache",
                par["ours_upstream_calls"],
                par["dspy_upstream_calls"],
                "calls",
                goal=par["distinct"],
                goal_on="ours",
            )
        )
    return rows


DOOR_ROWS: dict[str, Callable[[JSON], list[JSON]]] = {"litellm_door": litellm_door_rows, "dspy_door": dspy_door_rows}


# -- formatting ------------------------------------------------------------------------------------------------------
def fmt_value(value: float | None, unit: str, capped: bool = False) -> str:
    if value is None:
        return "—"
    prefix = ">= " if capped else ""
    if unit == "us":
        text = f"{value:.3g} us" if value < 100 else f"{value:,.0f} us"
    elif unit == "ms":
        text = f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"
    elif unit == "ratio":
        text = f"{value:.4f}"
    elif unit == "B":
        text = f"{value:,.0f} B"
    elif unit == "ops/s":
        text = f"{value / 1000:,.0f}k/s"
    elif unit == "calls":
        text = f"{value:.0f}"
    else:
        text = f"{value:.3g} {unit}"
    return prefix + text


def fmt_ratio(r: JSON) -> str:
    ratio = r.get("ratio")
    if ratio is None:
        return "—"
    text = f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.1e}x"
    return ("<= " + text) if r.get("peer_capped") else text


def fmt_goal(r: JSON) -> str:
    goal = r.get("goal")
    if goal is None:
        return "—"
    op = "<=" if r.get("better", "lower") == "lower" else ">="
    if r.get("goal_on") == "ours":
        return f"ours {op} {fmt_value(goal, r['unit'])}"
    return f"ratio {op} {goal:g}"


def fmt_met(r: JSON) -> str:
    met = r.get("met")
    return "—" if met is None else ("yes" if met else "**NO**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: JSON) -> str:
    m = report["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"] or [])
    lines = [
        f"# dspy_tiered_cache against its peers ({report['scale']} run)",
        "",
        f"- date: {m['date']}; git commit {m.get('git_commit') or 'unknown'}; total {report['seconds']:.0f} s",
        f"- machine: {m['cpu_model']}, {m['cores']} cores ({m.get('cores_usable')} usable), "
        f"{m.get('memory_gib')} GiB; load average at start {load} (other work on the machine skews absolute figures)",
        f"- Python {m['python']} ({m['implementation']}), {m['platform']}; {m.get('redis_server') or 'redis-server ?'}",
        "- packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in m["packages"].items()),
        "",
        "ratio = ours / peer. For latency, memory and upstream calls lower is better; for hit ratio and throughput "
        "higher is better (the goal column says which). Goals checked against `ours` are absolute.",
        "",
    ]
    for name in report["sections_run"]:
        sec = report["sections"][name]
        lines += [f"## {TITLES.get(name, name)}", ""]
        if "error" in sec:
            lines += [
                f"**section failed**: {sec['error']}",
                "",
                "```",
                str(sec.get("stderr_tail", ""))[-1500:],
                "```",
                "",
            ]
            continue
        if sec.get("skipped"):
            lines += [f"_skipped: {sec['skipped']}_", ""]
            continue
        for key in ("peer_status",):
            st = {k: v for k, v in sec.get(key, {}).items() if v.get("status") != "ok"}
            if st:
                lines += ["Peers not measured: " + "; ".join(f"{k}: {v['status']}" for k, v in st.items()), ""]
        lines += ["| comparison | ours | peer | ratio | goal | met? |", "| --- | ---: | ---: | ---: | --- | :---: |"]
        for r in sec.get("rows", []):
            comp = r["comparison"] + (f" <br><sub>{r['note']}</sub>" if r.get("note") else "")
            lines.append(
                f"| {_cell(comp)} | {fmt_value(r['ours'], r['unit'])} | "
                f"{fmt_value(r['peer'], r['unit'], r.get('peer_capped', False))} | {fmt_ratio(r)} | {fmt_goal(r)} | "
                f"{fmt_met(r)} |"
            )
        lines += ["", f"<sub>{sec.get('wall_seconds', sec.get('seconds', 0)):.1f} s</sub>", ""]
    gaps = report["gaps"]
    lines += ["## Goals not met", ""]
    lines += [f"- {g}" for g in gaps] if gaps else ["None."]
    lines.append("")
    return "\n".join(lines)


def text_table(report: JSON) -> str:
    """The same rows for a terminal: fixed-width columns, notes left out."""
    out = [f"{'comparison':<96} {'ours':>12} {'peer':>14} {'ratio':>10}  {'goal':<20} met?"]
    for name in report["sections_run"]:
        sec = report["sections"][name]
        out.append(f"-- {TITLES.get(name, name)}")
        if "error" in sec:
            out.append(f"   FAILED: {sec['error']}")
            continue
        if sec.get("skipped"):
            out.append(f"   skipped: {sec['skipped']}")
            continue
        for r in sec.get("rows", []):
            comp = r["comparison"] if len(r["comparison"]) <= 96 else r["comparison"][:93] + "..."
            met = fmt_met(r).replace("**", "")
            out.append(
                f"{comp:<96} {fmt_value(r['ours'], r['unit']):>12} "
                f"{fmt_value(r['peer'], r['unit'], r.get('peer_capped', False)):>14} {fmt_ratio(r):>10}  "
                f"{fmt_goal(r):<20} {met}"
            )
    return "\n".join(out)


def gaps_of(report: JSON) -> list[str]:
    gaps = []
    for name in report["sections_run"]:
        sec = report["sections"][name]
        if "error" in sec:
            gaps.append(f"{name}: the section failed ({sec['error']})")
            continue
        for r in sec.get("rows", []):
            if r.get("met") is False:
                ratio = f", ratio {fmt_ratio(r)}" if r.get("ratio") is not None else ""
                gaps.append(
                    f"{name}: {r['comparison']}: ours {fmt_value(r['ours'], r['unit'])}, peer "
                    f"{fmt_value(r['peer'], r['unit'], r.get('peer_capped', False))}{ratio}; goal "
                    f"{fmt_goal(r)}"
                )
    return gaps


# -- main --------------------------------------------------------------------------------------------------------
def run(scale: str, sections: list[str], out_dir: Path, one_process: bool | None = None) -> JSON:
    started = time.perf_counter()
    report: JSON = {"scale": scale, "machine": machine(), "sections_run": sections, "sections": {}}
    if one_process is None:
        one_process = scale != "full"  # the small runs import LiteLLM once instead of once per section
    with tempfile.TemporaryDirectory(prefix="dtc-bench-") as tmp:
        peer_names = [s for s in sections if s in PEER_SECTIONS]
        report["sections"].update(run_peer_sections(peer_names, scale, Path(tmp), one_process))
        for name in sections:
            if name in DOOR_SECTIONS:
                report["sections"][name] = run_door(name, scale, Path(tmp))
    report["seconds"] = time.perf_counter() - started
    report["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["gaps"] = gaps_of(report)
    report["rows"] = [r for name in sections for r in report["sections"][name].get("rows", [])]
    stem = {"full": "latest", "quick": "latest-quick", "smoke": "latest-smoke"}[scale]
    if set(sections) != set(ALL_SECTIONS):
        stem += "-partial"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(report))
    report["written"] = [str(out_dir / f"{stem}.json"), str(out_dir / f"{stem}.md")]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a < 60 s subset (no door benchmarks)")
    parser.add_argument("--smoke", action="store_true", help="every workload tiny (< 20 s; wins over --quick)")
    parser.add_argument("--sections", nargs="+", choices=ALL_SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory (default {RESULTS})")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown instead of the text table")
    args = parser.parse_args(argv)
    scale = "smoke" if args.smoke else "quick" if args.quick else "full"
    sections = args.sections or ALL_SECTIONS
    report = run(scale, sections, args.out)
    print(markdown(report) if args.markdown else text_table(report))
    print(f"\n{len(report['gaps'])} goal(s) not met; {report['seconds']:.0f} s; wrote {', '.join(report['written'])}")
    failed = [name for name in sections if "error" in report["sections"][name]]
    if failed:
        print(f"sections that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
