"""Where the semantic tier keeps its vectors: a local SQLite table (the embedded default) or Redis vector search.

An index row is ``(partition, exact key, compared text, vector, expiry)``. It never holds an answer: a neighbour
found here is served by reading its *exact key* through the ordinary tiers, so lifetimes, invalidation, integrity
checks and encryption stay the exact tiers' business, and an evicted answer is simply a miss.

Vectors are float32, unit length (normalized on the way in), so cosine similarity is a dot product.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Neighbour:
    key: str
    text: str
    similarity: float


class IndexUnavailable(RuntimeError):
    """The backing store cannot do vector search at all (plain Redis without the Query Engine)."""


class VectorIndex(Protocol):
    name: str

    def add(self, partition: str, key: str, text: str, vector: Vector, expires_at: float | None) -> None: ...

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float) -> list[Neighbour]: ...

    def get_embedding(self, ident: str) -> Vector | None: ...

    def put_embedding(self, ident: str, vector: Vector) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


#: Rows an index keeps (``semantic_max_rows``); past it, expired rows go first, then the oldest (one answer's row
#: each: losing one costs a possible semantic hit, never a wrong answer).
MAX_LOCAL_ROWS = 200_000


def unit(vector: Any) -> Vector:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


class LocalIndex:
    """Brute-force cosine over one partition's rows, held as a numpy matrix and reloaded when the table changed.

    Partitions are small by construction (one model, one parameter set, one conversation prefix, one
    namespace generation), so an exact scan beats an approximate index: 10k rows x 256 dims is one ~1 ms matrix
    product (see ``benchmarks/semantic.py``). Several processes may share the file: a per-partition version
    counter, bumped on every write, tells a reader its matrix is stale.
    """

    name = "local"

    def __init__(self, path: Path | None, max_rows: int = MAX_LOCAL_ROWS) -> None:
        self.path = path
        self.max_rows = max_rows
        self._adds = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", check_same_thread=False, timeout=1.0)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS semantic (p TEXT NOT NULL, k TEXT NOT NULL, t TEXT NOT NULL, "
                "v BLOB NOT NULL, exp REAL, PRIMARY KEY (p, k))"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS semantic_version (p TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS semantic_embedding (id TEXT PRIMARY KEY, v BLOB NOT NULL)")
        #: partition -> (version, keys, texts, matrix, expiries)
        self._loaded: dict[str, tuple[int, list[str], list[str], Vector, Any]] = {}

    def add(self, partition: str, key: str, text: str, vector: Vector, expires_at: float | None) -> None:
        blob = unit(vector).tobytes()
        self._adds += 1
        if self._adds % 256 == 1:
            self._bound()
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO semantic (p, k, t, v, exp) VALUES (?, ?, ?, ?, ?)",
                (partition, key, text, blob, expires_at),
            )
            self._db.execute(
                "INSERT INTO semantic_version (p, n) VALUES (?, 1) ON CONFLICT(p) DO UPDATE SET n = n + 1",
                (partition,),
            )

    def _rows(self, partition: str) -> tuple[list[str], list[str], Vector, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT n FROM semantic_version WHERE p = ?", (partition,)).fetchone()
            if row is None:
                return None
            version = int(row[0])
            loaded = self._loaded.get(partition)
            if loaded is not None and loaded[0] == version:
                return loaded[1:]
            now = time.time()
            rows = self._db.execute(
                "SELECT k, t, v, exp FROM semantic WHERE p = ? AND (exp IS NULL OR exp > ?)", (partition, now)
            ).fetchall()
        if not rows:
            return None
        keys = [r[0] for r in rows]
        texts = [r[1] for r in rows]
        # A copy: frombuffer over joined bytes may be unaligned, which sends the product down a slow path.
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1).copy()
        expiries = np.array([r[3] if r[3] is not None else np.inf for r in rows], dtype=np.float64)
        if len(self._loaded) > 256:
            self._loaded.clear()
        self._loaded[partition] = (version, keys, texts, matrix, expiries)
        return keys, texts, matrix, expiries

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float) -> list[Neighbour]:
        loaded = self._rows(partition)
        if loaded is None:
            return []
        keys, texts, matrix, expiries = loaded
        query = unit(vector)
        if matrix.shape[1] != query.shape[0]:
            return []  # another embedding model wrote this partition (a settings change): no neighbours
        scores = matrix @ query
        scores[expiries <= time.time()] = -1.0
        count = min(k, len(keys))
        top = np.argpartition(-scores, count - 1)[:count] if count < len(keys) else np.arange(len(keys))
        top = top[np.argsort(-scores[top])]
        return [Neighbour(keys[i], texts[i], float(scores[i])) for i in top if scores[i] >= min_similarity]

    def get_embedding(self, ident: str) -> Vector | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM semantic_embedding WHERE id = ?", (ident,)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row is not None else None

    def put_embedding(self, ident: str, vector: Vector) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO semantic_embedding (id, v) VALUES (?, ?)", (ident, unit(vector).tobytes())
            )

    def _bound(self) -> None:
        """Keep the table within ``max_rows``: expired rows first, then the oldest inserted."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM semantic WHERE exp IS NOT NULL AND exp <= ?", (time.time(),))
            (count,) = self._db.execute("SELECT COUNT(*) FROM semantic").fetchone()
            if count >= self.max_rows:
                excess = count - self.max_rows + max(1, self.max_rows // 10)
                self._db.execute(
                    "DELETE FROM semantic WHERE rowid IN (SELECT rowid FROM semantic ORDER BY rowid LIMIT ?)", (excess,)
                )
                self._db.execute("UPDATE semantic_version SET n = n + 1")
            embeddings = self._db.execute("SELECT COUNT(*) FROM semantic_embedding").fetchone()[0]
            if embeddings >= self.max_rows:
                self._db.execute(
                    "DELETE FROM semantic_embedding WHERE rowid IN "
                    "(SELECT rowid FROM semantic_embedding ORDER BY rowid LIMIT ?)",
                    (embeddings - self.max_rows + max(1, self.max_rows // 10),),
                )

    def delete(self, key: str) -> None:
        with self._lock, self._db:
            partitions = [r[0] for r in self._db.execute("SELECT p FROM semantic WHERE k = ?", (key,)).fetchall()]
            self._db.execute("DELETE FROM semantic WHERE k = ?", (key,))
            for partition in partitions:
                self._db.execute("UPDATE semantic_version SET n = n + 1 WHERE p = ?", (partition,))

    def purge_expired(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM semantic WHERE exp IS NOT NULL AND exp <= ?", (time.time(),)).rowcount

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM semantic")
            self._db.execute("DELETE FROM semantic_version")
            self._db.execute("DELETE FROM semantic_embedding")
        self._loaded.clear()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()


class RedisIndex:
    """The shared index: Redis Query Engine vector search (Redis 8, Redis Stack, or a server with RediSearch).

    One FLAT (exact) cosine index per vector dimension over hashes ``<prefix>:sem:<dim>:<id of the exact key>``
    holding ``p`` (the partition, a TAG), ``k`` (the exact key), ``t`` (the compared text) and ``v`` (float32).
    A query is a KNN restricted to the partition's tag, so neighbours from another model, parameter set or
    namespace are never even candidates. Entries expire with the answer's lifetime (``PEXPIREAT``); the
    dimensions in use are listed in ``<prefix>:semdims`` so ``delete(key)`` finds a row from any process.
    """

    name = "redis"

    def __init__(self, client_factory: Any, prefix: str, max_rows: int = MAX_LOCAL_ROWS) -> None:
        self._client_factory = client_factory
        self.prefix = prefix
        self.max_rows = max_rows
        #: Every row's name, scored by when it was added: the size bound drops the oldest first. Rows that expired
        #: on their own are still members until popped (deleting them again is harmless); they are the oldest.
        self._rows = f"{prefix}:semrows"
        self._created: set[int] = set()
        self._lock = threading.Lock()

    def _index_name(self, dim: int) -> str:
        return f"{self.prefix}:semidx:{dim}"

    def _ensure(self, client: Any, dim: int) -> None:
        if dim in self._created:
            return
        with self._lock:
            if dim in self._created:
                return
            try:
                client.execute_command("FT.INFO", self._index_name(dim))
            except Exception as exc:
                text = str(exc).lower()
                if "unknown command" in text:
                    raise IndexUnavailable("the server has no Query Engine (FT.* commands are unknown)") from exc
                if "unknown index" not in text and "no such index" not in text and "not found" not in text:
                    raise
                try:
                    client.execute_command(
                        "FT.CREATE", self._index_name(dim), "ON", "HASH",
                        "PREFIX", "1", f"{self.prefix}:sem:{dim}:",
                        "SCHEMA", "p", "TAG", "v", "VECTOR", "FLAT", "6",
                        "TYPE", "FLOAT32", "DIM", str(dim), "DISTANCE_METRIC", "COSINE",
                    )  # fmt: skip
                except Exception as create_exc:
                    if "already exists" not in str(create_exc).lower():
                        raise
            client.sadd(f"{self.prefix}:semdims", dim)
            self._created.add(dim)

    def add(self, partition: str, key: str, text: str, vector: Vector, expires_at: float | None) -> None:
        client = self._client_factory()
        blob = unit(vector)
        dim = int(blob.shape[0])
        self._ensure(client, dim)
        name = f"{self.prefix}:sem:{dim}:{_ident(key)}"
        pipe = client.pipeline(transaction=False)
        pipe.hset(name, mapping={"p": partition, "k": key, "t": text, "v": blob.tobytes()})
        if expires_at is not None:
            pipe.pexpireat(name, int(expires_at * 1000))
        pipe.zadd(self._rows, {name: time.time()})
        pipe.zcard(self._rows)
        count = int(pipe.execute()[-1])
        if count > self.max_rows:
            self._trim(client, count)

    def _trim(self, client: Any, count: int) -> None:
        """Back under ``max_rows`` with a tenth to spare (so trims are rare), oldest rows first. Processes that trim
        at once pop different members (ZPOPMIN is atomic), so none deletes a row twice or a row it should keep."""
        popped = client.zpopmin(self._rows, count - self.max_rows + max(1, self.max_rows // 10))
        names = [member for member, _ in popped]
        for start in range(0, len(names), 1000):
            client.delete(*names[start : start + 1000])

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float) -> list[Neighbour]:
        client = self._client_factory()
        query = unit(vector)
        dim = int(query.shape[0])
        self._ensure(client, dim)
        raw = client.execute_command(
            "FT.SEARCH", self._index_name(dim), f"(@p:{{{partition}}})=>[KNN {int(k)} @v $q AS d]",
            "PARAMS", "2", "q", query.tobytes(), "SORTBY", "d", "RETURN", "3", "k", "t", "d",
            "LIMIT", "0", str(int(k)), "DIALECT", "2",
        )  # fmt: skip
        out: list[Neighbour] = []
        for fields in _search_rows(raw):
            try:
                similarity = 1.0 - float(_text(fields.get("d")))
            except ValueError:
                continue
            if similarity >= min_similarity:
                out.append(Neighbour(_text(fields.get("k")), _text(fields.get("t")), similarity))
        return out

    def delete(self, key: str) -> None:
        client = self._client_factory()
        dims = {int(d) for d in client.smembers(f"{self.prefix}:semdims") or ()} | self._created
        if dims:
            names = [f"{self.prefix}:sem:{dim}:{_ident(key)}" for dim in sorted(dims)]
            pipe = client.pipeline(transaction=False)
            pipe.delete(*names)
            pipe.zrem(self._rows, *names)
            pipe.execute()

    def get_embedding(self, ident: str) -> Vector | None:
        raw = self._client_factory().get(f"{self.prefix}:semvec:{ident}")
        return np.frombuffer(raw, dtype=np.float32).copy() if isinstance(raw, bytes) and raw else None

    def put_embedding(self, ident: str, vector: Vector) -> None:
        # Embeddings of one model never change; a week bounds what a retired model leaves behind.
        self._client_factory().set(f"{self.prefix}:semvec:{ident}", unit(vector).tobytes(), ex=7 * 86400)

    def clear(self) -> None:
        client = self._client_factory()
        dims = {int(d) for d in client.smembers(f"{self.prefix}:semdims") or ()} | self._created
        for dim in dims:
            with contextlib.suppress(Exception):
                client.execute_command("FT.DROPINDEX", self._index_name(dim), "DD")
        client.delete(f"{self.prefix}:semdims", self._rows)
        self._created.clear()

    def close(self) -> None:
        return None


def _ident(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _search_rows(raw: Any) -> list[dict[str, Any]]:
    """FT.SEARCH replies in RESP2 (a flat list) and RESP3 (a map with ``results``) shapes."""
    rows: list[dict[str, Any]] = []
    if isinstance(raw, dict):
        results = raw.get(b"results", raw.get("results", []))
        for item in results or []:
            attrs = item.get(b"extra_attributes", item.get("extra_attributes")) if isinstance(item, dict) else None
            if isinstance(attrs, dict):
                rows.append({_text(name): value for name, value in attrs.items()})
        return rows
    if isinstance(raw, list) and raw:
        for i in range(2, len(raw), 2):
            pairs = raw[i]
            if isinstance(pairs, list):
                rows.append({_text(pairs[j]): pairs[j + 1] for j in range(0, len(pairs) - 1, 2)})
    return rows
