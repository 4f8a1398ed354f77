"""What a core L2 hit costs against a raw redis-py ``GET`` + ``orjson.loads``: wall time and instruction counts.

    python benchmarks/memory_l2.py [--rounds 61] [--before REF] [--callgrind] [--json out.json]

One private redis-server; one ~1.5 KB chat answer (a LiteLLM response as the LiteLLM door stores it) read back by:

* ``raw``: redis-py ``GET`` + ``orjson.loads`` of the answer stored as plain JSON (the floor);
* ``ours``: ``CacheCore(memory=False, disk=False)`` ``get(key_for(request))``: key, GET, frame check,
  decompression with the shipped dictionary, JSON decode, hit bookkeeping;
* ``ours_uncompressed``: the same core with compression off (what the frame's decompression costs);
* ``before`` (with ``--before REF``): the package as of git ``REF``, imported side by side under another name, so
  before and after alternate in the same process against the same Redis.

The same readers through asyncio (``redis.asyncio`` ``await client.get()`` + ``orjson.loads`` against ``await
core.aget(...)``, and ``before`` with ``--before``) are timed the same way in one event loop: ``l2_async_vs_raw``.

Wall time: best per-call time over alternating rounds in one run (a loaded 2-core box swings 2x between rounds;
the minimum is the uncontended cost). ``--callgrind``: each reader also runs under ``valgrind --tool=callgrind``
twice (``--n`` and ``3 * --n`` calls); the difference in the main thread divided by ``2 * --n`` is the instructions
one call executes, a second view that load cannot move (background threads poll on timers, so they are left out).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_timing import alternating_min_us
from memory_corpus import answers, held_out_texts

HERE = Path(__file__).resolve().parent

_PROMPT = (
    "You are a helpful assistant for a software team. Answer the question below in plain English, with short "
    "paragraphs, and mention the trade-offs you see. "
) * 8
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": _PROMPT[:1500]}], "temperature": 0}


def answer_value(text: str) -> dict[str, Any]:
    return {
        "__dtc_litellm__": 1,
        "r": {"id": "chatcmpl-5f2b0c4e1a9d8e7f6a5b4c3d", "created": 1_790_000_000, "model": "gpt-4o-mini",
              "object": "chat.completion", "choices": [{"finish_reason": "stop", "index": 0, "message": {
                  "content": text, "role": "assistant", "tool_calls": None, "function_call": None}}],
              "usage": {"completion_tokens": 380, "prompt_tokens": 410, "total_tokens": 790}},
    }  # fmt: skip


def before_package(ref: str) -> str:
    """The package as of git ``ref``, extracted into a temporary directory as ``dtc_before`` (imports renamed) and
    put on ``sys.path``: the module name to import."""
    root = Path(tempfile.mkdtemp(prefix="dtc-before-"))
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "dspy_tiered_cache"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    pkg = root / "dtc_before"
    (root / "dspy_tiered_cache").rename(pkg)
    for path in pkg.rglob("*.py"):
        path.write_text(re.sub(r"\bdspy_tiered_cache\b", "dtc_before", path.read_text()))
    sys.path.insert(0, str(root))
    return "dtc_before"


def readers(url: str, text: str, before: str | None) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    """The readers to time, each with its entry stored, and a function closing them."""
    from dspy_tiered_cache import CacheCore

    value = answer_value(text)
    cores: dict[str, Any] = {
        "ours": CacheCore(memory=False, disk=False, redis_url=url, fleet=False, namespace="ours"),
        "ours_uncompressed": CacheCore(memory=False, disk=False, redis_url=url, fleet=False, namespace="plain",
                                       compression_threshold=0),
    }  # fmt: skip
    if before is not None:
        old = importlib.import_module(before)
        cores["before"] = old.CacheCore(memory=False, disk=False, redis_url=url, fleet=False, namespace="before")
    for core in cores.values():
        core.set(core.key_for(REQUEST), value)
        core.flush()
        assert core.get(core.key_for(REQUEST)) is not None
    raw = redis.Redis.from_url(url)
    raw.set("raw-key", orjson.dumps(value))
    fns: dict[str, Callable[[], Any]] = {"raw": lambda: orjson.loads(raw.get("raw-key"))}  # type: ignore[arg-type]
    for name, core in cores.items():
        fns[name] = (lambda c: lambda: c.get(c.key_for(REQUEST)))(core)
    ours = cores["ours"]
    tier, key = ours.tiers[-1], ours.key_for(REQUEST)
    frame = tier.client.get(key)
    payload = tier.codec.loads(frame).payload
    # Parts of "ours", for --count (instructions) only: where the difference from raw goes.
    parts: dict[str, Callable[[], Any]] = {
        "part_key_for": lambda: ours.key_for(REQUEST),
        "part_tier_get": lambda: tier.get(key),
        "part_codec_loads": lambda: tier.codec.loads(frame),
        "part_json_loads": lambda: orjson.loads(payload),
    }
    fns.update(parts)

    def close() -> None:
        for core in cores.values():
            core.close()
        raw.close()

    return fns, close


def async_l2_hit(url: str, text: str, module: str | None, rounds: int, number: int) -> dict[str, float]:
    """Best per-call microseconds of the asyncio readers, alternating in one event loop (as alternating_min_us)."""
    import redis.asyncio

    from dspy_tiered_cache import CacheCore

    async def timed() -> dict[str, float]:
        value = answer_value(text)
        ours = CacheCore(memory=False, disk=False, redis_url=url, fleet=False, namespace="ours")
        cores: dict[str, Any] = {"ours": ours}
        if module is not None:
            cores["before"] = importlib.import_module(module).CacheCore(
                memory=False, disk=False, redis_url=url, fleet=False, namespace="before"
            )
        raw = redis.asyncio.Redis.from_url(url)
        await raw.set("raw-key", orjson.dumps(value))

        async def read_raw() -> Any:
            return orjson.loads(await raw.get("raw-key"))  # type: ignore[arg-type]

        fns: dict[str, Callable[[], Any]] = {"raw": read_raw}
        for name, core in cores.items():
            core.set(core.key_for(REQUEST), value)
            core.flush()
            fns[name] = (lambda c: lambda: c.aget(c.key_for(REQUEST)))(core)
            assert await fns[name]() is not None, f"{name}: the stored answer was not read back"
        best = dict.fromkeys(fns, float("inf"))
        items = list(fns.items())
        try:
            for r in range(rounds):
                for name, fn in items if r % 2 else items[::-1]:
                    started = time.perf_counter()
                    for _ in range(number):
                        await fn()
                    best[name] = min(best[name], (time.perf_counter() - started) / number * 1e6)
        finally:
            await raw.aclose()
            for core in cores.values():
                core.close()
        return best

    return asyncio.run(timed())


def _inner(args: argparse.Namespace) -> None:
    """Run one reader ``--n`` times (the process callgrind measures)."""
    if args.before:
        sys.path.insert(0, args.before)
    fns, close = readers(args.url, args.text, "dtc_before" if args.before else None)
    fn = fns[args.inner]
    for _ in range(args.n):
        fn()
    close()


def callgrind(url: str, text: str, names: list[str], n: int, before_root: str | None) -> dict[str, float]:
    """Instructions per call of each reader: two runs of n and 3n calls, the difference over 2n."""
    out: dict[str, float] = {}
    text_file = Path(tempfile.mkdtemp(prefix="dtc-cg-")) / "text"
    text_file.write_text(text)
    for name in names:
        totals = []
        for count in (n, 3 * n):
            cg_out = text_file.with_name(f"cg.{name}.{count}")
            # Main thread only: the cores' background threads (writer, invalidation listener) poll on timers,
            # so what they execute grows with the run's wall time, which load stretches.
            cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={cg_out}",
                   sys.executable, __file__,
                   "--inner", name, "--n", str(count), "--url", url, "--text-file", str(text_file)]  # fmt: skip
            if before_root:
                cmd += ["--before-root", before_root]
            subprocess.run(cmd, check=True, capture_output=True)
            main = cg_out.with_name(cg_out.name + "-01")
            summary = [line for line in main.read_text().splitlines() if line.startswith("summary:")]
            totals.append(int(summary[0].split()[1]))
        out[name] = (totals[1] - totals[0]) / (2 * n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--before", metavar="REF", help="also time the package as of this git ref")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per call (valgrind)")
    parser.add_argument("--n", type=int, default=500, help="calls per callgrind run")
    parser.add_argument("--count", default="", help="comma-separated readers to count (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--text-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--before-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        args.text = args.text_file.read_text()
        args.before = args.before_root
        _inner(args)
        return
    counted = [name for name in args.count.split(",") if name] or None
    print(l2_hit_report(args.rounds, args.number, args.before, args.callgrind, args.n, args.json, counted))


def l2_hit(
    url: str,
    text: str,
    *,
    rounds: int = 61,
    number: int = 200,
    before: str | None = None,
    count_instructions: bool = False,
    n: int = 500,
    counted: list[str] | None = None,
) -> dict[str, Any]:
    """The L2-hit figures (memory.py's ``l2_hit`` section)."""
    module = before_package(before) if before else None
    fns, close = readers(url, text, module)
    try:
        timed = alternating_min_us(
            {k: f for k, f in fns.items() if not k.startswith("part_")}, rounds=rounds, number=number
        )
    finally:
        close()
    out: dict[str, Any] = {
        "rounds": rounds,
        "raw_get_decode_us": round(timed["raw"], 1),
        "l2_hit_us": round(timed["ours"], 1),
        "l2_hit_uncompressed_us": round(timed["ours_uncompressed"], 1),
        "l2_vs_raw": round(timed["ours"] / timed["raw"], 3),
        "l2_uncompressed_vs_raw": round(timed["ours_uncompressed"] / timed["raw"], 3),
    }
    if module is not None:
        out["before_ref"] = before
        out["l2_hit_before_us"] = round(timed["before"], 1)
        out["before_vs_raw"] = round(timed["before"] / timed["raw"], 3)
    timed_async = async_l2_hit(url, text, module, rounds, number)
    out["raw_async_get_decode_us"] = round(timed_async["raw"], 1)
    out["l2_hit_async_us"] = round(timed_async["ours"], 1)
    out["l2_async_vs_raw"] = round(timed_async["ours"] / timed_async["raw"], 3)
    if module is not None:
        out["l2_hit_async_before_us"] = round(timed_async["before"], 1)
        out["before_async_vs_raw"] = round(timed_async["before"] / timed_async["raw"], 3)
    if count_instructions and shutil.which("valgrind"):
        root = str(Path(sys.modules[module].__file__).parent.parent) if module else None  # type: ignore[arg-type]
        default = [name for name in fns if not name.startswith("part_")]
        names = ["raw", *(name for name in (counted or default) if name != "raw")]
        ir = callgrind(url, text, names, n, root)
        out["instructions_per_call"] = {k: round(v) for k, v in ir.items()}
        out["instructions_vs_raw"] = {k: round(v / ir["raw"], 3) for k, v in ir.items() if k != "raw"}
    return out


def l2_hit_report(
    rounds: int, number: int, before: str | None, count: bool, n: int, json_path: Path | None, counted: list[str] | None
) -> str:
    from dspy_tiered_cache.testing.redis_server import RedisServer

    with RedisServer() as server:
        result = l2_hit(server.url, next(answers(held_out_texts(), 1500, 1, seed=99)), rounds=rounds, number=number,
                        before=before, count_instructions=count, n=n, counted=counted)  # fmt: skip
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if json_path is not None:
        json_path.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()


if __name__ == "__main__":
    main()
