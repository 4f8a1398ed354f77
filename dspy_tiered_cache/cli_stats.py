"""``dspy-tiered-cache stats``: what the shared tier holds, the fleet's counters, and this configuration."""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspy_tiered_cache.cli_common import (
    PROG,
    CliError,
    admin_core,
    health_dict,
    health_of,
    health_table,
    human_bytes,
    one_line,
    out,
    print_json,
    settings_from_args,
    shared_tiers,
)
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.report import format_table
from dspy_tiered_cache.settings import CacheSettings, mask_url
from dspy_tiered_cache.stats import format_storage, storage_summary
from dspy_tiered_cache.tiers.redis_leases import LEASE_MARK, is_lease


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
    heads: list[Any] = []
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.strlen(key)
            pipe.getrange(key, 0, len(LEASE_MARK) - 1)  # a lease (another process computes it) is no entry
        replies = pipe.execute(raise_on_error=False)
        sizes.extend(int(s) if isinstance(s, int) else 0 for s in replies[::2])
        heads.extend(replies[1::2])
    counts: dict[tuple[str, int], list[int]] = {}
    skip = len(prefix) + 3
    for raw, size, head in zip(keys, sizes, heads, strict=True):
        if is_lease(head):
            continue
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


def cmd_stats(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        s = core.settings
        healths = [health_of(t) for t in shared_tiers(core)]
        contents: list[dict[str, Any]] = []
        for tier, health in zip(shared_tiers(core), healths, strict=True):
            if not health.ok:
                raise CliError(f"tier {tier.name} is unreachable: {one_line(health.detail)}")
            if tier.name == "disk":
                contents.append(disk_contents(Path(getattr(tier, "path", s.disk_path)), s.key_prefix))
            else:
                contents.append(redis_contents(tier, s.key_prefix, args.scan_limit))
        fleet_data = _read_fleet(core, args)
        storage = storage_summary(shared_tiers(core))  # bytes per entry, compression ratio
    data = {
        # The user's settings, what `config` shows: this admin process runs without a memory tier of its own.
        "settings": _settings_summary(settings_from_args(args)),
        "health": [health_dict(h) for h in healths],
        "tiers": contents,
        "fleet": fleet_data,
        "storage": storage,
        "note": "fleet: what every process added to the shared tier (hour buckets); one process's own counters: "
        "core.stats / dspy_tiered_cache.report.report(core)",
    }
    if args.format == "json":
        print_json(data)
        return 0
    out(f"{PROG} stats — what the shared tiers hold now (key prefix {s.key_prefix!r})")
    out()
    out(health_table(healths))
    for info in contents:
        out()
        head = f"{info['tier']} · {info['where']}"
        if info.get("note"):
            out(f"{head}: {info['note']}")
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
        out(head)
        out(
            format_table(
                ["namespace", "generation", "entries", "size", "unreachable", "unreachable size"],
                rows,
                align_right={1, 2, 3, 4, 5},
            )
        )
        if info.get("truncated"):
            out(f"(SCAN stopped after {info['scanned']:,} keys: raise --scan-limit to count them all)")
    out()
    out(f"* default namespace. 'unreachable' = invalidated or expired entries; `{PROG} clear` reclaims them.")
    for st in storage:  # what each stored answer costs, per tier
        out(f"{st['tier']}: {st.get('error') or format_storage(st)}")
    _print_fleet(fleet_data, args.since)
    return 0


def _read_fleet(core: CacheCore, args: argparse.Namespace) -> dict[str, Any] | None:
    from dspy_tiered_cache.fleet import read_fleet

    try:
        return read_fleet(core, since=args.since, namespace=args.namespace or None)
    except Exception as exc:
        raise CliError(f"cannot read the fleet counters: {one_line(str(exc))}") from None


def _print_fleet(fleet: dict[str, Any] | None, since: str) -> None:
    from dspy_tiered_cache.report import fleet_tables

    out()
    if fleet is None:
        out("fleet: no shared tier (memory only), so no fleet totals; counters live in each process")
        return
    scope = f" · namespace {fleet['namespace']!r}" if fleet.get("namespace") else ""
    out(f"fleet · every process, last {since} (hour buckets) · {fleet['store']}{scope}")
    out(fleet_tables(fleet))
    if "shared_taken" in fleet:
        out(
            f"answers shared between processes: {fleet['shared_taken']:,} taken into memory tiers, "
            f"{fleet['shared_rejected']:,} refused (corrupt, foreign or unreadable)"
        )
