"""Cores shared across copies and pickles of a program: one live core per cache, never a secret in a pickle.

``copy.deepcopy(program)`` and ``cloudpickle`` (DSPy's ``save_program=True``) copy every ``CachedLM``. A copy in
the same process must reuse the same core and its connections (a token names it); a copy unpickled elsewhere
rebuilds a core from the pickled settings minus secrets and machine-local paths, which come from that
process's own ``DSPY_TIERED_CACHE_*`` environment.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from typing import Any

from pydantic import SecretStr

from dspy_tiered_cache import core as core_module
from dspy_tiered_cache.core import CacheCore, default_core
from dspy_tiered_cache.settings import CacheSettings

log = logging.getLogger("dspy_tiered_cache.dspy")

_registry_lock = threading.Lock()
#: token -> live core, so unpickling (and deepcopy) in the same process reuses the core and its connections.
_cores: weakref.WeakValueDictionary[str, CacheCore] = weakref.WeakValueDictionary()
_tokens: weakref.WeakKeyDictionary[CacheCore, str] = weakref.WeakKeyDictionary()
#: Settings never carried by a pickle: secrets (a password in a Redis URL, the key secret) and machine-local
#: paths. The process that loads the pickle takes them from its own environment.
_LOCAL_FIELDS = frozenset({"redis_url", "key_secret", "disk_path"})


def _token_of(core: CacheCore) -> str:
    with _registry_lock:
        token = _tokens.get(core)
        if token is None:
            token = uuid.uuid4().hex
            _tokens[core] = token
            _cores[token] = core
        return token


def public_settings(settings: CacheSettings) -> dict[str, Any]:
    """Settings minus secrets and local paths, as plain JSON (for pickles of a program holding a ``CachedLM``)."""
    secret = {name for name, value in settings if isinstance(value, SecretStr)}
    data = settings.model_dump(mode="json", exclude=set(_LOCAL_FIELDS) | secret)
    return {k: v for k, v in data.items() if not k.endswith(("_password", "_secret", "_token"))}


def core_spec(core: CacheCore) -> dict[str, Any]:
    """What a pickle carries of ``core``: its token in this process, whether it is the default, public settings."""
    return {
        "token": _token_of(core),
        "default": core is core_module._default_core,
        "settings": public_settings(core.settings),
    }


def core_from_spec(spec: dict[str, Any]) -> CacheCore:
    """The core a pickle names: the same live core in this process, else one from env + pickled settings."""
    token = str(spec.get("token", ""))
    with _registry_lock:
        core = _cores.get(token)
    if core is not None:
        return core
    core = default_core() if spec.get("default") else _core_from(dict(spec.get("settings") or {}))
    with _registry_lock:
        existing = _cores.get(token)
        if existing is not None:
            core.close()
            return existing
        _cores[token] = core
        _tokens[core] = token
    return core


def _core_from(settings: dict[str, Any]) -> CacheCore:
    try:
        return CacheCore(**settings)
    except Exception as exc:  # e.g. pickled by a version with other settings: unpickling must not fail
        log.warning("dspy_tiered_cache: cannot rebuild the pickled cache settings (%s); using the env's", exc)
        return default_core()
