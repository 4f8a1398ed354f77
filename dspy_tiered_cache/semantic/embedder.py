"""Embeddings for the semantic tier: any LiteLLM embedding model, with an exact cache of its own.

The tier embeds a request's last user turn on the lookup after an exact miss and again when the answer is
stored: the second is a dictionary hit here, so a miss costs one embedding call, not two. Behind the in-process
dictionary, vectors are kept where the index lives (the SQLite file, or Redis for every process), keyed by a
digest of the model and the text, so a text is embedded once per fleet, not once per process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from dspy_tiered_cache.semantic.index import Vector, unit

_MAX_ENTRIES = 4096


class EmbeddingStore(Protocol):
    def get_embedding(self, ident: str) -> Vector | None: ...

    def put_embedding(self, ident: str, vector: Vector) -> None: ...


class Embedder:
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        embed: Callable[[str], Any] | None = None,
        store: EmbeddingStore | None = None,
        secret: bytes | None = None,
    ) -> None:
        self._secret = secret
        self.model = model
        self.store = store
        self.api_base = api_base
        self._api_key = api_key
        self._embed = embed or self._litellm_embed
        self._embed_batch: Callable[[Sequence[str]], list[Any]] | None = None if embed else self._litellm_embed_batch
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0

    def _litellm_embed(self, text: str) -> Any:
        return self._litellm_embed_batch([text])[0]

    def _litellm_embed_batch(self, texts: Sequence[str]) -> list[Any]:
        import litellm

        kwargs: dict[str, Any] = {}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        # Never through litellm.cache (that may be us): no lookup, no store, no recursion into this tier.
        response = litellm.embedding(
            model=self.model, input=list(texts), caching=False, cache={"no-cache": True, "no-store": True}, **kwargs
        )
        return [item["embedding"] if isinstance(item, dict) else item.embedding for item in response.data]

    def embed_many(self, texts: Sequence[str]) -> list[Vector]:
        """Vectors for several short texts (the verifier's words): what is not cached goes out in one batch call
        (through LiteLLM) and is kept in the in-process dictionary only (words are few and shared by requests)."""
        with self._lock:
            # Read what is cached now: adding the fresh ones below may evict some of these (a KeyError later).
            found: dict[str, Vector] = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            if self._embed_batch is not None:
                fresh = [unit(np.asarray(v, dtype=np.float32)) for v in self._embed_batch(missing)]
            else:
                fresh = [unit(np.asarray(self._embed(t), dtype=np.float32)) for t in missing]
            self.calls += 1 if self._embed_batch is not None else len(missing)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > _MAX_ENTRIES:
                    self._cache.popitem(last=False)
            found.update(zip(missing, fresh, strict=True))
        return [found[text] for text in texts]

    def embed(self, text: str) -> Vector:
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        material = f"{self.model}\x00{text}".encode()
        # Keyed like entries are: under key_secret, a stored vector's name does not confirm a guessed prompt.
        digest = hmac.digest(self._secret, material, "sha256") if self._secret else hashlib.sha256(material).digest()
        ident = digest[:20].hex()
        vector = self._stored(ident)
        if vector is None:
            vector = unit(np.asarray(self._embed(text), dtype=np.float32))
            self.calls += 1
            if self.store is not None:
                # A cache of a cache: failing to keep a vector costs one more embedding call later, nothing else.
                with contextlib.suppress(Exception):
                    self.store.put_embedding(ident, vector)
        with self._lock:
            self._cache[text] = vector
            if len(self._cache) > _MAX_ENTRIES:
                self._cache.popitem(last=False)
        return vector

    def _stored(self, ident: str) -> Vector | None:
        if self.store is None:
            return None
        try:
            return self.store.get_embedding(ident)
        except Exception:
            return None
