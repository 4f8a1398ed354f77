"""``dspy-tiered-cache`` (also ``python -m dspy_tiered_cache``): look after the shared cache from a shell.

Subcommands:

* ``stats``     what the shared tiers hold now: entries and bytes per namespace in the disk file and in Redis
                (a bounded SCAN), tier health and a settings summary. Hit/miss counters live inside each
                process (``core.stats``, :func:`dspy_tiered_cache.report.report`): a separate command cannot see
                them, so it does not pretend to.
* ``clear``     remove every entry under our key prefix (asks first; ``--yes``), or with ``--namespace NS``
                invalidate one namespace in O(1).
* ``config``    the effective settings, secrets masked, and where each value came from.
* ``health``    each configured tier: reachable, latency, version. Exit code 1 when one is down.
* ``warm``      fill the cache from a JSONL file of requests through LiteLLM; resumable (cached requests are
                skipped), with a concurrency limit and a progress line.
* ``benchmark`` hit, miss and write latency per tier on this machine.
* ``demo``      a DSPy program run twice through the cache (no Redis or API key needed).

Global options (``--redis-url``, ``--disk-path``, ``--namespace``) override ``DSPY_TIERED_CACHE_*`` env vars and
may be given before or after the subcommand. A user's mistake (a bad setting, an unreachable Redis, a missing
file) is one line on stderr and a non-zero exit, never a traceback (``-v`` shows tracebacks of real bugs).

The quick commands (stats, clear, config, health) never import LiteLLM or DSPy, which take seconds to load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dspy_tiered_cache import __version__
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.report import format_table
from dspy_tiered_cache.settings import ENV_PREFIX, CacheSettings, ConfigError, load_settings, mask_url
from dspy_tiered_cache.tiers.base import Tier, TierHealth
from dspy_tiered_cache.tiers.disk import DiskTier

PROG = "dspy-tiered-cache"
#: Keys a ``stats`` SCAN of Redis looks at before it stops and says so (SCAN is O(N) over the whole keyspace).
DEFAULT_SCAN_LIMIT = 100_000

log = logging.getLogger("dspy_tiered_cache")


class CliError(Exception):
    """A failure to report as one line on stderr with a non-zero exit code (no traceback)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------------- helpers


