"""HTTPS, WSS and mutual TLS on a real ``prism serve``, with certificates made by the tests."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from serve_helpers import PRISM, serving
from websockets.sync.client import connect as ws_connect

from prism.gateway.auth import hash_api_key
from prism.gateway.config import ConfigError, parse_config
from prism.testing.servers._base import free_port

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


class Authority:
    """A certificate authority that writes the certificates it signs as PEM files."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.file = directory / f"{name}.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        file_name: str,
        common_name: str,
        sans: list[x509.GeneralName] | None = None,
        *,
        not_after: datetime.datetime | None = None,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 2 * DAY)
            .not_valid_after(not_after or NOW + 30 * DAY)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file = self.directory / f"{file_name}.crt"
        key_file = self.directory / f"{file_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


class Pki:
    """The CA, the server's certificate and a set of client certificates."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory, "prism-test-ca")
        self.server = self.ca.issue(
            "server",
            "localhost",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        self.billing = self.ca.issue("billing", "billing.internal")
        self.reader = self.ca.issue(
            "reader", "some-pod-1234", [x509.UniformResourceIdentifier("spiffe://prism.test/reader")]
        )
        self.ci = self.ca.issue("ci", "ci")
        self.unmapped = self.ca.issue("unmapped", "nobody.internal")
        self.expired = self.ca.issue("expired", "billing.internal", not_after=NOW - DAY)
        self.foreign = Authority(directory, "other-ca").issue("foreign", "billing.internal")

    def client(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.file))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


KEYS = {"acme": "key-acme-reader", "globex": "key-globex-reader", "ci": "key-ci"}


def tls_config(pki: Pki, *, require: bool = False, client_ca: bool = True) -> dict[str, Any]:
    tls: dict[str, Any] = {"cert_file": str(pki.server[0]), "key_file": str(pki.server[1])}
    if client_ca:
        tls["client_ca_file"] = str(pki.ca.file)
        tls["require_client_cert"] = require
    config: dict[str, Any] = {
        "stores": {"main": "memory://"},
        "namespaces": [{"name": "orders", "tenant_scoped": True}],
        "server": {"tls": tls},
        "auth": {
            "api_keys": [
                {"name": "acme", "sha256": hash_api_key(KEYS["acme"]), "roles": ["reader"], "tenant": "acme"},
                {
                    "name": "globex",
                    "sha256": hash_api_key(KEYS["globex"]),
                    "roles": ["reader"],
                    "tenant": "globex",
                },
                {"name": "ci", "sha256": hash_api_key(KEYS["ci"]), "roles": ["writer"], "tenant": "acme"},
            ],
        },
    }
    if client_ca:
        config["auth"]["mtls"] = [
            {"name": "billing", "subject_cn": "billing.internal", "roles": ["writer"], "tenant": "acme"},
            {
                "name": "reader",
                "san_uri": "spiffe://prism.test/reader",
                "roles": ["reader"],
                "tenant": "acme",
            },
            {"name": "ci", "subject_cn": "ci", "roles": ["writer"], "tenant": "acme"},
        ]
    return config


def client(served: Any, pki: Pki, cert: tuple[Path, Path] | None = None) -> httpx.Client:
    return httpx.Client(base_url=served.url, verify=pki.client(cert), timeout=10)


def test_https_serves_and_the_banner_says_so(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki, client_ca=False), scheme="https") as served:
        with client(served, pki) as c:
            assert c.get("/healthz").status_code == 200
            r = c.get("/v1/kv/orders/o1", headers={"X-API-Key": KEYS["acme"]})
            assert r.status_code == 404 and r.json()["code"] == "KEY_NOT_FOUND"
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=5)
        assert f"listening on https://127.0.0.1:{served.port}" in served.stdout()


def test_a_mapped_client_certificate_gets_its_roles_and_tenant(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served:
        with client(served, pki, pki.billing) as billing:
            assert billing.put("/v1/kv/orders/o1", content=b"paid").status_code == 201
        with client(served, pki) as keys:
            assert keys.get("/v1/kv/orders/o1", headers={"X-API-Key": KEYS["acme"]}).content == b"paid"
            # The certificate's tenant is acme: globex does not see the record.
            assert keys.get("/v1/kv/orders/o1", headers={"X-API-Key": KEYS["globex"]}).status_code == 404
        # Mapped by a SAN URI, with the reader role only.
        with client(served, pki, pki.reader) as reader:
            assert reader.get("/v1/kv/orders/o1").content == b"paid"
            denied = reader.put("/v1/kv/orders/o1", content=b"refund")
            assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"


@pytest.mark.parametrize("which", ["expired", "foreign"])
def test_expired_and_foreign_certificates_are_refused(tmp_path: Path, pki: Pki, which: str) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served:
        with pytest.raises(httpx.TransportError), client(served, pki, getattr(pki, which)) as c:
            c.put("/v1/kv/orders/o1", content=b"x")
        # The server is still serving others.
        with client(served, pki, pki.billing) as billing:
            assert billing.get("/v1/kv/orders/o1").status_code == 404


def test_an_unmapped_certificate_is_no_credential(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served, client(served, pki, pki.unmapped) as c:
        r = c.get("/v1/kv/orders/o1")
        assert r.status_code == 401 and r.json()["code"] == "UNKNOWN_CLIENT_CERTIFICATE"
        assert "subject_cn=nobody.internal" in r.json()["detail"]
        # With an API key, the key is the credential.
        assert c.get("/v1/kv/orders/o1", headers={"X-API-Key": KEYS["acme"]}).status_code == 404


def test_a_mapped_certificate_and_an_api_key_are_ambiguous(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served, client(served, pki, pki.billing) as c:
        r = c.get("/v1/kv/orders/o1", headers={"X-API-Key": KEYS["acme"]})
        assert r.status_code == 401 and r.json()["code"] == "AMBIGUOUS_CREDENTIALS"


def test_require_client_cert_refuses_clients_without_one(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki, require=True), scheme="https") as served:
        with pytest.raises(httpx.TransportError), client(served, pki) as c:
            c.get("/healthz")
        with client(served, pki, pki.billing) as c:
            assert c.get("/healthz").status_code == 200


def test_an_mtls_principal_never_owns_what_an_api_key_of_the_same_name_owns(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served:
        with client(served, pki, pki.ci) as cert:
            r = cert.post("/v1/requests", json={"action": "echo", "payload": {"n": 1}})
            assert r.status_code in (200, 201, 202), r.text
            request_id = r.json()["request_id"]
            assert [x["request_id"] for x in cert.get("/v1/requests").json()["requests"]] == [request_id]
        with client(served, pki) as key:
            mine = key.get("/v1/requests", headers={"X-API-Key": KEYS["ci"]})
            assert mine.status_code == 200 and mine.json()["requests"] == []
            other = key.get(f"/v1/requests/{request_id}", headers={"X-API-Key": KEYS["ci"]})
            assert other.status_code == 404


def test_websocket_over_wss_with_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    with serving(tmp_path, tls_config(pki), scheme="https") as served:
        url = f"wss://127.0.0.1:{served.port}/v1/stream"
        with ws_connect(url, ssl=pki.client(pki.billing)) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "pong"
            ws.send(json.dumps({"action": "echo", "payload": {"n": 2}, "id": "c1"}))
            replies = [json.loads(ws.recv(timeout=10)) for _ in range(1)]
            assert replies[0].get("type") != "error", replies
        # An unmapped certificate and no token: refused on the handshake's first frame.
        with ws_connect(url, ssl=pki.client(pki.unmapped)) as ws:
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["error"]["code"] == "UNAUTHORIZED"


# -- configuration ----------------------------------------------------------------------------


def test_tls_and_mtls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    def error(config: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config(config, source="p.yaml")
        return str(info.value)

    base = tls_config(pki)
    no_tls = {**base, "server": {}}
    assert error(no_tls).startswith("p.yaml: $.auth.mtls: client certificate identities need `server.tls`")
    two = json.loads(json.dumps(base))
    two["auth"]["mtls"][0]["san_dns"] = "billing.internal"
    assert error(two) == "p.yaml: $.auth.mtls[0]: give exactly one of subject_cn, san_dns, san_uri, san_email"
    twice = json.loads(json.dumps(base))
    twice["auth"]["mtls"][2]["subject_cn"] = "billing.internal"
    assert "$.auth.mtls[2].subject_cn: 'billing.internal' is mapped twice" in error(twice)
    no_ca = tls_config(pki, client_ca=False)
    no_ca["server"]["tls"]["require_client_cert"] = True
    assert "$.server.tls.require_client_cert: needs `client_ca_file`" in error(no_ca)
    for field, value in (
        ("header_timeout", 0),
        ("body_timeout", -1),
        ("keep_alive_timeout", 0),
        ("max_connections", 0),
    ):
        assert f"$.server.{field}:" in error({**no_ca, "server": {field: value}})


def serve_fails(tmp_path: Path, config: dict[str, Any]) -> str:
    (tmp_path / "p.yaml").write_text(json.dumps(config))
    proc = subprocess.run(
        [PRISM, "serve", "--config", "p.yaml", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_unusable_certificate_files_are_one_line_and_exit_2(tmp_path: Path, pki: Pki) -> None:
    mismatched = tls_config(pki, client_ca=False)
    mismatched["server"]["tls"]["key_file"] = str(pki.billing[1])
    assert serve_fails(tmp_path, mismatched).startswith(
        "prism: error: p.yaml: $.server.tls: cannot load the certificate"
    )
    missing = tls_config(pki)
    missing["server"]["tls"]["client_ca_file"] = "nope.pem"
    assert serve_fails(tmp_path, missing) == (
        f"prism: error: p.yaml: $.server.tls.client_ca_file: no such file: {tmp_path / 'nope.pem'}\n"
    )
