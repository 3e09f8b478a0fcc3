"""An ephemeral DynamoDB for tests and benchmarks: moto's server on a free port.

``start_dynamodb()`` runs moto's server (``moto[server]``) in a child process and
returns a ``DynamoDBServer`` with ``.url``, ``.stop()`` and ``.start()``, plus
``.pause()``/``.resume()`` to make it hang. The child runs the app of ``moto_server``
(``python -m prism.testing.servers.dynamodb -H HOST -p PORT``) with one difference:
requests are handled one at a time. ``moto_server`` handles them in parallel threads,
and then two conditional writes on one item can both pass their condition (moto
checks and writes without a lock), which DynamoDB never allows.

With ``persistent=True`` the server records every request and replays them after a
restart, so ``stop()`` then ``start()`` brings back the same port and the same data:
an outage test can kill the server and bring it back. Clients of the server need AWS
credentials, any will do: ``DUMMY_AWS_ENVIRONMENT`` holds fake ones for the test
process (never real ones).

``dynamodb_or_skip()`` is what test fixtures call: ``PRISM_TEST_DYNAMODB_URL`` when
set, else a fresh server, else a skip naming what to install (a failure when
``PRISM_REQUIRE_BACKENDS`` requires DynamoDB).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from types import TracebackType
from typing import Any
from urllib.parse import quote

from prism.testing.servers._base import ServerUnavailable, env_url, free_port, require_or_skip, wait_for_port

__all__ = [
    "DUMMY_AWS_ENVIRONMENT",
    "REGION",
    "DynamoDBServer",
    "ExternalDynamoDB",
    "dynamodb_or_skip",
    "moto_available",
    "serve",
    "start_dynamodb",
]

#: Fake credentials and region for clients of a local server.
DUMMY_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
REGION = "us-east-1"
#: The table the test URLs name (created by the store on open).
DEFAULT_TABLE = "prism-test"
#: Seconds moto_server may take to listen (it imports all of moto first).
START_TIMEOUT = 30.0
#: Seconds a stopping server gets before it is killed.
STOP_TIMEOUT = 5.0
#: Seconds the replay of a persistent server's recording may take.
REPLAY_TIMEOUT = 60.0
INSTALL_HINT = "pip install 'moto[server]', or set PRISM_TEST_DYNAMODB_URL"


def moto_available() -> bool:
    """Whether moto's server can run in this interpreter."""
    try:
        return importlib.util.find_spec("moto.moto_server.werkzeug_app") is not None
    except ImportError:
        return False


def serve(host: str, port: int) -> None:
    """Run moto's DynamoDB-capable app on ``host:port``, one request at a time, until SIGTERM."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Any) -> Any:
        # The recorder's replay calls back into this server: it must not wait for itself.
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


def _store_url(endpoint: str, table: str, options: dict[str, str]) -> str:
    query = {"region": REGION, "endpoint": endpoint, "create_table": "true", **options}
    return f"dynamodb://{table}?" + "&".join(f"{k}={quote(str(v), safe=':/')}" for k, v in query.items())


class DynamoDBServer:
    """One moto_server process on a fixed port; restartable with its data when persistent."""

    def __init__(self, *, persistent: bool = False, table: str = DEFAULT_TABLE) -> None:
        if not moto_available():
            raise ServerUnavailable(f"moto's server is not installed: {INSTALL_HINT}")
        self.persistent = persistent
        self.table = table
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="prism-moto-")
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """A store URL for this server's test table (created on open)."""
        return _store_url(self.endpoint, self.table, {})

    def url_for(self, table: str | None = None, **options: object) -> str:
        """A store URL for ``table`` with extra query ``options`` (e.g. short timeouts)."""
        return _store_url(self.endpoint, table or self.table, {k: str(v) for k, v in options.items()})

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same port) the server; a persistent one gets its data back."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_")}
        if self.persistent:
            env["MOTO_ENABLE_RECORDING"] = "True"
            env["MOTO_RECORDER_FILEPATH"] = os.path.join(self._dir, "recording.jsonl")
        log = open(os.path.join(self._dir, "server.log"), "ab")  # noqa: SIM115 - the process owns it
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prism.testing.servers.dynamodb",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self._dir,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.port, START_TIMEOUT)
        except ServerUnavailable:
            self.stop()
            raise
        if self.persistent and self._started_once:
            self._replay()
        self._started_once = True

    def _replay(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST")
        with urllib.request.urlopen(request, timeout=REPLAY_TIMEOUT) as response:
            if response.status != 200:
                raise ServerUnavailable(f"moto could not replay its recording: HTTP {response.status}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open but nothing answers, like a hung host."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (its port refuses connections until ``start()``)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DynamoDBServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ExternalDynamoDB:
    """A server named by ``PRISM_TEST_DYNAMODB_URL``: used as is, never stopped."""

    persistent = False

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        raise ServerUnavailable(
            "an external DynamoDB (PRISM_TEST_DYNAMODB_URL) cannot be restarted by the tests"
        )

    def stop(self) -> None:
        raise ServerUnavailable(
            "an external DynamoDB (PRISM_TEST_DYNAMODB_URL) cannot be stopped by the tests"
        )

    def close(self) -> None:
        """Nothing to release: the server is not ours."""


def start_dynamodb(*, persistent: bool = False, table: str = DEFAULT_TABLE) -> DynamoDBServer:
    """A started moto server; ServerUnavailable (saying what to install) when it cannot run here."""
    server = DynamoDBServer(persistent=persistent, table=table)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def dynamodb_or_skip(*, persistent: bool = False) -> DynamoDBServer | ExternalDynamoDB:
    """For fixtures: the external server, a fresh local one, or a skip (or failure) naming what to install.

    A persistent server (for restart tests) is always local, since an external one cannot be restarted.
    """
    external = env_url("dynamodb")
    if external is not None and not persistent:
        return ExternalDynamoDB(external)
    try:
        return start_dynamodb(persistent=persistent)
    except ServerUnavailable as exc:
        require_or_skip("dynamodb", str(exc) if INSTALL_HINT in str(exc) else f"{exc}; {INSTALL_HINT}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="moto's server, handling one request at a time")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    arguments = parser.parse_args()
    serve(arguments.host, arguments.port)
