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

import contextlib
import gzip
import hmac
import io
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from dspy_tiered_cache.codec import Entry, encode_value
from dspy_tiered_cache.errors import CacheError
from dspy_tiered_cache.keys import entry_key, request_digest, request_key
from dspy_tiered_cache.modes import ReplayMiss, describe_difference, model_of, prompt_of
from dspy_tiered_cache.settings import NAME_PATTERN

if TYPE_CHECKING:
    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.options import CallOptions

__all__ = [
    "FORMAT",
    "VERSION",
    "ExportSummary",
    "ImportSummary",
    "RecordingError",
    "export_recording",
    "import_recording",
    "inspect_recording",
    "read_recording",
    "replay",
]

FORMAT: Final = "dspy-tiered-cache/recording"
VERSION: Final = 1
_GZIP_LEVEL: Final = 6
_DIGEST = re.compile(r"^[0-9a-f]{40}$")
#: Request fields an ``include_api_base`` cache adds to keys: endpoints never go into a recording.
_ENDPOINT_FIELDS: Final = ("__api_base__", "_dtc_endpoint")
#: Recorded requests a replay miss compares itself with, at most (the diagnosis is on the error path only).
_MAX_COMPARED: Final = 20_000
_MAX_DECOMPRESSED: Final = 4 * 1024**3


class RecordingError(CacheError):
    """A recording file cannot be read or written; the message names the file and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class RecordedEntry:
    namespace: str
    digest: str
    created: int
    value: Any
    request: dict[str, Any] | None = None
    request_redacted: bool = False

    def line(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "created": self.created,
            "digest": self.digest,
            "namespace": self.namespace,
            "request": self.request,
            "value": self.value,
        }
        if self.request_redacted:
            out["request_redacted"] = True
        return out


@dataclass(frozen=True, slots=True)
class Recording:
    keying: str
    entries: list[RecordedEntry]

    @property
    def namespaces(self) -> list[str]:
        return sorted({e.namespace for e in self.entries})


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: Path
    entries: int
    namespaces: list[str]
    bytes: int
    with_requests: int
    skipped: int

    def __str__(self) -> str:
        ns = ", ".join(self.namespaces) or "none"
        extra = f"; {self.skipped} unreadable entries skipped" if self.skipped else ""
        return (
            f"exported {self.entries} entries ({self.with_requests} with their request) of namespace(s) {ns} "
            f"to {self.path} ({self.bytes:,} bytes){extra}"
        )


@dataclass(frozen=True, slots=True)
class ImportSummary:
    path: Path
    entries: int
    namespaces: list[str]

    def __str__(self) -> str:
        return f"imported {self.entries} entries into namespace(s) {', '.join(self.namespaces) or 'none'}"


# ---------------------------------------------------------------------------------------------------- keying


def keying_of(secret: bytes | None) -> str:
    """How a cache turns requests into digests: plain SHA-256, or an HMAC under a secret (told apart by a
    fingerprint that reveals nothing of it)."""
    if not secret:
        return "sha256"
    fingerprint = hmac.digest(secret, b"dspy-tiered-cache key fingerprint", "sha256")[:6].hex()
    return f"hmac-sha256:{fingerprint}"


def _secret_of(core: CacheCore) -> bytes | None:
    s = core.settings.key_secret
    return s.get_secret_value().encode() if s is not None else None


# ---------------------------------------------------------------------------------------------------- export


def _entry_prefix(core: CacheCore, namespace: str) -> str:
    return entry_key(core.settings.key_prefix, namespace, core.generation(namespace), "")


def _all_namespaces(core: CacheCore) -> list[str]:
    tier = core.shared_tier
    if tier is None:
        return []
    head = f"{core.settings.key_prefix}:e:"
    found = {key[len(head) :].split(":", 1)[0] for key, _ in tier.scan_prefix(head)}  # type: ignore[attr-defined]
    return sorted(ns for ns in found if NAME_PATTERN.match(ns))


def collect(
    core: CacheCore, namespaces: Iterable[str] | None = None, *, all_namespaces: bool = False
) -> tuple[Recording, int]:
    """The live entries of the current generation of ``namespaces`` in the shared tier; (recording, skipped)."""
    tier = core.shared_tier
    if tier is None:
        raise RecordingError("this cache has no tier to export from (enable the memory, disk or Redis tier)")
    core.flush()
    names = _all_namespaces(core) if all_namespaces else sorted(set(namespaces or [core.settings.namespace]))
    entries: list[RecordedEntry] = []
    skipped = 0
    for ns in names:
        prefix = _entry_prefix(core, ns)
        requests: dict[str, bytes] = {}
        for key, entry in tier.scan_prefix(request_key(prefix)):  # type: ignore[attr-defined]
            if entry is not None:
                requests[key.rsplit(":", 1)[-1]] = entry.payload
        for key, entry in tier.scan_prefix(prefix):  # type: ignore[attr-defined]
            digest = key[len(prefix) :]
            if not _DIGEST.match(digest):
                continue
            if entry is None:
                skipped += 1
                continue
            try:
                value = orjson.loads(entry.payload)
                raw_request = requests.get(digest)
                request = orjson.loads(raw_request) if raw_request is not None else None
            except orjson.JSONDecodeError:
                skipped += 1
                continue
            redacted = False
            if isinstance(request, dict) and any(f in request for f in _ENDPOINT_FIELDS):
                request = {k: v for k, v in request.items() if k not in _ENDPOINT_FIELDS}
                redacted = True
            entries.append(
                RecordedEntry(
                    ns, digest, int(entry.created_at), value, request if isinstance(request, dict) else None, redacted
                )
            )
    entries.sort(key=lambda e: (e.namespace, e.digest))
    return Recording(keying_of(_secret_of(core)), entries), skipped


def dumps(recording: Recording) -> bytes:
    """The file's bytes: deterministic for the same entries (sorted, sorted keys, fixed gzip level, mtime 0)."""
    header = {
        "entries": len(recording.entries),
        "format": FORMAT,
        "keying": recording.keying,
        "namespaces": recording.namespaces,
        "version": VERSION,
    }
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        gz.write(orjson.dumps(header, option=orjson.OPT_SORT_KEYS) + b"\n")
        for entry in recording.entries:
            gz.write(orjson.dumps(entry.line(), option=orjson.OPT_SORT_KEYS) + b"\n")
    return raw.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers never see half a file: write a sibling, then rename it over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private; a recording is meant to be committed and shared like any source file.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def export_recording(
    core: CacheCore,
    path: str | os.PathLike[str],
    *,
    namespaces: Iterable[str] | None = None,
    all_namespaces: bool = False,
    allow_empty: bool = True,
) -> ExportSummary:
    """Write the live entries of ``namespaces`` (default: the configured one; ``all_namespaces``: every one) to
    ``path``. Raises :class:`RecordingError` when the file cannot be written (or, unless ``allow_empty``, when
    there is nothing to write: then no file is written)."""
    target = Path(path).expanduser()
    recording, skipped = collect(core, namespaces, all_namespaces=all_namespaces)
    if not recording.entries and not allow_empty:
        names = ", ".join(namespaces or [core.settings.namespace])
        where = "the cache holds no live entries" if all_namespaces else f"namespace(s) {names} hold no live entries"
        raise RecordingError(f"nothing to export: {where} (--all exports every namespace)")
    data = dumps(recording)
    try:
        _write_atomically(target, data)
    except OSError as exc:
        raise RecordingError(f"cannot write the recording {target}: {exc.strerror or exc}") from None
    return ExportSummary(
        target,
        len(recording.entries),
        recording.namespaces,
        len(data),
        sum(e.request is not None for e in recording.entries),
        skipped,
    )


