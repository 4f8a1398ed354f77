"""The semantic tier: after an exact miss, serve the answer of a *verified* near-identical earlier request.

Lookup: guards (:mod:`.scope`) -> embed the last user turn (:mod:`.embedder`, cached) -> the ``k`` nearest
neighbours in the request's partition over ``semantic_threshold`` (:mod:`.index`) -> the first neighbour the
verifier (:mod:`.verifier`) accepts -> its answer, read by its exact key through the ordinary tiers.
Store: after an answer was stored under its exact key, index its last user turn in the same partition.

Like every tier it fails open: an embedding error, a Redis timeout, a server without vector search is a miss
(the last reported once, as a warning, after which the tier stays off for this process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.options import Hit
from dspy_tiered_cache.semantic.embedder import Embedder
from dspy_tiered_cache.semantic.index import IndexUnavailable, LocalIndex, RedisIndex, VectorIndex
from dspy_tiered_cache.semantic.scope import Guards, Scope, scope_of
from dspy_tiered_cache.semantic.verifier import make_verifier
from dspy_tiered_cache.settings import check_namespace
from dspy_tiered_cache.stats import TierStats

log = logging.getLogger("dspy_tiered_cache")

TIER_NAME = "semantic"


def default_index(core: CacheCore) -> VectorIndex | None:
    """Redis vector search when the core has a (non-Cluster) Redis tier, else a SQLite file beside the disk
    tier's, else an in-memory SQLite table. None: no index can serve this configuration."""
    from dspy_tiered_cache.tiers.disk import DiskTier
    from dspy_tiered_cache.tiers.redis import RedisTier

    s = core.settings
    redis_tier = next((t for t in reversed(core.tiers) if isinstance(t, RedisTier)), None)
    if redis_tier is not None:
        if redis_tier.cluster:
            return None  # the open-source Query Engine does not search across Cluster shards
        return RedisIndex(lambda: redis_tier.client, s.key_prefix)
    if any(isinstance(t, DiskTier) for t in core.tiers):
        return LocalIndex(s.disk_path.with_name(s.disk_path.name + ".semantic"))
    return LocalIndex(None)


class SemanticTier:
    def __init__(
        self,
        core: CacheCore,
        *,
        index: VectorIndex | None = None,
        embed: Callable[[str], Any] | None = None,
    ) -> None:
        s = core.settings
        self.core = core
        self.threshold = s.semantic_threshold
        self.candidates = s.semantic_candidates
        self.guards = Guards(
            max_chars=s.semantic_max_chars, max_messages=s.semantic_max_messages, allow_tools=s.semantic_allow_tools
        )
        self.verifier = make_verifier(
            s.semantic_verifier,
            judge_model=s.semantic_judge_model,
            judge_api_base=s.semantic_judge_api_base,
            judge_api_key=s.semantic_judge_api_key.get_secret_value() if s.semantic_judge_api_key else None,
        )
        self.index: VectorIndex | None = index if index is not None else default_index(core)
        self.embedder = Embedder(
            s.semantic_embedding_model,
            api_base=s.semantic_embedding_api_base,
            api_key=s.semantic_embedding_api_key.get_secret_value() if s.semantic_embedding_api_key else None,
            embed=embed,
            store=self.index,
            secret=s.key_secret.get_secret_value().encode() if s.key_secret is not None else None,
        )
        self.available = self.index is not None
        self._secret = s.key_secret.get_secret_value().encode() if s.key_secret is not None else None
        self.tstats = core.stats.tiers.setdefault(TIER_NAME, TierStats(TIER_NAME))
        self._lock = threading.Lock()
        #: Why lookups did not hit: guard names, verifier rule names, "below_threshold", "error".
        self.reasons: dict[str, int] = {}
        if self.index is None:
            self._unavailable("a Redis Cluster has no cross-shard vector search")

    def _count(self, reason: str) -> None:
        with self._lock:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def _unavailable(self, why: str) -> None:
        self.available = False
        log.warning("dspy_tiered_cache: the semantic tier is unavailable (%s); exact caching continues", why)

    def _scope(self, request: Mapping[str, Any], namespace: str | None) -> Scope | str:
        try:
            ns = check_namespace(namespace) if namespace else self.core.settings.namespace
        except ValueError:
            return "uncacheable"
        return scope_of(request, ns, self.core.generation(ns), self.guards, self._secret)

    def lookup(self, request: Mapping[str, Any], namespace: str | None = None) -> tuple[Hit, float] | None:
        """The answer of a verified neighbour and its similarity, or None; never raises."""
        if not self.available or not self.core.settings.enabled:
            return None
        started = time.perf_counter()
        scope = self._scope(request, namespace)
        if isinstance(scope, str):
            self._count("skipped_" + scope)
            return None
        found = self._search(scope)
        self.tstats.observe(time.perf_counter() - started)
        if found is None:
            self.tstats.misses += 1
        else:
            self.tstats.hits += 1
        return found

    def _search(self, scope: Scope) -> tuple[Hit, float] | None:
        index = self.index
        assert index is not None
        try:
            vector = self.embedder.embed(scope.text)
            neighbours = index.search(scope.partition, vector, self.candidates, self.threshold)
        except IndexUnavailable as exc:
            self._unavailable(str(exc))
            return None
        except Exception as exc:
            self.tstats.errors += 1
            self._count("error")
            log.debug("dspy_tiered_cache: semantic lookup failed: %r", exc)
            return None
        if not neighbours:
            self._count("below_threshold")
            return None
        for neighbour in neighbours:
            if neighbour.text != scope.text:
                rule = self.verifier.check(scope.text, neighbour.text)
                if rule is not None:
                    self._count("rejected_" + rule)
                    continue
            hit = self.core.get(neighbour.key)
            if hit is not None:
                # The call's exact lookup counted a miss, the read above a hit: the call was answered from cache.
                self.core.stats.miss(neighbour.key, -1)  # same namespace: the fleet's count matches ours
                return hit, neighbour.similarity
            self._count("answer_gone")
        return None

    def store(self, request: Mapping[str, Any], key: str, namespace: str | None = None) -> bool:
        """Index a request whose answer was just stored under ``key``; never raises."""
        if not self.available or not self.core.settings.enabled:
            return False
        scope = self._scope(request, namespace)
        if isinstance(scope, str):
            return False
        ttl = self.core.settings.ttl
        expires_at = time.time() + ttl if ttl is not None else None
        index = self.index
        assert index is not None
        try:
            index.add(scope.partition, key, scope.text, self.embedder.embed(scope.text), expires_at)
        except IndexUnavailable as exc:
            self._unavailable(str(exc))
            return False
        except Exception as exc:
            self.tstats.errors += 1
            log.debug("dspy_tiered_cache: semantic store failed: %r", exc)
            return False
        self.tstats.sets += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            reasons = dict(self.reasons)
        return {
            "available": self.available,
            "index": self.index.name if self.index is not None else None,
            "verifier": self.verifier.name,
            "threshold": self.threshold,
            "reasons": reasons,
        }

    def clear(self) -> None:
        """Forget every indexed request (the answers themselves live in, and are cleared from, the exact tiers)."""
        if self.index is not None and self.available:
            try:
                self.index.clear()
            except Exception as exc:
                log.debug("dspy_tiered_cache: clearing the semantic index failed: %r", exc)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
