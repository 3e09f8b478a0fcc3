"""The one URL masker: what every message, log line and repr shows of a store URL.

Every engine, the gateway and the CLI show store URLs through :func:`mask_url`, so a
password looks the same wherever it is hidden:

* the password of ``user:password@`` becomes ``***`` (the user name stays);
* a lone user part on NATS (``nats://token@host``) is a token, and becomes ``***``;
* the values of credential query parameters (``password``, ``token``, ...) become ``***``;
* everything else (scheme, host, port, path, other options) is kept, so the message
  still says which server was meant.

It never raises: a malformed URL (a bad port, no scheme) is masked as far as it can be
parsed and returned, so an error about that very URL can still show it.
"""

from __future__ import annotations

import re

__all__ = ["SECRET_QUERY_NAMES", "mask_query", "mask_url"]

#: Query parameters whose values are credentials (a store's ``password=``, a WebSocket's ``token=``).
SECRET_QUERY_NAMES = (
    "password",
    "passwd",
    "token",
    "access_token",
    "auth_token",
    "secret",
    "api_key",
    "apikey",
    "key",
    "ssl_password",
)
_SECRET_QUERY = re.compile(r"([?&](?:" + "|".join(SECRET_QUERY_NAMES) + r")=)[^&#\s\"']*", re.IGNORECASE)


def mask_query(text: str) -> str:
    """``text`` with the values of credential query parameters (anywhere in it) replaced by ``***``."""
    if "=" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1***", text)


#: Schemes whose lone user part (no ``:password``) is itself a credential.
_TOKEN_SCHEMES = frozenset({"nats", "tls"})


def mask_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***`` (for messages, logs and reprs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            authority = f"{user}:***@{host}"
        elif scheme.lower() in _TOKEN_SCHEMES:
            authority = f"***@{host}"
    return f"{scheme}://{authority}{mask_query(tail)}"
