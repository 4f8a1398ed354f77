"""``@cached`` for any function that calls an LLM: here, plain OpenAI SDK calls (no LiteLLM, no DSPy).

Shows: a sync function returning a pydantic model, an async function with ten concurrent identical calls
making one upstream call (single-flight), the API key argument left out of the key, ``version=`` to re-key
after a prompt change, and ``f.cache_clear()``.

    python examples/cached_decorator.py                        # local stand-in provider, no key needed
    python examples/cached_decorator.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from _common import endpoint, parse_args, upstream
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.decorator import cached
from dspy_tiered_cache.report import report


class Summary(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int


def main() -> None:
    args = parse_args(__doc__ or "")
    with endpoint(args) as ep, tempfile.TemporaryDirectory() as tmp:
        core = CacheCore(disk_path=Path(tmp) / "cache.sqlite3")  # omit core= to use the env-configured default
        base_url, model = ep.api_base, ep.bare_model
        key = ep.api_key or os.environ.get("OPENAI_API_KEY")

        @cached(core=core, namespace="summaries", version="prompt-v1")
        def summarize(text: str, api_key: str | None = None, max_words: int = 30) -> Summary:
            client = OpenAI(base_url=base_url, api_key=api_key)
            response = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Summarize in {max_words} words: {text}"}]
            )
            usage = response.usage
            return Summary(
                text=response.choices[0].message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            )

        @cached(core=core, namespace="labels")
        async def classify(text: str, api_key: str | None = None) -> str:
            client = AsyncOpenAI(base_url=base_url, api_key=api_key)
            response = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"One-word topic of: {text}"}]
            )
            return response.choices[0].message.content or ""

        print(f"model: {ep.describe()}")
        doc = "A tiered cache keeps hot answers in memory and shares the rest through Redis or a local file."
        for label in ("cold", "warm"):
            before = ep.upstream_calls
            started = time.perf_counter()
            result = summarize(doc, api_key=key)
            print(f"summarize ({label}): {(time.perf_counter() - started) * 1000:7.1f} ms  {upstream(ep, before)}")
        print(f"  returns a {type(result).__name__} again on a hit: {result.text[:60]!r}...")

        before = ep.upstream_calls
        summarize(doc, api_key="another-key-same-request")
        print(f"same call with another api_key: {upstream(ep, before)} (credentials are never part of the key)")
        before = ep.upstream_calls
        summarize(doc, api_key=key, max_words=10)
        print(f"same text, max_words=10: {upstream(ep, before)} (every other argument is)")

        async def ten_at_once() -> list[str]:
            return await asyncio.gather(*(classify(doc, api_key=key) for _ in range(10)))

        before = ep.upstream_calls
        labels = asyncio.run(ten_at_once())
        print(f"10 concurrent async classify() calls: {upstream(ep, before)}, {len(set(labels))} distinct answer")

        summarize.cache_clear()  # O(1): invalidates the "summaries" namespace
        before = ep.upstream_calls
        summarize(doc, api_key=key)
        print(f"after summarize.cache_clear(): {upstream(ep, before)}")

        core.flush()
        print()
        print(report(summarize))


if __name__ == "__main__":
    main()
