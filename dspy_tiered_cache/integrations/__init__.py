"""Front doors: LiteLLM (TieredCache) and DSPy (CachedLM)."""
