"""``prism config check [--config FILE]``: every problem of a gateway config, without starting anything.

Reports each error on its own line (``FILE: $.path: rule``) and exits 2, or prints a
short summary and exits 0. Beyond the file's own rules it checks what ``prism serve``
would read before opening anything: the environment variables and key files of
secrets, the store URLs and their options, and the directories of SQLite databases
and the audit file. No store is opened, no file written, no port bound.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser"]

#: Exit code of a config with errors (the same as ``prism serve`` refusing one).
EXIT_INVALID = 2


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="check a gateway config", description="Work with gateway configs.")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="report every error of a config at once, without starting anything",
        description=(
            "Report every error of a gateway config (one line each, naming the field), exit 2; "
            "or print a summary and exit 0. Nothing is opened or started."
        ),
    )
    check.add_argument("--config", "-c", help="the YAML config (default: what prism serve runs without one)")
    check.add_argument(
        "--runtime",
        action="store_true",
        help="also read the runtime namespaces from the control store and report the names the file "
        "declares too (the file's namespace wins and hides the runtime one)",
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from prism.gateway.config import check_config, default_config

    if args.config is None:
        zero = default_config()
        print(
            "no --config: prism serve runs the zero-config default, "
            f"the embedded store {zero.store_url('main')} with the namespace 'default'"
        )
        return 0
    config, errors = check_config(args.config)
    if config is not None:
        errors += _unopened_errors(config, {error.path for error in errors})
    if config is not None and not errors and args.runtime:
        errors += _runtime_clashes(config)
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        count = len(errors)
        print(f"{args.config}: {count} error{'' if count == 1 else 's'}", file=sys.stderr)
        return EXIT_INVALID
    assert config is not None
    print(f"{args.config}: valid")
    for line in _summary(config):
        print(f"  {line}")
    return 0


def _unopened_errors(config: Any, reported: set[str]) -> list[Any]:
    """What prism serve would refuse before opening anything: secrets, key files, store options, paths.

    Sections with an error already ``reported`` are left out (one mistake, one line).
    """
    from prism.backends import open_backend
    from prism.backends.urls import mask_url
    from prism.errors import PrismError
    from prism.gateway.auth import Authenticator
    from prism.gateway.config import ConfigError
    from prism.gateway.pii import Keyring

    def clean(at: str) -> bool:
        return not any(path == at or path.startswith((at + ".", at + "[")) for path in reported)

    errors: list[ConfigError] = []
    for section, build in (("$.auth", Authenticator.from_config), ("$.pii_keys", Keyring.from_config)):
        if clean(section):
            try:
                build(config)
            except ConfigError as exc:
                errors.append(exc)
    for name in config.stores:
        entry = config.store_entry(name)
        at = f"$.stores.{name}"
        if not clean(at):
            continue
        try:
            open_backend(entry.url, entry.backend, **entry.options)
        except PrismError as exc:
            errors.append(ConfigError(config.source, at, str(exc).replace(entry.url, mask_url(entry.url))))
            continue
        missing = _missing_sqlite_directory(entry.url)
        if missing is not None:
            errors.append(ConfigError(config.source, at, f"the directory {missing} does not exist"))
    audit = config.audit
    if audit.sink == "file" and audit.path and clean("$.audit.path"):
        parent = config.resolve_path(audit.path).parent
        if not parent.is_dir():
            errors.append(
                ConfigError(config.source, "$.audit.path", f"the directory {parent} does not exist")
            )
    return errors


def _runtime_clashes(config: Any) -> list[Any]:
    """Runtime namespaces (in the control store) whose names the file declares too: one error each."""
    import asyncio

    import prism
    from prism.backends.urls import mask_url
    from prism.control.catalog import NamespaceCatalog
    from prism.errors import PrismError
    from prism.gateway.config import ConfigError

    name = config.control.store or next(iter(config.stores))
    entry = config.store_entry(name)

    async def read() -> Any:
        store = prism.connect(entry.url, backend=entry.backend, **entry.options)
        await store.open()
        try:
            return (await NamespaceCatalog(store, poll_interval=1.0, on_change=lambda _: None).read())[0]
        finally:
            await store.close()

    try:
        state = asyncio.run(read())
    except PrismError as exc:
        message = str(exc).replace(entry.url, mask_url(entry.url))
        return [ConfigError(config.source, "$.control.store", f"cannot read runtime namespaces: {message}")]
    errors = []
    for i, ns in enumerate(config.namespaces):
        if ns.name in state.namespaces:
            errors.append(
                ConfigError(
                    config.source,
                    f"$.namespaces[{i}].name",
                    f"{ns.name!r} is also a runtime namespace in store {name!r}; "
                    "this file's namespace wins and the runtime one is not served",
                )
            )
    return errors


def _missing_sqlite_directory(url: str) -> str | None:
    if not url.lower().startswith("sqlite:///"):
        return None
    path = url.split("://", 1)[1].split("?", 1)[0][1:]
    if path == ":memory:":
        return None
    parent = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(parent) else parent


def _summary(config: Any) -> list[str]:
    from prism.backends.urls import mask_url

    stores = ", ".join(
        f"{name} ({mask_url(config.store_url(name)).split('://', 1)[0]})" for name in config.stores
    )
    namespaces = ", ".join(ns.name for ns in config.namespaces)
    auth = config.auth
    kinds = [f"{len(auth.api_keys)} API key{'' if len(auth.api_keys) == 1 else 's'}"] if auth.api_keys else []
    if auth.jwt is not None:
        kinds.append("JWT")
    if getattr(auth, "mtls", None):
        kinds.append("mTLS")
    return [
        f"stores: {stores}",
        f"namespaces: {namespaces}",
        f"auth: {', '.join(kinds) if kinds else 'none (the gateway is open, loopback only)'}",
        f"audit: {config.audit.sink}",
    ]
