"""Section ``unreachable``: lookups that miss while Redis refuses connections, or hangs (SIGSTOP) after the
caches connected: the latency each cache adds per call, and what building one costs against a hung Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dspy_tiered_cache.testing.redis_server import RedisServer, free_port
from peers import aiocache_cache, cashews_cache, litellm_caches, ours
from peers.common import JSON, DownCall, Scale, missing, row, series


def _down_clients(scale: Scale, url: str, loop: asyncio.AbstractEventLoop, status: JSON) -> JSON:
    """One lookup function per cache (call ``i`` looks up a fresh key: a miss), each capped at ``down_cap_s``."""
    calls: dict[str, DownCall] = {}
    calls["ours"], close = ours.down_client(url)
    if scale.down_litellm:
        try:
            calls["litellm"] = litellm_caches.down_client(scale, url)
        except ImportError as exc:
            status["litellm"] = missing("litellm", exc)
    for name, peer in (("cashews", cashews_cache), ("aiocache", aiocache_cache)):
        try:
            calls[name] = peer.down_client(scale, url, loop)
        except ImportError as exc:
            status[name] = missing(name, exc)
    return {"calls": calls, "close": close}


def section_unreachable(scale: Scale) -> JSON:
    """Lookups that miss while Redis refuses connections, or hangs (SIGSTOP) after the caches were connected.

    The frozen case builds and warms every client while Redis still answers, then freezes it: what an application
    sees when its Redis hangs under it. The added latency is the median call against a dead Redis minus the
    median against a healthy one; peers are timed for a few calls only (LiteLLM's take seconds each).
    """
    out: JSON = {"cap_s": scale.down_cap_s, "variants": {}, "peer_status": {}}
    v: JSON = out["variants"]
    loop = asyncio.new_event_loop()
    try:
        with RedisServer() as healthy, RedisServer() as frozen:
            targets = {"healthy": healthy.url, "refused": f"redis://127.0.0.1:{free_port()}/0", "frozen": frozen.url}
            for state, url in targets.items():
                clients = _down_clients(scale, url, loop, out["peer_status"])
                calls: dict[str, Callable[[int], tuple[float, bool]]] = clients["calls"]
                if state == "frozen":
                    for call in calls.values():
                        call(-1)  # connected and warm
                    frozen.pause()
                try:
                    for name, call in calls.items():
                        n = scale.down_calls_ours if name == "ours" or state == "healthy" else scale.down_calls_peer
                        budget = 60.0 if name == "ours" or state == "healthy" else scale.down_budget_s
                        v[f"{name}_{state}"] = series(call, n, budget)
                finally:
                    if state == "frozen":
                        frozen.resume()
                    clients["close"]()
            if scale.down_litellm:  # building a LiteLLM Redis cache while Redis hangs
                frozen.pause()
                try:
                    ours_ms = ours.construct_ms(frozen.url)
                    seconds, capped = litellm_caches.construct_while_frozen(scale, frozen.url)
                    out["construct_frozen_ms"] = {
                        "ours": ours_ms,
                        "litellm": seconds * 1000,
                        "litellm_capped": capped,
                    }
                finally:
                    frozen.resume()
    finally:
        loop.close()
    rows = []
    for state, what in (("refused", "connection refused"), ("frozen", "server frozen (SIGSTOP)")):
        mine = v.get(f"ours_{state}")
        if mine is None:
            continue
        ours_added = max(0.0, mine["median_ms"] - v["ours_healthy"]["median_ms"])
        note = f"median {mine['median_ms']:.2f} ms; then the breaker answers (timeouts: connect 250 ms, op 150 ms)"
        rows.append(row("unreachable", f"Redis {what}: our slowest call", mine["max_ms"], None, "ms", goal=400.0,
                        goal_on="ours", note=note))  # fmt: skip
        for peer, label in (
            ("litellm", 'LiteLLM Cache(type="redis").get_cache'),
            ("cashews", "cashews redis get"),
            ("aiocache", "aiocache RedisCache get"),
        ):
            data = v.get(f"{peer}_{state}")
            if data is None:
                continue
            peer_added = max(0.0, data["median_ms"] - v[f"{peer}_healthy"]["median_ms"])
            note = f"peer: {data['calls']} call(s), first {data['first_ms']:,.0f} ms" + (
                f"; we stopped waiting at {scale.down_cap_s:g} s" if data["capped"] else ""
            )
            what_row = f"Redis {what}: added latency per call (median) vs {label}"
            rows.append(row("unreachable", what_row, ours_added, peer_added, "ms", goal=1.0, goal_on="ours",
                            peer_capped=data["capped"], note=note))  # fmt: skip
    built = out.get("construct_frozen_ms")
    if built:
        rows.append(row("unreachable", 'Redis frozen: constructing the cache vs LiteLLM Cache(type="redis")',
                        built["ours"], built["litellm"], "ms", goal=50.0, goal_on="ours",
                        peer_capped=built["litellm_capped"], note="ours connects lazily; LiteLLM's constructor "
                        "talks to Redis with no timeout"))  # fmt: skip
    out["rows"] = rows
    return out
