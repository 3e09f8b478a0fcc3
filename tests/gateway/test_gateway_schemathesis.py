"""Property-based API tests from /openapi.json: no 5xx, and every response matches the schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from gateway_helpers import ENV, api_keys_config
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from prism.gateway import create_app, parse_config
from prism.gateway.auth import hash_api_key

FUZZ_KEY = "key-fuzz"

CONFIG = {
    "stores": {"main": "memory://"},
    "auth": {
        "api_keys": [
            *api_keys_config(),
            {
                "name": "fuzz",
                "sha256": hash_api_key(FUZZ_KEY),
                "roles": ["admin", "pii:read"],
                "tenant": "acme",
            },
        ]
    },
    "pii_keys": {"active": "k1", "keys": [{"id": "k1", "env": "PRISM_TEST_PII_K1"}]},
    "namespaces": [
        {"name": "plain"},
        {"name": "orders", "tenant_scoped": True, "max_value_bytes": 4096},
        {"name": "people", "pii": {"fields": ["email"], "encrypt": True}},
    ],
    "audit": {"sink": "none"},
    "server": {"access_log": False},
}

app = create_app(parse_config(CONFIG, source="schemathesis.yaml", env=ENV), env=ENV)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"X-API-Key": FUZZ_KEY})

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
# Other tests of the same worker process may leave threads whose libraries (redis-py's
# backoff, botocore's retries) draw from the global random state while a case is drawn.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(headers={"X-API-Key": FUZZ_KEY}, checks=CHECKS)
