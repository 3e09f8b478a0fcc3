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

from prism.errors import InvalidArgument
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
    """Applies one namespace's PII rules to the bytes of its values.

    A field path goes through arrays: ``contacts.email`` names the ``email`` of every
    object in a ``contacts`` array, and a value that is a JSON array has its rules
    applied to each element.
    """

    def __init__(self, config: PiiConfig, keyring: Keyring | None) -> None:
        if config.encrypt and keyring is None:
            raise ValueError("PII encryption needs a keyring")
        # Shorter paths first: a field inside another listed field is then part of the
        # outer field's ciphertext, never an envelope nested inside it.
        self.fields = sorted((tuple(f.split(".")) for f in config.fields), key=len)
        self.encrypt = config.encrypt
        self.keyring = keyring

    def _fields_in(self, doc: Any) -> list[tuple[dict[str, Any], str, str]]:
        """(parent object, last name, concrete path) for every configured field present in ``doc``.

        The concrete path is the dotted field path with ``[i]`` for array elements
        (``contacts[0].email``); without arrays it is the configured path itself.
        """
        found: list[tuple[dict[str, Any], str, str]] = []
        for path in self.fields:
            last = len(path) - 1
            # An explicit stack: deeply nested arrays never exhaust the interpreter's stack.
            stack: list[tuple[Any, int, str]] = [(doc, 0, "")]
            while stack:
                node, depth, at = stack.pop()
                if isinstance(node, list):
                    stack.extend((element, depth, f"{at}[{i}]") for i, element in enumerate(node))
                    continue
                name = path[depth]
                if not isinstance(node, dict) or name not in node:
                    continue
                here = f"{at}.{name}" if at else name
                if depth == last:
                    found.append((node, name, here))
                else:
                    stack.append((node[name], depth + 1, here))
        return found

    @staticmethod
    def _load(value: bytes) -> dict[str, Any] | list[Any] | None:
        """The JSON object or array ``value`` holds; None for anything else (opaque bytes).

        RecursionError when it nests deeper than the decoder can follow.
        """
        stripped = value.lstrip()
        if not stripped.startswith((b"{", b"[")):
            return None
        try:
            doc = _decode(value)
        except msgspec.DecodeError:
            return None
        return doc if isinstance(doc, dict | list) else None

    def protect(self, value: bytes, aad: bytes) -> bytes:
        """The bytes to store: fields encrypted when the namespace encrypts, else ``value`` unchanged.

        A JSON value nested too deeply to find its fields is refused (InvalidArgument):
        it could neither be encrypted nor masked.
        """
        try:
            doc = self._load(value)
        except RecursionError:
            raise InvalidArgument(
                "the JSON value nests too deeply for its PII fields to be checked"
            ) from None
        if doc is None or not self.encrypt:
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
        try:
            doc = self._load(stored)
        except RecursionError:
            raise PiiError("a stored JSON value nests too deeply for its PII fields to be masked") from None
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
        """The JSON value with every PII field masked, for logs and audit; None when not JSON."""
        try:
            doc = self._load(value)
        except RecursionError:
            return None
        if doc is None:
            return None
        for parent, name, _ in self._fields_in(doc):
            parent[name] = MASK
        return doc
