"""What every peer module and section shares: scales, table rows, package versions, test values, timing helpers.

Imported first by ``peers/__init__.py``: it sets the environment (LiteLLM's offline price map, a scratch cache
directory) before any peer is imported, and puts ``benchmarks/`` on ``sys.path`` for ``core.paired_us``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download when litellm is imported
# Nothing a peer or an import caches may land in the user's ~/.cache (one shared scratch dir, not one per process).
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(tempfile.gettempdir(), "dtc-peers-xdg"))

BENCH_DIR = Path(__file__).resolve().parent.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import orjson  # noqa: E402
from core import paired_us  # noqa: E402  - the lead's interleaved timing (benchmarks/core.py)

__all__ = ["paired_us"]

JSON = dict[str, Any]
MODEL = "openai/gpt-4o-mini"
#: A stored-value check, a status entry: what every peer module hands back.
Status = dict[str, JSON]


# -- scale ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """How much of each workload to run; ``full`` is the real benchmark, the others keep the harness honest."""

    name: str
    repeat: int  # interleaved rounds per timing
    mem_number: int  # calls per burst for in-memory variants
    io_number: int  # calls per burst for Redis / disk variants
    zipf_requests: int
    zipf_keys: int
    zipf_capacity: int
    zipf_slow_peers: bool  # LiteLLM InMemoryCache and cashews (several us per request) on the whole trace
    stampede_processes: int
    stampede_threads: int
    stampede_latency: float
    stampede_variants: tuple[str, ...]
    down_calls_ours: int
    down_calls_peer: int
    down_litellm: bool
    down_cap_s: float  # longest we wait for one peer call against a dead Redis
    down_budget_s: float  # longest we spend on one peer variant
    throughput_seconds: float
    throughput_tasks: int
    memory_entries: int
    litellm_hits: int  # whole-call hits per cache in the ``litellm`` section (0 skips it)
    litellm_peers: bool  # LiteLLM's backends as peers (importing LiteLLM alone takes ~7 s on 2 cores)


SCALES: dict[str, Scale] = {
    "full": Scale(
        name="full",
        repeat=7,
        mem_number=4000,
        io_number=400,
        zipf_requests=1_000_000,
        zipf_keys=100_000,
        zipf_capacity=10_000,
        zipf_slow_peers=True,
        stampede_processes=4,
        stampede_threads=25,
        stampede_latency=2.0,  # LLM-like: every request of the burst is in flight before the first answer lands
        stampede_variants=(
            "ours_core",
            "ours_no_single_flight",
            "litellm_redis",
            "ours_litellm_door",
            "aiocache",
            "aiocache_stampede",
            "cashews",
            "cashews_lock",
        ),
        down_calls_ours=30,
        down_calls_peer=3,
        down_litellm=True,
        down_cap_s=8.0,
        down_budget_s=8.0,
        throughput_seconds=1.5,
        throughput_tasks=100,
        memory_entries=10_000,
        litellm_hits=200,
        litellm_peers=True,
    ),
    "quick": Scale(
        name="quick",
        repeat=5,
        mem_number=1500,
        io_number=150,
        zipf_requests=200_000,
        zipf_keys=20_000,
        zipf_capacity=2_000,
        zipf_slow_peers=False,
        stampede_processes=2,
        stampede_threads=10,
        stampede_latency=0.3,
        stampede_variants=("ours_core", "ours_no_single_flight", "aiocache", "cashews"),
        down_calls_ours=10,
        down_calls_peer=1,
        down_litellm=False,
        down_cap_s=3.0,
        down_budget_s=3.0,
        throughput_seconds=0.4,
        throughput_tasks=50,
        memory_entries=2_000,
        litellm_hits=0,
        litellm_peers=True,
    ),
    "smoke": Scale(
        name="smoke",
        repeat=2,
        mem_number=100,
        io_number=20,
        zipf_requests=5_000,
        zipf_keys=1_000,
        zipf_capacity=100,
        zipf_slow_peers=True,
        stampede_processes=2,
        stampede_threads=3,
        stampede_latency=0.1,
        stampede_variants=("ours_core", "ours_no_single_flight", "aiocache"),
        down_calls_ours=3,
        down_calls_peer=1,
        down_litellm=False,
        down_cap_s=0.5,
        down_budget_s=0.5,
        throughput_seconds=0.05,
        throughput_tasks=5,
        memory_entries=200,
        litellm_hits=0,
        litellm_peers=False,
    ),
}


# -- rows ----------------------------------------------------------------------------------------------------
def row(
    section: str,
    comparison: str,
    ours: float | None,
    peer: float | None,
    unit: str,
    *,
    better: str = "lower",
    goal: float | None = None,
    goal_on: str = "ratio",
    note: str = "",
    peer_capped: bool = False,
) -> JSON:
    """One line of the table. ``ratio`` is ours / peer; ``better`` says which way is good for ``goal``.

    ``goal_on="ratio"`` checks the ratio against ``goal``; ``goal_on="ours"`` checks our absolute figure.
    ``peer_capped`` means the peer's figure is a lower bound (we stopped waiting).
    """
    ratio = ours / peer if ours is not None and peer is not None and peer != 0 else None
    met: bool | None = None
    checked = ratio if goal_on == "ratio" else ours
    if goal is not None and checked is not None:
        met = checked <= goal if better == "lower" else checked >= goal
    return {
        "section": section,
        "comparison": comparison,
        "ours": ours,
        "peer": peer,
        "unit": unit,
        "ratio": ratio,
        "better": better,
        "goal": goal,
        "goal_on": goal_on,
        "met": met,
        "note": note,
        "peer_capped": peer_capped,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in (
        "dspy-tiered-cache",
        "dspy",
        "litellm",
        "redis",
        "hiredis",
        "orjson",
        "zstandard",
        "cashews",
        "aiocache",
        "gptcache",
        "cachetools",
        "diskcache",
    ):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


class Skipped(ImportError):
    """A peer left out at this scale (not a failure)."""


def need_litellm(scale: Scale) -> None:
    if not scale.litellm_peers:
        raise Skipped(f"LiteLLM peers are not run at scale {scale.name!r} (importing LiteLLM takes ~7 s)")


def missing(name: str, exc: BaseException) -> JSON:
    if isinstance(exc, Skipped):
        return {"status": "skipped", "error": str(exc)}
    return {"status": "not installable here" if name == "gptcache" else "not installed", "error": repr(exc)[:300]}



# -- values --------------------------------------------------------------------------------------------------
def _vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [
        12.7,
        9.1,
        8.2,
        7.5,
        7.0,
        6.7,
        6.3,
        6.1,
        6.0,
        4.3,
        4.0,
        2.8,
        2.8,
        2.4,
        2.4,
        2.0,
        2.0,
        1.9,
        1.5,
        1.0,
        0.8,
        0.15,
        0.15,
        0.1,
        0.1,
        0.07,
    ]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(n)]


_VOCAB = _vocabulary(random.Random(1234))
_VOCAB_CUM = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(_VOCAB))))


def _sentences(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < n_chars:
        words = rng.choices(_VOCAB, cum_weights=_VOCAB_CUM, k=rng.randint(6, 18))
        sentence = " ".join(words).capitalize() + rng.choice([". ", ". ", ", ", "? ", ".\n"])
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:n_chars]


_CORPUS: list[str] = []


def text(n_chars: int, seed: int) -> str:
    """Pseudo-English (Zipf word frequencies, sentences): compresses about as well as model output does.

    A window of a 512 KB corpus generated once, so that making 10,000 distinct responses takes milliseconds.
    """
    if not _CORPUS:
        _CORPUS.append(_sentences(512 * 1024, 99))
    corpus = _CORPUS[0]
    if n_chars >= len(corpus):
        return _sentences(n_chars, seed)
    start = random.Random(seed).randrange(len(corpus) - n_chars)
    return corpus[start : start + n_chars]


def response(size: int, seed: int = 0) -> JSON:
    """A chat completion whose JSON is ``size`` bytes (give or take a few)."""
    value: JSON = {
        "id": f"chatcmpl-{seed:012d}",
        "object": "chat.completion",
        "created": 1_700_000_000 + seed,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}],
        "usage": {"prompt_tokens": 420, "completion_tokens": max(1, size // 5), "total_tokens": 420 + size // 5},
    }
    overhead = len(orjson.dumps(value))
    value["choices"][0]["message"]["content"] = text(max(0, size - overhead), seed)
    return value


def request(seed: int | str) -> JSON:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Question {seed}: why does caching LM calls speed up optimization?"},
        ],
        "temperature": 0.0,
    }


def litellm_stored(value: JSON) -> JSON:
    """What ``litellm.Cache.add_cache`` hands its backend for a ModelResponse: a timestamp and the JSON text."""
    return {"timestamp": time.time(), "response": orjson.dumps(value).decode()}


# -- timing helpers ------------------------------------------------------------------------------------------
def paired_async_us(
    loop: asyncio.AbstractEventLoop,
    fns: dict[str, Callable[[], Awaitable[Any]]],
    *,
    repeat: int,
    number: int,
) -> dict[str, float]:
    """``paired_us`` for coroutines: interleaved bursts on one event loop, median microseconds per await."""

    async def burst(fn: Callable[[], Awaitable[Any]], n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await fn()
        return (time.perf_counter() - started) / n * 1e6

    for fn in fns.values():
        loop.run_until_complete(burst(fn, max(1, number // 10)))
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            runs[name].append(loop.run_until_complete(burst(fn, number)))
    return {name: statistics.median(r) for name, r in runs.items()}


def warm(fns: dict[str, Callable[[], Any]], n: int = 50) -> None:
    for fn in fns.values():
        for _ in range(n):
            fn()


def check_value(label: str, got: Any, want: Any) -> None:
    """A benchmark that times a miss or a wrong value is worse than none: every variant must return the value."""
    if got != want:
        raise AssertionError(f"{label} did not return the stored value: {str(got)[:120]!r}")


# -- workloads shared by several sections ----------------------------------------------------------------------
def zipf_trace(requests: int, keys: int, seed: int = 7) -> list[str]:
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(keys)))
    names = [f"dtc:default:0:{i:016x}" for i in range(keys)]
    return [names[i] for i in random.Random(seed).choices(range(keys), cum_weights=cum, k=requests)]


def zipf_sizes(keys: int, seed: int = 11) -> dict[str, int]:
    """Variable payload sizes (log-uniform 200 B .. 16 KB), fixed per key, for the byte-bounded trace."""
    rng = random.Random(seed)
    return {f"dtc:default:0:{i:016x}": int(200 * 80 ** rng.random()) for i in range(keys)}


def simulate(trace: list[str], get: Callable[[str], Any], put: Callable[[str], None]) -> int:
    """Replay a trace through a cache (look up; store on a miss); the number of hits."""
    hits = 0
    for k in trace:
        if get(k) is not None:
            hits += 1
        else:
            put(k)
    return hits



STAMPEDE_REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "stampede benchmark"}]}


def ask_upstream(base_url: str) -> JSON:
    body = json.dumps({"model": "gpt-4o-mini", "messages": STAMPEDE_REQUEST["messages"]}).encode()
    req = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def answer_text(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return str(value["choices"][0]["message"]["content"])



def litellm_completion(base_url: str) -> Callable[[], str]:
    """``litellm.completion`` of the stampede request through whatever ``litellm.cache`` is, warmed up first."""
    import litellm

    kwargs = {**STAMPEDE_REQUEST, "api_base": base_url, "api_key": "sk-bench", "num_retries": 0}
    litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "warm up"}], api_base=base_url, api_key="sk-bench"
    )  # import LiteLLM's whole call path before the burst
    return lambda: answer_text(litellm.completion(**kwargs))


def capped_sync(fn: Callable[[], Any], cap: float) -> tuple[float, bool]:
    """Seconds one call took, or ``cap`` and True if it had not returned by then (the thread is abandoned)."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception:
            pass
        finally:
            done.set()

    started = time.perf_counter()
    threading.Thread(target=run, daemon=True).start()
    if done.wait(cap):
        return time.perf_counter() - started, False
    return cap, True


