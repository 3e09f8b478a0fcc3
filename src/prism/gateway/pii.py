"""Personal data in JSON values: encrypted at rest, masked for readers without ``pii:read``.

A namespace lists the fields of its JSON object values that hold personal data
(``email``, ``address.street``). With ``encrypt: true`` each such field is replaced,
before the value reaches the store, by an envelope::

    {"prism:enc": "v1", "kid": "k2", "nonce": "...", "ct": "..."}

holding the AES-256-GCM ciphertext of the field's JSON encoding. The key id travels
with the value, so keys rotate by adding a key and making it ``active``: new writes
use it, and every listed key still decrypts older values. The associated data binds
a ciphertext to its namespace, tenant, key and field, so it cannot be moved to
another entry and decrypted there.

On read, callers holding ``pii:read`` get the fields decrypted; everybody else gets
``"***"`` in their place. The same masking is applied to anything logged or audited.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prism.gateway.config import ConfigError, GatewayConfig, PiiConfig

__all__ = ["MASK", "FieldProtector", "Keyring", "PiiError", "aad_prefix"]

MASK = "***"
ENVELOPE_MARK = "prism:enc"
ENVELOPE_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class PiiError(Exception):
    """A stored PII field cannot be decrypted (unknown key id, or tampered ciphertext)."""


class Keyring:
    """AES-256-GCM keys by id; ``active`` encrypts, every key decrypts."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"the active key {active!r} is not in the keyring")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active
        self.ids = frozenset(keys)

    @classmethod
    def from_config(cls, config: GatewayConfig, env: Mapping[str, str] | None = None) -> Keyring | None:
        """Load the keys the config lists (env vars or key files); ConfigError on a missing or bad key."""
        keys_config = config.pii_keys
        if keys_config is None:
            return None
        env = os.environ if env is None else env
        keys: dict[str, bytes] = {}
        for i, key in enumerate(keys_config.keys):
            at = f"$.pii_keys.keys[{i}]"
            if key.env is not None:
                text = env.get(key.env)
                if not text:
                    raise ConfigError(
                        config.source, f"{at}.env", f"environment variable {key.env} is not set"
                    )
                where = f"environment variable {key.env}"
                at += ".env"
            else:
                assert key.file is not None
                path = config.resolve_path(key.file)
                try:
                    text = path.read_text(encoding="ascii")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not base64 text"
                    raise ConfigError(config.source, f"{at}.file", f"cannot read {path}: {reason}") from None
                where = f"key file {path}"
                at += ".file"
            keys[key.id] = _decode_key(text, where, config.source, at)
        return cls(keys, keys_config.active)

    def encrypt(self, plaintext: bytes, aad: bytes) -> dict[str, str]:
        """The envelope of ``plaintext`` encrypted with the active key."""
        nonce = os.urandom(NONCE_BYTES)
        ct = self._ciphers[self.active].encrypt(nonce, plaintext, aad)
        return {
            ENVELOPE_MARK: ENVELOPE_VERSION,
            "kid": self.active,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ct": base64.b64encode(ct).decode("ascii"),
        }

    def decrypt(self, envelope: Mapping[str, Any], aad: bytes) -> bytes:
        """The plaintext of an envelope; PiiError when its key is unknown or it was altered or moved."""
        kid = envelope.get("kid")
        cipher = self._ciphers.get(kid) if isinstance(kid, str) else None
        if cipher is None:
            raise PiiError(f"no PII key with id {kid!r} is configured")
        try:
            nonce = base64.b64decode(envelope["nonce"], validate=True)
            ct = base64.b64decode(envelope["ct"], validate=True)
            return cipher.decrypt(nonce, ct, aad)
        except (KeyError, TypeError, binascii.Error, ValueError, InvalidTag):
            raise PiiError(
                f"a field encrypted with key {kid!r} does not decrypt (altered or moved)"
            ) from None


def _decode_key(text: str, where: str, source: str, at: str) -> bytes:
    try:
        key = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(source, at, f"{where} must hold a base64-encoded {KEY_BYTES}-byte key")
    return key


def aad_prefix(namespace: str, tenant: str | None, record: str, item_key: str = "") -> bytes:
    """What a ciphertext is bound to, before the field path is appended."""
    return "\x00".join(("prism-pii-v1", namespace, tenant or "", record, item_key, "")).encode("utf-8")


def _is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and value.get(ENVELOPE_MARK) == ENVELOPE_VERSION


class FieldProtector:
    """Applies one namespace's PII rules to the bytes of its values."""

    def __init__(self, config: PiiConfig, keyring: Keyring | None) -> None:
        if config.encrypt and keyring is None:
            raise ValueError("PII encryption needs a keyring")
        self.fields = [tuple(f.split(".")) for f in config.fields]
        self.encrypt = config.encrypt
        self.keyring = keyring

    def _fields_in(self, doc: dict[str, Any]) -> list[tuple[dict[str, Any], str, str]]:
        """(parent object, last name, dotted path) for every configured field present in ``doc``."""
        found = []
        for path in self.fields:
            node: Any = doc
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and path[-1] in node:
                found.append((node, path[-1], ".".join(path)))
        return found

    @staticmethod
    def _load(value: bytes) -> dict[str, Any] | None:
        stripped = value.lstrip()
        if not stripped.startswith(b"{"):
            return None
        try:
            doc = _decode(value)
        except msgspec.DecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    def protect(self, value: bytes, aad: bytes) -> bytes:
        """The bytes to store: fields encrypted when the namespace encrypts, else ``value`` unchanged."""
        if not self.encrypt:
            return value
        doc = self._load(value)
        if doc is None:
            return value
        found = self._fields_in(doc)
        if not found:
            return value
        assert self.keyring is not None
        for parent, name, path in found:
            parent[name] = self.keyring.encrypt(_encode(parent[name]), aad + path.encode("utf-8"))
        return _encode(doc)

    def reveal(self, stored: bytes, aad: bytes, clear: bool) -> bytes:
        """The bytes a reader sees: fields decrypted when ``clear``, masked otherwise."""
        doc = self._load(stored)
        if doc is None:
            return stored
        found = self._fields_in(doc)
        if not found:
            return stored
        changed = False
        for parent, name, path in found:
            current = parent[name]
            if not clear:
                parent[name] = MASK
                changed = True
            elif _is_envelope(current) and self.keyring is not None:
                parent[name] = _decode(self.keyring.decrypt(current, aad + path.encode("utf-8")))
                changed = True
            elif _is_envelope(current):
                raise PiiError("the value holds encrypted fields but no PII keys are configured")
        return _encode(doc) if changed else stored

    def masked(self, value: bytes) -> Any:
        """The JSON value with every PII field masked, for logs and audit; None when not a JSON object."""
        doc = self._load(value)
        if doc is None:
            return None
        for parent, name, _ in self._fields_in(doc):
            parent[name] = MASK
        return doc
