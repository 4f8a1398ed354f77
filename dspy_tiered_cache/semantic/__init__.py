"""The opt-in semantic tier (``semantic=True``): verified near-duplicate hits after an exact miss."""

from dspy_tiered_cache.semantic.tier import SemanticTier
from dspy_tiered_cache.semantic.verifier import RuleVerifier

__all__ = ["RuleVerifier", "SemanticTier"]
