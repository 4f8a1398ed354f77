"""Fault scenarios and the soak, shared by ``tests/fault`` and ``benchmarks/faults.py``.

Why one implementation: the figures a user reads in the benchmark table must come from exactly the code the test
suite asserts on, so that "0 wrong answers under a SIGSTOPped Redis" in the table is the same claim the CI run
checks. Both call :class:`FaultHarness` (one scenario at a time) and :func:`run_soak`.

What a scenario is: a private Redis server, an instance that warms part of a key space into it (like yesterday's
traffic), then ``Workload.cores`` fresh cache instances (each with its own memory tier, like separate processes)
sharing that Redis, driven by ``Workload.threads`` threads at a steady pace through
:meth:`CacheCore.get_or_compute` whose ``compute`` makes a real HTTP call to the local
:class:`~dspy_tiered_cache.testing.provider.StandInProvider`. The fault (kill, SIGSTOP, restart, stalls,
``maxmemory``, bytes written behind our back) is injected before or in the middle of that run. Every answer is
compared with the provider's deterministic answer for its request, obtained from a separate reference provider
that the caches never see, so a cached answer served for the wrong request, a forged or corrupt value that
slipped through, or a lost request is counted, never guessed at.

Figures per scenario: requests issued, exceptions seen by callers, wrong answers, lost requests (never
answered), p99 latency added over the healthy run of the same workload (the goal is at most the Redis operation
timeout), and upstream calls (counted by the provider).
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import pickle
import queue
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from dspy_tiered_cache.codec import Entry, FrameCodec
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer, RedisServerNotFoundError, find_redis_server

__all__ = [
    "API_KEY",
    "LEASE_S",
    "REDIS_TIMEOUT_MS",
    "SCENARIOS",
    "FaultContext",
    "FaultHarness",
    "Scenario",
    "ScenarioResult",
    "SoakResult",
    "Workload",
    "answer_text",
    "ask",
    "core_settings",
    "exploit_pickle",
    "format_soak",
    "format_table",
    "percentile",
    "prompt_for",
    "reference_answers",
    "request_for",
    "run_soak",
]

#: The Redis operation (and connect) timeout every scenario runs with; the latency goal is stated against it.
REDIS_TIMEOUT_MS = 100
#: Cross-process leases are shortened from the 30 s default so that a lease stranded by a fault shows up in the
#: figures as a multi-second stall instead of stalling the suite for half a minute.
LEASE_S = 5.0
#: Sent with every upstream call and part of every request: it must never appear in keys, values or logs.
API_KEY = "sk-fault-suite-not-a-real-key"
MODEL = "gpt-4o-mini"


# --------------------------------------------------------------------------------------------------------
# requests, the upstream call, expected answers
# --------------------------------------------------------------------------------------------------------


def prompt_for(index: int, tag: str = "fault") -> str:
    return f"{tag} question {index}: what is {index} + {index}?"


def request_for(prompt: str) -> dict[str, Any]:
    """The request as a door hands it to the core: sampling parameters, messages, and transport options."""
    return {
        "model": f"openai/{MODEL}",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "api_key": API_KEY,
    }


def ask(base_url: str, request: Mapping[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
    """One real chat-completions HTTP call, the way an OpenAI-compatible client makes it (key in a header)."""
    body = json.dumps(
        {"model": MODEL, "messages": request["messages"], "temperature": request.get("temperature", 0.0)}
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {request.get('api_key', API_KEY)}"}
    req = urllib.request.Request(f"{base_url}/chat/completions", body, headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if not isinstance(answer, dict):
        raise ValueError("the provider answered with something other than a JSON object")
    return answer


def answer_text(value: Any) -> str | None:
    """The part of a response that must be right: the first choice's content (ids and timestamps may differ)."""
    try:
        content = value["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def reference_answers(prompts: Sequence[str], *, salt: str = "") -> dict[str, str]:
    """The right answer of every prompt, from a provider of our own that no cache ever talks to."""
    out: dict[str, str] = {}
    with StandInProvider(salt=salt) as reference:
        for prompt in prompts:
            text = answer_text(ask(reference.base_url, request_for(prompt)))
            if text is None:
                raise RuntimeError(f"the reference provider gave no answer for {prompt!r}")
            out[prompt] = text
    return out


def core_settings(redis_url: str, **extra: Any) -> dict[str, Any]:
    """Settings of every instance in the scenarios: Redis only (the disk tier would hide Redis faults)."""
    settings: dict[str, Any] = {
        "redis_url": redis_url,
        "disk": False,
        "redis_timeout_ms": REDIS_TIMEOUT_MS,
        "redis_connect_timeout_ms": REDIS_TIMEOUT_MS,
        "lock_lease_s": LEASE_S,
    }
    settings.update(extra)
    return settings


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class _Exploit:
    """Pickles to a call of ``open(path, "w")``: unpickling it creates ``path``, which is how we see it ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def exploit_pickle(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when loaded: what an attacker with Redis access would plant."""
    return pickle.dumps(_Exploit(str(marker)), protocol=2)


# --------------------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The traffic every scenario replays; the healthy run of the same workload is the latency baseline."""

    keys: int = 60  # distinct requests
    warm: int = 30  # of which this many are in Redis before the run (written by another instance)
    cores: int = 3  # cache instances sharing Redis, each with its own memory tier (as separate processes)
    threads: int = 6  # callers; thread j uses instance j % cores
    requests: int = 300
    interval: float = 0.02  # seconds between one thread's requests: the run lasts ~1 s, so faults land mid-run
    seed: int = 20261122

    @property
    def per_thread(self) -> int:
        return -(-self.requests // self.threads)

    @property
    def duration(self) -> float:
        return self.per_thread * self.interval

    def plan(self) -> list[list[int]]:
        """Which request each thread issues, in order: uniform over the key space, so most first touches of an
        instance go to Redis, and every instance sees most keys more than once (memory-tier hits too)."""
        rng = random.Random(self.seed)
        flat = [rng.randrange(self.keys) for _ in range(self.requests)]
        return [flat[j :: self.threads] for j in range(self.threads)]


@dataclass
class FaultContext:
    """What a scenario's hooks may touch."""

    server: RedisServer
    workload: Workload
    prompts: list[str]
    keys: list[str]  # the storage key of each prompt, as the instances compute it
    cores: list[CacheCore]
    workdir: Path
    settings: dict[str, Any]
    stop: threading.Event  # set when the run's callers are done: looping faults end
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def raw(self, timeout: float = 5.0) -> redis.Redis:
        return self.server.client(timeout=timeout)

    @property
    def warm_keys(self) -> list[str]:
        return self.keys[: self.workload.warm]


Hook = Callable[[FaultContext], None]
Check = Callable[[FaultContext, "ScenarioResult"], list[str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # one line for the table
    server_args: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: Settings of the instance that warms Redis before the run (default: the same as the callers').
    seed_settings: Mapping[str, Any] | None = None
    prepare: Hook | None = None  # after warm-up, before the first request
    during: Hook | None = None  # in its own thread, ``at`` of the way into the run
    at: float = 0.3
    check: Check | None = None  # scenario-specific goals: returns the ones missed


@dataclass
class ScenarioResult:
    name: str
    fault: str
    requests: int
    answered: int
    exceptions: int
    wrong: int
    lost: int
    upstream_calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    added_p99_ms: float | None
    timeout_ms: int
    seconds: float
    levels: dict[str, int]
    breaker_opens: int
    l2_errors: int
    corrupt: int
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def describe(self) -> str:
        """Everything a failing test should print."""
        return json.dumps(self.to_dict(), indent=2, default=str)


# -- fault hooks ------------------------------------------------------------------------------------------


def _kill(ctx: FaultContext) -> None:
    ctx.server.kill()


def _pause_for(seconds: float) -> Hook:
    def pause(ctx: FaultContext) -> None:
        ctx.server.pause()
        try:
            ctx.stop.wait(seconds)
        finally:
            ctx.server.resume()

    return pause


def _restart(ctx: FaultContext) -> None:
    started = time.perf_counter()
    ctx.server.restart()
    ctx.notes.append(f"restart took {(time.perf_counter() - started) * 1000:.0f} ms")


def _stalls(stall_s: float, gap_s: float, span: float) -> Hook:
    """The server stops answering for ``stall_s`` (``DEBUG SLEEP`` blocks its event loop), every ``gap_s``."""

    def stall(ctx: FaultContext) -> None:
        client = ctx.raw(timeout=stall_s + 5.0)
        end = time.monotonic() + span * ctx.workload.duration
        count = 0
        try:
            while time.monotonic() < end and not ctx.stop.is_set():
                client.execute_command("DEBUG", "SLEEP", f"{stall_s:.3f}")  # type: ignore[no-untyped-call]
                count += 1
                ctx.stop.wait(gap_s)
        finally:
            client.close()
        ctx.notes.append(f"{count} stalls of {stall_s * 1000:.0f} ms")

    return stall


def _fill_memory(ctx: FaultContext) -> None:
    """Fill Redis with foreign data until writes fail with OOM (``maxmemory`` + ``noeviction``).

    Big values first, then smaller ones: a big SET's own query buffer counts towards ``used_memory``, so the
    first OOM on a 64 KB write can leave room for the 1 KB writes the cache makes. Then ``maxmemory`` is pinned
    64 KB under the memory in use, so that connection buffers coming and going cannot let writes through again.
    """
    client = ctx.raw()
    written = 0
    try:
        for size in (64 * 1024, 4096, 256):
            blob = os.urandom(size)
            for _ in range(100_000):
                try:
                    client.set(f"foreign:ballast:{written}", blob)
                except redis.exceptions.OutOfMemoryError:
                    break
                written += 1
            else:
                raise RuntimeError("Redis never reported OOM: is maxmemory set?")
        used = int(client.info("memory")["used_memory"])
        limit = int(str(client.config_get("maxmemory")["maxmemory"]))
        client.config_set("maxmemory", str(min(limit, used - 64 * 1024)))
        try:
            client.set("foreign:probe", b"x")
        except redis.exceptions.OutOfMemoryError:
            ctx.notes.append(f"filled with {written} foreign values until even 1-byte writes fail (OOM)")
        else:
            raise RuntimeError("a write still succeeds after filling Redis")
    finally:
        client.close()


def _corrupt_variants(ctx: FaultContext) -> list[tuple[str, bytes]]:
    """(kind, bytes) to plant under each warm key: every way a value can be wrong without a secret."""
    rng = random.Random(ctx.workload.seed)
    plain = FrameCodec(secret=None, compression_threshold=0, max_bytes=8 << 20)
    now = time.time()
    valid = plain.dumps(Entry(orjson.dumps({"choices": [{"message": {"content": "ok"}}]}), now))
    marker = ctx.workdir / "pwned-by-pickle"
    ctx.facts["marker"] = marker
    evil = exploit_pickle(marker)
    huge_claim = bytearray(plain.dumps(Entry(b"x" * 4096, now)))
    return [
        ("random bytes", rng.randbytes(rng.randrange(16, 600))),
        ("empty value", b""),
        ("truncated header", valid[:20]),
        ("truncated frame", valid[:-7]),
        ("bit flip", valid[:40] + bytes([valid[40] ^ 0x01]) + valid[41:]),
        ("raw pickle", evil),
        ("pickle in a valid frame", plain.dumps(Entry(evil, now))),
        (
            "pickle in a valid compressed frame",
            FrameCodec(secret=None, compression_threshold=1, max_bytes=8 << 20).dumps(Entry(evil * 40, now)),
        ),
        ("unknown version", bytes([valid[0], 99]) + valid[2:]),
        ("foreign text", b"hello from another program"),
        ("lying compressed size", bytes(huge_claim[:30]) + b"\x28\xb5\x2f\xfd" + b"\xff" * 16),
    ]


def _plant_corrupt(ctx: FaultContext) -> None:
    variants = _corrupt_variants(ctx)
    client = ctx.raw()
    try:
        for i, key in enumerate(ctx.warm_keys):
            client.set(key, variants[i % len(variants)][1])
    finally:
        client.close()
    # Prove the planted pickle is live: loading it (here, on purpose, once) does create a file.
    control = ctx.workdir / "control-marker"
    pickle.loads(exploit_pickle(control))
    if not control.exists():
        raise RuntimeError("the exploit pickle is not live; the scenario would prove nothing")
    ctx.notes.append(f"{len(variants)} kinds of corrupt bytes under {len(ctx.warm_keys)} keys")


def _check_corrupt(ctx: FaultContext, result: ScenarioResult) -> list[str]:
    failures = []
    marker = ctx.facts.get("marker")
    if isinstance(marker, Path) and marker.exists():
        failures.append(f"the pickle payload ran: {marker} exists")
    else:
        result.notes.append("pickle marker absent")
    if result.corrupt == 0:
        failures.append("no corrupt entry was detected: the planted bytes were never read")
    return failures


def _plant_forged(ctx: FaultContext) -> None:
    """Well-formed frames carrying a wrong answer, written by someone without the key_secret."""
    now = time.time()
    forged = orjson.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "FORGED"}, "finish_reason": "stop"}]}
    )
    codecs = [
        FrameCodec(secret=None, compression_threshold=0, max_bytes=8 << 20),
        FrameCodec(secret=b"a-guessed-secret", compression_threshold=0, max_bytes=8 << 20),
    ]
    client = ctx.raw()
    try:
        for i, key in enumerate(ctx.warm_keys):
            client.set(key, codecs[i % 2].dumps(Entry(forged, now)))
    finally:
        client.close()


