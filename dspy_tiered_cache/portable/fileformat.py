"""The recording file: its entries, its bytes and their validation (the format is described in the package's
docstring, :mod:`dspy_tiered_cache.portable`). Pure data and bytes: nothing here touches a cache."""

from __future__ import annotations

import gzip
import hmac
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from dspy_tiered_cache.errors import CacheError
from dspy_tiered_cache.settings import NAME_PATTERN

FORMAT: Final = "dspy-tiered-cache/recording"
VERSION: Final = 1
_GZIP_LEVEL: Final = 6
DIGEST = re.compile(r"^[0-9a-f]{40}$")
#: Request fields an ``include_api_base`` cache adds to keys: endpoints never go into a recording.
ENDPOINT_FIELDS: Final = ("__api_base__", "_dtc_endpoint")
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
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise _bad(source, f"line {number}: 'digest' is missing or not 40 hex digits")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise _bad(source, f"line {number}: 'created' is missing or not a number")
    if "value" not in obj:
        raise _bad(source, f"line {number}: 'value' is missing")
    if request is not None and not isinstance(request, dict):
        raise _bad(source, f"line {number}: 'request' is neither an object nor null")
    return RecordedEntry(ns, digest, int(created), obj["value"], request, bool(obj.get("request_redacted")))
