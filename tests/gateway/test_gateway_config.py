"""Config files: typed parsing, ${ENV} interpolation, and errors naming the file, the field and the rule."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ENV, build_app, full_config

from prism.gateway.config import ConfigError, StoreConfig, default_config, load_config, parse_config

ISSUE_EXAMPLE = """
stores:
  main: "sqlite:///.prism/data.db"
auth:
  api_keys:
    - {name: ci, sha256: "${CI_KEY_SHA}", roles: [writer], tenant: acme}
  jwt:
    algorithms: [RS256, ES256, HS256]
    secret_env: PRISM_JWT_SECRET
    public_key_file: keys/jwt.pub
    issuer: "https://id.example.com"
    audience: "prism"
namespaces:
  - name: orders
    store: main
    tenant_scoped: true
    max_value_bytes: 1048576
    default_ttl: null
    access: {read: [reader, writer], write: [writer], admin: [admin]}
    pii: {fields: [email, name], encrypt: true}
    audit: true
pii_keys:
  active: k1
  keys: [{id: k1, env: PII_K1}]
streaming:
  queue: {store: main}
handlers: ["myapp.handlers:resize"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prism.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def test_the_issue_example_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ISSUE_EXAMPLE), env={"CI_KEY_SHA": "a" * 64})
    assert config.store_url("main") == "sqlite:///.prism/data.db"
    ns = config.namespaces[0]
    assert ns.tenant_scoped and ns.max_value_bytes == 1048576 and ns.default_ttl is None
    assert ns.access.write == ["writer"] and ns.pii is not None and ns.pii.encrypt
    assert config.auth.api_keys[0].sha256 == "a" * 64 and config.auth.api_keys[0].tenant == "acme"
    assert config.auth.jwt is not None and config.auth.jwt.algorithms == ["RS256", "ES256", "HS256"]
    assert config.streaming == {"queue": {"store": "main"}} and config.handlers == ["myapp.handlers:resize"]
    assert config.resolve_path("keys/jwt.pub") == tmp_path / "keys" / "jwt.pub"


def test_env_interpolation(tmp_path: Path) -> None:
    text = """
    stores:
      main: {url: "redis://app:${REDIS_PASSWORD}@${REDIS_HOST:-localhost}:6379/0", options: {timeout: 2}}
    namespaces: [{name: "n-${SUFFIX:-dev}"}]
    audit: {sink: file, path: "$${literal}.log"}
    """
    config = load_config(write(tmp_path, text), env={"REDIS_PASSWORD": "p@ss"})
    assert config.store_url("main") == "redis://app:p@ss@localhost:6379/0"
    assert config.store_entry("main") == StoreConfig(
        url="redis://app:p@ss@localhost:6379/0", options={"timeout": 2}
    )
    assert config.namespaces[0].name == "n-dev"
    assert config.audit.path == "${literal}.log"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a, stor: main}]",
            "$.namespaces[0]",
            "unknown field `stor`",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a, max_value_bytes: lots}]",
            "$.namespaces[0].max_value_bytes",
            "Expected `int | null`",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a, store: mian}]",
            "$.namespaces[0].store",
            "unknown store 'mian'",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}, {name: a}]",
            "$.namespaces[1].name",
            "declared twice",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: 'a~t~b'}]",
            "$.namespaces[0].name",
            "letters, digits",
        ),
        ("stores: {main: 'memory://'}\nnamespaces: []", "$.namespaces", "at least one namespace"),
        ("stores: {main: 'memory://'}", "$", "missing required field `namespaces`"),
        ("stores: {main: 42}\nnamespaces: [{name: a}]", "$.stores.main", "Expected `str | object`"),
        ("stores: {main: 'nope'}\nnamespaces: [{name: a}]", "$.stores.main", "a store URL looks like"),
        (
            "stores: {main: 'redis://u:hunter2@h/0'}\nnamespaces: [{name: a}]",
            "$.stores.main",
            "literal password",
        ),
        (
            "stores: {main: '${MISSING_VAR}'}\nnamespaces: [{name: a}]",
            "$.stores.main",
            "MISSING_VAR is not set",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\n"
            "auth: {api_keys: [{name: k, sha256: plain}]}",
            "$.auth.api_keys[0].sha256",
            "64 lowercase hex",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\nauth: {jwt: {algorithms: [none]}}",
            "$.auth.jwt.algorithms[0]",
            "'none' is not allowed",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\nauth: {jwt: {algorithms: [HS256]}}",
            "$.auth.jwt.secret_env",
            "secret_env",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\nauth: {jwt: {algorithms: [RS256]}}",
            "$.auth.jwt",
            "public_key_file",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a, pii: {fields: [email], encrypt: true}}]",
            "$.namespaces[0].pii.encrypt",
            "pii_keys",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\naudit: {sink: file}",
            "$.audit.path",
            "needs `path`",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\naudit: {sink: kafka}",
            "$.audit.sink",
            "Invalid enum value 'kafka'",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a, limits: {rate: -1}}]",
            "$.namespaces[0].limits.rate",
            "positive",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\nserver: {request_timeout: 0}",
            "$.server.request_timeout",
            "positive",
        ),
        (
            "stores: {main: 'memory://'}\nnamespaces: [{name: a}]\n"
            "pii_keys: {active: k9, keys: [{id: k1, env: X}]}",
            "$.pii_keys.active",
            "not one of the listed keys",
        ),
    ],
)
def test_errors_name_the_field_and_the_rule(tmp_path: Path, text: str, path: str, message: str) -> None:
    error = error_of(tmp_path, text)
    assert error.path == path
    assert message in error.message


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    error = error_of(tmp_path, "stores: {main: 'memory://'\nnamespaces: [")
    assert error.path.startswith("line ")
    assert "invalid YAML" in error.message


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.yaml")
    assert error_of(tmp_path, "- just\n- a list\n").path == "$"


