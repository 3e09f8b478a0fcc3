"""An ephemeral Redis Cluster for tests and benchmarks: six local ``redis-server`` processes.

``redis_cluster()`` starts six servers with ``--cluster-enabled yes`` on free ports in a
temporary directory and joins them with ``redis-cli --cluster create ... --cluster-replicas 1``
(three primaries, each with one replica), or skips naming what to install (a failure
when ``PRISM_REQUIRE_BACKENDS`` asks for ``redis``). ``PRISM_TEST_REDIS_CLUSTER_URL``
names an external cluster instead, which is only used, never stopped.

The nodes time out after ``NODE_TIMEOUT_MS``, so a killed primary is replaced by its
replica within a few seconds; ``cluster-require-full-coverage`` is off, so the slots of
the other primaries keep serving meanwhile.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from redis.crc import key_slot

from prism.testing.servers._base import (
    ServerUnavailable,
    env_url,
    free_ports,
    require_or_skip,
    wait_for_port,
)

__all__ = ["ClusterNode", "RedisCluster", "redis_cluster"]

INSTALL_HINT = (
    "install redis-server and redis-cli (apt-get install -y redis-server) or set PRISM_TEST_REDIS_CLUSTER_URL"
)
#: Nodes of the test cluster: three primaries and a replica for each.
NODES = 6
#: Milliseconds before a silent node is considered failed (and its replica takes over).
NODE_TIMEOUT_MS = 1000
#: Seconds to wait for the cluster to form, and for a failover to finish.
FORM_TIMEOUT = 60.0
FAILOVER_TIMEOUT = 30.0


@dataclass
class ClusterNode:
    """One ``redis-server`` of the cluster."""

    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command to the node on ``port`` in the Redis protocol; the raw reply."""
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks: list[bytes] = []
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if chunks:
                    break
                continue
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


