"""The semantic tier through the LiteLLM door, against the stand-in provider's bag-of-words embedding model.

Each behaviour runs on the embedded default (the SQLite index beside the disk tier; always runs) and on the
shared Redis vector index (a private server with the Query Engine; skipped only where none can run).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import litellm
import pytest

from dspy_tiered_cache.testing.provider import StandInProvider
from tests.integrations.conftest import MakeCache
from tests.semantic.conftest import semantic_settings

MODEL = "openai/gpt-4o-mini"
ANCHOR = "How do I reset my password for the billing portal?"
PARAPHRASE = "How can I reset my password for the billing portal?"


def _ask(provider: StandInProvider, text: str, **kwargs: Any) -> Any:
    messages = kwargs.pop("messages", None) or [{"role": "user", "content": text}]
    return litellm.completion(
        model=kwargs.pop("model", MODEL), messages=messages, api_base=provider.base_url, api_key="sk-test", **kwargs
    )


def _chat_calls(provider: StandInProvider) -> int:
    return provider.count("chat")


def test_a_paraphrase_is_served_from_the_semantic_tier(
    semantic_cache: Any, provider: StandInProvider, otel_spans: Any
) -> None:
    first = _ask(provider, ANCHOR)
    semantic_cache.flush()
    again = _ask(provider, PARAPHRASE)
    assert _chat_calls(provider) == 1
    assert again.id == first.id and again.choices[0].message.content == first.choices[0].message.content
    spans = [s for s in otel_spans.get_finished_spans() if s.name.startswith("dspy_tiered_cache")]
    last = spans[-1].attributes
    assert last["cache.level"] == "semantic" and last["cache.hit"] is True
    assert 0.7 <= last["cache.similarity"] < 1.0
    stamp = again._hidden_params["cache"]  # what the caller sees on the response itself
    assert stamp["level"] == "semantic" and stamp["similarity"] == pytest.approx(last["cache.similarity"], abs=1e-3)
    stats = semantic_cache.stats()
    assert stats["tiers"]["semantic"]["hits"] == 1
    assert (stats["hits"], stats["misses"]) == (1, 1)  # the paraphrase counts as one hit, not a miss and a hit
    assert stats["semantic"]["available"] is True


@pytest.mark.parametrize(
    ("anchor", "paraphrase", "near_miss"),
    [
        (ANCHOR, PARAPHRASE, "How do I not reset my password for the billing portal?"),
        (
            "Should I buy 200 shares of Tesla today?",
            "Please, should I buy 200 shares of Tesla today?",
            "Should I buy 300 shares of Tesla today?",
        ),
        (ANCHOR, PARAPHRASE, "How do I reset my password for the Stripe billing portal?"),
    ],
    ids=["negation", "number", "entity"],
)
def test_a_near_miss_as_close_as_the_paraphrase_goes_upstream(
    semantic_cache: Any, provider: StandInProvider, anchor: str, paraphrase: str, near_miss: str
) -> None:
    from dspy_tiered_cache.testing.provider import bag_of_words_vector as bow

    def closeness(text: str) -> float:
        return sum(a * b for a, b in zip(bow(anchor), bow(text), strict=True))

    assert closeness(near_miss) >= 0.8  # over the threshold: the embedding alone would serve it
    first = _ask(provider, anchor)
    semantic_cache.flush()
    assert _ask(provider, paraphrase).id == first.id
    assert _ask(provider, near_miss).id != first.id
    assert _chat_calls(provider) == 2
    reasons = semantic_cache.stats()["semantic"]["reasons"]
    assert sum(n for name, n in reasons.items() if name.startswith("rejected_")) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/gpt-4o"},
        {"temperature": 0.9},
        {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": PARAPHRASE}]},
        {"cache": {"namespace": "tenant-b"}},
    ],
    ids=["model", "temperature", "system_prompt", "namespace"],
)
def test_a_different_scope_never_shares_an_entry(
    semantic_cache: Any, provider: StandInProvider, change: dict[str, Any]
) -> None:
    _ask(provider, ANCHOR)
    semantic_cache.flush()
    _ask(provider, PARAPHRASE, **change)
    assert _chat_calls(provider) == 2
    assert semantic_cache.stats()["tiers"]["semantic"]["hits"] == 0


async def test_async_calls_share_the_sync_decisions(semantic_cache: Any, provider: StandInProvider) -> None:
    first = await litellm.acompletion(
        model=MODEL, messages=[{"role": "user", "content": ANCHOR}], api_base=provider.base_url, api_key="sk-test"
    )
    semantic_cache.flush()
    for _ in range(50):  # LiteLLM stores from a task it does not await
        if semantic_cache.stats()["tiers"]["semantic"]["sets"]:
            break
        import asyncio

        await asyncio.sleep(0.02)
    again = await litellm.acompletion(
        model=MODEL, messages=[{"role": "user", "content": PARAPHRASE}], api_base=provider.base_url, api_key="sk-test"
    )
    assert again.id == first.id and _chat_calls(provider) == 1


def test_tool_calls_and_long_conversations_stay_exact(make_cache: MakeCache, provider: StandInProvider) -> None:
    cache = make_cache(**semantic_settings(provider, semantic_max_messages=2))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    _ask(provider, ANCHOR, tools=tools)
    _ask(provider, PARAPHRASE, tools=tools)
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    _ask(provider, "", messages=[*history, {"role": "user", "content": ANCHOR}])
    _ask(provider, "", messages=[*history, {"role": "user", "content": PARAPHRASE}])
    assert _chat_calls(provider) == 4
    reasons = cache.stats()["semantic"]["reasons"]
    assert reasons.get("skipped_tools") == 2 and reasons.get("skipped_long_conversation") == 2


def test_off_by_default(make_cache: MakeCache, provider: StandInProvider) -> None:
    cache = make_cache()
    _ask(provider, ANCHOR)
    _ask(provider, PARAPHRASE)
    assert _chat_calls(provider) == 2 and "semantic" not in cache.stats()


def test_plain_redis_keeps_the_tier_on_with_a_per_machine_index_and_says_so_once(
    make_cache: MakeCache, provider: StandInProvider, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(redis_url=redis_url, **semantic_settings(provider))
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        first = _ask(provider, ANCHOR)
        cache.flush()
        again = _ask(provider, PARAPHRASE)
        _ask(provider, "How can I reset my password for the billing portal, please?")
    warnings = [r.getMessage() for r in caplog.records if "semantic" in r.getMessage()]
    assert len(warnings) == 1 and "per-machine index" in warnings[0] and "FT." in warnings[0], warnings
    assert again.id == first.id and again._hidden_params["cache"]["level"] == "semantic"
    snapshot = cache.stats()["semantic"]
    assert snapshot["available"] is True and snapshot["index"] == "local"


def test_embeddings_are_cached_where_the_index_lives(
    semantic_cache: Any, provider: StandInProvider, make_cache: MakeCache, tmp_path: Path
) -> None:
    """A text is embedded once: again in this process (dictionary), and by a second cache on the same store."""
    _ask(provider, ANCHOR)
    _ask(provider, PARAPHRASE)
    semantic_cache.flush()
    embedded = provider.count("embeddings")
    assert embedded == 2  # one per distinct text: the lookup's vector is reused by the store
    semantic_cache._semantic.embedder._cache.clear()  # as if another process
    _ask(provider, "", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": ANCHOR}])
    assert provider.count("embeddings") == embedded


def test_the_llm_judge_is_asked_after_the_rules_and_fails_closed(
    make_cache: MakeCache, provider: StandInProvider
) -> None:
    """The stand-in model never answers YES: every neighbour the rules let through is then rejected."""
    cache = make_cache(
        **semantic_settings(
            provider,
            semantic_verifier="rules+llm",
            semantic_judge_model="openai/judge",
            semantic_judge_api_base=provider.base_url,
            semantic_judge_api_key="sk-test",
        )
    )
    _ask(provider, ANCHOR)
    _ask(provider, PARAPHRASE)  # rules pass, the judge does not say yes: upstream
    _ask(provider, "How do I not reset my password for the billing portal?")  # the rules reject: no judge call
    judged = [r for r in provider.requests if r.get("model") == "judge"]
    assert len(judged) == 1 and "Request A: " + PARAPHRASE in judged[0]["messages"][0]["content"]
    assert provider.count("chat") == 4  # three answers and one judgement
    assert cache.stats()["semantic"]["reasons"]["rejected_judge"] == 1


def test_a_judge_verifier_without_a_model_is_a_clear_error(make_cache: MakeCache) -> None:
    from dspy_tiered_cache.settings import ConfigError

    with pytest.raises(ConfigError, match="semantic_judge_model"):
        make_cache(semantic=True, semantic_verifier="rules+llm")
