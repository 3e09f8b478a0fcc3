"""Every example in README.md and docs/*.md runs as written.

How each fenced block is run
----------------------------
* ```python: executed in a fresh interpreter, in a scratch directory. Top-level
  ``await`` is allowed (the block then runs in an event loop). Tracebacks name the
  markdown file and line.
* ```sh: run by ``bash`` with ``set -eo pipefail`` in a scratch directory, with
  ``.venv/bin`` first on ``PATH``; ``curl`` fails on an HTTP error status
  (``--fail-with-body``), so every command must succeed.
* ```yaml: a gateway config, parsed and validated with
  ``prism.gateway.config.parse_config`` (every ``${VAR}`` it references is given a
  value), and each store's URL and options read by its backend (nothing connects).
  The block with ``id=complete`` is also served and exercised.
* ```json, ```text and bare fences are illustrations (payloads, output, diagrams). A
  bare or text fence whose first line is a command (``prism``, ``curl``, ``make``,
  ``python``) fails the test: label it ``sh`` so it runs. Other labels (``py``,
  ``bash``, ``yml``...) fail too, since they would never run.

An HTML comment on the line right before a fence changes how it runs; its words are
``key=value`` (quote values holding spaces) or flags:

* ``<!-- doc-test: id=NAME -->`` names a yaml block so others can use it.
* ``<!-- doc-test: gateway=default -->`` runs the block beside a running zero-config
  ``prism serve`` (working directory: the gateway's); ``gateway=NAME`` beside
  ``prism serve --config prism.yaml`` serving the yaml block ``NAME``, with the files
  and environment variables it expects; ``PRISM_URL`` names the gateway. The addresses the examples use
  (``127.0.0.1:8080``, ``localhost:8080``, ``localhost:6379``, and ``:8081`` for the
  gateway's gRPC port) are rewritten to the harness's gateway and Redis server, which
  run on free ports.
* ``<!-- doc-test: serve -->`` the commands of this sh block start servers: each is
  started with a free port (``--port P``, or ``ARGS="--port P"`` for ``make run``),
  must answer ``/healthz``, and is then stopped with SIGTERM and must exit 0.
  ``skip-line="PREFIX: reason"`` leaves out the lines starting with PREFIX.
* ``<!-- doc-test: pytest -->`` the python block is a test module: it is run by
  pytest in pytest-asyncio's ``strict`` and ``auto`` modes, and must pass in both
  (``pytest=strict`` runs only the strict mode, for a module whose auto-mode run
  Prism's own suite already makes).
* ``<!-- doc-test: files="a.png b.txt" -->`` creates these (small) files first.
* ``<!-- doc-test: skip="reason" -->`` the block is not run; the reason is required.
  Keep these few: an example that cannot run is usually an example to rewrite.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from prism.backends import open_backend
from prism.errors import PrismError
from prism.gateway.config import parse_config
from prism.testing.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
BLOCK_TIMEOUT = 90.0
COMMAND_WORDS = ("prism", "curl", "make", "python")

_FENCE = re.compile(r"^(\s*)```([\w-]*)\s*$")
_ANNOTATION = re.compile(r"^<!--\s*doc-test:(.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block of a markdown file."""

    path: Path
    line: int  # the line of the first line of the body (1-based)
    lang: str
    text: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _options(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in shlex.split(raw):
        key, sep, value = word.partition("=")
        out[key] = value if sep else "true"
    return out


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` with the annotation right above each."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        options: dict[str, str] = {}
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (note := _ANNOTATION.match(lines[k].strip())):
            options = _options(note.group(1))
        indent = len(match.group(1))  # a fence inside a list item is indented
        body = "\n".join(line[indent:] for line in lines[start + 1 : j]) + "\n"
        found.append(Block(path, start + 2, match.group(2), body, options))
        i = j + 1
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks_of(path)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang in ("python", "sh", "yaml")]
NAMED = {b.options["id"]: b for b in ALL_BLOCKS if "id" in b.options}


def _fail(block: Block, what: str, output: str = "") -> None:
    pytest.fail(f"{block.where}: {what}\n{output}".rstrip(), pytrace=False)


# -- servers the examples talk to ------------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PRISM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Served:
    """A ``prism serve`` process (or ``make run``) on a free port, answering /readyz."""

    def __init__(
        self, argv: list[str], cwd: Path, env: dict[str, str], port: int, grpc_port: int | None = None
    ) -> None:
        self.port = port
        self.grpc_port = grpc_port
        self.cwd = cwd
        self.env = env
        self.log = cwd / f"serve-{port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{shlex.join(argv)} exited with {self.process.returncode}:\n{self.output}"
                )
            with contextlib.suppress(OSError):
                if _get(f"{self.url}/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{shlex.join(argv)} did not become ready in 30 s:\n{self.output}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """SIGTERM to the started process (make passes it on to its child), then the exit code.

        Killed with its whole group after 20 s.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _rsa_public_pem(workdir: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "jwt-private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pii_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class Environment:
    """What a block runs beside: gateways started on demand, a Redis server, scratch dirs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.gateways: dict[str, Served] = {}
        self.broken: dict[str, str] = {}
        self.stack = contextlib.ExitStack()
        self.redis_address: str | None = None
        self.redis_password = secrets.token_hex(12)

    def close(self) -> None:
        for served in self.gateways.values():
            served.stop()
        self.stack.close()

    def scratch(self, block: Block) -> Path:
        name = re.sub(r"[^\w]+", "-", block.where)
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def redis(self) -> str:
        """``host:port`` of a Redis server with the user ``app`` the examples log in as."""
        if self.redis_address is None:
            import redis as redis_py

            from prism.testing.servers.redis import redis_server

            server = self.stack.enter_context(redis_server())
            client = redis_py.Redis.from_url(server.url)
            try:
                client.acl_setuser(
                    "app",
                    enabled=True,
                    passwords=[f"+{self.redis_password}"],
                    keys=["*"],
                    channels=["*"],
                    commands=["+@all"],
                )
            finally:
                client.close()
            self.redis_address = server.url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        return self.redis_address

    def rewrite(self, text: str, port: int | None) -> str:
        # The gRPC port of the gateway serving HTTP on ``port`` (8081 in the examples).
        grpc_port = next((g.grpc_port for g in self.gateways.values() if g.port == port), None)
        if port is not None:
            text = re.sub(r"(127\.0\.0\.1|localhost):8080\b", f"127.0.0.1:{port}", text)
        if grpc_port is not None:
            text = re.sub(r"(127\.0\.0\.1|localhost):8081\b", f"127.0.0.1:{grpc_port}", text)
        if "localhost:6379" in text:
            text = text.replace("localhost:6379", self.redis())
        return text

    def config_files(self, name: str, workdir: Path) -> dict[str, str]:
        """Write yaml block ``name`` as ``prism.yaml`` with the files it names; its environment."""
        block = NAMED[name]
        text = self.rewrite(block.text, None)
        raw = yaml.safe_load(text)
        env: dict[str, str] = {}
        for var in re.findall(r"\$\{(\w+)\}", text):
            if var == "REDIS_PASSWORD":
                env[var] = self.redis_password
            elif "SECRET" in var:
                env[var] = secrets.token_urlsafe(48)
            elif var.startswith("PRISM_PII_"):
                env[var] = _pii_key()
            else:
                _fail(block, f"the harness cannot provide ${{{var}}}: teach config_files about it")
        jwt = (raw.get("auth") or {}).get("jwt") or {}
        if jwt.get("secret_env"):
            env[jwt["secret_env"]] = secrets.token_urlsafe(48)
        if jwt.get("public_key_file"):
            target = workdir / jwt["public_key_file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_rsa_public_pem(workdir))
        for key in (raw.get("pii_keys") or {}).get("keys", []):
            if "env" in key:
                env[key["env"]] = _pii_key()
            if "file" in key:
                target = workdir / key["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_pii_key() + "\n")
        (workdir / "prism.yaml").write_text(text)
        return env

    def gateway(self, name: str) -> Served:
        """The gateway ``name`` (``default``: zero-config), started on first use."""
        if name in self.broken:
            pytest.fail(self.broken[name], pytrace=False)
        if name not in self.gateways:
            workdir = self.base / f"gateway-{name}"
            workdir.mkdir(parents=True, exist_ok=True)
            port, grpc_port = free_port(), free_port()
            argv = [str(BIN / "prism"), "serve", "--port", str(port), "--grpc-port", str(grpc_port)]
            env = _clean_env()
            if name != "default":
                if name not in NAMED:
                    pytest.fail(f"no yaml block has id={name}", pytrace=False)
                env.update(self.config_files(name, workdir))
                argv += ["--config", "prism.yaml"]
            try:
                self.gateways[name] = Served(argv, workdir, env, port, grpc_port)
            except RuntimeError as exc:
                self.broken[name] = f"the gateway {name!r} does not start: {exc}"
                pytest.fail(self.broken[name], pytrace=False)
        return self.gateways[name]


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    env = Environment(tmp_path_factory.mktemp("docs"))
    try:
        yield env
    finally:
        env.close()


# -- running one block -----------------------------------------------------------------

RUNNER = """
import ast, asyncio, sys
path, line = sys.argv[1], int(sys.argv[2])
source = "\\n" * (line - 1) + open(sys.argv[3]).read()
code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
scope = {"__name__": "__main__"}
result = eval(code, scope)
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def _run(block: Block, argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        _fail(
            block, f"did not finish in {BLOCK_TIMEOUT:.0f} s", str(exc.stdout or "") + str(exc.stderr or "")
        )
        raise AssertionError from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        _fail(block, f"exited with {done.returncode}", output)
    return output


def _context(block: Block, environment: Environment) -> tuple[Path, dict[str, str], int | None]:
    """Working directory, environment and gateway port of a block."""
    name = block.options.get("gateway")
    if name is None:
        return environment.scratch(block), _clean_env(), None
    served = environment.gateway(name)
    return served.cwd, {**served.env, "PRISM_URL": served.url}, served.port


def run_python(block: Block, environment: Environment) -> None:
    cwd, env, port = _context(block, environment)
    source = environment.rewrite(block.text, port)
    if block.options.get("pytest"):
        wanted = block.options["pytest"]
        for mode in ("strict", "auto") if wanted == "true" else (wanted,):
            workdir = environment.scratch(block) / mode
            workdir.mkdir(exist_ok=True)
            (workdir / "pytest.ini").write_text(
                f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
            )
            (workdir / "test_example.py").write_text("\n" * (block.line - 1) + source)
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
            output = _run(block, [*argv, "test_example.py"], workdir, env)
            if not re.search(r"\b[1-9]\d* passed", output):
                _fail(block, f"did not pass under asyncio_mode={mode}", output)
        return
    script = environment.scratch(block) / "example.py"
    script.write_text(source)
    where = str(block.path.relative_to(ROOT))
    _run(block, [sys.executable, "-c", RUNNER, where, str(block.line), str(script)], cwd, env)


def _script(text: str) -> str:
    return 'set -eo pipefail\ncurl() { command curl --fail-with-body -sS "$@"; }\n' + text


def run_sh(block: Block, environment: Environment) -> None:
    if block.options.get("serve"):
        run_servers(block, environment)
        return
    cwd, env, port = _context(block, environment)
    for name in block.options.get("files", "").split():
        (cwd / name).write_bytes(b"example " + name.encode() + b"\n")
    _run(block, ["bash", "-c", _script(environment.rewrite(block.text, port))], cwd, env)


def run_servers(block: Block, environment: Environment) -> None:
    skipped = block.options.get("skip-line", "")
    prefix = skipped.split(":", 1)[0].strip() if skipped else None
    commands = [line.split("#", 1)[0].strip() for line in block.text.splitlines()]
    commands = [c for c in commands if c and not (prefix and c.startswith(prefix))]
    assert commands, f"{block.where}: a serve block without commands"
    for command in commands:
        port = free_port()
        cwd = environment.scratch(block)
        if command.startswith("make run"):
            argv = ["make", "-s", "-C", str(ROOT), *shlex.split(command)[1:], f"ARGS=--port {port}"]
        elif command.startswith("prism serve"):
            argv = [str(BIN / "prism"), *shlex.split(command)[1:], "--port", str(port)]
        else:
            _fail(block, f"the harness does not know how to start {command!r}")
            return
        try:
            served = Served(argv, cwd, _clean_env(), port)
        except RuntimeError as exc:
            _fail(block, f"{command!r} did not start", str(exc))
            return
        status, _ = _get(f"{served.url}/healthz")
        code = served.stop()
        if code == -signal.SIGTERM and argv[0] == "make" and "shutdown complete" in served.output:
            code = 0  # make itself dies of the signal; the server under it shut down cleanly
        if status != 200 or code != 0:
            _fail(block, f"{command!r}: /healthz answered {status}, exit code {code}", served.output)


def run_yaml(block: Block, environment: Environment) -> None:
    raw = yaml.safe_load(block.text)
    env = {var: "x" * 48 for var in re.findall(r"\$\{(\w+)\}", block.text)}
    try:
        config = parse_config(raw, source=block.where, env=env)
    except Exception as exc:
        _fail(block, f"not a valid gateway config: {exc}")
        return
    # each store's URL and options as its backend reads them (nothing is connected)
    for name in config.stores:
        entry = config.store_entry(name)
        try:
            open_backend(entry.url, entry.backend, **entry.options)
        except PrismError as exc:
            _fail(block, f"$.stores.{name}: {exc}")


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_example_runs(block: Block, environment: Environment) -> None:
    reason = block.options.get("skip")
    if reason is not None:
        assert reason not in ("", "true"), f'{block.where}: skip needs a reason: skip="why"'
        return
    {"python": run_python, "sh": run_sh, "yaml": run_yaml}[block.lang](block, environment)


def test_commands_are_in_runnable_blocks() -> None:
    """A command shown in a bare fence would never run: such a fence must be labelled sh."""
    hidden = [
        b.where
        for b in ALL_BLOCKS
        if b.lang in ("", "text", "console", "bash", "shell")
        and b.text.strip()
        and b.text.split(None, 1)[0] in COMMAND_WORDS
    ]
    assert hidden == []


def test_every_fence_says_what_it_holds() -> None:
    """``py``, ``bash`` or ``yml`` blocks would silently never run: only these labels are used."""
    labels = {"python", "sh", "yaml", "json", "text", ""}
    odd = [(b.where, b.lang) for b in ALL_BLOCKS if b.lang not in labels]
    assert odd == []


def test_every_annotation_is_understood() -> None:
    known = {"id", "gateway", "serve", "skip-line", "pytest", "files", "skip"}
    unknown = [(b.where, k) for b in ALL_BLOCKS for k in b.options if k not in known]
    assert unknown == []
    stray = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in DOCS
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "doc-test:" in line and not _ANNOTATION.match(line.strip())
    ]
    assert stray == []


# -- the complete configuration example, served ---------------------------------------


def _request(
    method: str, url: str, key: str | None = None, body: bytes | None = None, bearer: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_complete_configuration_example_serves_what_it_configures(environment: Environment) -> None:
    import jwt

    served = environment.gateway("complete")
    order = json.dumps({"email": "ada@example.com", "name": "Ada", "total": 12}).encode()
    status, _, body = _request("PUT", f"{served.url}/v1/kv/orders/o-harness", "example-ci-key", order)
    assert status == 201, body
    # ops: admin with pii:read, in the tenant acme, reads its own orders in clear
    status, _, body = _request("GET", f"{served.url}/v1/kv/orders/o-harness", "example-ops-key")
    assert status == 200, body
    assert json.loads(body) == {"email": "ada@example.com", "name": "Ada", "total": 12}
    # a reader signed in with a JWT (HS256 and RS256) sees the PII fields masked
    claims = {
        "sub": "rita",
        "tenant_id": "acme",
        "roles": ["reader"],
        "iss": "https://id.example.com",
        "aud": "prism",
        "exp": int(time.time()) + 300,
    }
    private = (served.cwd / "jwt-private.pem").read_bytes()
    for token in (
        jwt.encode(claims, served.env["PRISM_JWT_SECRET"], algorithm="HS256"),
        jwt.encode(claims, private, algorithm="RS256"),
    ):
        status, _, body = _request("GET", f"{served.url}/v1/kv/orders/o-harness", bearer=token)
        assert status == 200, body
        assert json.loads(body) == {"email": "***", "name": "***", "total": 12}
    # sessions live in Redis with the namespace's default ttl
    status, _, body = _request("PUT", f"{served.url}/v1/kv/sessions/s-harness", "example-ci-key", b"{}")
    assert status == 201, body
    status, headers, body = _request("GET", f"{served.url}/v1/kv/sessions/s-harness", "example-ci-key")
    assert (status, body) == (200, b"{}")
    assert "x-prism-expires-at" in {name.lower() for name in headers}
    # the file audit sink wrote every principal's accesses (it writes in the background)
    principals: set[str] = set()
    deadline = time.monotonic() + 10
    while not {"ci", "ops", "rita"} <= principals and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = (served.cwd / "audit.log").read_text().splitlines()
        principals = {json.loads(line)["principal"] for line in lines}
    assert {"ci", "ops", "rita"} <= principals


def test_annotations_shape_the_run() -> None:
    """The harness's own parser: annotations attach to the next fence only."""
    sample = ROOT / "README.md"
    blocks = blocks_of(sample)
    assert blocks and all(b.path == sample for b in blocks)
    assert _options('gateway=default skip="a reason" serve') == {
        "gateway": "default",
        "skip": "a reason",
        "serve": "true",
    }
    assert shutil.which("bash") is not None


def test_a_failing_block_names_its_file_and_line(environment: Environment) -> None:
    """The harness itself: a block that fails fails its test, naming the markdown file and line."""
    readme = ROOT / "README.md"
    python = Block(readme, 40, "python", "value = 1\nraise ValueError(f'boom {value}')\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_python(python, environment)
    assert str(failed.value).startswith("README.md:40: exited with 1")
    assert 'File "README.md", line 41' in str(failed.value) and "ValueError: boom 1" in str(failed.value)
    shell = Block(readme, 7, "sh", "true\ncurl http://127.0.0.1:8080/v1/kv/default/no-such-key\n")
    shell.options["gateway"] = "default"
    with pytest.raises(pytest.fail.Exception) as failed:
        run_sh(shell, environment)
    message = str(failed.value)
    assert message.startswith("README.md:7: exited with 22") and "KEY_NOT_FOUND" in message
    config = Block(readme, 3, "yaml", "stores: {main: 'memory://'}\nnamespaces: [{name: a, store: mian}]\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_yaml(config, environment)
    message = str(failed.value)
    assert message.startswith("README.md:3: not a valid gateway config") and "mian" in message
