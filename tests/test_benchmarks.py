"""The peer benchmarks keep running: ``run_all.py --quick --smoke`` end to end, in a subprocess, on tiny workloads.

Benchmarks nobody runs rot silently (a peer's API changes, a section stops producing a row). This runs every
section at the smallest scale against real components (private Redis servers, the stand-in provider, spawned
processes for the stampede) and checks the report has every section, every row is well formed, and the
figures that do not depend on the machine's speed hold: one upstream call for the stampede, W-TinyLFU no worse
than LRU on the Zipf trace, hits faster than a dead Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
PEER_SECTIONS = ["hits", "litellm", "zipf", "stampede", "unreachable", "throughput", "memory"]
DOOR_SECTIONS = ["litellm_door", "dspy_door"]
ROW_KEYS = {"section", "comparison", "ours", "peer", "unit", "ratio", "goal", "met", "note"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / "latest-smoke.json").read_text())
    data["_markdown"] = (out / "latest-smoke.md").read_text()
    data["_stdout"] = proc.stdout
    return data


def test_every_section_is_present_and_ran(report: dict[str, Any]) -> None:
    assert report["scale"] == "smoke"
    assert set(report["sections"]) == set(PEER_SECTIONS + DOOR_SECTIONS)
    for name in PEER_SECTIONS:
        section = report["sections"][name]
        assert "error" not in section, (name, section.get("error"), section.get("stderr_tail"))
        if name != "litellm":  # the whole-call LiteLLM comparison needs seconds of imports: full runs only
            assert section["rows"], f"{name} produced no rows"
    for name in ("litellm", *DOOR_SECTIONS):
        assert report["sections"][name].get("skipped") or report["sections"][name].get("rows")


def test_machine_description(report: dict[str, Any]) -> None:
    machine = report["machine"]
    for key in ("date", "cpu_model", "cores", "python", "packages"):
        assert machine[key], key
    assert machine["packages"]["dspy-tiered-cache"]
    assert "litellm" in machine["packages"] and "cashews" in machine["packages"]


def test_rows_are_well_formed_and_in_the_table(report: dict[str, Any]) -> None:
    rows = report["rows"]
    assert len(rows) >= 20
    for r in rows:
        assert set(r) >= ROW_KEYS, r
        assert isinstance(r["ours"], (int, float)), r
        if r["peer"] and r["ours"] is not None:
            assert r["ratio"] == pytest.approx(r["ours"] / r["peer"])
        if r["goal"] is not None:
            assert r["met"] in (True, False), r
    assert "| comparison | ours | peer | ratio | goal | met? |" in report["_markdown"]
    assert "## Goals not met" in report["_markdown"]
    assert "comparison" in report["_stdout"] and "goal(s) not met" in report["_stdout"]


def test_stampede_makes_one_upstream_call_and_the_peer_more(report: dict[str, Any]) -> None:
    variants = report["sections"]["stampede"]["variants"]
    section = report["sections"]["stampede"]
    total = section["processes"] * section["per_process"]
    assert variants["ours_core"] == {**variants["ours_core"], "upstream_calls": 1, "answers": total, "errors": []}
    assert variants["ours_no_single_flight"]["upstream_calls"] > 1  # without it the burst does go upstream
    if "aiocache" in variants:  # an optional peer (the [bench] extra)
        assert variants["aiocache"]["upstream_calls"] > 1


def test_zipf_policy_beats_lru_and_peers_are_measured(report: dict[str, Any]) -> None:
    zipf = report["sections"]["zipf"]
    policies = zipf["policies"]
    assert policies["ours_wtinylfu"]["hit_ratio"] >= policies["cachetools_lru"]["hit_ratio"]
    assert policies["ours_bytes"]["hit_ratio"] > 0
    assert 0 < policies["ours_wtinylfu"]["hit_ratio"] <= zipf["static_optimum"] + 0.02
    hits = report["sections"]["hits"]
    assert {"ours_l1", "floor_dict", "ours_l2", "floor_redis", "ours_disk"} <= set(hits["sizes"]["0.5 KB"]["us"])
    for peer in ("cashews", "aiocache", "gptcache"):
        assert hits["peers"][peer]["status"] in ("ok", "not installed", "not installable here")


def test_dead_redis_costs_us_less_than_the_breaker_bound(report: dict[str, Any]) -> None:
    variants = report["sections"]["unreachable"]["variants"]
    for state in ("refused", "frozen"):
        ours = variants[f"ours_{state}"]
        assert ours["max_ms"] < 1000, ours  # connect + op timeouts are 250 + 150 ms, then the breaker opens
    memory = report["sections"]["memory"]
    assert memory["redis_bytes_per_entry"]["ours_compress_all"] < memory["redis_bytes_per_entry"]["ours_uncompressed"]


def test_a_held_out_pair_file_is_read_in_either_layout(tmp_path: Path) -> None:
    """``semantic.py --pairs FILE``: how a held-out labelled sample is measured with the benchmark's own code."""
    sys.path.insert(0, str(BENCH))
    try:
        from semantic_pairs_file import PairsFileError, load_pairs_file
    finally:
        sys.path.remove(str(BENCH))
    qqp = tmp_path / "held.tsv"
    qqp.write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "0\t1\t2\tHow do I learn Go?\tWhat is the best way to learn Go?\t1\n"
        "1\t3\t4\tWho is she?\tWhere is she?\t0\n"
        "2\t5\t6\t\tAn empty first text\t1\n"
        "3\t7\t8\tA label\tthat is not one\tmaybe\n",
        encoding="utf-8",
    )
    pairs, skipped = load_pairs_file(qqp)
    assert [(p.a, p.duplicate) for p in pairs] == [("How do I learn Go?", True), ("Who is she?", False)]
    assert skipped == 2
    generic = tmp_path / "generic.csv"
    generic.write_text('sentence1,sentence2,label\n"Hi, there",Hello there,true\n', encoding="utf-8")
    assert load_pairs_file(generic)[0][0].b == "Hello there" and load_pairs_file(generic)[0][0].a == "Hi, there"
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("left,right,y\nx,y,1\n", encoding="utf-8")
    with pytest.raises(PairsFileError, match="question1/question2/is_duplicate"):
        load_pairs_file(unknown)