# ---------------------------------------------------------------------------------------------------- import


def _bad(path: Path, problem: str) -> RecordingError:
    return RecordingError(f"{path} is not a valid dspy-tiered-cache recording: {problem}")


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Parse and fully validate a recording (JSON only: nothing in it can run code)."""
    source = Path(path).expanduser()
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read the recording {source}: {exc.strerror or exc}") from None
    return parse(raw, source)


def parse(raw: bytes, source: Path) -> Recording:
    if raw[:2] != b"\x1f\x8b":
        raise _bad(source, "not gzip data (expected a .jsonl.gz file written by `dspy-tiered-cache export`)")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") as gz:
            text = gz.read(_MAX_DECOMPRESSED + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad(source, f"the gzip stream is damaged or truncated ({exc})") from None
    if len(text) > _MAX_DECOMPRESSED:
        raise _bad(source, "it decompresses to more than 4 GB")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise _bad(source, "it is empty")
    try:
        header = orjson.loads(lines[0])
    except orjson.JSONDecodeError as exc:
        raise _bad(source, f"line 1 is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(source, f"line 1 is not a header with format {FORMAT!r}")
    version = header.get("version")
    if version != VERSION:
        raise _bad(source, f"format version {version!r} is not supported (this package reads version {VERSION})")
    keying = header.get("keying")
    expected = header.get("entries")
    if not isinstance(keying, str) or not isinstance(expected, int):
        raise _bad(source, "the header lacks 'keying' or 'entries'")
    entries = [_entry(source, number, line) for number, line in enumerate(lines[1:], start=2)]
    if len(entries) != expected:
        raise _bad(source, f"the header announces {expected} entries but the file holds {len(entries)} (truncated?)")
    return Recording(keying, entries)


def _entry(source: Path, number: int, line: bytes) -> RecordedEntry:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _bad(source, f"line {number} is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _bad(source, f"line {number} is not a JSON object")
    ns, digest, created, request = obj.get("namespace"), obj.get("digest"), obj.get("created"), obj.get("request")
    if not isinstance(ns, str) or not NAME_PATTERN.match(ns):
        raise _bad(source, f"line {number}: 'namespace' is missing or not a valid name")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise _bad(source, f"line {number}: 'digest' is missing or not 40 hex digits")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise _bad(source, f"line {number}: 'created' is missing or not a number")
    if "value" not in obj:
        raise _bad(source, f"line {number}: 'value' is missing")
    if request is not None and not isinstance(request, dict):
        raise _bad(source, f"line {number}: 'request' is neither an object nor null")
    return RecordedEntry(ns, digest, int(created), obj["value"], request, bool(obj.get("request_redacted")))


def import_recording(core: CacheCore, path: str | os.PathLike[str], *, namespace: str | None = None) -> ImportSummary:
    """Load a recording into every tier of ``core``. The file is validated completely first; a tier that fails
    half way has what was written removed again, and the error is raised."""
    source = Path(path).expanduser()
    recording = read_recording(source)
    if namespace is not None and not NAME_PATTERN.match(namespace):
        raise RecordingError(f"namespace {namespace!r} is not valid: use 1-64 characters from letters, digits, '_.-'")
    secret = _secret_of(core)
    same_keying = recording.keying == keying_of(secret)
    prefix = core.settings.key_prefix
    generations: dict[str, int] = {}
    items: list[tuple[str, Entry]] = []
    requests: list[tuple[str, Entry]] = []
    expires = core.settings.ttl
    now = time.time()
    for number, e in enumerate(recording.entries, start=2):
        ns = namespace or e.namespace
        if ns not in generations:
            generations[ns] = core.generation(ns)
        canonical = None
        if e.request is not None:
            canonical = orjson.dumps(e.request, option=orjson.OPT_SORT_KEYS)
        if canonical is not None and not e.request_redacted:
            digest = request_digest(canonical, secret)
        elif same_keying:
            digest = e.digest
        else:
            raise RecordingError(
                f"{source}: entry on line {number} was keyed {recording.keying!r} and this cache keys "
                f"{keying_of(secret)!r}, and the file holds no request to re-key it from; import it with the same "
                "DSPY_TIERED_CACHE_KEY_SECRET it was recorded with"
            )
        try:
            payload = encode_value(e.value, core.settings.max_value_bytes)
        except ValueError as exc:
            raise RecordingError(f"{source}: the value on line {number} cannot be stored: {exc}") from None
        key = entry_key(prefix, ns, generations[ns], digest)
        expiry = None if expires is None else now + expires
        items.append((key, Entry(payload, float(e.created), expiry)))
        if canonical is not None:
            requests.append((request_key(key), Entry(canonical, float(e.created), expiry)))
    _write_all(core, items, requests, source)
    return ImportSummary(source, len(items), sorted(generations))


def _write_all(
    core: CacheCore, items: list[tuple[str, Entry]], requests: list[tuple[str, Entry]], source: Path
) -> None:
    """Every tier gets the entries (the shared tier also the requests); a failure undoes what was written."""
    written: list[tuple[Any, list[str]]] = []
    try:
        for tier in core.tiers:
            batch = items + requests if tier is core.shared_tier else items
            set_many = getattr(tier, "set_many", None)
            if set_many is not None:
                set_many(batch)
            else:
                for key, entry in batch:
                    tier.set(key, entry)
            written.append((tier, [k for k, _ in batch]))
    except Exception as exc:
        for tier, keys in written:
            for key in keys:
                with contextlib.suppress(Exception):
                    tier.delete(key)
        raise RecordingError(
            f"importing {source} failed writing tier {tier.name} ({type(exc).__name__}: {exc}); nothing was kept"
        ) from None


# --------------------------------------------------------------------------------------------------- inspect


def _find(value: Any, field: str, depth: int = 6) -> Any:
    """The first ``field`` in a stored value, breadth first (LiteLLM and DSPy wrap responses differently)."""
    level = [value]
    for _ in range(depth):
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, Mapping):
                if field in item and item[field] not in (None, {}, ""):
                    return item[field]
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item[:8])
        level = nxt
    return None


def _tokens(value: Any) -> int | None:
    usage = _find(value, "usage")
    if not isinstance(usage, Mapping):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")]
    counted = [p for p in parts if isinstance(p, int)]
    return sum(counted) if counted else None


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(0, seconds):.0f}s"


def inspect_rows(recording: Recording, now: float | None = None) -> list[dict[str, Any]]:
    """One row per entry: namespace, model, the request's first words, tokens, age."""
    now = time.time() if now is None else now
    rows = []
    for e in recording.entries:
        model = model_of(e.request) if e.request is not None else None
        model = model or _find(e.value, "model")
        prompt = prompt_of(e.request) if e.request is not None else None
        rows.append(
            {
                "namespace": e.namespace,
                "digest": e.digest,
                "model": model if isinstance(model, str) else None,
                "request": " ".join(prompt.split())[:60] if prompt else None,
                "tokens": _tokens(e.value),
                "age_s": max(0, int(now - e.created)),
            }
        )
    return rows