def _check_detected(ctx: FaultContext, result: ScenarioResult) -> list[str]:
    return [] if result.corrupt else ["nothing was rejected: the planted values were never read"]


def _plant_plaintext(ctx: FaultContext) -> None:
    """Half the warm keys get a correct but unencrypted value: encrypting readers must refuse plaintext too."""
    plain = FrameCodec(secret=None, compression_threshold=0, max_bytes=8 << 20)
    client = ctx.raw()
    now = time.time()
    try:
        for key in ctx.warm_keys[::2]:
            client.set(key, plain.dumps(Entry(orjson.dumps({"plaintext": True}), now)))
    finally:
        client.close()


def _check_no_breaker(ctx: FaultContext, result: ScenarioResult) -> list[str]:
    failures = []
    if result.breaker_opens:
        failures.append(
            f"the Redis breaker opened {result.breaker_opens}x although Redis only refused writes (OOM): "
            "reads were cut off too"
        )
    if result.levels.get("l2", 0) == 0:
        failures.append("no request was served from Redis: reads did not keep working under OOM")
    if result.l2_errors == 0:
        failures.append("no write failed: Redis was not out of memory during the run")
    return failures


def _check_no_timeouts(ctx: FaultContext, result: ScenarioResult) -> list[str]:
    if result.breaker_opens or result.l2_errors:
        return [f"stalls shorter than the timeout caused {result.l2_errors} errors, {result.breaker_opens} opens"]
    return []


