"""``dspy-tiered-cache dictionary train|status``: a zstd dictionary trained on this cache's own answers.

The shipped dictionary was trained on public English text wrapped as LiteLLM responses; a fleet whose answers
look different (another language, JSON outputs, code) compresses better with one trained on its own entries.
``train`` samples the entries of the shared tier, trains on most of them, measures the rest with the dictionary
in use and with the new one, and stores the new one in Redis (every process fetches it the first time an entry
needs it, and writers adopt it within minutes) only when it makes entries smaller. ``--out`` also writes it to a
file. Entries written with any earlier dictionary keep reading: each frame names its dictionary.

Self-contained (it registers itself with :func:`register` and imports nothing of the CLI module) so that the CLI's
imports stay one-way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspy_tiered_cache.codec import Entry
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.dictionary import ForeignDictionary, pack, train
from dspy_tiered_cache.settings import ConfigError, load_settings
from dspy_tiered_cache.tiers.redis import RedisTier

Command = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]
PROG = "dspy-tiered-cache"


def register(command: Command) -> None:
    p = command("dictionary", "train a zstd dictionary on the shared tier's entries, or show the one in use", run)
    p.add_argument("action", choices=("train", "status"))
    p.add_argument("--samples", type=int, default=5000, metavar="N", help="entries to read (default 5000)")
    p.add_argument("--size", type=int, default=64 * 1024, metavar="B", help="dictionary size (default 65536)")
    p.add_argument("--out", metavar="FILE", help="also write the trained dictionary to FILE")
    p.add_argument("--dry-run", action="store_true", help="measure only; store nothing in the shared tier")
    p.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    """One line on stderr and exit 1 for anything the user must fix; never a traceback for those."""
    try:
        result = _run(args)
    except (ConfigError, ForeignDictionary, _Refused) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 1
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


class _Refused(Exception):
    pass


def _core(args: argparse.Namespace) -> CacheCore:
    overrides: dict[str, Any] = {"memory": False, "write_behind": False, "telemetry": False, "fleet": False}
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    if getattr(args, "disk_path", None):
        overrides["disk_path"] = Path(args.disk_path).expanduser()
    return CacheCore(load_settings(**overrides))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    with _core(args) as core:
        tier = core.shared_tier
        writing = core.codec.write_dictionary
        status: dict[str, Any] = {
            "shared tier": tier.name if tier is not None else None,
            "dictionary in use": f"{writing.id:#x} ({len(writing.raw):,} bytes)" if writing else "none",
        }
        if isinstance(tier, RedisTier):
            adopted = tier.adopted_dictionary()
            status["adopted by the fleet"] = f"{adopted:#x}" if adopted else "none (the shipped one)"
        if args.action == "status":
            return status
        scan = getattr(tier, "scan_prefix", None)
        if scan is None:
            raise _Refused("no shared tier to read entries from: set --redis-url or use the disk tier")
        payloads = []
        for _, entry in scan(f"{core.settings.key_prefix}:e:"):
            if entry is not None and len(entry.payload) >= core.settings.compression_threshold:
                payloads.append(entry.payload)
            if len(payloads) >= args.samples:
                break
        if len(payloads) < 50:
            raise _Refused(
                f"only {len(payloads)} entries of at least {core.settings.compression_threshold} bytes in the "
                "shared tier; train once it holds a few hundred answers"
            )
        held_out, training = payloads[::5], [p for i, p in enumerate(payloads) if i % 5]
        trained = train(training, size=min(args.size, max(4096, sum(map(len, training)) // 10)))
        before = _framed_bytes(core, held_out, None)
        after = _framed_bytes(core, held_out, trained)
        status.update(
            {
                "entries read": len(payloads),
                "trained dictionary": f"{trained.id:#x} ({len(trained.raw):,} bytes)",
                "held-out bytes now": before,
                "held-out bytes with it": after,
                "ratio": round(after / before, 3),
            }
        )
        if args.out:
            Path(args.out).write_bytes(pack(trained))
            status["written to"] = args.out
        if args.dry_run or after >= before * 0.98:
            status["stored"] = "no (" + ("--dry-run" if args.dry_run else "not smaller than the one in use") + ")"
        elif isinstance(tier, RedisTier):
            tier.store_dictionary(trained, adopt=True)
            status["stored"] = "yes: in Redis; writers adopt it within 5 minutes, readers fetch it when needed"
        else:
            status["stored"] = "no: only a Redis tier shares trained dictionaries with the fleet"
        return status


def _framed_bytes(core: CacheCore, payloads: list[bytes], dictionary: Any) -> int:
    from dspy_tiered_cache.codec import FrameCodec

    s = core.settings
    codec = core.codec
    if dictionary is not None:
        codec = FrameCodec(secret=None, compression_threshold=s.compression_threshold, max_bytes=s.max_value_bytes,
                           dictionary=dictionary)  # fmt: skip
    return sum(len(codec.dumps(Entry(p, 0.0))) for p in payloads)
