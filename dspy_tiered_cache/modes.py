"""Cache modes: ``read-write`` (the default), ``replay`` (answers come only from the cache) and ``refresh``.

A mode is a setting like any other (``DSPY_TIERED_CACHE_MODE``, ``TieredCache(mode=...)``,
``CachedLM(lm, mode=...)``, ``@cached(mode=...)``). The core makes the one decision (see
``CacheCore._begin_lookup`` and ``CacheCore._missed``) for every door, sync and async:

* ``replay``: a lookup that misses raises :class:`ReplayMiss` at once, before any upstream call, and nothing is
  written. The message says which request was not recorded and, when the cache holds recorded requests (see
  ``record_requests``), how the closest one differs: a changed prompt is then a one-line diagnosis, not a hunt.
* ``refresh``: lookups are skipped (every call goes upstream) and every answer is written: re-recording.

This module holds the pure parts (names, the exception, reading a canonical request, the closest-request diff);
it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import orjson

from dspy_tiered_cache.errors import CacheError

Mode = Literal["read-write", "replay", "refresh"]
READ_WRITE: Final = "read-write"
REPLAY: Final = "replay"
REFRESH: Final = "refresh"
MODES: Final[tuple[str, ...]] = (READ_WRITE, REPLAY, REFRESH)

#: Fields of a canonical request that say how it was delivered or keyed, not what it asked (ignored in diffs).
_NOISE: Final = frozenset({"__door__", "_fn_identifier"})
_SHOWN_DIFFERENCES: Final = 3


def check_mode(value: str | None) -> str | None:
    """The one rule for mode names; raises ValueError naming the choices."""
    if value is None:
        return None
    text = str(value).strip().lower().replace("_", "-")
    if text not in MODES:
        raise ValueError(f"mode {value!r} is not one of {', '.join(MODES)}")
    return text


class ReplayMiss(CacheError):
    """A call in ``replay`` mode asked something that was never recorded; nothing was sent upstream.

    Attributes name what the message says, for tools that want to show it their own way.
    """

    def __init__(
        self,
        *,
        model: str | None,
        namespace: str,
        prompt: str | None,
        difference: str | None = None,
        key: str | None = None,
        reason: str = "was never recorded",
        prompt_label: str = "last user message",
    ) -> None:
        self.model = model
        self.namespace = namespace
        self.prompt = prompt
        self.difference = difference
        self.key = key
        parts = [
            f"replay mode: this request {reason} (model {model or '?'}, namespace {namespace!r}"
            + (f", {prompt_label} {abbreviate(prompt)!r})" if prompt is not None else ")")
        ]
        if difference:
            parts.append(f"closest recorded request differs in {difference}")
        parts.append(
            "record it (mode read-write or refresh, or pytest --llm-cache=record) or restore the recorded request"
        )
        super().__init__("; ".join(parts))

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only __init__: pickle (multiprocessing) must still work
        return (_rebuild, (self.model, self.namespace, self.prompt, self.difference, self.key, str(self)))


def _rebuild(
    model: str | None, namespace: str, prompt: str | None, difference: str | None, key: str | None, text: str
) -> ReplayMiss:
    exc = ReplayMiss(model=model, namespace=namespace, prompt=prompt, difference=difference, key=key)
    exc.args = (text,)
    return exc


def abbreviate(text: str, limit: int = 120) -> str:
    """One line, at most ``limit`` characters: the start (where the question usually is) and the end."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    tail = limit // 4
    return f"{flat[: limit - tail - 5]} ... {flat[-tail:]}"


# -------------------------------------------------------------------------------- reading canonical requests


def _messages(request: Mapping[str, Any]) -> list[Any] | None:
    """The chat messages of a door's request: LiteLLM's and DSPy-on-LiteLLM's at the top, DSPy native's inside
    ``request``."""
    for holder in (request, request.get("request")):
        if isinstance(holder, Mapping):
            messages = holder.get("messages")
            if isinstance(messages, list):
                return messages
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(part) for part in content)
    if isinstance(content, Mapping):
        for field in ("text", "content", "parts"):
            if field in content:
                return _text(content[field])
    return ""


