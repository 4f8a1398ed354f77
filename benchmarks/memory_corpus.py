"""Realistic stored LLM answers from public text, for training the shipped dictionary and for the memory benchmark.

Two separate public sources, so the benchmark never measures the dictionary on text it was trained on:

* training (:func:`training_texts`): the Python Language Reference topics that CPython ships as
  ``pydoc_data.topics`` (``help("FOR")`` etc.; Python Software Foundation License, part of every Python install);
* measuring (:func:`held_out_texts`): the long descriptions (README text, mostly Markdown prose) of the Python
  distributions installed next to this package (``importlib.metadata``), each under its own licence, none
  written for this project.

Answers are wrapped the way the two doors store them: a LiteLLM ``ModelResponse`` built by LiteLLM itself, then
the LiteLLM door's stored form (``to_stored``) or the DSPy door's (``dump_value``), so the JSON skeleton is exactly
what reaches the shared tier.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import re
import uuid
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_MODELS = ("gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1-mini", "claude-3-5-sonnet-20241022", "o3-mini", "llama-3.1-8b")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 40]


def training_texts() -> list[str]:
    import pydoc_data.topics

    out: list[str] = []
    for name in sorted(pydoc_data.topics.topics):
        out.extend(_paragraphs(pydoc_data.topics.topics[name]))
    return out


def held_out_texts() -> list[str]:
    """Paragraphs of installed distributions' long descriptions, sorted by distribution name (deterministic)."""
    out: list[str] = []
    seen: set[str] = set()
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if name in seen or name.startswith("dspy-tiered-cache"):
            continue
        seen.add(name)
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        out.extend(_paragraphs(str(body)))
    return out


def answers(paragraphs: list[str], size: int, count: int, seed: int = 0) -> Iterator[str]:
    """``count`` answers of about ``size`` bytes, consecutive paragraphs from a random start (varied English)."""
    rng = random.Random(seed)
    for _ in range(count):
        i = rng.randrange(len(paragraphs))
        parts: list[str] = []
        length = 0
        while length < size:
            parts.append(paragraphs[i % len(paragraphs)])
            length += len(parts[-1]) + 2
            i += 1
        yield "\n\n".join(parts)[:size]


def model_response(text: str, rng: random.Random, *, dspy_fields: bool = False) -> Any:
    """A LiteLLM ``ModelResponse`` as LiteLLM builds it from a provider's JSON."""
    from litellm.types.utils import ModelResponse

    if dspy_fields:
        half = len(text) // 3
        text = f"[[ ## reasoning ## ]]\n{text[:half]}\n\n[[ ## answer ## ]]\n{text[half:]}\n\n[[ ## completed ## ]]"
    completion = max(1, len(text) // 4)
    prompt = rng.randrange(20, 2000)
    return ModelResponse(
        id="chatcmpl-" + uuid.UUID(int=rng.getrandbits(128)).hex[:24],
        created=rng.randrange(1_720_000_000, 1_800_000_000),
        model=rng.choice(_MODELS),
        object="chat.completion",
        system_fingerprint=rng.choice(["fp_" + uuid.UUID(int=rng.getrandbits(128)).hex[:10], None]),
        choices=[{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    )


def stored_payloads(texts: list[str], seed: int = 0) -> Iterator[bytes]:
    """Each text as both doors store it (JSON payload bytes, before the frame)."""
    import orjson

    from dspy_tiered_cache.integrations._litellm_backend import to_stored
    from dspy_tiered_cache.integrations._values import dump_value

    rng = random.Random(seed)
    for i, text in enumerate(texts):
        response = model_response(text, rng, dspy_fields=i % 3 == 2)
        if i % 2:
            yield orjson.dumps(dump_value(response))
        else:
            yield orjson.dumps(to_stored({"timestamp": 0.0, "response": response.model_dump_json()}))
