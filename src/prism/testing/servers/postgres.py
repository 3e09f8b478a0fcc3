"""An ephemeral PostgreSQL server, started from the locally installed binaries.

``PostgresServer.launch()`` runs ``initdb`` into a fresh temporary directory and
starts ``postgres`` on a free loopback port, with its Unix socket in the same
directory, trust authentication, and durability switched off (``fsync=off``): a
server for tests and benchmarks, never for data. ``stop()`` and ``start()`` take it
down and bring it back on the same port with the same data (for outage tests);
``close()`` stops it for good and removes the directory.

PostgreSQL refuses to run as root, so when this process is root the server runs as
the ``postgres`` system user (``PRISM_PG_USER`` names another), which then owns the
temporary directory. The binaries are looked up in ``PRISM_PG_BINDIR``, then on
PATH, then in ``/usr/lib/postgresql/<newest version>/bin`` (Debian's layout).

``postgres_url()`` is what test fixtures call: ``PRISM_TEST_POSTGRES_URL`` when set,
otherwise a freshly launched server, otherwise a skip (or a failure under
``PRISM_REQUIRE_BACKENDS``) naming what to install.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from prism.testing.servers._base import ServerUnavailable, env_url, free_port, require_or_skip

__all__ = ["INSTALL_HINT", "PostgresServer", "find_bindir", "postgres_url"]

INSTALL_HINT = "install the PostgreSQL server (apt-get install -y postgresql) or set PRISM_TEST_POSTGRES_URL"
#: The superuser created by initdb, and the database the URL names.
USER = "prism"
DATABASE = "postgres"
#: Seconds allowed for initdb.
INITDB_TIMEOUT = 120.0
#: Seconds to wait for the server to accept connections after it is started.
START_TIMEOUT = 30.0
#: Seconds to wait for a fast shutdown before the server is killed.
STOP_TIMEOUT = 15.0
#: Attempts at starting on a fresh port when another process took the one picked.
START_ATTEMPTS = 3
#: Server settings for a throwaway test server (appended to postgresql.conf).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "300",
    "shared_buffers": "'64MB'",
    "deadlock_timeout": "'200ms'",
    "log_min_messages": "warning",
}


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    explicit = os.environ.get("PRISM_PG_BINDIR")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    if not explicit:
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
        candidates.extend(installed)
    for bindir in candidates:
        if os.access(bindir / "initdb", os.X_OK) and os.access(bindir / "postgres", os.X_OK):
            return bindir
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None for this process's own user, else the postgres user."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("PRISM_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServerUnavailable(
            f"PostgreSQL refuses to run as root and there is no {name!r} user to run it as "
            "(set PRISM_PG_USER, or run the tests as a non-root user)"
        ) from None


class PostgresServer:
    """One ``postgres`` process on 127.0.0.1, restartable on the same port and data."""

    def __init__(
        self,
        bindir: Path,
        port: int,
        root: Path,
        account: pwd.struct_passwd | None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.settings = {**SETTINGS, **(settings or {})}
        self.bindir = bindir
        self.port = port
        self.root = root
        self.data_dir = root / "data"
        self._account = account
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls, bindir: Path | None = None, settings: dict[str, str] | None = None) -> PostgresServer:
        """Create a cluster and start it on a free port; raise ServerUnavailable if it cannot.

        ``settings`` are added to (or override) the test server's ``SETTINGS``.
        """
        bindir = bindir or find_bindir()
        if bindir is None:
            raise ServerUnavailable("no PostgreSQL binaries (initdb, postgres) found")
        account = _server_account()
        root = Path(tempfile.mkdtemp(prefix="prism-pg-"))
        try:
            if account is not None:
                os.chown(root, account.pw_uid, account.pw_gid)
            server = cls(bindir, 0, root, account, settings)
            server._initdb()
            server._start_on_a_free_port()
            return server
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    @classmethod
    def replica_of(cls, primary: PostgresServer, settings: dict[str, str] | None = None) -> PostgresServer:
        """A streaming replica of ``primary`` (``pg_basebackup -R``), started on a free port.

        It inherits the primary's configuration, with ``settings`` on top; ``promote()``
        makes it a primary.
        """
        root = Path(tempfile.mkdtemp(prefix="prism-pg-replica-"))
        try:
            if primary._account is not None:
                os.chown(root, primary._account.pw_uid, primary._account.pw_gid)
            server = cls(primary.bindir, 0, root, primary._account, {**primary.settings, **(settings or {})})
            server._run(
                [
                    str(primary.bindir / "pg_basebackup"),
                    "-h", "127.0.0.1",
                    "-p", str(primary.port),
                    "-U", USER,
                    "-D", str(server.data_dir),
                    "-R",
                    "-X", "stream",
                    "-c", "fast",
                    "--no-sync",
                ],
                INITDB_TIMEOUT,
            )  # fmt: skip
            server._configure()
            server._start_on_a_free_port()
            return server
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _start_on_a_free_port(self) -> None:
        last: ServerUnavailable | None = None
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            try:
                self.start()
            except ServerUnavailable as exc:
                last = exc
                continue
            atexit.register(self.close)
            return
        assert last is not None
        raise last

    def promote(self) -> None:
        """Make this replica a primary (``pg_ctl promote``, waiting until it accepts writes)."""
        self._run([str(self.bindir / "pg_ctl"), "promote", "-w", "-D", str(self.data_dir)], START_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the server and every process of it at once: no shutdown, no checkpoint."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _as_server_user(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}

    def _run(self, args: Sequence[str], timeout: float) -> None:
        try:
            done = subprocess.run(
                args,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
                **self._as_server_user(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerUnavailable(f"{Path(args[0]).name} failed: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()[-2000:]
            raise ServerUnavailable(f"{Path(args[0]).name} exited with {done.returncode}: {output}")

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            INITDB_TIMEOUT,
        )
        self._configure()

    def _configure(self) -> None:
        lines = [f"{name} = {value}" for name, value in self.settings.items()]
        lines.append(f"unix_socket_directories = '{self.root}'")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# prism test server\n" + "\n".join(lines) + "\n")

    def _ready(self) -> bool:
        """True once the postmaster reports that it accepts connections (PostgreSQL 10+)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # A file left by a killed server names another pid: not ready until the new one rewrites it.
        process = self._process
        return (
            process is not None
            and len(lines) >= 8
            and lines[0].strip() == str(process.pid)
            and lines[7].strip() == "ready"
        )

    def start(self) -> None:
        """Start (or restart) the server on this port and data directory."""
        if self.running:
            return
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._as_server_user(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None:
                self._process = None
                raise ServerUnavailable(f"postgres exited at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(
                    f"postgres was not ready on port {self.port} within {START_TIMEOUT} s"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace").strip()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected, the data stays for ``start()``); safe when stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the server and delete its data; safe to call twice."""
        self.stop()
        atexit.unregister(self.close)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def postgres_url() -> tuple[str, PostgresServer | None]:
    """A PostgreSQL URL for tests and the server behind it when this process started one.

    ``PRISM_TEST_POSTGRES_URL`` wins; otherwise a local server is launched. When
    neither is possible the calling test skips (or fails under ``PRISM_REQUIRE_BACKENDS``).
    """
    url = env_url("postgres")
    if url is not None:
        return url, None
    try:
        server = PostgresServer.launch()
    except ServerUnavailable as exc:
        require_or_skip("postgres", f"{exc} ({INSTALL_HINT})")
    return server.url, server