def _debug_command_args() -> tuple[str, ...]:
    """Redis 7 refuses DEBUG unless started with this option; Redis 6.2 allows DEBUG and refuses the option."""
    try:
        banner = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (RedisServerNotFoundError, OSError, subprocess.SubprocessError):
        banner = ""
    major = re.search(r"v=(\d+)\.", banner)
    return ("--enable-debug-command", "local") if major is None or int(major.group(1)) >= 7 else ()


_DEBUG = _debug_command_args()

ENC_A = "fault-suite-encryption-key-A-0123456789"
ENC_B = "fault-suite-encryption-key-B-0123456789"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("healthy", "none (baseline)"),
        Scenario("kill", "SIGKILL 30% into the run, never back", during=_kill, at=0.3),
        Scenario("down-at-start", "Redis dead before the first request", prepare=_kill),
        Scenario("sigstop", "SIGSTOP 25% into the run, SIGCONT 0.4 s later", during=_pause_for(0.4), at=0.25),
        Scenario("restart", "restart with an empty dataset 40% into the run", during=_restart, at=0.4),
        Scenario(
            "slow-stalls",
            "DEBUG SLEEP 250 ms every 400 ms (stalls > timeout)",
            server_args=_DEBUG,
            during=_stalls(0.25, 0.15, 0.6),
            at=0.2,
        ),
        Scenario(
            "slow-under-timeout",
            "DEBUG SLEEP 40 ms every 100 ms (stalls < timeout)",
            server_args=_DEBUG,
            during=_stalls(0.04, 0.06, 0.6),
            at=0.2,
            check=_check_no_timeouts,
        ),
        Scenario(
            "maxmemory",
            "maxmemory 4mb + noeviction, full: writes fail with OOM",
            server_args=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"),
            prepare=_fill_memory,
            check=_check_no_breaker,
        ),
        Scenario(
            "corrupt-bytes",
            "random/truncated/flipped/pickle bytes under our keys",
            prepare=_plant_corrupt,
            check=_check_corrupt,
        ),
        Scenario(
            "forged-frames",
            "valid frames with a wrong answer, key_secret unknown",
            settings={"key_secret": "fault-suite-key-secret-1"},
            prepare=_plant_forged,
            check=_check_detected,
        ),
        Scenario(
            "other-encryption-key",
            "values encrypted with another key (and plaintext)",
            settings={"encryption_keys": [ENC_B]},
            seed_settings={"encryption_keys": [ENC_A]},
            prepare=_plant_plaintext,
            check=_check_detected,
        ),
    ]
}


