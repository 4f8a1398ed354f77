"""The learned verifier: its shipped weights, how it is keyed to the embedding model, its reasons, and the tier
running it end to end through the LiteLLM door.

No torch here: vectors come from the stand-in provider's deterministic bag-of-words model over real HTTP, so
these tests pin the plumbing, the keying and the arithmetic of the shipped head, not its quality (that is
measured with the real model in benchmarks/semantic.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import litellm
import numpy as np
import pytest

from dspy_tiered_cache.semantic import learned
from dspy_tiered_cache.semantic.learned import FEATURES, Head, LearnedVerifier, features, head_for, model_key
from dspy_tiered_cache.testing.provider import StandInProvider, bag_of_words_vector
from tests.integrations.conftest import MakeCache
from tests.semantic.conftest import semantic_settings

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _shipped() -> dict[str, Any]:
    folder = resources.files("dspy_tiered_cache.semantic").joinpath("weights")
    data: dict[str, Any] = json.loads(folder.joinpath("all-minilm-l6-v2-384.json").read_text(encoding="utf-8"))
    return data


def _http_embed(provider: StandInProvider, dimensions: int) -> Any:
    """Word and sentence vectors from the stand-in's bag-of-words model, through LiteLLM and real HTTP."""

    def embed(texts: Sequence[str]) -> list[list[float]]:
        response = litellm.embedding(
            model="openai/bag-of-words",
            input=list(texts),
            extra_body={"dimensions": dimensions},  # LiteLLM refuses `dimensions=` for a model it does not know
            api_base=provider.base_url,
            api_key="sk-test",
            caching=False,
        )
        return [item["embedding"] for item in response.data]

    return embed


def test_the_shipped_weights_are_plain_json_keyed_to_their_model() -> None:
    data = _shipped()
    assert data["features"] == list(FEATURES) and data["dimension"] == 384
    assert 0.5 <= data["cutoff"] < 1.0 and 0.0 < data["cosine_floor"] < 1.0
    assert set(data["trained_on"]["sets"]) <= {"mrpc-train", "sick-train", "sts12-15"}  # tune sets only
    for name in (MINILM, "huggingface/sentence-transformers/all-MiniLM-L6-v2", "openai/all-MiniLM-L6-v2"):
        head = head_for(name)
        assert head is not None and head.dimension == 384
    assert head_for("ollama/all-minilm") is not None
    for other in ("text-embedding-3-small", "openai/bag-of-words", "all-MiniLM-L12-v2", "all-mpnet-base-v2"):
        assert head_for(other) is None
    assert model_key("huggingface/sentence-transformers/all-MiniLM-L6-v2") == "allminilml6v2"


def test_the_shipped_head_is_monotone() -> None:
    """More alike in every respect never scores lower: a pair with cosine 1, every word aligned and no rule flag
    is accepted, and each mismatch flag alone only lowers the score."""
    head = head_for(MINILM)
    assert head is not None
    neutral = {f: 0.0 for f in FEATURES} | {f: 1.0 for f in ("cosine", "align_mean", "align_min", "kept_min")}
    neutral["overlap"] = 1.0
    x = np.asarray([neutral[f] for f in FEATURES])
    p, _ = head.score(x)
    assert p >= head.cutoff
    for flag in ("question_word", "person", "tense", "modality", "numbers", "negation", "antonym", "direction"):
        flagged = x.copy()
        flagged[FEATURES.index(flag)] = 1.0
        assert head.score(flagged)[0] <= p
    for similarity in ("cosine", "align_mean", "align_min", "kept_min", "overlap"):
        lower = x.copy()
        lower[FEATURES.index(similarity)] = 0.5
        assert head.score(lower)[0] <= p


def test_a_weights_file_for_other_features_is_refused() -> None:
    data = _shipped()
    with pytest.raises(ValueError, match="other features"):
        Head.from_json({**data, "features": list(reversed(FEATURES))})
    with pytest.raises(ValueError, match="feature count"):
        Head.from_json({**data, "weights": data["weights"][:-1]})


def test_another_model_gets_the_rules(provider: StandInProvider) -> None:
    verifier = LearnedVerifier("openai/bag-of-words", _http_embed(provider, 256))
    assert verifier.name == "rules" and verifier.cosine_floor is None
    assert verifier.check("Where is my girlfriend?", "Who is my girlfriend?") == "question_word"


def test_vectors_of_another_size_under_the_same_name_get_the_rules(provider: StandInProvider) -> None:
    verifier = LearnedVerifier(MINILM, _http_embed(provider, 256))  # the name matches, the dimension does not
    assert verifier.name == "learned"
    assert verifier.check("Where is my girlfriend?", "Who is my girlfriend?") == "question_word"