def _out(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def _json(data: Any) -> None:
    _out(json.dumps(data, indent=2, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop always returns


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def settings_from_args(args: argparse.Namespace, **extra: Any) -> CacheSettings:
    """Env settings with the global options on top (``ConfigError`` names the bad option or env var)."""
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    if getattr(args, "disk_path", None):
        overrides["disk_path"] = Path(args.disk_path).expanduser()
    if getattr(args, "namespace", None):
        overrides["namespace"] = args.namespace
    return load_settings(**overrides)


def admin_core(args: argparse.Namespace) -> CacheCore:
    """A core over the shared tiers only: a memory tier is private to each process, so there is nothing to
    inspect or clear in ours; writes are synchronous so a command's effect has landed when it returns."""
    return CacheCore(settings_from_args(args), memory=False, write_behind=False, telemetry=False)


def _shared_tiers(core: CacheCore) -> list[Tier]:
    return [t for t in core.tiers if t.name != "l1"]


def _where(tier: Tier) -> str:
    if tier.name == "l1":
        return "in-process memory"
    path = getattr(tier, "path", None)
    if path is not None:
        return str(path)
    url = getattr(tier, "url", None)
    return mask_url(url) or "" if isinstance(url, str) else repr(tier)


def _health(tier: Tier) -> TierHealth:
    """The tier's health, without creating a disk file that does not exist yet (a read must not write)."""
    if isinstance(tier, DiskTier) and not tier.path.exists():
        problem = tier.unusable()
        if problem is not None:  # nothing could ever be saved there: that is not "ok"
            return TierHealth(tier.name, False, None, None, detail=problem)
        return TierHealth(tier.name, True, None, f"sqlite {sqlite3.sqlite_version}", detail="no file yet")
    return tier.health()


def _require_healthy(core: CacheCore, action: str) -> list[TierHealth]:
    """Refuse to act on a cache whose configured tier is down: the action would silently miss that tier."""
    healths = [_health(t) for t in _shared_tiers(core)]
    for h in healths:
        if not h.ok:
            raise CliError(f"cannot {action}: tier {h.name} is unreachable ({_one_line(h.detail)})")
    return healths


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not _isatty(sys.stdin):  # a terminal echoes the answer and its newline; piped input does not
        print(answer.strip(), file=sys.stderr, flush=True)
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed, nothing changed (pass --yes to skip the question)")


# -------------------------------------------------------------------------------------------------- stats


def disk_contents(path: Path, prefix: str) -> dict[str, Any]:
    """Entries and bytes per namespace and generation in the SQLite file, read-only (never creates it)."""
    info: dict[str, Any] = {"tier": "disk", "where": str(path), "namespaces": [], "scanned": 0, "truncated": False}
    if not path.exists():
        info["note"] = "no file yet (created on the first write)"
        return info
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise CliError(f"cannot read the disk cache {path}: {exc}") from None
    entry_prefix = f"{prefix}:e:"
    try:
        rows = conn.execute(
            """
            WITH k AS (
                SELECT substr(key, :start) AS rest, size, expires_at FROM entries
                WHERE substr(key, 1, :len) = :prefix
            ), s AS (
                SELECT substr(rest, 1, instr(rest, ':') - 1) AS ns,
                       substr(rest, instr(rest, ':') + 1) AS rest2, size, expires_at FROM k
            )
            SELECT ns, CAST(substr(rest2, 1, instr(rest2, ':') - 1) AS INTEGER) AS gen, COUNT(*), SUM(size),
                   SUM(CASE WHEN expires_at IS NOT NULL AND expires_at <= :now THEN 1 ELSE 0 END),
                   SUM(CASE WHEN expires_at IS NOT NULL AND expires_at <= :now THEN size ELSE 0 END)
            FROM s GROUP BY ns, gen
            """,
            {"start": len(entry_prefix) + 1, "len": len(entry_prefix), "prefix": entry_prefix, "now": time.time()},
        ).fetchall()
        generations = dict(conn.execute("SELECT namespace, generation FROM generations").fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            info["note"] = "empty (no tables yet)"
            return info
        raise CliError(f"cannot read the disk cache {path}: {exc}") from None
    finally:
        conn.close()
    groups = [
        (str(ns), int(gen or 0), int(n), int(size or 0), int(exp or 0), int(exp_size or 0))
        for ns, gen, n, size, exp, exp_size in rows
    ]
    info["namespaces"] = _summarize(groups, {str(k): int(v) for k, v in generations.items()})
    info["scanned"] = sum(g[2] for g in groups)
    return info


def redis_contents(tier: Any, prefix: str, limit: int) -> dict[str, Any]:
    """Entries and bytes per namespace in Redis from a SCAN that stops after ``limit`` keys (and says so)."""
    client = tier.client
    info: dict[str, Any] = {"tier": tier.name, "where": mask_url(tier.url), "namespaces": [], "truncated": False}
    keys: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:e:*", count=1000):
        if len(keys) >= limit:
            info["truncated"] = True
            break
        keys.append(key)
    sizes: list[int] = []
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.strlen(key)
        sizes.extend(int(s or 0) for s in pipe.execute())
    counts: dict[tuple[str, int], list[int]] = {}
    skip = len(prefix) + 3
    for raw, size in zip(keys, sizes, strict=True):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        parts = text[skip:].split(":")
        if len(parts) != 3:
            continue
        ns, gen = parts[0], int(parts[1]) if parts[1].isdigit() else 0
        slot = counts.setdefault((ns, gen), [0, 0])
        slot[0] += 1
        slot[1] += size + len(raw)
    generations: dict[str, int] = {}
    for ns in {ns for ns, _ in counts}:
        raw_gen = client.get(f"{prefix}:gen:{ns}")
        generations[ns] = int(raw_gen) if raw_gen else 0
    groups = [(ns, gen, n, size, 0, 0) for (ns, gen), (n, size) in counts.items()]
    info["namespaces"] = _summarize(groups, generations)
    info["scanned"] = len(keys)
    return info


def _summarize(
    groups: list[tuple[str, int, int, int, int, int]], generations: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Fold (namespace, generation) groups into per-namespace rows: live entries are those of the current
    generation and not expired; the rest is unreachable (invalidated or expired) until ``clear`` or eviction."""
    out: dict[str, dict[str, Any]] = {}
    for ns, gen, n, size, expired, expired_size in groups:
        current = generations.get(ns, 0)
        row = out.setdefault(
            ns,
            {
                "namespace": ns,
                "generation": current,
                "entries": 0,
                "bytes": 0,
                "unreachable": 0,
                "unreachable_bytes": 0,
            },
        )
        if gen >= current:
            row["entries"] += n - expired
            row["bytes"] += size - expired_size
            row["unreachable"] += expired
            row["unreachable_bytes"] += expired_size
        else:
            row["unreachable"] += n
            row["unreachable_bytes"] += size
    return sorted(out.values(), key=lambda r: r["namespace"])


def _settings_summary(s: CacheSettings) -> dict[str, Any]:
    return {
        "enabled": s.enabled,
        "namespace": s.namespace,
        "key_prefix": s.key_prefix,
        "ttl": s.ttl,
        "redis_url": mask_url(s.redis_url_value),
        "disk_path": str(s.disk_path) if s.uses_disk else None,
        "memory_max_entries": s.memory_max_entries if s.memory else 0,
        "key_secret": "set" if s.key_secret is not None else None,
    }


def _health_dict(h: TierHealth) -> dict[str, Any]:
    return {"tier": h.name, "ok": h.ok, "latency_ms": h.latency_ms, "version": h.version, "detail": h.detail}


def cmd_stats(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        s = core.settings
        healths = [_health(t) for t in _shared_tiers(core)]
        contents: list[dict[str, Any]] = []
        for tier, health in zip(_shared_tiers(core), healths, strict=True):
            if not health.ok:
                raise CliError(f"tier {tier.name} is unreachable: {_one_line(health.detail)}")
            if tier.name == "disk":
                contents.append(disk_contents(Path(getattr(tier, "path", s.disk_path)), s.key_prefix))
            else:
                contents.append(redis_contents(tier, s.key_prefix, args.scan_limit))
        fleet_data = _read_fleet(core, args)
    data = {
        # The user's settings, what `config` shows: this admin process runs without a memory tier of its own.
        "settings": _settings_summary(settings_from_args(args)),
        "health": [_health_dict(h) for h in healths],
        "tiers": contents,
        "fleet": fleet_data,
        "note": "fleet: what every process added to the shared tier (hour buckets); one process's own counters: "
        "core.stats / dspy_tiered_cache.report.report(core)",
    }
    if args.format == "json":
        _json(data)
        return 0
    _out(f"{PROG} stats — what the shared tiers hold now (key prefix {s.key_prefix!r})")
    _out()
    _out(_health_table(healths))
    for info in contents:
        _out()
        head = f"{info['tier']} · {info['where']}"
        if info.get("note"):
            _out(f"{head}: {info['note']}")
            continue
        rows = [
            [
                r["namespace"] + (" *" if r["namespace"] == s.namespace else ""),
                str(r["generation"]),
                f"{r['entries']:,}",
                human_bytes(r["bytes"]),
                f"{r['unreachable']:,}",
                human_bytes(r["unreachable_bytes"]),
            ]
            for r in info["namespaces"]
        ]
        total = [
            sum(r[k] for r in info["namespaces"]) for k in ("entries", "bytes", "unreachable", "unreachable_bytes")
        ]
        rows.append(["(total)", "", f"{total[0]:,}", human_bytes(total[1]), f"{total[2]:,}", human_bytes(total[3])])
        _out(head)
        _out(
            format_table(
                ["namespace", "generation", "entries", "size", "unreachable", "unreachable size"],
                rows,
                align_right={1, 2, 3, 4, 5},
            )
        )
        if info.get("truncated"):
            _out(f"(SCAN stopped after {info['scanned']:,} keys: raise --scan-limit to count them all)")
    _out()
    _out(f"* default namespace. 'unreachable' = invalidated or expired entries; `{PROG} clear` reclaims them.")
    _print_fleet(fleet_data, args.since)
    return 0


def _read_fleet(core: CacheCore, args: argparse.Namespace) -> dict[str, Any] | None:
    from dspy_tiered_cache.fleet import read_fleet

    try:
        return read_fleet(core, since=args.since, namespace=args.namespace or None)
    except Exception as exc:
        raise CliError(f"cannot read the fleet counters: {_one_line(str(exc))}") from None


def _print_fleet(fleet: dict[str, Any] | None, since: str) -> None:
    from dspy_tiered_cache.report import fleet_tables

    _out()
    if fleet is None:
        _out("fleet: no shared tier (memory only), so no fleet totals; counters live in each process")
        return
    scope = f" · namespace {fleet['namespace']!r}" if fleet.get("namespace") else ""
    _out(f"fleet · every process, last {since} (hour buckets) · {fleet['store']}{scope}")
    _out(fleet_tables(fleet))


def _health_table(healths: list[TierHealth]) -> str:
    rows = [
        [h.name, "ok" if h.ok else "DOWN", _ms(h.latency_ms), h.version or "-", _one_line(h.detail)] for h in healths
    ]
    return format_table(["tier", "status", "latency", "version", "detail"], rows)


# -------------------------------------------------------------------------------------------------- clear


def cmd_clear(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        s = core.settings
        _require_healthy(core, "clear the cache")
        targets = ", ".join(f"{t.name} ({_where(t)})" for t in _shared_tiers(core))
        if not targets:
            raise CliError("no shared tier is configured (disk is off and no Redis URL is set): nothing to clear")
        if args.namespace:
            _confirm(f"Invalidate namespace {args.namespace!r} in {targets}?", args.yes)
            generation = core.invalidate_namespace(args.namespace)
            _out(
                f"namespace {args.namespace!r} invalidated (generation {generation}): its entries are unreachable "
                f"now; processes re-read generations within {s.generation_refresh_s:g} s. "
                f"`{PROG} clear` reclaims their space."
            )
            return 0
        _confirm(f"Remove every cached entry under key prefix {s.key_prefix!r} from {targets}?", args.yes)
        removed = core.clear()
    _out(f"removed {removed:,} entries from {targets}")
    _out(
        "processes running now keep what their own memory tier holds; `clear --namespace NS` reaches them too "
        "(they re-read namespace generations)"
    )
    return 0


# ------------------------------------------------------------------------------------------------- config


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    masked = settings.masked()
    given = {"redis_url": args.redis_url, "disk_path": args.disk_path, "namespace": args.namespace}
    env_upper = {k.upper() for k in os.environ}
    sources: dict[str, str] = {}
    for field in masked:
        if given.get(field):
            sources[field] = "command line"
        elif _env_name(field) in env_upper:
            sources[field] = f"env {_env_name(field)}"
        else:
            sources[field] = "default"
    tiers = (
        (["memory"] if settings.memory and settings.memory_max_entries > 0 else [])
        + (["disk"] if settings.uses_disk else [])
        + (["redis"] if settings.redis_url is not None else [])
    )
    if args.format == "json":
        _json({"settings": masked, "sources": sources, "tiers": tiers})
        return 0
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v, sources[k]] for k, v in masked.items()]
    _out(format_table(["setting", "value", "from"], rows))
    _out()
    _out(f"tiers: {' -> '.join(tiers) if tiers else '(none: every lookup misses)'}")
    return 0


# ------------------------------------------------------------------------------------------------- health


def cmd_health(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        healths = [_health(t) for t in _shared_tiers(core)]
    down = [h for h in healths if not h.ok]
    if args.format == "json":
        _json({"ok": not down, "tiers": [_health_dict(h) for h in healths]})
    else:
        if healths:
            _out(_health_table(healths))
        else:
            _out("no shared tier configured (memory only)")
        _out("memory (l1) lives inside each process: nothing to check from here")
    for h in down:
        print(f"{PROG}: tier {h.name} is down: {_one_line(h.detail)}", file=sys.stderr)
    return 1 if down else 0


# --------------------------------------------------------------------------------------------------- warm


def _setdefault_litellm_env() -> None:
    # Without this LiteLLM retries a network fetch of its price map for seconds on import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def load_requests(path: str, model: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Read and check every line first: a typo on line 900 should fail before 899 paid calls, not after."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise CliError(f"no such file: {path}", 2) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}", 2) from None
    requests: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}:{lineno}: not JSON ({exc.msg})", 2) from None
        if not isinstance(data, dict):
            raise CliError(f"{path}:{lineno}: each line must be a JSON object (a LiteLLM request)", 2)
        if "prompt" in data and "messages" not in data:
            prompt = data.pop("prompt")
            if not isinstance(prompt, str):
                raise CliError(f'{path}:{lineno}: "prompt" must be a string', 2)
            data["messages"] = [{"role": "user", "content": prompt}]
        if "messages" not in data and "input" not in data:
            raise CliError(
                f'{path}:{lineno}: give "messages" (chat), "prompt" (one user message) or "input" (embeddings)', 2
            )
        data.setdefault("model", model)
        if not data["model"]:
            raise CliError(f'{path}:{lineno}: no model: add "model" to the line or pass --model', 2)
        if data.get("stream"):
            raise CliError(f'{path}:{lineno}: "stream" requests are not warmed (the answer is the same: drop it)', 2)
        requests.append((lineno, data))
    if not requests:
        raise CliError(f"{path}: no requests in the file", 2)
    return requests


class Progress:
    """One status line on stderr, redrawn in place on a terminal; silent otherwise (logs stay clean)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, done: int, skipped: int, warmed: int, failed: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        with self._lock:
            if not final and now - self._last < 0.1:
                return
            self._last = now
            width = 24
            filled = int(width * done / self.total) if self.total else width
            rate = warmed / (now - self.started) if now > self.started else 0.0
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}  cached {skipped}  "
                f"new {warmed}  failed {failed}  {rate:.1f} calls/s"
            )
            sys.stderr.write(line + ("\n" if final else ""))
            sys.stderr.flush()


def cmd_warm(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", 2)
    if args.max_failures < 1:
        raise CliError("--max-failures must be at least 1", 2)
    requests = load_requests(args.file, args.model)
    settings = settings_from_args(args, memory=False)
    _preflight(requests, args.api_base, None)  # before LiteLLM's import (seconds on a busy machine)
    _setdefault_litellm_env()
    import litellm

    from dspy_tiered_cache.integrations.litellm import TieredCache

    litellm.suppress_debug_info = True
    _preflight(requests, args.api_base, litellm)
    core = CacheCore(settings)
    try:
        _require_healthy(core, "warm the cache")
        cache = TieredCache(core=core)
        previous, litellm.cache = litellm.cache, cache
        try:
            return _warm(args, requests, cache, core, litellm)
        finally:
            litellm.cache = previous
            core.flush(30.0)
    finally:
        core.close()


#: Where a provider answers when a request names no api_base (only those whose default we know).
_DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
_CONNECT_TIMEOUT_S = 3.0
#: Endpoints this process already reached (the check runs before and after LiteLLM's import).
_REACHED: set[str] = set()


#: The key variable of the providers most warm runs use, checked before LiteLLM is imported (the others are
#: checked with LiteLLM's own ``validate_environment`` once it is).
_KEY_VARIABLES = {"openai/": "OPENAI_API_KEY", "anthropic/": "ANTHROPIC_API_KEY"}


def _check_keys(requests: list[tuple[int, dict[str, Any]]], api_base: str | None, litellm: Any) -> None:
    """Without a key every call fails the same way, each after LiteLLM's retries: that used to take minutes and
    print the same error five times. A self-hosted endpoint (``api_base``) may need no key at all."""
    checked: set[str] = set()
    for lineno, request in requests:
        model = str(request["model"])
        if model in checked or request.get("api_base") or api_base or request.get("api_key"):
            continue
        checked.add(model)
        known = next((var for prefix, var in _KEY_VARIABLES.items() if model.startswith(prefix)), None)
        if known is not None:
            missing = None if os.environ.get(known) else known
        elif litellm is not None:
            check = litellm.validate_environment(model=model)
            missing = None if check.get("keys_in_environment") else (
                ", ".join(check.get("missing_keys") or []) or "the provider's API key"
            )  # fmt: skip
        else:
            continue
        if missing:
            raise CliError(f"line {lineno}: model {model} needs {missing} in the environment (or pass --api-base)")


def _preflight(requests: list[tuple[int, dict[str, Any]]], api_base: str | None, litellm: Any) -> None:
    """Check credentials and endpoints before the first paid call."""
    _check_keys(requests, api_base, litellm)
    endpoints: dict[str, str] = {}
    checked: set[tuple[str, str | None]] = set()
    for _, request in requests:
        model = str(request["model"])
        base = request.get("api_base") or api_base
        if (model, base) in checked:
            continue
        checked.add((model, base))
        if not base:
            provider = model.split("/", 1)[0] if "/" in model else None
            if provider not in _DEFAULT_ENDPOINTS and litellm is not None:
                try:
                    provider = litellm.get_llm_provider(model=model)[1]
                except Exception:
                    provider = None
            base = _DEFAULT_ENDPOINTS.get(str(provider))
        if base and str(base) not in _REACHED:
            endpoints.setdefault(str(base), model)
    for base in endpoints:
        problem = _unreachable(base)
        if problem:
            raise CliError(f"cannot warm: endpoint {mask_url(base)} is unreachable ({problem})")
        _REACHED.add(base)


def _unreachable(url: str) -> str | None:
    """Why a TCP connection to ``url``'s host cannot be opened within a few seconds (None: it can)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname
    if not host:
        return "no host in the URL"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except (OSError, ValueError) as exc:
        return _one_line(str(exc)) or type(exc).__name__


def _warm(
    args: argparse.Namespace, requests: list[tuple[int, dict[str, Any]]], cache: Any, core: CacheCore, litellm: Any
) -> int:
    todo: list[tuple[int, dict[str, Any]]] = []
    skipped = 0
    for lineno, request in requests:
        call = dict(request)
        if args.api_base and "api_base" not in call:
            call["api_base"] = args.api_base
        if core.get(cache.get_cache_key(**call)) is not None:
            skipped += 1
        else:
            todo.append((lineno, call))
    progress = Progress(len(requests), enabled=not args.no_progress and sys.stderr.isatty())
    warmed = failed = 0
    errors: list[str] = []
    started = time.perf_counter()

    def one(call: dict[str, Any]) -> None:
        options = {"caching": True, "num_retries": args.retries}
        if args.timeout:
            options["timeout"] = args.timeout
        if "input" in call and "messages" not in call:
            litellm.embedding(**{**options, **call})
        else:
            litellm.completion(**{**options, **call})

    progress.update(skipped, skipped, 0, 0)
    consecutive = 0
    stopped: str | None = None
    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="dtc-warm") as pool:
        futures = {pool.submit(one, call): lineno for lineno, call in todo}
        for future in as_completed(futures):
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                warmed += 1
                consecutive = 0
            else:
                failed += 1
                consecutive += 1
                line = f"line {futures[future]}: {type(exc).__name__}: {_one_line(str(exc))[:300]}"
                if len(errors) < 5:
                    errors.append(line)
                if stopped is None and consecutive >= args.max_failures:
                    # The same error N times in a row is the provider or the credentials, not the requests.
                    stopped = f"stopped after {consecutive} consecutive failures (last: {line})"
                    for pending in futures:
                        pending.cancel()
            progress.update(skipped + warmed + failed, skipped, warmed, failed)
    core.flush(30.0)
    progress.update(skipped + warmed + failed, skipped, warmed, failed, final=True)
    elapsed = time.perf_counter() - started
    _out(
        f"warmed {warmed} new, {skipped} already cached, {failed} failed of {len(requests)} requests in {elapsed:.1f} s"
    )
    if stopped is not None:
        print(f"{PROG}: error: warm {stopped}", file=sys.stderr)
        return 1
    for line in errors:
        print(f"{PROG}: warm: {line}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} requests failed; run the same command again to retry only those", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- benchmark


def _value_of_size(size: int) -> dict[str, Any]:
    """A chat-completion-shaped value of about ``size`` bytes of JSON (words, so it compresses like text)."""
    words = ("the", "cache", "serves", "repeated", "prompts", "from", "memory", "disk", "or", "redis", "not", "model")
    text: list[str] = []
    length = 0
    i = 0
    while length < max(16, size - 300):
        word = f"{words[i % len(words)]}{i % 97}"
        text.append(word)
        length += len(word) + 1
        i += 1
    return {
        "id": "chatcmpl-benchmark",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": " ".join(text)}}],
        "usage": {"prompt_tokens": 180, "completion_tokens": length // 4, "total_tokens": 180 + length // 4},
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6, 1)

    return {"p50_us": pct(0.5), "p99_us": pct(0.99), "mean_us": round(sum(ordered) / len(ordered) * 1e6, 1)}


def _bench_tier(settings: CacheSettings, tier: Tier, count: int, value: Any, namespace: str) -> dict[str, Any]:
    core = CacheCore(settings, tiers=[tier], write_behind=False, telemetry=False, namespace=namespace)
    keys = [core.key_for({"benchmark": i}) for i in range(count)]
    absent = [core.key_for({"absent": i}) for i in range(count)]
    writes, hits, misses = [], [], []
    try:
        for key in keys:
            t = time.perf_counter()
            core.set(key, value)
            writes.append(time.perf_counter() - t)
        for key in keys:
            t = time.perf_counter()
            hit = core.get(key)
            hits.append(time.perf_counter() - t)
            if hit is None:
                raise CliError(f"benchmark: tier {tier.name} lost a value it was just given ({_where(tier)})")
        for key in absent:
            t = time.perf_counter()
            core.get(key)
            misses.append(time.perf_counter() - t)
    finally:
        for key in keys:
            core.delete(key)
        if tier.name != "l2":
            core.close()
    return {
        "tier": tier.name,
        "where": _where(tier),
        "write": _percentiles(writes),
        "hit": _percentiles(hits),
        "miss": _percentiles(misses),
    }


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.count < 1 or args.value_bytes < 1:
        raise CliError("--count and --value-bytes must be positive", 2)
    from dspy_tiered_cache.tiers.disk import DiskTier
    from dspy_tiered_cache.tiers.memory import MemoryTier

    settings = settings_from_args(args)
    value = _value_of_size(args.value_bytes)
    namespace = "dtc-benchmark"
    results: list[dict[str, Any]] = []
    base = CacheCore(settings, memory=False, write_behind=False, telemetry=False)
    try:
        _require_healthy(base, "benchmark")
        codec = base.codec
        results.append(_bench_tier(settings, MemoryTier(), args.count, value, namespace))
        # The disk tier is measured on a scratch file next to the configured one (same filesystem), so the
        # benchmark never writes into the real cache.
        disk_dir = settings.disk_path.expanduser().parent
        try:
            disk_dir.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.TemporaryDirectory(prefix="dtc-benchmark-", dir=disk_dir)
        except OSError:
            scratch = tempfile.TemporaryDirectory(prefix="dtc-benchmark-")
        with scratch as tmp:
            results.append(
                _bench_tier(settings, DiskTier(Path(tmp) / "bench.sqlite3", codec=codec), args.count, value, namespace)
            )
        for tier in base.tiers:
            if tier.name == "l2":
                results.append(_bench_tier(settings, tier, args.count, value, namespace))
    finally:
        base.close()
    payload = len(json.dumps(value))
    if args.format == "json":
        _json({"count": args.count, "value_bytes": payload, "results": results})
        return 0
    _out(f"{PROG} benchmark: {args.count} writes, hits and misses per tier, {payload:,}-byte JSON values")
    _out("(times include key lookup, integrity check, decompression and JSON decoding of a fresh object)")
    _out()
    rows = []
    for r in results:
        rows.append(
            [
                r["tier"],
                *(f"{r[op]['p50_us']:.1f}" for op in ("hit", "miss", "write")),
                *(f"{r[op]['p99_us']:.1f}" for op in ("hit", "miss", "write")),
                r["where"],
            ]
        )
    _out(
        format_table(
            ["tier", "hit p50 µs", "miss p50", "write p50", "hit p99", "miss p99", "write p99", "where"],
            rows,
            align_right={1, 2, 3, 4, 5, 6},
        )
    )
    if not any(r["tier"] == "l2" for r in results):
        _out()
        _out("no Redis configured: pass --redis-url redis://host:6379/0 to measure it too")
    return 0


# --------------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from dspy_tiered_cache.demo import DEMO_NAMESPACE, DemoError, run_demo

    if args.namespace:
        raise CliError(
            f"demo always uses its own namespace {DEMO_NAMESPACE!r} (it empties it at start); drop --namespace", 2
        )
    try:
        return run_demo(
            redis_url=args.redis_url,
            disk_path=Path(args.disk_path).expanduser() if args.disk_path else None,
            model=args.model,
            api_base=args.api_base,
            latency=args.latency,
            keep=args.keep,
        )
    except DemoError as exc:
        raise CliError(str(exc)) from None


# ------------------------------------------------------------------------------------------------- parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The same options on the main parser and every subcommand, so they may come before or after it.
    On subcommands the default is SUPPRESS, so a value given before the subcommand is not overwritten."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("cache options (override DSPY_TIERED_CACHE_* env vars)")
    group.add_argument(
        "--redis-url",
        default=default,
        metavar="URL",
        help="Redis/Valkey URL of the shared tier (env DSPY_TIERED_CACHE_REDIS_URL)",
    )
    group.add_argument(
        "--disk-path",
        default=default,
        metavar="PATH",
        help="SQLite file of the disk tier (env DSPY_TIERED_CACHE_DISK_PATH)",
    )
    group.add_argument(
        "--namespace",
        default=default,
        metavar="NS",
        help="namespace (env DSPY_TIERED_CACHE_NAMESPACE); `clear --namespace NS` invalidates NS",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log details and show tracebacks of unexpected errors",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, clear, warm and benchmark the dspy_tiered_cache tiers (memory, disk, Redis/Valkey).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = command(
        "stats", "fleet hits and savings, entries and bytes per namespace in the shared tiers, health", cmd_stats
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--since", choices=("1h", "24h", "7d"), default="24h", help="fleet totals over this window (default 24h)"
    )
    p.add_argument(
        "--scan-limit",
        type=int,
        default=DEFAULT_SCAN_LIMIT,
        metavar="N",
        help=f"stop a Redis SCAN after N keys (default {DEFAULT_SCAN_LIMIT:,})",
    )

    p = command(
        "clear", "remove every entry under our key prefix, or invalidate one namespace (--namespace)", cmd_clear
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = command("config", "effective settings (secrets masked) and where each came from", cmd_config)
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command("health", "each configured tier: reachable, latency, version (exit 1 if one is down)", cmd_health)
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command("warm", "fill the cache from a JSONL file of LiteLLM requests (resumable)", cmd_warm)
    p.add_argument(
        "file", help='JSONL file, one request per line ({"model", "messages"|"prompt"|"input", ...}); "-" reads stdin'
    )
    p.add_argument("--model", help="model for lines that name none (e.g. openai/gpt-4o-mini)")
    p.add_argument("--api-base", help="endpoint for lines that name none (keys come from the usual env vars)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="calls in flight at once (default 4)")
    p.add_argument("--retries", type=int, default=2, metavar="N", help="retries per failed call (default 2)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds per call")
    p.add_argument(
        "--max-failures", type=int, default=3, metavar="N", help="stop after N consecutive failed calls (default 3)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line")

    p = command("benchmark", "hit, miss and write latency of each tier on this machine", cmd_benchmark)
    p.add_argument("--count", type=int, default=300, metavar="N", help="operations per measurement (default 300)")
    p.add_argument("--value-bytes", type=int, default=2000, metavar="B", help="size of each value (default 2000)")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command("demo", "run a DSPy program twice through the cache: cold vs warm, hits, tokens and dollars", cmd_demo)
    p.add_argument(
        "--model",
        help="a real model (e.g. openai/gpt-4o-mini; its key from the usual env var) "
        "instead of the local stand-in provider",
    )
    p.add_argument("--api-base", help="endpoint of --model (e.g. a local OpenAI-compatible server)")
    p.add_argument(
        "--latency",
        type=float,
        default=0.4,
        metavar="S",
        help="seconds per call of the stand-in provider (default 0.4)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's entries from earlier runs (run 1 is then served by the disk or Redis)",
    )
    from dspy_tiered_cache.cli_portable import register as register_recording_commands

    register_recording_commands(command)  # export, import, inspect
    return parser


@contextmanager
def _cli_logging(verbose: bool) -> Iterator[None]:
    """Our warnings as one short line each on stderr (the core logs tier failures once a minute)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    previous = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous[0])
        log.propagate = previous[1]


def _config_message(message: str) -> str:
    """ConfigError's report as one line, naming our options where the value came from one of them."""
    lines = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    text = lines[0].rstrip(":") + ": " + "; ".join(lines[1:]) if len(lines) > 1 else message
    for field in ("redis_url", "disk_path", "namespace"):
        env = f"env {ENV_PREFIX}{field.upper()}"
        option = f"--{field.replace('_', '-')}"
        text = text.replace(f"{env} / argument {field}=", f"{option} / {env}=")  # name the variable once
        text = text.replace(f"argument {field}=", f"{option} / {env}=")
    return text


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dspy-tiered-cache``; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    with _cli_logging(verbose):
        try:
            code: int = args.func(args)
            return code
        except CliError as exc:
            return _fail(str(exc), exc.code)
        except ConfigError as exc:
            return _fail(_config_message(str(exc)), 2)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except ImportError as exc:  # e.g. LiteLLM's hit path missing fastapi (MissingLiteLLMDependency)
            if verbose:
                raise
            return _fail(str(exc), 1)
        except Exception as exc:
            if verbose:
                raise
            return _fail(f"{type(exc).__name__}: {exc} (run with -v for the traceback)", 1)
