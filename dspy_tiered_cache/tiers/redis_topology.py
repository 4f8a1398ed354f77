"""Reading a Redis URL's topology: the seed nodes of a Cluster, the master behind Sentinels.

Kept apart from :mod:`.redis` (the tier's operations) because it is pure URL parsing plus redis-py constructors:
nothing here touches the network until a command runs on what it returns.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio.cluster
import redis.cluster


def cluster_seeds(url: str, asyncio_client: bool) -> tuple[list[Any], dict[str, Any]] | None:
    """``redis://[user:pass@]host:port,host:port,...``: several seed nodes, so that one seed being down when
    the client is built does not keep the cache away from the rest of the cluster."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    if "," not in hosts:
        return None
    node_cls: Any = redis.asyncio.cluster.ClusterNode if asyncio_client else redis.cluster.ClusterNode
    nodes = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        nodes.append(node_cls(host or hostport, int(port or 6379)))
    extra: dict[str, Any] = {"ssl": True} if parts.scheme == "rediss" else {}
    if parts.password:
        extra.update(username=parts.username or None, password=parts.password)
    return nodes, extra


def sentinel_master(url: str, options: dict[str, Any], asyncio_client: bool, retry: Any) -> Any:
    """``redis+sentinel://[user:pass@]host:port[,host:port...]/master_name[/db]``: the master, found through
    the sentinels and found again after a failover."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        sentinels.append((host or hostport, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL needs the master name: redis+sentinel://host:26379/mymaster")
    master = path[0]
    db = int(path[1]) if len(path) > 1 else 0
    opts = {k: v for k, v in options.items() if k != "max_connections"}
    auth = {"username": parts.username, "password": parts.password} if parts.password else {}
    # The sentinels' own connections get the same timeouts and no retries: discovery already moves on to the
    # next sentinel, and a retry would multiply the timeout of each one that hangs.
    sentinel_opts = {**opts, "retry": retry}
    if asyncio_client:
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        sentinel: Any = AsyncSentinel(sentinels, sentinel_kwargs=sentinel_opts, **opts)  # type: ignore[no-untyped-call,unused-ignore]
    else:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_opts, **opts)  # type: ignore[no-untyped-call,unused-ignore]
    return sentinel.master_for(master, db=db, retry=retry, **auth)
