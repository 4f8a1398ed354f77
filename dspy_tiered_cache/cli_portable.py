"""The recording subcommands of ``dspy-tiered-cache``: ``export``, ``import`` and ``inspect``.

They live apart from :mod:`dspy_tiered_cache.cli` (which registers them with :func:`register`) because they are
one feature with its own file format (:mod:`dspy_tiered_cache.portable`). Like the other quick commands they never
import LiteLLM or DSPy.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path

from dspy_tiered_cache.cli_common import CliError, admin_core, out, require_healthy
from dspy_tiered_cache.portable import (
    RecordingError,
    export_recording,
    format_rows,
    import_recording,
    inspect_rows,
    read_recording,
)

Command = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def register(command: Command) -> None:
    p = command(
        "export",
        "write the entries of --namespace (or --all) from the shared tier to a portable recording file",
        cmd_export,
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the recording to write (*.jsonl.gz)")
    p.add_argument("--all", action="store_true", help="every namespace, not only --namespace")

    p = command(
        "import", "load a recording file into the configured tiers (--namespace NS renames its namespace)", cmd_import
    )
    p.add_argument("file", metavar="FILE", help="a recording written by `export`")

    p = command("inspect", "list a recording's entries: model, first words of the request, tokens, age", cmd_inspect)
    p.add_argument("file", metavar="FILE", help="a recording written by `export`")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _one_line_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A bad, truncated or foreign recording is one line naming the problem (the CLI's error), not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RecordingError as exc:
            raise CliError(str(exc)) from None

    return run


@_one_line_errors
def cmd_export(args: argparse.Namespace) -> int:
    core = admin_core(args)
    try:
        tier = core.shared_tier
        path = getattr(tier, "path", None)
        if isinstance(path, Path) and not path.exists():
            raise CliError(f"nothing to export: there is no disk cache at {path} (set --disk-path or --redis-url)")
        require_healthy(core, "export")
        namespaces = None if args.all else [core.settings.namespace]
        summary = export_recording(
            core, args.output, namespaces=namespaces, all_namespaces=args.all, allow_empty=False
        )
    finally:
        core.close()
    out(str(summary))
    return 0


@_one_line_errors
def cmd_import(args: argparse.Namespace) -> int:
    read_recording(args.file)  # a bad file is reported before any tier is touched
    core = admin_core(args)
    try:
        require_healthy(core, "import")
        summary = import_recording(core, args.file, namespace=getattr(args, "namespace", None))
    finally:
        core.close()
    out(str(summary))
    return 0


@_one_line_errors
def cmd_inspect(args: argparse.Namespace) -> int:
    recording = read_recording(args.file)
    rows = inspect_rows(recording)
    if args.format == "json":
        out(json.dumps({"keying": recording.keying, "entries": rows}, indent=2))
    else:
        out(f"{args.file}: {len(rows)} entries, keyed {recording.keying}")
        out(format_rows(rows))
    return 0
