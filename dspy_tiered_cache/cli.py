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
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dspy_tiered_cache import __version__
from dspy_tiered_cache.cli_common import (
    DEFAULT_SCAN_LIMIT,
    PROG,
    CliError,
    admin_core,
    confirm,
    health_dict,
    health_of,
    health_table,
    log,
    one_line,
    out,
    print_json,
    require_healthy,
    settings_from_args,
    shared_tiers,
    where,
)
from dspy_tiered_cache.report import format_table
from dspy_tiered_cache.settings import ENV_PREFIX, ConfigError

# -------------------------------------------------------------------------------------------------- stats


def cmd_stats(args: argparse.Namespace) -> int:
    from dspy_tiered_cache.cli_stats import cmd_stats as run

    return run(args)


# -------------------------------------------------------------------------------------------------- clear


def cmd_clear(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        s = core.settings
        require_healthy(core, "clear the cache")
        targets = ", ".join(f"{t.name} ({where(t)})" for t in shared_tiers(core))
        if not targets:
            raise CliError("no shared tier is configured (disk is off and no Redis URL is set): nothing to clear")
        if args.namespace:
            confirm(f"Invalidate namespace {args.namespace!r} in {targets}?", args.yes)
            generation = core.invalidate_namespace(args.namespace)
            out(
                f"namespace {args.namespace!r} invalidated (generation {generation}): its entries are unreachable "
                f"now; processes re-read generations within {s.generation_refresh_s:g} s. "
                f"`{PROG} clear` reclaims their space."
            )
            return 0
        confirm(f"Remove every cached entry under key prefix {s.key_prefix!r} from {targets}?", args.yes)
        removed = core.clear()
    out(f"removed {removed:,} entries from {targets}")
    out(
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
        print_json({"settings": masked, "sources": sources, "tiers": tiers})
        return 0
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v, sources[k]] for k, v in masked.items()]
    out(format_table(["setting", "value", "from"], rows))
    out()
    out(f"tiers: {' -> '.join(tiers) if tiers else '(none: every lookup misses)'}")
    return 0


# ------------------------------------------------------------------------------------------------- health


def cmd_health(args: argparse.Namespace) -> int:
    with admin_core(args) as core:
        healths = [health_of(t) for t in shared_tiers(core)]
    down = [h for h in healths if not h.ok]
    if args.format == "json":
        print_json({"ok": not down, "tiers": [health_dict(h) for h in healths]})
    else:
        if healths:
            out(health_table(healths))
        else:
            out("no shared tier configured (memory only)")
        out("memory (l1) lives inside each process: nothing to check from here")
    for h in down:
        print(f"{PROG}: tier {h.name} is down: {one_line(h.detail)}", file=sys.stderr)
    return 1 if down else 0


# --------------------------------------------------------------------------------------------------- warm
# warm and benchmark live in their own modules (cli_warm.py, cli_benchmark.py); loaded when run.


def cmd_warm(args: argparse.Namespace) -> int:
    from dspy_tiered_cache.cli_warm import cmd_warm as run

    return run(args)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from dspy_tiered_cache.cli_benchmark import cmd_benchmark as run

    return run(args)


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
    from dspy_tiered_cache.cli_dictionary import register as register_dictionary_commands
    from dspy_tiered_cache.cli_portable import register as register_recording_commands

    register_recording_commands(command)  # export, import, inspect
    register_dictionary_commands(command)  # dictionary train | status
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
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr, flush=True)
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
