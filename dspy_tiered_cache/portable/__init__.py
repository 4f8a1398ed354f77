"""Recordings: a cache's entries as one portable, reproducible file (export, import, inspect, replay).

Why a file: re-running a notebook or an evaluation next month, on another machine or in CI, with no API key,
must give byte-identical answers, and a recording must diff well in git and be reviewable with standard tools.

The format, version 1 (``*.jsonl.gz``):

* gzip (level 6, no file name, mtime 0) of UTF-8 JSON lines; ``zcat FILE | jq .`` shows it all;
* line 1, the header::

    {"entries": N, "format": "dspy-tiered-cache/recording", "keying": "sha256", "namespaces": ["default"],
     "version": 1}

  ``keying`` is ``"sha256"``, or ``"hmac-sha256:<fingerprint>"`` when keys were HMACs under a ``key_secret``
  (the fingerprint is an HMAC of a fixed text: it tells secrets apart and reveals nothing of them);
* then one line per entry, sorted by namespace and digest::

    {"created": 1765000000, "digest": "<40 hex>", "namespace": "default", "request": {...} | null,
     "value": <the value exactly as the tiers store it: plain JSON>}

  ``request`` is the canonical request the key was hashed from (present when the cache ran with
  ``record_requests``): credentials and transport options were never part of it, and an endpoint kept in it by
  ``include_api_base`` is removed (``"request_redacted": true``). ``created`` is when the answer was recorded.

Every JSON object has sorted keys and the file carries no export time, so the same entries give the same bytes.

Loading never executes code (JSON only) and validates the whole file before writing anything: a truncated or
garbage file is one :class:`RecordingError` naming the problem, and nothing is left behind. An entry is stored
under the importing cache's prefix, namespace (or the one given) and *current* generation; its digest is
recomputed from the recorded request when there is one (so a recording made under another ``key_secret`` still
imports), else taken from the file (then both caches must use the same keying).
"""

from __future__ import annotations

from dspy_tiered_cache import hooks
from dspy_tiered_cache.portable.fileformat import (
    FORMAT,
    VERSION,
    ExportSummary,
    ImportSummary,
    RecordedEntry,
    Recording,
    RecordingError,
    dumps,
    keying_of,
    parse,
    read_recording,
)
from dspy_tiered_cache.portable.listing import format_rows, inspect_recording, inspect_rows
from dspy_tiered_cache.portable.misses import replay_miss
from dspy_tiered_cache.portable.transfer import collect, export_recording, import_recording

__all__ = [
    "FORMAT",
    "VERSION",
    "ExportSummary",
    "ImportSummary",
    "RecordedEntry",
    "Recording",
    "RecordingError",
    "collect",
    "dumps",
    "export_recording",
    "format_rows",
    "import_recording",
    "inspect_recording",
    "inspect_rows",
    "keying_of",
    "parse",
    "read_recording",
    "replay_miss",
]

# The record/replay feature attaches to every core through the core's extension point (hooks.py).
hooks.provide("export", export_recording)
hooks.provide("import", import_recording)
hooks.provide("replay_miss", replay_miss)
