"""Tenant scope: one setting keeps the tenants of a multi-tenant LiteLLM service from sharing cache entries.

A LiteLLM service (a proxy, a gateway, an app serving many customers) may send the same prompt for different
tenants. With a shared cache, tenant B then receives the answer generated for tenant A — harmless for public
prompts, a leak when prompts carry tenant data the model echoes, or when tenants must not influence each other
(fine-tuned models per team, per-tenant system prompts that happen to coincide, audit requirements).

``tenant_scope`` adds the tenant's identity to the request that is hashed into the key:

* ``user``: the request's ``user`` (the OpenAI parameter), else LiteLLM's ``metadata["user_api_key_user_id"]``;
* ``team``: ``metadata["user_api_key_team_id"]`` (set by the LiteLLM proxy), else ``metadata["team_id"]`` /
  ``metadata["team"]``;
* ``api_key_hash``: ``metadata["user_api_key_hash"]`` (the proxy's hash of the virtual key), else a hash of the
  request's ``api_key``.

The identity is hashed (BLAKE2b) before it joins the request, and the request is hashed again into the key, so
neither a key, a value nor a log line holds a user id or an API key. A request without the identity the scope
needs is not cached at all (counted as ``uncacheable``): guessing a tenant would be the leak this prevents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from dspy_tiered_cache.keys import UncacheableRequest

SCOPES: Final = ("none", "user", "team", "api_key_hash")
#: Where each scope looks, in order: ("kwargs", name) is a request argument, ("metadata", name) a metadata entry.
_SOURCES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "user": (("kwargs", "user"), ("metadata", "user_api_key_user_id")),
    "team": (("metadata", "user_api_key_team_id"), ("metadata", "team_id"), ("metadata", "team")),
    "api_key_hash": (("metadata", "user_api_key_hash"), ("kwargs", "api_key")),
}


def tenant_of(scope: str, request: Mapping[str, Any]) -> str | None:
    """The hashed tenant identity of a LiteLLM request under ``scope``; None for scope ``none``.

    Raises :class:`UncacheableRequest` when the scope is on and the request carries no identity for it.
    """
    if scope == "none":
        return None
    sources = _SOURCES.get(scope)
    if sources is None:
        raise ValueError(f"tenant_scope {scope!r} is not one of {', '.join(SCOPES)}")
    metadata: dict[str, Any] = {}
    for name in ("litellm_metadata", "metadata"):  # the request's own metadata wins over LiteLLM's copy
        found = request.get(name)
        if isinstance(found, Mapping):
            metadata.update(found)
    for where, name in sources:
        value = request.get(name) if where == "kwargs" else metadata.get(name)
        if value is not None and str(value) != "":
            digest = hashlib.blake2b(f"{scope}\0{value}".encode(), digest_size=16, person=b"dtc-tenant").hexdigest()
            return f"{scope}:{digest}"
    raise UncacheableRequest(f"tenant_scope={scope!r} but the request carries no {scope.replace('_', ' ')}")
