"""Tenant scope: two tenants never share an entry; a request without a tenant is not cached; no secret is stored."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import redis

from dspy_tiered_cache.integrations.litellm import UNCACHEABLE_KEY, TieredCache
from dspy_tiered_cache.keys import UncacheableRequest
from dspy_tiered_cache.tenancy import tenant_of
from dspy_tiered_cache.testing.provider import StandInProvider

completion: Callable[..., Any] = litellm.completion
SCOPES = ("user", "team", "api_key_hash")
MODEL = "openai/gpt-4o-mini"


def request_for(scope: str, tenant: str, content: str) -> dict[str, Any]:
    """A LiteLLM request whose tenant identity is where the scope looks for it; everything else identical."""
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "api_key": "sk-shared-service-key",
        "metadata": {},
    }
    if scope == "user":
        request["user"] = tenant
    elif scope == "team":
        request["metadata"] = {"user_api_key_team_id": tenant}
    else:
        request["api_key"] = tenant
    return request


@pytest.fixture(scope="module")
def scoped_caches() -> Iterator[dict[str, TieredCache]]:
    caches = {scope: TieredCache(disk=False, tenant_scope=scope, fleet=False) for scope in SCOPES}
    yield caches
    for cache in caches.values():
        cache.close()


tenants = st.text(min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scope=st.sampled_from(SCOPES), a=tenants, b=tenants, content=st.text(max_size=80))
def test_two_tenants_never_share_an_entry(
    scoped_caches: dict[str, TieredCache], scope: str, a: str, b: str, content: str
) -> None:
    assume(a != b)
    cache = scoped_caches[scope]
    key_a = cache.get_cache_key(**request_for(scope, a, content))
    key_b = cache.get_cache_key(**request_for(scope, b, content))
    assert UNCACHEABLE_KEY not in (key_a, key_b)
    assert key_a != key_b
    assert cache.get_cache_key(**request_for(scope, a, content)) == key_a  # a tenant keeps its own entries


@given(scope=st.sampled_from(SCOPES), tenant=tenants)
def test_identity_is_hashed_and_missing_identity_is_uncacheable(scope: str, tenant: str) -> None:
    scoped = tenant_of(scope, request_for(scope, tenant, "x"))
    assert scoped is not None and re.fullmatch(f"{scope}:[0-9a-f]{{32}}", scoped)  # a digest, not the identity
    with pytest.raises(UncacheableRequest):
        tenant_of(scope, {"model": MODEL, "messages": [], "metadata": {}})
    assert tenant_of("none", request_for(scope, tenant, "x")) is None


def test_tenants_are_kept_apart_through_litellm_and_redis(provider: StandInProvider, redis_url: str) -> None:
    previous = litellm.cache
    cache = TieredCache(redis_url=redis_url, tenant_scope="api_key_hash", fleet=False)
    litellm.cache = cache
    try:

        def ask(api_key: str | None) -> Any:
            extra = {"api_key": api_key} if api_key else {"api_key": ""}
            return completion(
                model=MODEL, messages=[{"role": "user", "content": "same prompt"}], api_base=provider.base_url, **extra
            )

        ask("sk-tenant-a-0123456789")
        ask("sk-tenant-a-0123456789")
        assert provider.request_count == 1  # tenant A hits its own entry
        ask("sk-tenant-b-0123456789")
        assert provider.request_count == 2  # tenant B never gets A's answer
        ask("sk-tenant-b-0123456789")
        assert provider.request_count == 2
        cache.flush()
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter("*"):
                assert b"sk-tenant" not in key
                if client.type(key) == b"string":
                    assert b"sk-tenant" not in (client.get(key) or b"")
        finally:
            client.close()
    finally:
        litellm.cache = previous
        cache.close()


def test_a_request_without_the_tenant_identity_is_not_cached(provider: StandInProvider) -> None:
    previous = litellm.cache
    cache = TieredCache(disk=False, tenant_scope="user", fleet=False)
    litellm.cache = cache
    try:
        for _ in range(2):
            completion(
                model=MODEL, messages=[{"role": "user", "content": "anon"}], api_base=provider.base_url, api_key="sk-x"
            )
        assert provider.request_count == 2
        assert cache.core.stats.uncacheable >= 2
        for _ in range(2):
            completion(
                model=MODEL,
                messages=[{"role": "user", "content": "anon"}],
                api_base=provider.base_url,
                api_key="sk-x",
                user="alice@example.com",
            )
        assert provider.request_count == 3
    finally:
        litellm.cache = previous
        cache.close()