def model_of(request: Mapping[str, Any]) -> str | None:
    for holder in (request, request.get("request")):
        if isinstance(holder, Mapping) and isinstance(holder.get("model"), str):
            return str(holder["model"])
    fn = request.get("__dtc_fn__")
    return f"function {fn}" if isinstance(fn, str) else None


def prompt_of(request: Mapping[str, Any]) -> str | None:
    """The last user message (what a user recognises a request by), else the prompt/input, else the arguments."""
    messages = _messages(request)
    if messages:
        users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
        last = users[-1] if users else messages[-1]
        return _text(last.get("content", last) if isinstance(last, Mapping) else last)
    for field in ("prompt", "input"):
        if field in request:
            value = request[field]
            return value if isinstance(value, str) else orjson.dumps(value).decode()
    rest = {k: v for k, v in request.items() if not k.startswith("__dtc_")}
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode() if rest else None


# ---------------------------------------------------------------------------------------- the closest request


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k not in _NOISE:
                _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{path}[{i}]", out)
    else:
        out[path] = value


def _flat(request: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten(request, "", out)
    return out


_ABSENT: Final = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return repr(abbreviate(value, 60)) if isinstance(value, str) else abbreviate(orjson.dumps(value).decode(), 60)



def _text_change(new: str, old: str) -> str:
    """Where two long texts part: the differing stretch with a few characters of context on each side."""
    start, end = _common_ends(new, old)
    lo = max(0, start - 25)

    def stretch(text: str) -> str:
        hi = len(text) - end + 15
        piece = text[lo:hi]
        return ("..." if lo else "") + abbreviate(piece, 80) + ("..." if hi < len(text) else "")

    return f"{stretch(new)!r} (recorded: {stretch(old)!r})"


def _distance(new: Any, old: Any) -> float:
    """How far apart two differing values are, 0..1: texts by what they share at both ends, the rest as 1."""
    if not (isinstance(new, str) and isinstance(old, str)):
        return 1.0
    longest = max(len(new), len(old)) or 1
    start, end = _common_ends(new, old)
    return 1.0 - (start + end) / longest


def _common_ends(new: str, old: str) -> tuple[int, int]:
    """How many characters two texts share at their start, and then at their end (never overlapping)."""
    shortest = min(len(new), len(old))
    start = 0
    while start < shortest and new[start] == old[start]:
        start += 1
    end = 0
    while end < shortest - start and new[-1 - end] == old[-1 - end]:
        end += 1
    return start, end


def describe_difference(request: Mapping[str, Any], recorded: Iterable[Mapping[str, Any]]) -> str | None:
    """How the recorded request closest to ``request`` differs from it (fewest differing fields), or None when
    nothing was recorded to compare with."""
    mine = _flat(request)
    best: tuple[tuple[int, float], list[str], dict[str, Any]] | None = None
    for other in recorded:
        theirs = _flat(other)
        changed = sorted(p for p in mine.keys() | theirs.keys() if mine.get(p, _ABSENT) != theirs.get(p, _ABSENT))
        score = (len(changed), sum(_distance(mine.get(p, _ABSENT), theirs.get(p, _ABSENT)) for p in changed))
        if best is None or score < best[0]:
            best = (score, changed, theirs)
    if best is None:
        return None
    _, changed, theirs = best
    if not changed:
        return "nothing (the same request under another key: recorded with another key_secret?)"
    shown = []
    for path in changed[:_SHOWN_DIFFERENCES]:
        new, old = mine.get(path, _ABSENT), theirs.get(path, _ABSENT)
        if isinstance(new, str) and isinstance(old, str) and max(len(new), len(old)) > 60:
            shown.append(f"{path}: {_text_change(new, old)}")
        else:
            shown.append(f"{path}: {_show(new)} (recorded: {_show(old)})")
    more = len(changed) - len(shown)
    return "; ".join(shown) + (f"; and {more} more field(s)" if more > 0 else "")
