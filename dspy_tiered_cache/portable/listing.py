"""``dspy-tiered-cache inspect``: one row per recorded entry (namespace, model, first words, tokens, age)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from dspy_tiered_cache.modes import model_of, prompt_of
from dspy_tiered_cache.portable.fileformat import Recording, read_recording


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
