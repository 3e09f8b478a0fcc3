"""gRPC with ``server.tls``: the gateway serves TLS, and ``prism://?tls=true&ca_file=`` trusts it."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_helpers import api_key, base_config, serving

import prism

NOW = datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pki(directory: Path) -> tuple[Path, Path, Path]:
    """(CA file, server certificate, server key) for 127.0.0.1."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("grpc-test-ca"))
        .issuer_name(_name("grpc-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = directory / "ca.pem", directory / "server.crt", directory / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


async def test_prism_backend_over_tls(tmp_path: Path) -> None:
    ca, cert, key = _pki(tmp_path)
    config = base_config(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    async with serving(config) as s:
        url = f"prism://127.0.0.1:{s.port}?tls=true&ca_file={ca}"
        async with prism.connect(url, token=api_key("writer")) as store:
            ns = store.namespace("plain")
            etag = await ns.put("k", b"over tls")
            item = await ns.get("k")
            assert item is not None and (item.value, item.etag) == (b"over tls", etag)
        plain = f"prism://127.0.0.1:{s.port}?operation_timeout=1&connect_timeout=0.5&max_retries=1"
        with pytest.raises(prism.BackendUnavailable):
            await prism.connect(plain, token=api_key("writer"))
