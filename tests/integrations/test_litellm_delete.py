"""``TieredCache.delete(**request)``: forget one request's answer without computing its key by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import litellm

from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider

MakeCache = Callable[..., TieredCache]



def test_delete_by_request(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache: TieredCache = make_cache()
    request: dict[str, Any] = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "forget me"}],
                               "api_base": provider.base_url, "api_key": "sk-test-delete"}  # fmt: skip
    litellm.completion(**request)
    litellm.completion(**request)
    assert provider.request_count == 1
    key = cache.delete(model=request["model"], messages=request["messages"])  # no credentials needed
    assert key == cache.get_cache_key(**request)
    litellm.completion(**request)
    assert provider.request_count == 2
