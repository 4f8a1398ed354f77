"""The semantic tier behind the DSPy door: ``CachedLM(lm, semantic=True)``.

Why a wrapper of the adapter's two calls and not a change inside them: the door stays a thin adapter that knows
nothing of embeddings, and this feature stands on its public operations (``get``/``put``/``key``). DSPy's
request dict is what the LiteLLM door sees too (model, messages, sampling parameters), so the same guards,
partitions and verifier apply.

Exact behaviour is kept where DSPy asks for distinct answers: a request carrying a ``rollout_id`` (optimizers and
``dspy.Refine``/``BestOfN`` sample several answers to one prompt that way) or ``n`` > 1 never takes a neighbour's
answer and is never indexed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dspy_tiered_cache.options import UNSET
from dspy_tiered_cache.semantic.tier import SemanticTier

if TYPE_CHECKING:
    from dspy_tiered_cache.core import CacheCore

log = logging.getLogger("dspy_tiered_cache")


def _eligible(request: Mapping[str, Any]) -> bool:
    if request.get("rollout_id") is not None:
        return False
    n = request.get("n")
    return n is None or n == 1


def _ttl_of(adapter: Any) -> Any:
    """The adapter's per-LM lifetime in LiteLLM's spelling: None = the settings' ttl, inf = no expiry."""
    ttl = adapter.ttl
    if ttl is UNSET:
        return None
    return float("inf") if ttl is None else ttl


def attach(adapter: Any, core: CacheCore) -> SemanticTier:
    """Make ``adapter`` (a ``DSPyCacheAdapter``) look up verified neighbours after an exact miss, and index what it
    stores. Returns the tier (its ``snapshot()`` says why lookups did not hit)."""
    tier = SemanticTier(core)
    exact_get, exact_put = adapter.get, adapter.put

    def get(request: Mapping[str, Any], ignored_args_for_cache_key: list[str] | None = None, scope: Any = None) -> Any:
        value = exact_get(request, ignored_args_for_cache_key, scope)
        if value is not None or not _eligible(request) or (scope is not None and scope.level != "miss"):
            return value
        found = tier.lookup(request, adapter.namespace)
        if found is None:
            return None
        hit, similarity = found
        if scope is not None:
            scope.level = "semantic"
            scope.end_all(None)  # a flight this call leads: its followers go upstream for their own answer
        key = scope.key if scope is not None and scope.key else ""
        value = adapter._revive(hit.value, request, key, scope, created_at=hit.created_at)
        if scope is not None and isinstance(scope.cache, dict):
            scope.cache["similarity"] = round(similarity, 4)
        return value

    def put(
        request: Mapping[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
        scope: Any = None,
    ) -> None:
        exact_put(request, value, ignored_args_for_cache_key, enable_memory_cache, scope)
        if scope is not None and scope.level == "semantic":
            return  # DSPy does not store hits; should it, a neighbour's answer is not indexed under this text
        if _eligible(request):
            key = adapter.key(request, ignored_args_for_cache_key)
            if key is not None:
                tier.store(request, key, adapter.namespace, _ttl_of(adapter))

    adapter.get, adapter.put = get, put
    adapter.semantic = tier
    return tier