def test_the_head_scores_vectors_of_its_dimension(provider: StandInProvider) -> None:
    embed = _http_embed(provider, 384)
    verifier = LearnedVerifier(MINILM, embed)
    # Same words but for stop-words the bag-of-words model drops: cosine 1, every word aligned, no flag.
    verdict = verifier.explain("How do I reset my password?", "How do I reset the password?")
    assert verdict.reason is None and verdict.detail.startswith("p=")
    # The frame changed (question word): a rule in front of the head rejects it, with the rule's name.
    x, dim = features("Where is my girlfriend?", "Who is my girlfriend?", embed)
    assert dim == 384 and x[FEATURES.index("question_word")] == 1.0
    assert verifier.check("Where is my girlfriend?", "Who is my girlfriend?") == "question_word"
    assert verifier.check("How can I steal bitcoins?", "How did you steal bitcoins?") == "person"
    # Words the other side lacks, unrelated under this model: a miss with its reason.
    verdict = verifier.explain("Set a timer for ten seconds.", "Set an alarm for ten minutes.")
    assert verdict.reason is not None and verdict.reason.startswith("learned_")


def test_the_score_is_the_shipped_logistic_head(provider: StandInProvider) -> None:
    head = head_for(MINILM)
    assert head is not None
    x, _ = features("How can I learn French fast?", "How do I learn French quickly?", _http_embed(provider, 384))
    data = _shipped()
    z = (x - np.asarray(data["mean"])) / np.asarray(data["scale"])
    expected = 1 / (1 + np.exp(-(z @ np.asarray(data["weights"]) + data["bias"])))
    p, weakest = head.score(x)
    assert p == pytest.approx(float(expected), rel=1e-9)
    assert weakest in FEATURES


def test_an_embedding_failure_fails_closed() -> None:
    def broken(texts: Sequence[str]) -> list[list[float]]:
        raise ConnectionError("no endpoint")

    verifier = LearnedVerifier(MINILM, broken)
    assert verifier.check("How do I reset my password?", "How can I reset my password?") == "learned_unavailable"
    assert verifier.check("Same text?", "same text?") is None  # identical text needs no embedding


def _bag_of_words_head(monkeypatch: pytest.MonkeyPatch) -> Head:
    """The shipped head, found for the stand-in's model name and dimension (its weights unchanged)."""
    shipped = head_for(MINILM)
    assert shipped is not None
    head = replace(shipped, dimension=256, aliases=(model_key("openai/bag-of-words"),))
    monkeypatch.setattr(learned, "shipped_heads", lambda: (head,))
    return head


def test_the_tier_runs_the_learned_head_through_the_door(
    make_cache: MakeCache, provider: StandInProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = _bag_of_words_head(monkeypatch)
    settings = semantic_settings(provider)
    del settings["semantic_threshold"]  # the default: the head's own tuned floor
    cache = make_cache(disk=True, disk_path=tmp_path / "c.sqlite3", **settings)
    ask = {"model": "openai/gpt-4o-mini", "api_base": provider.base_url, "api_key": "sk-test"}
    first = litellm.completion(messages=[{"role": "user", "content": "How do I reset my password?"}], **ask)
    cache.flush()
    again = litellm.completion(messages=[{"role": "user", "content": "How do I reset the password?"}], **ask)
    assert again.id == first.id and provider.count("chat") == 1
    assert again._hidden_params["cache"]["level"] == "semantic"
    other = litellm.completion(messages=[{"role": "user", "content": "How do I not reset my password?"}], **ask)
    assert other.id != first.id and provider.count("chat") == 2
    snapshot = cache.stats()["semantic"]
    assert snapshot["verifier"] == "learned" and snapshot["threshold"] == head.cosine_floor
    assert any(k.startswith("rejected_learned_") for k in snapshot["reasons"]), snapshot["reasons"]


def test_an_explicit_threshold_and_verifier_still_win(
    make_cache: MakeCache, provider: StandInProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bag_of_words_head(monkeypatch)  # a head exists for the model, yet the settings ask for the rules
    cache = make_cache(
        disk=True, disk_path=tmp_path / "c.sqlite3", **semantic_settings(provider, semantic_verifier="rules")
    )
    ask = {"model": "openai/gpt-4o-mini", "api_base": provider.base_url, "api_key": "sk-test"}
    litellm.completion(messages=[{"role": "user", "content": "How can I steal bitcoins?"}], **ask)
    cache.flush()
    litellm.completion(messages=[{"role": "user", "content": "How did you steal bitcoins?"}], **ask)
    assert provider.count("chat") == 2
    snapshot = cache.stats()["semantic"]
    assert snapshot["verifier"] == "rules" and snapshot["threshold"] == 0.7
    assert snapshot["reasons"].get("rejected_person") == 1


def test_bag_of_words_vectors_are_what_the_head_sees(provider: StandInProvider) -> None:
    # The HTTP path returns the provider's deterministic vectors unchanged (float32-exact).
    assert _http_embed(provider, 384)(["reset password"])[0] == bag_of_words_vector("reset password", 384)


def test_a_batch_larger_than_the_word_cache_returns_every_vector() -> None:
    """A batch whose fresh words evict words it also asks for (once a KeyError, counted as a rejection)."""
    from dspy_tiered_cache.semantic.embedder import _MAX_ENTRIES, Embedder

    embedder = Embedder("openai/bag-of-words", embed=bag_of_words_vector)
    embedder.embed_many(["password"])
    words = ["password", *(f"word{i}" for i in range(_MAX_ENTRIES + 10))]
    vectors = embedder.embed_many(words)
    assert len(vectors) == len(words)
    assert list(vectors[0]) == pytest.approx(bag_of_words_vector("password"))
