"""The semantic tier: after an exact miss, serve the answer of a *verified* near-identical earlier request.

Lookup: guards (:mod:`.scope`) -> embed the last user turn (:mod:`.embedder`, cached) -> the ``k`` nearest
neighbours in the request's partition over ``semantic_threshold`` (:mod:`.index`) -> the first neighbour the
verifier (:mod:`.verifier`) accepts -> its answer, read by its exact key through the ordinary tiers.
Store: after an answer was stored under its exact key, index its last user turn in the same partition.

Like every tier it fails open: an embedding error, a Redis timeout, a server without vector search is a miss
(the last reported once, as a warning, after which the tier stays off for this process).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dspy_tiered_cache.options import Hit
from dspy_tiered_cache.semantic.embedder import Embedder
from dspy_tiered_cache.semantic.index import IndexUnavailable, LocalIndex, RedisIndex, VectorIndex
from dspy_tiered_cache.semantic.learned import LearnedVerifier
from dspy_tiered_cache.semantic.scope import Guards, Scope, scope_of
from dspy_tiered_cache.semantic.verifier import make_verifier
from dspy_tiered_cache.settings import check_namespace
from dspy_tiered_cache.stats import TierStats

if TYPE_CHECKING:  # features stand on the core; the tier only needs its public operations at run time
    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.tiers.base import Tier

log = logging.getLogger("dspy_tiered_cache")

TIER_NAME = "semantic"
#: The cosine floor when ``semantic_threshold`` is unset and no learned head ships for the model: the lowest
#: that kept the rules' wrong answers <= 1 % on third-party pairs (docs/semantic.md).
RULES_THRESHOLD = 0.95


def _local_index(tiers: list[Tier], core: CacheCore) -> LocalIndex:
    """A SQLite file beside the disk tier's when there is one (shared by this machine's processes), else memory."""
    if any(t.name == "disk" for t in tiers):
        path = core.settings.disk_path
        return LocalIndex(path.with_name(path.name + ".semantic"), core.settings.semantic_max_rows)
    return LocalIndex(None, core.settings.semantic_max_rows)


def default_index(core: CacheCore) -> VectorIndex | None:
    """Redis vector search when the core has a (non-Cluster) Redis tier, else the per-machine SQLite index.
    None: no index can serve this configuration (a Cluster: the open-source Query Engine does not search across
    shards). Tiers are told apart by their protocol ``name`` ("l2" is the Redis tier), never by probing a
    property: a Redis tier's ``client`` builds a connection."""
    tiers: list[Tier] = list(core.tiers)
    redis_tier = next((t for t in reversed(tiers) if t.name == "l2"), None)
    if redis_tier is not None:
        if getattr(redis_tier, "cluster", False):
            return None
        prefix, rows = core.settings.key_prefix, core.settings.semantic_max_rows
        return RedisIndex(lambda: redis_tier.client, prefix, rows)  # type: ignore[attr-defined]
    return _local_index(tiers, core)


def partition_of(scope_partition: str, model: str, dim: int) -> str:
    """The index partition: the request's scope, the embedding model and its dimension. Vectors of two models
    never meet (a changed ``semantic_embedding_model`` starts an empty partition instead of comparing apples
    with pears), and a tag-safe hex string for Redis."""
    return hashlib.blake2b(f"{scope_partition}\x00{model}\x00{dim}".encode(), digest_size=16).hexdigest()


