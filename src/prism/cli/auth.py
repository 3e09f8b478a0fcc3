"""``prism auth hash-key`` and ``prism auth dev-token``: credentials for a gateway's config.

``hash-key`` turns an API key (read from stdin, or generated) into the ``sha256``
the config's ``auth.api_keys`` lists; the key itself never goes into the config.
``dev-token`` mints an HS256 JSON Web Token signed with the secret the gateway's
``auth.jwt.secret_env`` names, for development and tests: production tokens come
from an identity provider.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time
from typing import Any

from prism.errors import InvalidArgument

__all__ = ["GENERATED_KEY_BYTES", "add_parser"]

#: Random bytes in a generated API key (encoded as URL-safe base64).
GENERATED_KEY_BYTES = 32
#: Lifetime of a development token when --ttl is not given (seconds).
DEFAULT_TOKEN_TTL = 3600.0


def add_parser(sub: Any) -> None:
    auth = sub.add_parser(
        "auth",
        help="hash API keys and mint development tokens",
        description="Credentials for the gateway's `auth` config section.",
    )
    tools = auth.add_subparsers(dest="tool", required=True, metavar="TOOL")

    hash_key = tools.add_parser(
        "hash-key",
        help="print the sha256 of an API key, as auth.api_keys lists it",
        description=(
            "Read an API key from stdin (or generate one with --generate) and print the `sha256` "
            "that auth.api_keys lists. With --name, print a whole auth.api_keys entry. A generated "
            "key is printed once; only its hash belongs in the config."
        ),
    )
    hash_key.add_argument(
        "--generate", action="store_true", help="make a new random key instead of reading one"
    )
    hash_key.add_argument("--name", help="print a complete auth.api_keys entry with this name")
    hash_key.add_argument(
        "--roles", nargs="+", default=[], metavar="ROLE", help="roles of the entry (with --name)"
    )
    hash_key.add_argument("--tenant", help="tenant of the entry (with --name)")
    hash_key.set_defaults(func=_hash_key)

    token = tools.add_parser(
        "dev-token",
        help="mint an HS256 development JWT the gateway's auth.jwt accepts",
        description=(
            "Mint an HS256 JSON Web Token signed with the secret in the environment variable "
            "--secret-env (the one auth.jwt.secret_env names) and print it. For development and "
            "tests; production tokens come from an identity provider."
        ),
    )
    token.add_argument(
        "--secret-env", required=True, metavar="VAR", help="environment variable holding the secret"
    )
    token.add_argument("--sub", required=True, metavar="NAME", help="the subject (the caller's name)")
    token.add_argument("--roles", nargs="+", default=[], metavar="ROLE", help="roles claim")
    token.add_argument("--tenant", help="tenant claim")
    token.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TOKEN_TTL,
        help=f"seconds the token is valid (default {DEFAULT_TOKEN_TTL:g})",
    )
    token.add_argument("--issuer", help="iss claim (when auth.jwt.issuer is set)")
    token.add_argument("--audience", help="aud claim (when auth.jwt.audience is set)")
    token.add_argument("--subject-claim", default="sub", help="claim holding the subject (default sub)")
    token.add_argument(
        "--tenant-claim", default="tenant_id", help="claim holding the tenant (default tenant_id)"
    )
    token.add_argument("--roles-claim", default="roles", help="claim holding the roles (default roles)")
    token.set_defaults(func=_dev_token)


def _read_key() -> str:
    if sys.stdin.isatty():
        key = getpass.getpass("API key: ")
    else:
        key = sys.stdin.read()
        key = key[:-1] if key.endswith("\n") else key
        key = key[:-1] if key.endswith("\r") else key
    if not key:
        raise InvalidArgument("no API key on stdin (pipe one in, or use --generate)")
    if key != key.strip():
        raise InvalidArgument("the API key starts or ends with whitespace; clients would send it without")
    return key


def _check_names(args: argparse.Namespace) -> None:
    from prism.gateway.config import TOKEN_NAME

    for role in args.roles:
        if not TOKEN_NAME.match(role):
            raise InvalidArgument(f"--roles: invalid role name {role!r} (letters, digits and _ . : @ -)")
    if args.tenant is not None and not TOKEN_NAME.match(args.tenant):
        raise InvalidArgument(f"--tenant: invalid tenant id {args.tenant!r} (letters, digits and _ . : @ -)")


def _hash_key(args: argparse.Namespace) -> int:
    from prism.gateway.auth import hash_api_key

    if args.name is None and (args.roles or args.tenant is not None):
        raise InvalidArgument("--roles and --tenant describe an entry: give its --name too")
    _check_names(args)
    key = secrets.token_urlsafe(GENERATED_KEY_BYTES) if args.generate else _read_key()
    digest = hash_api_key(key)
    if args.name is None:
        if args.generate:
            print(f"key: {key}")
        print(f"sha256: {digest}")
        return 0
    if args.generate:
        print(f"prism: the new API key of {args.name!r} (shown only now): {key}", file=sys.stderr)
    print(f"- name: {_yaml_text(args.name)}")
    print(f"  sha256: {digest}")
    if args.roles:
        print(f"  roles: [{', '.join(args.roles)}]")
    if args.tenant is not None:
        print(f"  tenant: {_yaml_text(args.tenant)}")
    return 0


def _yaml_text(text: str) -> str:
    import json

    # A JSON string is a YAML string: safe whatever the name holds.
    return json.dumps(text)


def _dev_token(args: argparse.Namespace) -> int:
    import jwt

    from prism.gateway.auth import MIN_HMAC_SECRET_BYTES

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise InvalidArgument(f"environment variable {args.secret_env} is not set")
    if len(secret.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
        raise InvalidArgument(
            f"the secret in {args.secret_env} must be at least {MIN_HMAC_SECRET_BYTES} bytes "
            "(the gateway refuses a shorter one)"
        )
    if not args.sub:
        raise InvalidArgument("--sub must not be empty")
    if not (args.ttl > 0 and args.ttl < float("inf")):
        raise InvalidArgument("--ttl must be a positive number of seconds")
    _check_names(args)
    now = int(time.time())
    claims: dict[str, Any] = {args.subject_claim: args.sub, "iat": now, "exp": now + max(1, round(args.ttl))}
    if args.roles:
        claims[args.roles_claim] = list(args.roles)
    if args.tenant is not None:
        claims[args.tenant_claim] = args.tenant
    if args.issuer is not None:
        claims["iss"] = args.issuer
    if args.audience is not None:
        claims["aud"] = args.audience
    print(jwt.encode(claims, secret.encode("utf-8"), algorithm="HS256"))
    return 0