# --------------------------------------------------------------------------------------------------------
# running a scenario
# --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    latency: float
    level: str  # "error" when the caller saw an exception
    correct: bool


def _drive(
    cores: Sequence[CacheCore],
    plan: Sequence[Sequence[int]],
    prompts: Sequence[str],
    expected: Mapping[str, str],
    base_url: str,
    interval: float,
    start: float,
    errors: list[str],
) -> list[list[_Record]]:
    """Run every thread's requests at a steady pace; returns each thread's records (a hung thread's are short)."""
    records: list[list[_Record]] = [[] for _ in plan]
    lock = threading.Lock()

    def caller(j: int) -> None:
        core = cores[j % len(cores)]
        out = records[j]
        offset = j * interval / len(plan)
        for i, idx in enumerate(plan[j]):
            delay = start + offset + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            request = request_for(prompts[idx])
            began = time.perf_counter()
            try:
                key = core.key_for(request)
                value, level = core.get_or_compute(key, functools.partial(ask, base_url, request))
            except Exception as exc:
                out.append(_Record(time.perf_counter() - began, "error", False))
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            out.append(_Record(time.perf_counter() - began, level, answer_text(value) == expected[prompts[idx]]))

    threads = [
        threading.Thread(target=caller, args=(j,), name=f"fault-caller-{j}", daemon=True) for j in range(len(plan))
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + (len(plan[0]) if plan else 0) * interval + 3 * LEASE_S + 30.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [list(r) for r in records]


def run_scenario(
    scenario: Scenario,
    *,
    provider: StandInProvider,
    prompts: Sequence[str],
    expected: Mapping[str, str],
    workload: Workload,
    workdir: Path,
    baseline_p99_ms: float | None,
) -> ScenarioResult:
    """Run one scenario against a fresh private Redis; never raises for a fault the cache mishandles (that is a
    figure), only when the scenario itself could not be set up."""
    with RedisServer(extra_args=list(scenario.server_args)) as server:
        settings = core_settings(server.url, **scenario.settings)
        seed_settings = core_settings(server.url, **(scenario.seed_settings or scenario.settings))
        with CacheCore(**seed_settings) as seeder:
            for prompt in prompts[: workload.warm]:
                request = request_for(prompt)
                seeder.get_or_compute(seeder.key_for(request), functools.partial(ask, provider.base_url, request))
            if not seeder.flush(10.0):
                raise RuntimeError("warming Redis did not finish")
        with CacheCore(**settings, invalidation_pubsub=False) as keyer:
            keys = [keyer.key_for(request_for(p)) for p in prompts]
        cores = [CacheCore(**settings) for _ in range(workload.cores)]
        ctx = FaultContext(server, workload, list(prompts), keys, cores, workdir, settings, threading.Event())
        try:
            if scenario.prepare is not None:
                scenario.prepare(ctx)
            provider.reset()
            errors: list[str] = []
            fault_errors: list[str] = []
            start = time.perf_counter() + 0.05

            def inject() -> None:
                assert scenario.during is not None
                delay = start + scenario.at * workload.duration - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    scenario.during(ctx)
                except Exception as exc:
                    fault_errors.append(f"injecting the fault failed: {type(exc).__name__}: {exc}")

            injector = threading.Thread(target=inject, name="fault-injector", daemon=True)
            if scenario.during is not None:
                injector.start()
            records = _drive(
                cores, workload.plan(), prompts, expected, provider.base_url, workload.interval, start, errors
            )
            seconds = time.perf_counter() - start
            ctx.stop.set()
            if scenario.during is not None:
                injector.join(30.0)
            upstream = provider.request_count
            for core in cores:
                core.flush(5.0)
            result = _summarize(scenario, workload, records, errors, upstream, cores, baseline_p99_ms, seconds)
            result.notes[:0] = ctx.notes
            result.failures += fault_errors
            if scenario.check is not None:
                result.failures += scenario.check(ctx, result)
            return result
        finally:
            ctx.stop.set()
            if server.paused:
                server.resume()
            for core in cores:
                core.close()


def _summarize(
    scenario: Scenario,
    workload: Workload,
    records: list[list[_Record]],
    errors: list[str],
    upstream: int,
    cores: Sequence[CacheCore],
    baseline_p99_ms: float | None,
    seconds: float,
) -> ScenarioResult:
    flat = [r for thread in records for r in thread]
    latencies = [r.latency * 1000 for r in flat]
    exceptions = sum(1 for r in flat if r.level == "error")
    answered = len(flat) - exceptions
    wrong = sum(1 for r in flat if r.level != "error" and not r.correct)
    requests = sum(len(p) for p in workload.plan())
    p99 = percentile(latencies, 0.99)
    added = None if baseline_p99_ms is None else p99 - baseline_p99_ms
    levels = dict(Counter(r.level for r in flat if r.level != "error"))
    result = ScenarioResult(
        name=scenario.name,
        fault=scenario.fault,
        requests=requests,
        answered=answered,
        exceptions=exceptions,
        wrong=wrong,
        lost=requests - len(flat),
        upstream_calls=upstream,
        p50_ms=round(percentile(latencies, 0.5), 2),
        p99_ms=round(p99, 2),
        max_ms=round(max(latencies, default=0.0), 2),
        added_p99_ms=None if added is None else round(added, 2),
        timeout_ms=REDIS_TIMEOUT_MS,
        seconds=round(seconds, 2),
        levels=levels,
        breaker_opens=sum(c.breakers["l2"].opened for c in cores if "l2" in c.breakers),
        l2_errors=sum(c.stats.tiers["l2"].errors for c in cores if "l2" in c.stats.tiers),
        corrupt=sum(c.stats.tiers["l2"].corrupt for c in cores if "l2" in c.stats.tiers),
        error_samples=sorted(set(errors))[:5],
    )
    if exceptions:
        result.failures.append(f"{exceptions} callers saw an exception")
    if wrong:
        result.failures.append(f"{wrong} wrong answers")
    if result.lost:
        result.failures.append(f"{result.lost} requests never answered (hung callers)")
    if added is not None and added > REDIS_TIMEOUT_MS:
        result.failures.append(
            f"p99 added latency {added:.0f} ms is over the {REDIS_TIMEOUT_MS} ms operation timeout "
            f"(max {result.max_ms:.0f} ms)"
        )
    return result


class FaultHarness:
    """A provider, the expected answers and the healthy baseline, shared by every scenario of one run."""

    def __init__(self, workload: Workload | None = None, *, provider_latency: float = 0.002) -> None:
        self.workload = workload or Workload()
        self.prompts = [prompt_for(i) for i in range(self.workload.keys)]
        self.provider = StandInProvider(latency=provider_latency)
        self.expected: dict[str, str] = {}
        self._baseline: ScenarioResult | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="dtc-faults-"))

    def __enter__(self) -> FaultHarness:
        self.expected = reference_answers(self.prompts)
        self.provider.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.provider.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def baseline(self) -> ScenarioResult:
        if self._baseline is None:
            self._baseline = self._run(SCENARIOS["healthy"], None)
            self._baseline.added_p99_ms = 0.0
        return self._baseline

    def run(self, name: str) -> ScenarioResult:
        if name == "healthy":
            return self.baseline()
        return self._run(SCENARIOS[name], self.baseline().p99_ms)

    def run_all(self, names: Sequence[str] | None = None) -> list[ScenarioResult]:
        return [self.run(name) for name in (names or list(SCENARIOS))]

    def _run(self, scenario: Scenario, baseline_p99_ms: float | None) -> ScenarioResult:
        workdir = self._workdir / scenario.name
        workdir.mkdir(parents=True, exist_ok=True)
        return run_scenario(
            scenario,
            provider=self.provider,
            prompts=self.prompts,
            expected=self.expected,
            workload=self.workload,
            workdir=workdir,
            baseline_p99_ms=baseline_p99_ms,
        )


