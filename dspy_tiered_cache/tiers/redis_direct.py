"""One command on a plain redis-py client's pool, without the client's per-command dispatch: the L2 hit's read.

Counted with callgrind (redis-py 8.2 with hiredis), redis-py around a ``GET`` of a ~600-byte frame executes far more
than the round trip: ``client.get()`` 132,000 instructions, of which taking and giving back a pooled connection is
51,000 and packing ``GET <key>`` 26,000 (a Python generator and an encoder call per argument), while packing it
with one ``%`` format costs about a thousand. A ``SET <key> <lease> NX GET PX <ms>`` through ``client.set()`` is
194,000 (63,000 of them packing). The hit's read is one such command, so the shared tier packs and sends it
itself, on the same pool and connection objects redis-py would use:

* a connection from the pool (``get_connection``: fork check, connect, "no stray data" check), given back in
  every case (``release``: a connection marked for reconnect is dropped there);
* the command sent and its reply read by the connection, which drops itself on a socket error or timeout and
  raises redis-py's exceptions, so the caller's failure handling (the guard: a counted miss, the breaker) sees
  what ``execute_command`` would have raised; an error reply (``WRONGTYPE``, ``OOM``, ``READONLY``) is read
  whole and raised as redis-py's ``ResponseError`` subclass, the connection staying usable, as in redis-py.

What is skipped: retries (our clients are built with none), redis-py's own OpenTelemetry command metrics and
the per-command response callbacks (``GET`` has none; ``SET ... GET`` returns the old value as is). Only for a
plain ``redis.Redis`` on a plain pool with the default UTF-8 encoding: Cluster, Sentinel, client-side caching,
single-connection clients and other encodings keep redis-py's full path.

The asyncio client gets the same (:func:`adirect`): there ``client.get()`` and ``client.set()`` cost more still (an
L2 hit through them measured 1.75x a raw ``await client.get()`` + decode), and the asyncio connection's
``send_packed_command`` / ``read_response`` disconnect on any failure, a cancellation included, as they do under
``execute_command``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

_PLAIN_POOLS = (redis.ConnectionPool, redis.BlockingConnectionPool)
_PLAIN_ASYNC_POOLS = (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool)


def _plain_pool(client: Any, client_type: type, pools: tuple[type, ...]) -> Any:
    """``client``'s pool when the client is a plain one that may be read directly, else None. One decision for the
    sync and the asyncio client."""
    pool: Any = getattr(client, "connection_pool", None)
    if (
        type(client) is not client_type
        or type(pool) not in pools
        or getattr(client, "connection", None) is not None  # single-connection client: its own lock and connection
        or getattr(client, "single_connection_client", False)  # (asyncio: its connection is taken on first use)
        or getattr(pool, "cache", None) is not None  # client-side caching lives in execute_command's path
        or pool.connection_kwargs.get("encoding", "utf-8") not in ("utf-8", "utf8")
    ):
        return None
    return pool


def direct(client: Any) -> Callable[[bytes], Any] | None:
    """``run(command)`` sending one packed command (:func:`get_command`, :func:`lease_get_command`) on
    ``client``'s pool and returning its raw reply, or None when the client is not a plain one (then the caller
    uses the client's own methods)."""
    pool = _plain_pool(client, redis.Redis, _PLAIN_POOLS)
    if pool is None:
        return None
    get_connection, release = _lender(pool), pool.release

    def run(command: bytes) -> Any:
        conn = get_connection()
        try:
            conn.send_packed_command((command,))
            return conn.read_response()
        finally:
            release(conn)

    return run


def adirect(client: Any) -> Callable[[bytes], Awaitable[Any]] | None:
    """:func:`direct` for a ``redis.asyncio.Redis`` client: ``await run(command)``."""
    pool = _plain_pool(client, redis.asyncio.Redis, _PLAIN_ASYNC_POOLS)
    if pool is None:
        return None
    get_connection, release = _lender(pool), pool.release

    async def run(command: bytes) -> Any:
        conn = await get_connection()
        try:
            await conn.send_packed_command((command,))
            return await conn.read_response()
        finally:
            await release(conn)

    return run


def _lender(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` callable with no argument. redis-py before 6 requires a command name (which the pool
    ignores); 6 and later take none and warn when given one."""
    try:
        name = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        name = None
    if name is not None and name.default is inspect.Parameter.empty:
        return functools.partial(pool.get_connection, "GET")
    return pool.get_connection  # type: ignore[no-any-return]


def get_command(key: str) -> bytes:
    """``GET <key>`` in the Redis protocol."""
    k = key.encode()
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(k), k)


def lease_get_command(key: str, value: bytes, px: int) -> bytes:
    """``SET <key> <value> NX GET PX <px>`` in the Redis protocol."""
    k, ms = key.encode(), b"%d" % px
    return b"*7\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nNX\r\n$3\r\nGET\r\n$2\r\nPX\r\n$%d\r\n%b\r\n" % (
        len(k), k, len(value), value, len(ms), ms
    )  # fmt: skip
