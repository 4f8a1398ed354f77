"""The semantic tier behind the DSPy door (``CachedLM(lm, semantic=True)``): real DSPy programs, real HTTP to the
stand-in provider (chat and its bag-of-words embeddings), the embedded disk tier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import pytest

from dspy_tiered_cache.integrations.dspy import CachedLM, uninstall_dspy_cache
from dspy_tiered_cache.testing.provider import StandInProvider

pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing OpenAI-style message dictionaries:DeprecationWarning",
    "ignore::pydantic.warnings.PydanticDeprecatedSince20",
)

QUESTION = "How do I reset my password for the billing portal?"
PARAPHRASE = "How can I reset my password for the billing portal?"


@pytest.fixture(autouse=True)
def _dspy_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    yield
    uninstall_dspy_cache()
    dspy.configure(lm=None)


def _lm(provider: StandInProvider, tmp_path: Path, **settings: Any) -> CachedLM:
    lm = dspy.LM("openai/gpt-4o-mini", api_base=provider.base_url, api_key="sk-test", num_retries=0)
    return CachedLM(
        lm,
        disk=True,
        disk_path=tmp_path / "c.sqlite3",
        semantic_threshold=0.7,  # the bag-of-words embedding's scale, not a sentence model's
        semantic_embedding_model="openai/bag-of-words",
        semantic_embedding_api_base=provider.base_url,
        semantic_embedding_api_key="sk-test",
        **settings,
    )


def test_a_paraphrase_is_served_when_the_lm_opts_in(provider: StandInProvider, tmp_path: Path) -> None:
    lm = _lm(provider, tmp_path, semantic=True)
    dspy.configure(lm=lm)
    predict = dspy.Predict("question -> answer")
    first = predict(question=QUESTION)
    lm.core.flush()
    again = predict(question=PARAPHRASE)
    assert provider.count("chat") == 1
    assert again.answer == first.answer
    entry = lm.history[-1]
    assert entry["cache"]["level"] == "semantic" and 0.7 <= entry["cache"]["similarity"] < 1.0
    assert lm.core.stats.snapshot()["tiers"]["semantic"]["hits"] == 1


def test_off_unless_asked(provider: StandInProvider, tmp_path: Path) -> None:
    dspy.configure(lm=_lm(provider, tmp_path))
    predict = dspy.Predict("question -> answer")
    predict(question=QUESTION)
    predict(question=PARAPHRASE)
    assert provider.count("chat") == 2 and provider.count("embeddings") == 0


def test_rollouts_keep_exact_behaviour(provider: StandInProvider, tmp_path: Path) -> None:
    """Optimizers sample distinct answers with rollout_id: a neighbour's answer must never stand in for one."""
    lm = _lm(provider, tmp_path, semantic=True)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm.copy(rollout_id=1, temperature=1.0)):
        predict(question=QUESTION)
        predict(question=PARAPHRASE)
        predict(question=QUESTION)  # the exact entry still hits
    assert provider.count("chat") == 2 and provider.count("embeddings") == 0
