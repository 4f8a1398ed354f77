"""``dspy-tiered-cache warm``: fill the cache from a file of requests, checking credentials and the endpoint
first, and stopping after a run of failures (see docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dspy_tiered_cache.cli_common import PROG, CliError, one_line, out, require_healthy, settings_from_args
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.settings import mask_url


def _setdefault_litellm_env() -> None:
    # Without this LiteLLM retries a network fetch of its price map for seconds on import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def load_requests(path: str, model: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Read and check every line first: a typo on line 900 should fail before 899 paid calls, not after."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise CliError(f"no such file: {path}", 2) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}", 2) from None
    requests: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}:{lineno}: not JSON ({exc.msg})", 2) from None
        if not isinstance(data, dict):
            raise CliError(f"{path}:{lineno}: each line must be a JSON object (a LiteLLM request)", 2)
        if "prompt" in data and "messages" not in data:
            prompt = data.pop("prompt")
            if not isinstance(prompt, str):
                raise CliError(f'{path}:{lineno}: "prompt" must be a string', 2)
            data["messages"] = [{"role": "user", "content": prompt}]
        if "messages" not in data and "input" not in data:
            raise CliError(
                f'{path}:{lineno}: give "messages" (chat), "prompt" (one user message) or "input" (embeddings)', 2
            )
        data.setdefault("model", model)
        if not data["model"]:
            raise CliError(f'{path}:{lineno}: no model: add "model" to the line or pass --model', 2)
        if data.get("stream"):
            raise CliError(f'{path}:{lineno}: "stream" requests are not warmed (the answer is the same: drop it)', 2)
        requests.append((lineno, data))
    if not requests:
        raise CliError(f"{path}: no requests in the file", 2)
    return requests


class Progress:
    """One status line on stderr, redrawn in place on a terminal; silent otherwise (logs stay clean)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, done: int, skipped: int, warmed: int, failed: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        with self._lock:
            if not final and now - self._last < 0.1:
                return
            self._last = now
            width = 24
            filled = int(width * done / self.total) if self.total else width
            rate = warmed / (now - self.started) if now > self.started else 0.0
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}  cached {skipped}  "
                f"new {warmed}  failed {failed}  {rate:.1f} calls/s"
            )
            sys.stderr.write(line + ("\n" if final else ""))
            sys.stderr.flush()


