"""The one URL masker every engine, the gateway and the CLI show store URLs through."""

from __future__ import annotations

import pytest

from prism.backends.urls import mask_query, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (
            "rediss://app:s3cret@[::1]:6380/2?ssl_cert_reqs=none",
            "rediss://app:***@[::1]:6380/2?ssl_cert_reqs=none",
        ),
        ("postgresql://prism:pa@ss@db:5432/app", "postgresql://prism:***@db:5432/app"),
        ("postgresql://prism@db/app", "postgresql://prism@db/app"),
        (
            "postgresql://db/app?user=a&password=hunter2&sslmode=require",
            "postgresql://db/app?user=a&password=***&sslmode=require",
        ),
        ("nats://tok3n@localhost:4222", "nats://***@localhost:4222"),
        (
            "nats://user:pw@localhost:4222?operation_timeout=2",
            "nats://user:***@localhost:4222?operation_timeout=2",
        ),
        ("prism+https://gw/?token=abc", "prism+https://gw/?token=***"),
        ("memory://", "memory://"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ("redis://:pw@host:notaport/0", "redis://:***@host:notaport/0"),
        ("not a url", "not a url"),
    ],
)
def test_credentials_are_masked_and_everything_else_kept(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_password_with_an_at_sign_in_the_query_is_not_mistaken_for_credentials() -> None:
    assert mask_url("redis://host/0?client_name=a@b") == "redis://host/0?client_name=a@b"


def test_credential_query_parameters_are_masked_in_free_text_too() -> None:
    line = 'GET /v1/stream?x=1&token=abc.def HTTP/1.1" 101 and ?api_key=k1 and key_prefix=p'
    assert mask_query(line) == 'GET /v1/stream?x=1&token=*** HTTP/1.1" 101 and ?api_key=*** and key_prefix=p'