class RedisCluster:
    """Six local cluster nodes this object owns, or an external cluster's URL it only uses."""

    def __init__(self, *, url: str | None = None) -> None:
        self.external = url is not None
        self._url = url
        self.nodes: list[ClusterNode] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._binary = ""

    @classmethod
    def local(cls) -> RedisCluster:
        """Start and join six nodes (ServerUnavailable when a binary is missing or they do not form)."""
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise ServerUnavailable(f"no redis-server or redis-cli binary: {INSTALL_HINT}")
        cluster = cls()
        cluster._binary = binary
        cluster._dir = tempfile.TemporaryDirectory(prefix="prism-redis-cluster-")
        try:
            taken: set[int] = set()
            for i in range(NODES):
                port, bus = free_ports(taken)
                directory = Path(cluster._dir.name) / f"node{i}"
                directory.mkdir()
                node = ClusterNode(port, bus, directory)
                cluster.nodes.append(node)
                cluster.start_node(node)
            create = [cli, "--cluster", "create", *(n.address for n in cluster.nodes)]
            create += ["--cluster-replicas", "1", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, timeout=FORM_TIMEOUT, check=False)
            if done.returncode != 0:
                raise ServerUnavailable(f"redis-cli --cluster create failed: {done.stdout[-500:]!r}")
            cluster.wait_until_ok()
        except BaseException:
            cluster.close()
            raise
        return cluster

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed."""
        if self._url is not None:
            return self._url
        return "redis+cluster://" + ",".join(n.address for n in self.nodes) + "/"

    def start_node(self, node: ClusterNode) -> None:
        """Start (or restart) one node; it rejoins with the cluster state kept in its directory."""
        if node.alive:
            return
        node.process = subprocess.Popen(
            [
                self._binary,
                "--port", str(node.port),
                "--cluster-port", str(node.bus_port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no",
                "--cluster-replica-validity-factor", "0",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(node.directory),
                "--logfile", "",
                "--loglevel", "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(node.port, 20.0)
        except ServerUnavailable:
            self.kill(node)
            raise

    def kill(self, node: ClusterNode) -> None:
        """``kill -9`` one node: no shutdown, no save, its connections drop."""
        process = node.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def command(self, node: ClusterNode, *args: str) -> bytes:
        """The raw reply of one command sent to ``node``."""
        return _command(node.port, *args)

    def wait_until_ok(self, timeout: float = FORM_TIMEOUT) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and agrees on three primaries."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if not node.alive:
                    continue
                with suppress(OSError):
                    info = self.command(node, "CLUSTER", "INFO")
                    states.append(b"cluster_state:ok" in info)
            if states and all(states) and len(self.primaries()) == NODES // 2:
                return
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    f"the redis cluster did not reach cluster_state:ok within {timeout} s"
                )
            time.sleep(0.2)

    def primaries(self) -> dict[int, ClusterNode]:
        """The live primaries, by port, as a live node sees them."""
        by_port = {n.port: n for n in self.nodes if n.alive}
        for node in by_port.values():
            with suppress(OSError):
                text = self.command(node, "CLUSTER", "NODES").decode(errors="replace")
                found: dict[int, ClusterNode] = {}
                for line in text.splitlines():
                    fields = line.split()
                    if len(fields) < 8 or "master" not in fields[2] or "fail" in fields[2]:
                        continue
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    if port in by_port and len(fields) > 8:
                        found[port] = by_port[port]
                return found
        return {}

    def owner(self, key: str) -> ClusterNode:
        """The live node that serves ``key``'s slot as primary (by ``CLUSTER SHARDS`` of a live node)."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.alive:
                continue
            with suppress(OSError):
                text = self.command(node, "CLUSTER", "NODES").decode(errors="replace")
                for line in text.splitlines():
                    fields = line.split()
                    if len(fields) < 9 or "master" not in fields[2]:
                        continue
                    for span in fields[8:]:
                        if span.startswith("["):
                            continue
                        low, _, high = span.partition("-")
                        if int(low) <= slot <= int(high or low):
                            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                            return next(n for n in self.nodes if n.port == port)
        raise ServerUnavailable(f"no live node serves slot {slot}")

    def heal(self, timeout: float = FORM_TIMEOUT) -> None:
        """Start every stopped node and wait until each primary has a live replica again."""
        for node in self.nodes:
            self.start_node(node)
        self.wait_until_ok(timeout)
        deadline = time.monotonic() + timeout
        while not all(self.replicas_of(p) for p in self.primaries().values()):
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"the redis cluster did not get a replica per primary in {timeout} s")
            time.sleep(0.2)

    def node_id(self, node: ClusterNode) -> str:
        """The cluster's id of ``node`` (``CLUSTER MYID``)."""
        return self.command(node, "CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        """The live replicas of ``primary``, as ``primary`` sees them."""
        wanted = self.node_id(primary)
        text = self.command(primary, "CLUSTER", "NODES").decode(errors="replace")
        ports = set()
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 8 and fields[3] == wanted and "fail" not in fields[2]:
                ports.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return [n for n in self.nodes if n.port in ports and n.alive]

    def wait_for_new_owner(
        self, key: str, old: ClusterNode, timeout: float = FAILOVER_TIMEOUT
    ) -> ClusterNode:
        """Wait until another live node has taken over ``key``'s slot from ``old``; that node."""
        deadline = time.monotonic() + timeout
        while True:
            with suppress(ServerUnavailable, StopIteration):
                owner = self.owner(key)
                if owner is not old and owner.alive:
                    return owner
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"no replica took over from {old.address} within {timeout} s")
            time.sleep(0.1)

    def close(self) -> None:
        """Kill every node and remove the directory."""
        for node in self.nodes:
            self.kill(node)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __repr__(self) -> str:
        return f"<RedisCluster {self.url} {'external' if self.external else 'local'}>"


@contextmanager
def redis_cluster() -> Iterator[RedisCluster]:
    """The Redis Cluster of a test run: PRISM_TEST_REDIS_CLUSTER_URL, six local nodes, or a skip."""
    url = env_url("redis_cluster")
    if url is not None:
        yield RedisCluster(url=url)
        return
    try:
        cluster = RedisCluster.local()
    except ServerUnavailable as exc:
        require_or_skip("redis", f"{exc}")
    try:
        yield cluster
    finally:
        cluster.close()
