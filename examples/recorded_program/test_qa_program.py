"""Tests of qa_program.py that never call an LLM in CI: their answers come from recordings/test_qa_program.jsonl.gz.

    pytest examples/recorded_program                      # replay (the default): no network, no key
    pytest examples/recorded_program --llm-cache=record   # record new prompts (stand-in provider, or
                                                          # DTC_EXAMPLE_MODEL=openai/gpt-4o-mini with its key)

A changed or new prompt fails in replay with the ReplayMiss message: what was asked and how it differs from the
closest recorded request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import dspy
import pytest
import qa_program

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.dspy import CachedLM

MODEL = os.environ.get("DTC_EXAMPLE_MODEL", "openai/gpt-4o-mini")
TERMS = ["cache stampede", "TTL"]


@pytest.fixture(scope="module")
def api_base(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Only recording needs a model: the stand-in provider unless DTC_EXAMPLE_MODEL names a real one."""
    if request.config.getoption("--llm-cache") != "record" or "DTC_EXAMPLE_MODEL" in os.environ:
        yield None if "DTC_EXAMPLE_MODEL" in os.environ else "http://127.0.0.1:9/v1"  # replay: never reached
        return
    from dspy_tiered_cache.testing.provider import StandInProvider

    with StandInProvider() as provider:
        yield provider.base_url


@pytest.fixture
def program(llm_cache: CacheCore, api_base: str | None) -> Iterator[dspy.Module]:
    lm = dspy.LM(MODEL, api_base=api_base, api_key=None if api_base is None else "sk-stand-in", num_retries=0)
    with dspy.context(lm=CachedLM(lm, cache=llm_cache)):
        yield qa_program.build()


@pytest.mark.parametrize("term", TERMS)
def test_explains_each_term(program: dspy.Module, term: str) -> None:
    explanation = qa_program.explain(program, term)
    assert explanation.strip()


def test_same_term_gives_the_same_explanation(program: dspy.Module) -> None:
    assert qa_program.explain(program, TERMS[0]) == qa_program.explain(program, TERMS[0])
