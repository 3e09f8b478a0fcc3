"""An ephemeral NATS server with JetStream, started from the local ``nats-server`` binary.

``NatsServer.launch()`` starts ``nats-server -js`` on a free loopback port with its
JetStream store in a fresh temporary directory. ``stop()`` and ``start()`` take it
down and bring it back on the same port with the same data (for outage tests);
``close()`` stops it for good and removes the directory.

``nats_url()`` is what test fixtures call: ``PRISM_TEST_NATS_URL`` when set,
otherwise a freshly launched server, otherwise a skip (or a failure under
``PRISM_REQUIRE_BACKENDS``) naming what to install.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from prism.testing.servers._base import ServerUnavailable, env_url, free_port, require_or_skip, wait_for_port

__all__ = ["INSTALL_HINT", "NatsServer", "find_binary", "nats_url"]

INSTALL_HINT = "install nats-server (apt-get install -y nats-server) or set PRISM_TEST_NATS_URL"
#: Where Debian and most images put the binary when it is not on PATH.
_KNOWN_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server")
#: Seconds to wait for the server to accept connections after it is started.
START_TIMEOUT = 20.0
#: Seconds to wait for a clean shutdown before the process is killed.
STOP_TIMEOUT = 10.0
#: Attempts at starting on a fresh port when another process took the one picked.
START_ATTEMPTS = 3


def find_binary() -> str | None:
    """The path of ``nats-server``: ``PRISM_NATS_SERVER`` when set, else PATH, else the usual places."""
    explicit = os.environ.get("PRISM_NATS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("nats-server")
    if found:
        return found
    return next((p for p in _KNOWN_PATHS if os.access(p, os.X_OK)), None)


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1, restartable on the same port and data."""

    def __init__(self, binary: str, port: int, store_dir: Path, *, owns_dir: bool = True) -> None:
        self.binary = binary
        self.port = port
        self.store_dir = store_dir
        self._owns_dir = owns_dir
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls, binary: str | None = None) -> NatsServer:
        """Start a server on a free port with an empty JetStream store; raise ServerUnavailable if it cannot."""
        binary = binary or find_binary()
        if binary is None:
            raise ServerUnavailable("no nats-server binary on PATH, in PRISM_NATS_SERVER or in /usr/sbin")
        store_dir = Path(tempfile.mkdtemp(prefix="prism-nats-"))
        last: ServerUnavailable | None = None
        for _ in range(START_ATTEMPTS):
            server = cls(binary, free_port(), store_dir)
            try:
                server.start()
            except ServerUnavailable as exc:
                last = exc
                continue
            atexit.register(server.close)
            return server
        shutil.rmtree(store_dir, ignore_errors=True)
        assert last is not None
        raise last

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart) the process on this server's port and store directory."""
        if self.running:
            return
        log = open(self.store_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._process = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._process = None
                raise ServerUnavailable(f"nats-server exited at start; see {self.store_dir / 'server.log'}")
            try:
                wait_for_port(self.port, timeout=0.2)
                return
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerUnavailable(
                        f"nats-server did not listen on port {self.port} within {START_TIMEOUT} s"
                    ) from None

    def stop(self) -> None:
        """Stop the process (the data stays for a later ``start()``); safe when already stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the process and delete its data; safe to call twice."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def nats_url() -> tuple[str, NatsServer | None]:
    """A NATS URL for tests and the server behind it when this process started one.

    ``PRISM_TEST_NATS_URL`` wins; otherwise a local server is launched. When neither
    is possible the calling test skips (or fails under ``PRISM_REQUIRE_BACKENDS``).
    """
    url = env_url("nats")
    if url is not None:
        return url, None
    try:
        server = NatsServer.launch()
    except ServerUnavailable as exc:
        require_or_skip("nats", f"{exc} ({INSTALL_HINT})")
    return server.url, server
