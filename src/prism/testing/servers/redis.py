"""An ephemeral ``redis-server`` for tests and benchmarks, from the locally installed binary.

``redis_server()`` yields the server of a test run: ``PRISM_TEST_REDIS_URL`` when set
(an external server, never stopped or wiped), else a fresh ``redis-server`` on a free
port in a temporary directory, else a skip naming what to install (a failure when
``PRISM_REQUIRE_BACKENDS`` asks for redis). A local server can be stopped and started
again on the same port with its data, which is how the outage tests take it down.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from prism.testing.servers._base import ServerUnavailable, env_url, free_port, require_or_skip, wait_for_port

__all__ = ["INSTALL_HINT", "RedisServer", "redis_server"]

INSTALL_HINT = "install redis-server (apt-get install -y redis-server) or set PRISM_TEST_REDIS_URL"
#: Seconds to wait for the server to listen after a start.
START_TIMEOUT = 20.0
#: Seconds to wait for the process to exit after SHUTDOWN before killing it.
STOP_TIMEOUT = 10.0
#: Free ports tried before giving up, in case another process takes the one picked.
START_ATTEMPTS = 3

_SHUTDOWN_SAVE = b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n"
_PING = b"*1\r\n$4\r\nPING\r\n"


class RedisServer:
    """One Redis server: a local process this object owns, or an external URL it only uses.

    ``url`` addresses database 0; ``url_for(db)`` another database. ``stop()`` saves the
    data and stops the process, ``start()`` brings it back on the same port with that
    data. Both raise ServerUnavailable for an external server.
    """

    def __init__(self, *, binary: str | None = None, url: str | None = None) -> None:
        self.external = url is not None
        self._url = url
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @classmethod
    def local(cls) -> RedisServer:
        """Start a private server on a free port (ServerUnavailable when there is no binary)."""
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            raise ServerUnavailable(f"no redis-server binary: {INSTALL_HINT}")
        server = cls(binary=binary)
        server._dir = tempfile.TemporaryDirectory(prefix="prism-redis-")
        failure = None
        for _ in range(START_ATTEMPTS):
            server.port = free_port()
            try:
                server.start()
                return server
            except ServerUnavailable as exc:
                failure = exc
        server.close()
        raise ServerUnavailable(f"redis-server failed to start {START_ATTEMPTS} times: {failure}")

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """The URL of database ``db`` on this server."""
        if self._url is not None:
            base = self._url.split("?", 1)[0].rstrip("/")
            head, _, tail = base.rpartition("/")
            if tail.isdigit() and "://" in head:
                base = head
            return f"{base}/{db}"
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.external or (self._process is not None and self._process.poll() is None)

    def start(self) -> None:
        """Start (or restart) the local process on its port, loading the data saved by ``stop()``."""
        if self.external:
            raise ServerUnavailable("an external server (PRISM_TEST_REDIS_URL) cannot be started here")
        if self.running:
            return
        assert self._binary is not None and self._dir is not None
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", self._dir.name,
                "--dbfilename", "dump.rdb",
                "--logfile", "",
                "--loglevel", "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(self.port, START_TIMEOUT)
            self._check_ours()
        except ServerUnavailable:
            self._kill()
            raise

    def _check_ours(self) -> None:
        """Fail unless our process is alive and a Redis answers on its port (not a squatter)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(_PING)
                reply = sock.recv(64)
        except OSError:
            reply = b""
        process = self._process
        if process is None or process.poll() is not None or not reply.startswith((b"+PONG", b"-LOADING")):
            raise ServerUnavailable(f"redis-server did not start on port {self.port} (is the port taken?)")

    def stop(self) -> None:
        """Save the data and stop the local process; ``start()`` brings it back on the same port."""
        if self.external:
            raise ServerUnavailable("an external server (PRISM_TEST_REDIS_URL) cannot be stopped here")
        process = self._process
        if process is None or process.poll() is not None:
            return
        with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(_SHUTDOWN_SAVE)
            with suppress(OSError):
                sock.recv(64)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()

    def close(self) -> None:
        """Stop the process for good and remove its directory."""
        if self.external:
            return
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'external' if self.external else 'local'}>"


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """The Redis server of a test run: PRISM_TEST_REDIS_URL, a local process, or a skip."""
    url = env_url("redis")
    if url is not None:
        yield RedisServer(url=url)
        return
    try:
        server = RedisServer.local()
    except ServerUnavailable as exc:
        require_or_skip("redis", f"{exc}")
    try:
        yield server
    finally:
        server.close()