def series(call: Callable[[int], tuple[float, bool]], n: int, budget: float) -> JSON:
    samples: list[float] = []
    capped = False
    started = time.perf_counter()
    for i in range(n):
        seconds, capped = call(i)
        samples.append(seconds * 1000.0)
        if capped or time.perf_counter() - started > budget:
            break
    return {
        "calls": len(samples),
        "first_ms": samples[0],
        "median_ms": statistics.median(samples),
        "max_ms": max(samples),
        "capped": capped,
        "samples_ms": [round(s, 3) for s in samples],
    }


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)



def traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` (whose result is kept alive while measuring)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, kept


def rss_bytes() -> int:
    """Resident set size in bytes (Linux), a cross-check on tracemalloc that sees what malloc really kept."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def memory_values(n: int) -> tuple[list[str], list[bytes]]:
    """``n`` distinct ~2 KB responses (1.5-3 KB) as they arrive from the network (JSON bytes), and their keys."""
    rng = random.Random(5)
    raws = [orjson.dumps(response(rng.randint(1536, 3072), seed=i)) for i in range(n)]
    raws = [bytes(memoryview(r)) for r in raws]  # exact-size copies: orjson's own output is over-allocated
    return [f"dtc:default:0:{i:064x}" for i in range(n)], raws


def child_result(proc: Any, queue: Any, timeout: float) -> Any:
    """The one value a spawned child puts on ``queue``; fails fast (with its exit code) if the child died."""
    import queue as queue_module

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = queue.get(timeout=0.2)
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"child process exited with status {proc.exitcode} before reporting") from None
            continue
        proc.join(30)
        return value
    proc.kill()
    raise TimeoutError(f"child process did not report within {timeout:.0f} s")


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The peers log every Redis failure at ERROR; the unreachable section provokes hundreds of them."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


# -- what a section hands every peer ---------------------------------------------------------------------------
@dataclass
class HitSetup:
    """One hit-latency run (one response size): where peers store the value and the variants they add.

    Every variant returns the stored value (checked before timing); ``sync_mem``/``async_mem`` are in-process,
    ``sync_io``/``async_io`` cross a socket or a file, and are timed with fewer calls per burst."""

    scale: Scale
    redis_url: str
    redis_port: int
    tmp: Path
    value: JSON
    raw: bytes
    loop: asyncio.AbstractEventLoop
    stack: ExitStack
    #: Our keys by variant ("mem", "l1l2", "l2", "disk"); peers store under ``keys["mem"]`` / ``keys["disk"]``.
    keys: dict[str, str] = field(default_factory=dict)
    sync_mem: dict[str, Callable[[], Any]] = field(default_factory=dict)
    sync_io: dict[str, Callable[[], Any]] = field(default_factory=dict)
    async_mem: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)
    async_io: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)


#: A lookup against a broken Redis: call ``i`` looks up a fresh key; (seconds, whether we stopped waiting).
DownCall = Callable[[int], tuple[float, bool]]


async def capped_await(coro: Awaitable[Any], cap: float) -> tuple[float, bool]:
    """Seconds an awaited lookup took, capped at ``cap`` (True when the cap, not the peer, ended it)."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(coro, cap)
    except asyncio.TimeoutError:  # ours (the cap) or the peer's own timeout
        elapsed = time.perf_counter() - started
        return elapsed, elapsed >= cap * 0.99
    except Exception:
        pass
    return time.perf_counter() - started, False
