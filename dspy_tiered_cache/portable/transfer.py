"""Export and import: a cache's live entries to a recording file and back, every tier or nothing."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import orjson

from dspy_tiered_cache.codec import Entry, encode_value
from dspy_tiered_cache.keys import entry_key, request_digest, request_key
from dspy_tiered_cache.portable import fileformat as fmt
from dspy_tiered_cache.portable.fileformat import RecordingError
from dspy_tiered_cache.settings import NAME_PATTERN

if TYPE_CHECKING:
    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.tiers.base import Tier


@runtime_checkable
class ScanTier(Protocol):
    """A tier that can list what it holds under a prefix (memory, disk, Redis): exports read through it."""

    def scan_prefix(self, prefix: str) -> Iterator[tuple[str, Entry | None]]: ...


@runtime_checkable
class BatchTier(Protocol):
    """A tier that writes many entries in one round trip or transaction (disk, Redis): imports use it."""

    def set_many(self, items: Iterable[tuple[str, Entry]]) -> None: ...


def scannable(core: CacheCore) -> ScanTier:
    """The shared tier, which exports and replay-miss diagnoses read; RecordingError when there is none."""
    tier = core.shared_tier
    if tier is None:
        raise RecordingError("this cache has no tier to export from (enable the memory, disk or Redis tier)")
    if not isinstance(tier, ScanTier):
        raise RecordingError(f"tier {tier.name} cannot list its entries, so it cannot be exported")
    return tier


def _secret_of(core: CacheCore) -> bytes | None:
    s = core.settings.key_secret
    return s.get_secret_value().encode() if s is not None else None


# ---------------------------------------------------------------------------------------------------- export


def _entry_prefix(core: CacheCore, namespace: str) -> str:
    return entry_key(core.settings.key_prefix, namespace, core.generation(namespace), "")


def _all_namespaces(core: CacheCore) -> list[str]:
    head = f"{core.settings.key_prefix}:e:"
    found = {key[len(head) :].split(":", 1)[0] for key, _ in scannable(core).scan_prefix(head)}
    return sorted(ns for ns in found if NAME_PATTERN.match(ns))


def collect(
    core: CacheCore, namespaces: Iterable[str] | None = None, *, all_namespaces: bool = False
) -> tuple[fmt.Recording, int]:
    """The live entries of the current generation of ``namespaces`` in the shared tier; (recording, skipped)."""
    tier = scannable(core)
    core.flush()
    names = _all_namespaces(core) if all_namespaces else sorted(set(namespaces or [core.settings.namespace]))
    entries: list[fmt.RecordedEntry] = []
    skipped = 0
    for ns in names:
        prefix = _entry_prefix(core, ns)
        requests: dict[str, bytes] = {}
        for key, entry in tier.scan_prefix(request_key(prefix)):
            if entry is not None:
                requests[key.rsplit(":", 1)[-1]] = entry.payload
        for key, entry in tier.scan_prefix(prefix):
            digest = key[len(prefix) :]
            if not fmt.DIGEST.match(digest):
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
            if isinstance(request, dict) and any(f in request for f in fmt.ENDPOINT_FIELDS):
                request = {k: v for k, v in request.items() if k not in fmt.ENDPOINT_FIELDS}
                redacted = True
            entries.append(
                fmt.RecordedEntry(
                    ns, digest, int(entry.created_at), value, request if isinstance(request, dict) else None, redacted
                )
            )
    entries.sort(key=lambda e: (e.namespace, e.digest))
    return fmt.Recording(fmt.keying_of(_secret_of(core)), entries), skipped


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


def _write_problem(target: Path, exc: OSError) -> str:
    """The real cause of a failed write: ``mkdir`` reports a parent that is a file as "File exists" (EEXIST) or
    "Not a directory" (ENOTDIR), naming neither the parent nor what to do."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        for parent in target.parents:
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    return f"{parent} is a file, not a directory; choose an output path inside a directory"
                break
    return exc.strerror or str(exc)


def export_recording(
    core: CacheCore,
    path: str | os.PathLike[str],
    *,
    namespaces: Iterable[str] | None = None,
    all_namespaces: bool = False,
    allow_empty: bool = True,
) -> fmt.ExportSummary:
    """Write the live entries of ``namespaces`` (default: the configured one; ``all_namespaces``: every one) to
    ``path``. Raises :class:`RecordingError` when the file cannot be written (or, unless ``allow_empty``, when
    there is nothing to write: then no file is written)."""
    target = Path(path).expanduser()
    recording, skipped = collect(core, namespaces, all_namespaces=all_namespaces)
    if not recording.entries and not allow_empty:
        names = ", ".join(namespaces or [core.settings.namespace])
        where = "the cache holds no live entries" if all_namespaces else f"namespace(s) {names} hold no live entries"
        raise RecordingError(f"nothing to export: {where} (--all exports every namespace)")
    data = fmt.dumps(recording)
    try:
        _write_atomically(target, data)
    except OSError as exc:
        raise RecordingError(f"cannot write the recording {target}: {_write_problem(target, exc)}") from None
    return fmt.ExportSummary(
        target,
        len(recording.entries),
        recording.namespaces,
        len(data),
        sum(e.request is not None for e in recording.entries),
        skipped,
    )


def import_recording(
    core: CacheCore, path: str | os.PathLike[str], *, namespace: str | None = None
) -> fmt.ImportSummary:
    """Load a recording into every tier of ``core``. The file is validated completely first; a tier that fails
    half way has what was written removed again, and the error is raised."""
    source = Path(path).expanduser()
    recording = fmt.read_recording(source)
    if namespace is not None and not NAME_PATTERN.match(namespace):
        raise RecordingError(f"namespace {namespace!r} is not valid: use 1-64 characters from letters, digits, '_.-'")
    secret = _secret_of(core)
    same_keying = recording.keying == fmt.keying_of(secret)
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
                f"{fmt.keying_of(secret)!r}, and the file holds no request to re-key it from; import it with the same "
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
    return fmt.ImportSummary(source, len(items), sorted(generations))


def _write_all(
    core: CacheCore, items: list[tuple[str, Entry]], requests: list[tuple[str, Entry]], source: Path
) -> None:
    """Every tier gets the entries (the shared tier also the requests); a failure undoes what was written."""
    written: list[tuple[Tier, list[str]]] = []
    try:
        for tier in core.tiers:
            batch = items + requests if tier is core.shared_tier else items
            if isinstance(tier, BatchTier):
                tier.set_many(batch)
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
