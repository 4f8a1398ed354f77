"""Section ``litellm``: whole ``litellm.completion`` hits for the two LiteLLM caches ``litellm_door.py`` does not
cover — ``Cache(type="disk")`` and a ``DualCache`` backend — against ``TieredCache`` on the same tiers."""

from __future__ import annotations

import os
import tempfile

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer
from peers import litellm_caches
from peers.common import JSON, Scale, row


def section_litellm(scale: Scale) -> JSON:
    if scale.litellm_hits <= 0:
        return {"skipped": f"not run at scale {scale.name!r}", "rows": []}
    import litellm_door

    from dspy_tiered_cache.integrations.litellm import TieredCache

    out: JSON = {"hits": scale.litellm_hits, "rows": [], "peer_status": {}}
    with StandInProvider(latency=0.0) as provider, RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        if litellm_caches.has_disk_cache():
            ours_disk = TieredCache(memory=False, disk=True, disk_path=os.path.join(tmp, "ours.sqlite3"))
            theirs_disk = litellm_caches.disk_cache(os.path.join(tmp, "litellm-disk"))
            out.update(
                litellm_door._compare_hits(
                    [("ours_disk", ours_disk), ("litellm_disk", theirs_disk)], provider, scale.litellm_hits
                )
            )
            ours_disk.close()
        else:
            out["peer_status"]["litellm_disk"] = litellm_caches.NO_DISK_CACHE
        ours_l1l2 = TieredCache(redis_url=server.url, disk=False)
        theirs_dual = litellm_caches.dual_cache(server.port)
        out.update(
            litellm_door._compare_hits(
                [("ours_l1_l2", ours_l1l2), ("litellm_dual", theirs_dual)], provider, scale.litellm_hits
            )
        )
        ours_l1l2.close()
    import litellm

    litellm.cache = None
    for ours, theirs, what in (
        ("ours_disk", "litellm_disk", 'disk: TieredCache(disk) vs Cache(type="disk")'),
        ("ours_l1_l2", "litellm_dual", "L1+Redis: TieredCache vs DualCache backend"),
    ):
        if theirs not in out:
            continue
        for mode in ("sync", "async", "lookup"):
            out["rows"].append(
                row(
                    "litellm",
                    f"litellm.{'acompletion' if mode == 'async' else 'completion'} hit, {what}"
                    + (" (lookup only: Cache.get_cache)" if mode == "lookup" else ""),
                    out[ours][f"{mode}_ms"] * 1000,
                    out[theirs][f"{mode}_ms"] * 1000,
                    "us",
                    goal=1.0,
                )
            )
    return out