def expiry_of(ttl: Any, default: float | None, now: float) -> tuple[bool, float | None]:
    """Whether to index at all, and when the row expires: the call's own ``ttl`` (seconds, as LiteLLM passes it)
    or the configured one. A zero lifetime stores no answer, so nothing is indexed."""
    if ttl is not None:
        try:
            seconds = float(ttl)
        except (TypeError, ValueError):
            seconds = float("nan")
        if seconds == float("inf"):
            return True, None
        if seconds == seconds:  # not NaN
            return seconds > 0, now + seconds
    return True, (now + default if default is not None else None)


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
        self.candidates = s.semantic_candidates
        self.guards = Guards(
            max_chars=s.semantic_max_chars, max_messages=s.semantic_max_messages, allow_tools=s.semantic_allow_tools
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
        self.verifier: Any
        if s.semantic_verifier == "learned":
            self.verifier = LearnedVerifier(s.semantic_embedding_model, self.embedder.embed_many)
        else:
            self.verifier = make_verifier(
                s.semantic_verifier,
                embed_words=self.embedder.embed_many,
                judge_model=s.semantic_judge_model,
                judge_api_base=s.semantic_judge_api_base,
                judge_api_key=s.semantic_judge_api_key.get_secret_value() if s.semantic_judge_api_key else None,
            )
        floor = getattr(self.verifier, "cosine_floor", None)
        default = floor if floor is not None else RULES_THRESHOLD
        self.threshold: float = s.semantic_threshold if s.semantic_threshold is not None else default
        self.available = self.index is not None
        self._secret = s.key_secret.get_secret_value().encode() if s.key_secret is not None else None
        self.tstats = core.stats.tiers.setdefault(TIER_NAME, TierStats(TIER_NAME))
        self._lock = threading.Lock()
        #: Why lookups did not hit: guard names, verifier rule names, "below_threshold", "error".
        self.reasons: dict[str, int] = {}
        self._warned_embedding = False
        if self.index is None:
            self._unavailable("a Redis Cluster has no cross-shard vector search")

    def _count(self, reason: str) -> None:
        with self._lock:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def _unavailable(self, why: str) -> None:
        self.available = False
        log.warning("dspy_tiered_cache: the semantic tier is unavailable (%s); exact caching continues", why)

    def _fall_back(self, why: str) -> None:
        """A Redis without vector search: keep the tier on with this machine's index, and say so once."""
        with self._lock:
            if isinstance(self.index, LocalIndex):
                return
            self.index = _local_index(list(self.core.tiers), self.core)
            self.embedder.store = self.index
        log.warning(
            "dspy_tiered_cache: the semantic tier uses a per-machine index (%s): %s. Neighbours are found among "
            "requests this machine stored; Redis 8, Redis Stack or Valkey with its search module share the index "
            "across machines",
            self.index.path or "in memory",
            why,
        )

    def _embedding_failed(self, exc: BaseException) -> None:
        """Warn once, naming the model, the endpoint and the settings to change; afterwards only count."""
        self.tstats.errors += 1
        self._count("embedding_error")
        with self._lock:
            first = not self._warned_embedding
            self._warned_embedding = True
        if first:
            endpoint = self.embedder.api_base or "LiteLLM's default endpoint for that model (no api_base set)"
            log.warning(
                "dspy_tiered_cache: the semantic tier cannot embed with %r at %s: %s. Semantic lookups are misses "
                "until it can (exact caching continues; further failures are only counted in stats()['semantic']). "
                "Set semantic_embedding_model, semantic_embedding_api_base and semantic_embedding_api_key "
                "(DSPY_TIERED_CACHE_SEMANTIC_EMBEDDING_*) to a reachable embedding model",
                self.embedder.model,
                endpoint,
                str(exc)[:300],
            )
        else:
            log.debug("dspy_tiered_cache: semantic embedding failed: %r", exc)

    def _scope(self, request: Mapping[str, Any], namespace: str | None) -> Scope | str:
        try:
            ns = check_namespace(namespace) if namespace else self.core.settings.namespace
        except ValueError:
            return "uncacheable"
        return scope_of(request, ns, self.core.generation(ns), self.guards, self._secret)

    def _embed(self, text: str) -> Any:
        try:
            return self.embedder.embed(text)
        except Exception as exc:
            self._embedding_failed(exc)
            return None

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
        vector = self._embed(scope.text)
        if vector is None:
            return None
        partition = partition_of(scope.partition, self.embedder.model, int(vector.shape[0]))
        try:
            neighbours = self._index().search(partition, vector, self.candidates, self.threshold)
        except IndexUnavailable as exc:
            self._fall_back(str(exc))
            return None
        except Exception as exc:
            self.tstats.errors += 1
            self._count("index_error")
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

    def _index(self) -> VectorIndex:
        index = self.index
        assert index is not None  # only called while available
        return index

    def store(self, request: Mapping[str, Any], key: str, namespace: str | None = None, ttl: Any = None) -> bool:
        """Index a request whose answer was just stored under ``key`` for ``ttl`` seconds (the call's own
        lifetime, or the configured one when None), so the row never outlives its answer; never raises."""
        if not self.available or not self.core.settings.enabled:
            return False
        scope = self._scope(request, namespace)
        if isinstance(scope, str):
            return False
        keep, expires_at = expiry_of(ttl, self.core.settings.ttl, time.time())
        if not keep:
            return False
        vector = self._embed(scope.text)
        if vector is None:
            return False
        partition = partition_of(scope.partition, self.embedder.model, int(vector.shape[0]))
        try:
            self._index().add(partition, key, scope.text, vector, expires_at)
        except IndexUnavailable as exc:
            self._fall_back(str(exc))
            return self.store(request, key, namespace, ttl) if isinstance(self.index, LocalIndex) else False
        except Exception as exc:
            self.tstats.errors += 1
            log.debug("dspy_tiered_cache: semantic store failed: %r", exc)
            return False
        self.tstats.sets += 1
        return True

    def forget(self, key: str) -> None:
        """``delete()`` of an exact entry removes its index row too; never raises."""
        if self.index is None:
            return
        try:
            self.index.delete(key)
        except Exception as exc:
            log.debug("dspy_tiered_cache: removing a semantic index row failed: %r", exc)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            reasons = dict(self.reasons)
        return {
            "available": self.available,
            "index": self.index.name if self.index is not None else None,
            "embedding_model": self.embedder.model,
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
