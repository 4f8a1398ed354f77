"""Embeddings for the semantic tier: any LiteLLM embedding model, each text embedded once per process.

The tier embeds a request's last user turn on the lookup after an exact miss and again when the answer is
stored: the second is a dictionary hit here, so a miss costs one embedding call, not two.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from dspy_tiered_cache.semantic.index import Vector, unit

_MAX_ENTRIES = 4096


class Embedder:
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        embed: Callable[[str], Any] | None = None,
    ) -> None:
        self.model = model
        self._api_base = api_base
        self._api_key = api_key
        self._embed = embed or self._litellm_embed
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0

    def _litellm_embed(self, text: str) -> Any:
        import litellm

        kwargs: dict[str, Any] = {}
        if self._api_base:
            kwargs["api_base"] = self._api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        # Never through litellm.cache (that may be us): no lookup, no store, no recursion into this tier.
        response = litellm.embedding(
            model=self.model, input=[text], caching=False, cache={"no-cache": True, "no-store": True}, **kwargs
        )
        item = response.data[0]
        return item["embedding"] if isinstance(item, dict) else item.embedding

    def embed(self, text: str) -> Vector:
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        vector = unit(np.asarray(self._embed(text), dtype=np.float32))
        self.calls += 1
        with self._lock:
            self._cache[text] = vector
            if len(self._cache) > _MAX_ENTRIES:
                self._cache.popitem(last=False)
        return vector
