"""One error tree: every failure Prism reports is caught by ``except prism.PrismError``."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from prometheus_client import REGISTRY

import prism
from prism.backends._retry import NetworkSettings, call_with_retry
from prism.gateway import auth as gateway_auth
from prism.gateway.auth import Authenticator, hash_api_key
from prism.gateway.config import parse_config
from prism.gateway.pii import Keyring
from prism.gateway.pipeline import RequestDeadline, problem_for
from prism.model import Principal
from prism.streaming import auth as streaming_auth
from prism.streaming.auth import Identity, StaticTokens, authenticate
from prism.streaming.client import RequestError
from prism.streaming.errors import StreamError

CONFIG = {
    "stores": {"main": {"url": "memory://"}},
    "namespaces": [{"name": "default"}],
    "auth": {"api_keys": [{"name": "svc", "sha256": "0" * 64, "roles": ["reader"]}]},
}


def test_a_bad_config_is_a_prism_error() -> None:
    with pytest.raises(prism.PrismError) as info:
        parse_config({"stores": {}, "namespaces": "nope"}, source="gw.yaml")
    assert isinstance(info.value, prism.ConfigError)
    assert info.value.source == "gw.yaml" and str(info.value).startswith("gw.yaml: ")


def test_refused_credentials_are_one_auth_error_for_gateway_and_streaming() -> None:
    gateway = Authenticator.from_config(parse_config(CONFIG), {})
    with pytest.raises(prism.PrismError) as info:
        gateway.authenticate_headers({"x-api-key": "wrong"})
    assert type(info.value) is prism.AuthError
    assert (info.value.status, info.value.code) == (401, "INVALID_CREDENTIALS")

    standalone = StaticTokens({"t": Identity("alice", "acme")})
    with pytest.raises(prism.AuthError) as refused:
        standalone.authenticate_request([(b"authorization", b"Bearer wrong")])
    assert (refused.value.status, refused.value.code, refused.value.detail) == (
        401,
        "UNAUTHORIZED",
        "invalid token",
    )


async def test_streaming_maps_the_one_auth_error_raised_by_any_authenticator() -> None:
    class Refusing:
        def authenticate_request(self, raw_headers: object, query_token: object = None, **_: object) -> None:
            raise prism.AuthError(403, "NOT_ON_THE_LIST", "go away")

    with pytest.raises(StreamError) as info:
        await authenticate(Refusing(), [])
    assert isinstance(info.value, prism.PrismError)
    assert (info.value.code, str(info.value), info.value.details) == (
        "FORBIDDEN",
        "go away",
        {"reason": "NOT_ON_THE_LIST"},
    )
    assert info.value.http_status == 403


def test_an_undecryptable_pii_field_is_a_prism_error() -> None:
    ring = Keyring({"k1": os.urandom(32)}, "k1")
    envelope = ring.encrypt(b'"secret"', b"aad")
    with pytest.raises(prism.PrismError) as info:
        ring.decrypt(envelope, b"another record")
    assert info.value.code == "PII_DECRYPT_FAILED"


def test_streaming_errors_keep_their_codes_and_are_prism_errors() -> None:
    error = StreamError("RATE_LIMITED", "slow down", retry_after=2.0)
    assert isinstance(error, prism.PrismError)
    assert (error.code, error.http_status, error.retryable, error.retry_after) == (
        "RATE_LIMITED",
        429,
        True,
        2.0,
    )
    request = RequestError("NOT_FOUND", "no request 'x'", request_id="x")
    assert isinstance(request, StreamError) and isinstance(request, prism.PrismError)
    assert (request.code, request.http_status, request.request_id) == ("NOT_FOUND", 404, "x")


def test_the_tree_in_the_docstring_names_every_error_class() -> None:
    assert prism.errors.__doc__ is not None
    for name in prism.errors.__all__:
        assert issubclass(getattr(prism.errors, name), prism.PrismError)
        assert f" {name} " in prism.errors.__doc__ or name == "PrismError", name


async def test_a_backend_call_past_its_deadline_raises_timeout() -> None:
    settings = NetworkSettings(operation_timeout=0.05)
    started = time.monotonic()
    with pytest.raises(prism.Timeout) as info:
        await call_with_retry(
            settings, lambda: asyncio.sleep(5), is_transient=lambda _: True, describe="slow op", engine="test"
        )
    assert time.monotonic() - started < 1
    assert isinstance(info.value, prism.BackendTimeout) and isinstance(info.value, prism.BackendUnavailable)
    assert (str(info.value), info.value.code, info.value.retryable) == (
        "slow op: no answer within 0.05 s",
        "TIMEOUT",
        True,
    )


async def test_each_retry_of_a_transient_failure_is_counted_by_engine() -> None:
    settings = NetworkSettings(max_retries=5, retry_base=0.001, retry_cap=0.001)
    failures = iter([ConnectionError("reset"), ConnectionError("reset")])

    async def flaky() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "answer"

    before = REGISTRY.get_sample_value("prism_backend_retries_total", {"engine": "flaky-engine"}) or 0.0
    answer = await call_with_retry(
        settings,
        flaky,
        is_transient=lambda e: isinstance(e, ConnectionError),
        describe="op",
        engine="flaky-engine",
    )
    assert answer == "answer"
    assert REGISTRY.get_sample_value("prism_backend_retries_total", {"engine": "flaky-engine"}) == before + 2


async def test_a_gateway_request_past_request_timeout_raises_timeout() -> None:
    with pytest.raises(prism.Timeout) as info:
        async with RequestDeadline(0.05):
            await asyncio.sleep(5)
    assert str(info.value) == "the request did not finish within 0.05 s; retry later"
    problem = problem_for(info.value, 0.05, 1)
    assert (problem.status, problem.code, problem.detail) == (
        503,
        "TIMEOUT",
        "the request did not finish within 0.05 s; retry later",
    )
    assert problem.headers == {"Retry-After": "1"}


def test_a_backend_timeout_answers_503_timeout_without_driver_text() -> None:
    problem = problem_for(prism.BackendTimeout("redis get on redis://secret@host: no answer"), 10, 2)
    assert (problem.status, problem.code, problem.detail) == (
        503,
        "TIMEOUT",
        "the backend did not answer in time; retry later",
    )


async def test_gateway_and_streaming_share_one_principal() -> None:
    assert gateway_auth.Principal is streaming_auth.Principal is streaming_auth.Identity is Principal
    keyed = Authenticator.from_config(
        parse_config(
            {
                **CONFIG,
                "auth": {"api_keys": [{"name": "svc", "sha256": hash_api_key("k-1"), "roles": ["reader"]}]},
            }
        ),
        {},
    )
    principal = keyed.authenticate_headers({"x-api-key": "k-1"})
    assert type(principal) is Principal and (principal.owner, principal.tenant) == ("apikey:svc", None)
    # The streaming service keeps the same class, a caller without a tenant under the tenant "".
    seen = await authenticate(keyed, [(b"x-api-key", b"k-1")])
    assert type(seen) is Principal and (seen.subject, seen.tenant, seen.owner) == ("svc", "", "apikey:svc")
    # Owners: credential kind and issuer for the gateway's kinds; the subject for a one-kind authenticator.
    assert Principal("a:b", None, frozenset(), "jwt", "https://idp").owner == "jwt:https%3A//idp:a%3Ab"
    assert Principal("sub", None, frozenset(), "jwt").owner == "jwt::sub"
    assert Principal("anonymous", None, frozenset(), "anonymous").owner == "anonymous"
    assert Principal("alice", "acme").owner == "alice"


def test_backoff_jitter_leaves_the_global_random_state_alone() -> None:
    # Property-based tests (and applications seeding random) must not see Prism's jitter.
    import random

    from prism.streaming.config import parse_config
    from prism.streaming.jobs import backoff

    state = random.getstate()
    NetworkSettings().backoff(3)
    backoff(parse_config(), 2)
    assert random.getstate() == state