def inspect_recording(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return inspect_rows(read_recording(path))


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = ("namespace", "digest", "model", "request (first words)", "tokens", "age")
    table = [
        (
            r["namespace"],
            r["digest"][:10],
            r["model"] or "-",
            r["request"] or "(request not recorded)",
            "-" if r["tokens"] is None else str(r["tokens"]),
            _age(r["age_s"]),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------------ replay miss


def _recorded_requests(core: CacheCore, namespace: str) -> Iterator[dict[str, Any]]:
    tier = core.shared_tier
    scan = getattr(tier, "scan_prefix", None)
    if scan is None:
        return
    prefix = request_key(_entry_prefix(core, namespace))
    for n, (_, entry) in enumerate(scan(prefix)):
        if n >= _MAX_COMPARED:
            return
        if entry is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                request = orjson.loads(entry.payload)
                if isinstance(request, dict):
                    yield request


def replay_miss(core: CacheCore, key: str, options: CallOptions, reason: str) -> ReplayMiss:
    """Build the error of a replay-mode miss; never fails itself (a broken tier only loses the diagnosis)."""
    namespace = key.split(":")[2] if key.count(":") >= 4 else (options.namespace or core.settings.namespace)
    canonical = core.request_of(key)
    request: Any = None
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        request = orjson.loads(canonical) if canonical is not None else None
    if not isinstance(request, dict):
        return ReplayMiss(model=None, namespace=namespace, prompt=None, key=key, reason=reason)
    difference = None
    try:
        difference = describe_difference(request, _recorded_requests(core, namespace))
    except Exception as exc:  # the diagnosis is a courtesy: the error itself must always be raised
        difference = f"(could not compare with recorded requests: {type(exc).__name__})"
    return ReplayMiss(
        model=model_of(request),
        namespace=namespace,
        prompt=prompt_of(request),
        difference=difference,
        key=key,
        reason=reason,
        prompt_label="arguments" if "__dtc_fn__" in request else "last user message",
    )


# ---------------------------------------------------------------------------------------------------- replay


@contextlib.contextmanager
def replay(path: str | os.PathLike[str], *, lm: Any = None, **settings: Any) -> Iterator[CacheCore]:
    """Answer LLM calls from a recording only, for the block's duration (a notebook's "reproduce this").

    Builds a cache in memory, in ``replay`` mode, holding the file's entries, and routes to it the LiteLLM door
    (``litellm.cache``) and the DSPy LM (``lm=``, else the configured ``dspy.settings.lm``) when those packages are
    in use. Any request that was not recorded raises :class:`~dspy_tiered_cache.ReplayMiss`; nothing goes upstream.
    Yields the cache (a :class:`~dspy_tiered_cache.core.CacheCore`; pass it as ``cache=``/``core=`` elsewhere).
    """
    from dspy_tiered_cache.core import CacheCore

    recording = read_recording(path)
    names = recording.namespaces
    options: dict[str, Any] = {
        "redis_url": None,
        "disk": False,
        "memory": True,
        "mode": "replay",
        "memory_max_entries": max(10_000, 4 * len(recording.entries)),
        "memory_max_bytes": 4 * 1024**3,
        "namespace": names[0] if len(names) == 1 else "default",
        **settings,
    }
    core = CacheCore(**options)
    import_recording(core, path)
    with contextlib.ExitStack() as stack:
        litellm: Any = sys.modules.get("litellm")
        if litellm is not None:
            from dspy_tiered_cache.integrations.litellm import TieredCache

            previous = litellm.cache
            litellm.cache = TieredCache(core=core)
            stack.callback(setattr, litellm, "cache", previous)
        dspy: Any = sys.modules.get("dspy")
        base = lm if lm is not None else (dspy.settings.lm if dspy is not None else None)
        if dspy is not None and base is not None:
            from dspy_tiered_cache.integrations.dspy import CachedLM

            plain = base.unwrap() if isinstance(base, CachedLM) else base
            stack.enter_context(dspy.context(lm=CachedLM(plain, cache=core)))
        stack.callback(core.close)
        yield core

