"""What every ``dspy-tiered-cache`` command shares: the one-line error, output, settings from the global options,
the admin core, tier health. The commands (``cli.py`` and ``cli_*.py``) import from here, never from each other.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.report import format_table
from dspy_tiered_cache.settings import CacheSettings, load_settings, mask_url
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


def out(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def print_json(data: Any) -> None:
    out(json.dumps(data, indent=2, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop always returns


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def one_line(text: str) -> str:
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


def shared_tiers(core: CacheCore) -> list[Tier]:
    return [t for t in core.tiers if t.name != "l1"]


def where(tier: Tier) -> str:
    if tier.name == "l1":
        return "in-process memory"
    path = getattr(tier, "path", None)
    if path is not None:
        return str(path)
    url = getattr(tier, "url", None)
    return mask_url(url) or "" if isinstance(url, str) else repr(tier)


def health_of(tier: Tier) -> TierHealth:
    """The tier's health, without creating a disk file that does not exist yet (a read must not write)."""
    if isinstance(tier, DiskTier) and not tier.path.exists():
        problem = tier.unusable()
        if problem is not None:  # nothing could ever be saved there: that is not "ok"
            return TierHealth(tier.name, False, None, None, detail=problem)
        return TierHealth(tier.name, True, None, f"sqlite {sqlite3.sqlite_version}", detail="no file yet")
    return tier.health()


def require_healthy(core: CacheCore, action: str) -> list[TierHealth]:
    """Refuse to act on a cache whose configured tier is down: the action would silently miss that tier."""
    healths = [health_of(t) for t in shared_tiers(core)]
    for h in healths:
        if not h.ok:
            raise CliError(f"cannot {action}: tier {h.name} is unreachable ({one_line(h.detail)})")
    return healths


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not isatty(sys.stdin):  # a terminal echoes the answer and its newline; piped input does not
        print(answer.strip(), file=sys.stderr, flush=True)
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed, nothing changed (pass --yes to skip the question)")


def health_dict(h: TierHealth) -> dict[str, Any]:
    return {"tier": h.name, "ok": h.ok, "latency_ms": h.latency_ms, "version": h.version, "detail": h.detail}


def health_table(healths: list[TierHealth]) -> str:
    rows = [
        [h.name, "ok" if h.ok else "DOWN", ms(h.latency_ms), h.version or "-", one_line(h.detail)] for h in healths
    ]
    return format_table(["tier", "status", "latency", "version", "detail"], rows)