def cmd_warm(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", 2)
    if args.max_failures < 1:
        raise CliError("--max-failures must be at least 1", 2)
    requests = load_requests(args.file, args.model)
    settings = settings_from_args(args, memory=False)
    _preflight(requests, args.api_base, None)  # before LiteLLM's import (seconds on a busy machine)
    _setdefault_litellm_env()
    import litellm

    from dspy_tiered_cache.integrations.litellm import TieredCache

    litellm.suppress_debug_info = True
    _preflight(requests, args.api_base, litellm)
    core = CacheCore(settings)
    try:
        require_healthy(core, "warm the cache")
        cache = TieredCache(core=core)
        previous, litellm.cache = litellm.cache, cache
        try:
            return _warm(args, requests, cache, core, litellm)
        finally:
            litellm.cache = previous
            core.flush(30.0)
    finally:
        core.close()


#: Where a provider answers when a request names no api_base (only those whose default we know).
_DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
_CONNECT_TIMEOUT_S = 3.0
#: Endpoints this process already reached (the check runs before and after LiteLLM's import).
_REACHED: set[str] = set()


#: The key variable of the providers most warm runs use, checked before LiteLLM is imported (the others are
#: checked with LiteLLM's own ``validate_environment`` once it is).
_KEY_VARIABLES = {"openai/": "OPENAI_API_KEY", "anthropic/": "ANTHROPIC_API_KEY"}


def _check_keys(requests: list[tuple[int, dict[str, Any]]], api_base: str | None, litellm: Any) -> None:
    """Without a key every call fails the same way, each after LiteLLM's retries: that used to take minutes and
    print the same error five times. A self-hosted endpoint (``api_base``) may need no key at all."""
    checked: set[str] = set()
    for lineno, request in requests:
        model = str(request["model"])
        if model in checked or request.get("api_base") or api_base or request.get("api_key"):
            continue
        checked.add(model)
        known = next((var for prefix, var in _KEY_VARIABLES.items() if model.startswith(prefix)), None)
        if known is not None:
            missing = None if os.environ.get(known) else known
        elif litellm is not None:
            check = litellm.validate_environment(model=model)
            missing = None if check.get("keys_in_environment") else (
                ", ".join(check.get("missing_keys") or []) or "the provider's API key"
            )  # fmt: skip
        else:
            continue
        if missing:
            raise CliError(f"line {lineno}: model {model} needs {missing} in the environment (or pass --api-base)")


def _preflight(requests: list[tuple[int, dict[str, Any]]], api_base: str | None, litellm: Any) -> None:
    """Check credentials and endpoints before the first paid call."""
    _check_keys(requests, api_base, litellm)
    endpoints: dict[str, str] = {}
    checked: set[tuple[str, str | None]] = set()
    for _, request in requests:
        model = str(request["model"])
        base = request.get("api_base") or api_base
        if (model, base) in checked:
            continue
        checked.add((model, base))
        if not base:
            provider = model.split("/", 1)[0] if "/" in model else None
            if provider not in _DEFAULT_ENDPOINTS and litellm is not None:
                try:
                    provider = litellm.get_llm_provider(model=model)[1]
                except Exception:
                    provider = None
            base = _DEFAULT_ENDPOINTS.get(str(provider))
        if base and str(base) not in _REACHED:
            endpoints.setdefault(str(base), model)
    for base in endpoints:
        problem = _unreachable(base)
        if problem:
            raise CliError(f"cannot warm: endpoint {mask_url(base)} is unreachable ({problem})")
        _REACHED.add(base)


def _unreachable(url: str) -> str | None:
    """Why a TCP connection to ``url``'s host cannot be opened within a few seconds (None: it can)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname
    if not host:
        return "no host in the URL"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except (OSError, ValueError) as exc:
        return one_line(str(exc)) or type(exc).__name__


def _warm(
    args: argparse.Namespace, requests: list[tuple[int, dict[str, Any]]], cache: Any, core: CacheCore, litellm: Any
) -> int:
    todo: list[tuple[int, dict[str, Any]]] = []
    skipped = 0
    for lineno, request in requests:
        call = dict(request)
        if args.api_base and "api_base" not in call:
            call["api_base"] = args.api_base
        if core.get(cache.get_cache_key(**call)) is not None:
            skipped += 1
        else:
            todo.append((lineno, call))
    progress = Progress(len(requests), enabled=not args.no_progress and sys.stderr.isatty())
    warmed = failed = 0
    errors: list[str] = []
    started = time.perf_counter()

    def one(call: dict[str, Any]) -> None:
        options = {"caching": True, "num_retries": args.retries}
        if args.timeout:
            options["timeout"] = args.timeout
        if "input" in call and "messages" not in call:
            litellm.embedding(**{**options, **call})
        else:
            litellm.completion(**{**options, **call})

    progress.update(skipped, skipped, 0, 0)
    consecutive = 0
    stopped: str | None = None
    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="dtc-warm") as pool:
        futures = {pool.submit(one, call): lineno for lineno, call in todo}
        for future in as_completed(futures):
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                warmed += 1
                consecutive = 0
            else:
                failed += 1
                consecutive += 1
                line = f"line {futures[future]}: {type(exc).__name__}: {one_line(str(exc))[:300]}"
                if len(errors) < 5:
                    errors.append(line)
                if stopped is None and consecutive >= args.max_failures:
                    # The same error N times in a row is the provider or the credentials, not the requests.
                    stopped = f"stopped after {consecutive} consecutive failures (last: {line})"
                    for pending in futures:
                        pending.cancel()
            progress.update(skipped + warmed + failed, skipped, warmed, failed)
    core.flush(30.0)
    progress.update(skipped + warmed + failed, skipped, warmed, failed, final=True)
    elapsed = time.perf_counter() - started
    out(
        f"warmed {warmed} new, {skipped} already cached, {failed} failed of {len(requests)} requests in {elapsed:.1f} s"
    )
    if stopped is not None:
        print(f"{PROG}: error: warm {stopped}", file=sys.stderr)
        return 1
    for line in errors:
        print(f"{PROG}: warm: {line}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} requests failed; run the same command again to retry only those", file=sys.stderr)
        return 1
    return 0
