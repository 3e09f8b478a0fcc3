"""An ephemeral three-node NATS cluster with JetStream, for tests and benchmarks.

``nats_cluster()`` starts three ``nats-server -js`` processes on free loopback ports,
each with its own JetStream directory, joined by routes into the cluster ``prism``,
and waits until JetStream has a meta leader; or it skips naming what to install (a
failure when ``PRISM_REQUIRE_BACKENDS`` asks for nats). ``PRISM_TEST_NATS_CLUSTER_URL``
names an external cluster instead, which is only used, never stopped. A node can be
stopped and started again with its data, which is how the leader-change tests work.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.js.api import StorageType, StreamConfig

from prism.testing.servers._base import (
    ServerUnavailable,
    env_url,
    free_ports,
    require_or_skip,
    wait_for_port,
)
from prism.testing.servers.nats import INSTALL_HINT, find_binary

__all__ = ["NatsCluster", "NatsNode", "nats_cluster"]

NODES = 3
#: Seconds to wait for the nodes to listen and for JetStream to elect its meta leader.
FORM_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class NatsNode:
    """One server of the cluster."""

    name: str
    port: int
    cluster_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """Three local nodes this object owns, or an external cluster's URL it only uses."""

    def __init__(self, *, url: str | None = None) -> None:
        self.external = url is not None
        self._url = url
        self.nodes: list[NatsNode] = []
        self._binary = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def local(cls) -> NatsCluster:
        binary = find_binary()
        if binary is None:
            raise ServerUnavailable(f"no nats-server binary: {INSTALL_HINT}")
        cluster = cls()
        cluster._binary = binary
        cluster._dir = tempfile.TemporaryDirectory(prefix="prism-nats-cluster-")
        try:
            taken: set[int] = set()
            for i in range(NODES):
                port, route = free_ports(taken)
                directory = Path(cluster._dir.name) / f"n{i}"
                directory.mkdir()
                cluster.nodes.append(NatsNode(f"n{i}", port, route, directory))
            for node in cluster.nodes:
                cluster.start_node(node)
            cluster.wait_for_jetstream()
        except BaseException:
            cluster.close()
            raise
        return cluster

    @property
    def url(self) -> str:
        """``nats://host:port,host:port,host:port``: every node as a seed."""
        if self._url is not None:
            return self._url
        return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start_node(self, node: NatsNode) -> None:
        """Start (or restart) one node with its JetStream data."""
        if node.alive:
            return
        routes = ",".join(f"nats://127.0.0.1:{n.cluster_port}" for n in self.nodes if n is not node)
        args = [
            self._binary,
            "-js",
            "-a", "127.0.0.1",
            "-p", str(node.port),
            "-sd", str(node.directory),
            "--server_name", node.name,
            "--cluster_name", "prism",
            "--cluster", f"nats://127.0.0.1:{node.cluster_port}",
            "--routes", routes,
        ]  # fmt: skip
        with open(node.directory / "server.log", "ab") as log:
            node.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for_port(node.port, 20.0)
        except ServerUnavailable:
            self.kill(node)
            raise

    def stop(self, node: NatsNode) -> None:
        """Stop one node cleanly (SIGTERM), keeping its data."""
        process = node.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill(node)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL one node."""
        process = node.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def wait_for_jetstream(self, timeout: float = FORM_TIMEOUT) -> None:
        """Wait until every live node answers JetStream and a stream can have a replica on each."""
        asyncio.run(self._wait_for_jetstream(time.monotonic() + timeout))

    async def _wait_for_jetstream(self, deadline: float) -> None:
        for node in self.nodes:
            if not node.alive:
                continue
            while True:
                try:
                    nc = await nats.connect(node.url, connect_timeout=1, max_reconnect_attempts=0)
                    try:
                        await nc.jetstream(timeout=1).account_info()
                        break
                    finally:
                        await nc.close()
                except (nats.errors.Error, OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise ServerUnavailable("the nats cluster had no JetStream leader in time") from None
                    await asyncio.sleep(0.2)
        # Every node is a JetStream peer once a stream with a replica on each can be placed.
        live = [n for n in self.nodes if n.alive]
        while True:
            try:
                nc = await nats.connect(live[0].url, connect_timeout=1, max_reconnect_attempts=0)
                try:
                    js = nc.jetstream(timeout=2)
                    config = StreamConfig(
                        name="PRISM_PEERS_PROBE",
                        subjects=["prism.peers.probe"],
                        num_replicas=len(live),
                        storage=StorageType.MEMORY,
                    )
                    await js.add_stream(config)
                    await js.delete_stream("PRISM_PEERS_PROBE")
                    return
                finally:
                    await nc.close()
            except (nats.errors.Error, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise ServerUnavailable(
                        "the nats cluster did not place a replicated stream in time"
                    ) from None
                await asyncio.sleep(0.2)

    async def stream_leader(self, stream: str) -> NatsNode:
        """The node leading ``stream`` (asked of any live node)."""
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                nc = await nats.connect(node.url, connect_timeout=1, max_reconnect_attempts=0)
            except (nats.errors.Error, OSError):
                continue
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
            finally:
                await nc.close()
            cluster = info.cluster
            if cluster is not None and cluster.leader:
                return self.node(cluster.leader)
        raise ServerUnavailable(f"no live node names a leader of {stream}")

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __repr__(self) -> str:
        return f"<NatsCluster {self.url} {'external' if self.external else 'local'}>"


@contextmanager
def nats_cluster() -> Iterator[NatsCluster]:
    """The NATS cluster of a test run: PRISM_TEST_NATS_CLUSTER_URL, three local nodes, or a skip."""
    url = env_url("nats_cluster")
    if url is not None:
        yield NatsCluster(url=url)
        return
    try:
        cluster = NatsCluster.local()
    except ServerUnavailable as exc:
        require_or_skip("nats", str(exc))
    try:
        yield cluster
    finally:
        cluster.close()