def test_literal_password_error_never_echoes_it(tmp_path: Path) -> None:
    error = error_of(tmp_path, "stores: {main: 'postgresql://u:hunter2@db/app'}\nnamespaces: [{name: a}]")
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda c: c["auth"]["jwt"].update(secret_env="UNSET_SECRET_VAR"), "$.auth.jwt.secret_env"),
        (
            lambda c: c["auth"]["jwt"].update(public_key_file="/nonexistent/jwt.pub"),
            "$.auth.jwt.public_key_file",
        ),
        (lambda c: c["stores"].update(main="nosuchscheme://x"), "$.stores.main"),
        (lambda c: c["namespaces"][0].update(max_value_bytes=10**12), "$.namespaces[0]"),
    ],
)
def test_unusable_secrets_and_stores_fail_at_build(tmp_path: Path, change: Any, path: str) -> None:
    config = full_config(tmp_path)
    change(config)
    with pytest.raises(ConfigError) as info:
        build_app(config)
    assert info.value.path == path


def test_short_hmac_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        build_app(full_config(tmp_path), env={**ENV, "PRISM_TEST_JWT_SECRET": "short"})


def test_default_config_serves_sqlite_default_namespace() -> None:
    config = default_config()
    assert config.store_url("main") == "sqlite:///.prism/data.db"
    assert [ns.name for ns in config.namespaces] == ["default"]
    assert not config.auth.enabled


def test_parse_config_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError):
        parse_config(["not", "a", "mapping"])


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda c: c["namespaces"].append({"name": "prism-idempotency"}), "$.namespaces[4].name"),
        (
            lambda c: c.update(audit={"sink": "namespace", "namespace": "prism-idempotency"}),
            "$.audit.namespace",
        ),
        (lambda c: c["auth"]["api_keys"][0].update(tenant="acme\n"), "$.auth.api_keys[0].tenant"),
        (lambda c: c["namespaces"].append({"name": "orders2\n"}), "$.namespaces[4].name"),
        (lambda c: c["auth"]["api_keys"][0].update(roles=["admin\n"]), "$.auth.api_keys[0].roles[0]"),
    ],
)
def test_reserved_names_and_trailing_newlines_are_refused(tmp_path: Path, change: Any, path: str) -> None:
    config = full_config(tmp_path)
    change(config)
    with pytest.raises(ConfigError) as info:
        parse_config(config, source="test.yaml", env=ENV)
    assert info.value.path == path