def format_table(results: Sequence[ScenarioResult]) -> str:
    """The fault table as fixed-width text (what ``benchmarks/faults.py`` prints)."""
    header = [
        "scenario",
        "fault",
        "requests",
        "exceptions",
        "wrong",
        "lost",
        "p99 added ms",
        "upstream calls",
        "goal",
        "figures",
    ]
    rows = [header]
    for r in results:
        levels = " ".join(f"{k}={v}" for k, v in sorted(r.levels.items()))
        figures = f"{levels}; breaker opens {r.breaker_opens}; l2 errors {r.l2_errors}; corrupt {r.corrupt}"
        if r.notes:
            figures += "; " + "; ".join(r.notes)
        rows.append(
            [
                r.name,
                r.fault,
                str(r.requests),
                str(r.exceptions),
                str(r.wrong),
                str(r.lost),
                "-" if r.added_p99_ms is None else f"{r.added_p99_ms:.1f}",
                str(r.upstream_calls),
                "ok" if r.ok else "MISSED",
                figures,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(" | ".join([*cells, row[-1]]))
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 20)
    missed = [f"  {r.name}: {'; '.join(r.failures)}" for r in results if r.failures]
    footer = [
        "",
        f"p99 added = p99 latency of the run minus the healthy run's p99 "
        f"({next((r.p99_ms for r in results if r.name == 'healthy'), float('nan')):.1f} ms); "
        f"goal: <= redis_timeout_ms = {REDIS_TIMEOUT_MS} ms, 0 exceptions, 0 wrong, 0 lost.",
    ]
    if missed:
        footer += ["Goals missed:", *missed]
    return "\n".join(lines + footer)


# --------------------------------------------------------------------------------------------------------
# the soak: many processes and threads, Redis restarted mid-run
# --------------------------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    requests: int
    processes: int
    threads: int
    keys: int
    answered: int
    exceptions: int
    wrong: int
    lost: int
    upstream_calls: int
    levels: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    seconds: float
    restart_at_progress: float  # fraction of requests answered when the restart began
    restart_ms: float
    answered_before_restart: int
    answered_during_restart: int
    answered_after_restart: int
    breaker_opens: int
    l2_errors: int
    error_samples: list[str] = field(default_factory=list)
    wrong_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.wrong == 0
            and self.exceptions == 0
            and self.answered_before_restart > 0
            and self.answered_after_restart > 0
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _soak_worker(
    index: int,
    redis_url: str,
    base_url: str,
    prompts: list[str],
    expected: dict[str, str],
    count: int,
    threads: int,
    interval: float,
    settings: dict[str, Any],
    progress: Any,
    go: Any,
    results: Any,
) -> None:
    """One process of the soak: ``threads`` callers sharing one cache instance (spawned, so module-level)."""
    core = CacheCore(**core_settings(redis_url, **settings))
    core.key_for(request_for(prompts[0]))  # connect and subscribe before the clock starts
    results.put(("ready", index, None))
    if not go.wait(120):
        results.put(("done", index, {"error": "never told to start"}))
        return
    hot = max(1, len(prompts) // 10)
    shares = [count // threads + (1 if t < count % threads else 0) for t in range(threads)]
    records: list[list[tuple[float, float, str]]] = [[] for _ in range(threads)]
    errors: list[str] = []
    wrong: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def caller(t: int) -> None:
        rng = random.Random(f"soak-{index}-{t}")
        out = records[t]
        for i in range(shares[t]):
            delay = start + (i + t / threads) * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            idx = rng.randrange(hot) if rng.random() < 0.7 else rng.randrange(len(prompts))
            prompt = prompts[idx]
            request = request_for(prompt)
            began = time.perf_counter()
            try:
                key = core.key_for(request)
                value, level = core.get_or_compute(key, functools.partial(ask, base_url, request))
            except Exception as exc:
                level = "error"
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            else:
                if answer_text(value) != expected[prompt]:
                    with lock:
                        wrong.append(f"{prompt!r} -> {answer_text(value)!r} ({level})")
            out.append((time.time(), time.perf_counter() - began, level))
            with progress.get_lock():
                progress.value += 1

    pool = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(600)
    core.flush(5.0)
    payload = {
        "records": [r for rs in records for r in rs],
        "errors": errors,
        "wrong": wrong,
        "breaker_opens": sum(b.opened for b in core.breakers.values()),
        "l2_errors": core.stats.tiers["l2"].errors if "l2" in core.stats.tiers else 0,
    }
    core.close()
    results.put(("done", index, payload))


def run_soak(
    requests: int = 10_000,
    *,
    processes: int = 4,
    threads: int = 8,
    keys: int = 500,
    restart_at: float = 0.5,
    interval: float = 0.02,
    provider_latency: float = 0.002,
    memory_max_entries: int = 100,
) -> SoakResult:
    """``requests`` mixed requests over ``keys`` distinct ones from ``processes`` x ``threads`` callers, with
    the shared Redis restarted (empty) when ``restart_at`` of them have been answered.

    Every instance's memory tier holds only ``memory_max_entries``, so Redis keeps serving a good share of the
    hits all along (as with a key space larger than one worker's memory) and its restart matters.
    """
    prompts = [prompt_for(i, "soak") for i in range(keys)]
    expected = reference_answers(prompts)
    mp = multiprocessing.get_context("spawn")
    counts = [requests // processes + (1 if i < requests % processes else 0) for i in range(processes)]
    settings = {"memory_max_entries": memory_max_entries}
    with RedisServer() as server, StandInProvider(latency=provider_latency) as provider:
        progress = mp.Value("i", 0)
        go = mp.Event()
        results: Any = mp.Queue()
        procs = [
            mp.Process(
                target=_soak_worker,
                args=(
                    i,
                    server.url,
                    provider.base_url,
                    prompts,
                    expected,
                    counts[i],
                    threads,
                    interval,
                    settings,
                    progress,
                    go,
                    results,
                ),
                daemon=True,
            )
            for i in range(processes)
        ]
        for p in procs:
            p.start()
        try:
            payloads = _run_soak_processes(procs, server, go, progress, results, requests, restart_at)
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
        upstream = provider.request_count
    return _soak_summary(payloads, requests, processes, threads, keys, upstream)


def _run_soak_processes(
    procs: Sequence[Any],
    server: RedisServer,
    go: Any,
    progress: Any,
    results: Any,
    requests: int,
    restart_at: float,
) -> dict[str, Any]:
    ready = 0
    give_up = time.monotonic() + 120
    while ready < len(procs):
        try:
            kind, _index, _ = results.get(timeout=0.5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if not p.is_alive()]
            if dead or time.monotonic() > give_up:
                raise RuntimeError(f"soak workers did not start (exit codes {dead})") from None
            continue
        if kind == "ready":
            ready += 1
    started = time.perf_counter()
    go.set()
    threshold = int(requests * restart_at)
    deadline = time.monotonic() + 600
    while progress.value < threshold and time.monotonic() < deadline:
        if not any(p.is_alive() for p in procs):
            break
        time.sleep(0.005)
    restart_began_progress = progress.value
    restart_began = time.time()
    t0 = time.perf_counter()
    server.restart()
    restart_ms = (time.perf_counter() - t0) * 1000
    restart_ended = time.time()
    payloads: list[dict[str, Any]] = []
    while len(payloads) < len(procs):
        try:
            kind, _index, payload = results.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if kind == "done":
            payloads.append(payload)
    return {
        "payloads": payloads,
        "seconds": time.perf_counter() - started,
        "restart_at_progress": restart_began_progress / requests if requests else 0.0,
        "restart_ms": restart_ms,
        "restart_began": restart_began,
        "restart_ended": restart_ended,
    }


def _soak_summary(
    run: dict[str, Any], requests: int, processes: int, threads: int, keys: int, upstream: int
) -> SoakResult:
    records = [tuple(r) for p in run["payloads"] for r in p.get("records", [])]
    errors = [e for p in run["payloads"] for e in p.get("errors", [])]
    wrong = [w for p in run["payloads"] for w in p.get("wrong", [])]
    latencies = [r[1] * 1000 for r in records]
    levels = Counter(str(r[2]) for r in records)
    exceptions = levels.pop("error", 0)
    began, ended = run["restart_began"], run["restart_ended"]
    return SoakResult(
        requests=requests,
        processes=processes,
        threads=threads,
        keys=keys,
        answered=len(records) - exceptions,
        exceptions=exceptions,
        wrong=len(wrong),
        lost=requests - len(records) + exceptions,
        upstream_calls=upstream,
        levels=dict(levels),
        p50_ms=round(percentile(latencies, 0.5), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(max(latencies, default=0.0), 2),
        seconds=round(run["seconds"], 2),
        restart_at_progress=round(run["restart_at_progress"], 3),
        restart_ms=round(run["restart_ms"], 1),
        answered_before_restart=sum(1 for r in records if r[0] < began),
        answered_during_restart=sum(1 for r in records if began <= r[0] <= ended),
        answered_after_restart=sum(1 for r in records if r[0] > ended),
        breaker_opens=sum(int(p.get("breaker_opens", 0)) for p in run["payloads"]),
        l2_errors=sum(int(p.get("l2_errors", 0)) for p in run["payloads"]),
        error_samples=sorted(set(errors))[:5],
        wrong_samples=wrong[:5],
    )


def format_soak(result: SoakResult) -> str:
    levels = " ".join(f"{k}={v}" for k, v in sorted(result.levels.items()))
    return "\n".join(
        [
            f"soak: {result.requests} requests over {result.keys} distinct, {result.processes} processes x "
            f"{result.threads} threads, Redis restarted (empty) at {result.restart_at_progress:.0%} "
            f"(took {result.restart_ms:.0f} ms)",
            f"  answered {result.answered}, lost {result.lost}, wrong {result.wrong}, "
            f"exceptions {result.exceptions}  -> {'ok' if result.ok else 'MISSED'}",
            f"  answered before / during / after the restart: {result.answered_before_restart} / "
            f"{result.answered_during_restart} / {result.answered_after_restart}",
            f"  upstream calls {result.upstream_calls}; levels {levels}",
            f"  latency p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, max {result.max_ms:.1f} ms; "
            f"breaker opens {result.breaker_opens}, l2 errors {result.l2_errors}; {result.seconds:.1f} s",
        ]
        + ([f"  errors: {result.error_samples}"] if result.error_samples else [])
        + ([f"  wrong: {result.wrong_samples}"] if result.wrong_samples else [])
    )
