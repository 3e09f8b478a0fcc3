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

Protection fails closed. A value written to a PII namespace must be JSON exactly as
RFC 8259 defines it (UTF-8 without a byte order mark, no ``NaN`` or ``Infinity``, no
number beyond a 64-bit float, no lone surrogate escape, unique names in every object,
nothing after the value): anything else is refused, because another parser might read
fields out of it that Prism could neither encrypt nor mask. A stored value that is not
such JSON is shown only to callers holding ``pii:read``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prism.errors import InvalidArgument, PrismError
from prism.gateway.config import ConfigError, GatewayConfig, PiiConfig
from prism.kv.validation import not_utf8

__all__ = [
    "MASK",
    "FieldProtector",
    "Keyring",
    "NotJson",
    "PiiError",
    "PiiValueRejected",
    "StoredValueNotJson",
    "aad_prefix",
    "parse_json",
]

MASK = "***"
ENVELOPE_MARK = "prism:enc"
ENVELOPE_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class PiiError(PrismError):
    """A stored PII field cannot be decrypted (unknown key id, or tampered ciphertext)."""

    code = "PII_DECRYPT_FAILED"


class StoredValueNotJson(PiiError):
    """A stored value of a PII namespace is not JSON, so it cannot be masked for this caller."""

    code = "PII_VALUE_NOT_JSON"


class PiiValueRejected(InvalidArgument):
    """A value written to a PII namespace is not RFC 8259 JSON; nothing was written."""

    code = "PII_VALUE_NOT_JSON"


class NotJson(ValueError):
    """``value`` is not JSON as RFC 8259 defines it; the message says which rule it breaks."""


_POSITION = re.compile(r"\(byte (\d+)\)")
_SURROGATE_ESCAPE = re.compile(rb"(\\+)u[dD]([89a-fA-F])[0-9a-fA-F]{2}")
_NON_NUMBERS = (b"NaN", b"Infinity")


def _lone_surrogate(value: bytes) -> bool:
    """Whether ``value`` holds a ``\\uD800``-``\\uDFFF`` escape that is not half of a pair."""
    pending_high = -1  # end offset of a high-surrogate escape waiting for its low half
    for match in _SURROGATE_ESCAPE.finditer(value):
        if len(match.group(1)) % 2 == 0:
            continue  # an escaped backslash followed by a literal "u..."
        high = match.group(2) in b"89abAB"
        if high:
            if pending_high != -1:
                return True
            pending_high = match.end()
        elif pending_high == match.start():
            pending_high = -1
        else:
            return True
    return pending_high != -1


def _explain(value: bytes, message: str) -> str:
    """The rule a value msgspec refused breaks, in words."""
    if not value.strip():
        return "it is empty"
    found = _POSITION.search(message)
    at = int(found.group(1)) if found else -1
    if "trailing characters" in message:
        return f"there is data after the JSON value (at byte {at})"
    if _lone_surrogate(value):
        return "it holds a lone UTF-16 surrogate escape (\\ud800 to \\udfff without its pair)"
    if at >= 0 and any(value[i:].lstrip(b"-+").startswith(_NON_NUMBERS) for i in (at, max(0, at - 1))):
        return "NaN and Infinity are not JSON numbers"
    return f"it is not well-formed JSON ({message})"


def _unique_names(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({name for name, _ in pairs}) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                shown = name if len(name) <= 64 else name[:64] + "..."
                raise NotJson(f"an object holds the name {shown!r} more than once")
            seen.add(name)


def _ignore(text: str) -> None:
    return None


def parse_json(value: bytes, *, unique_names: bool = True) -> Any:
    """The JSON value ``value`` holds; NotJson naming the rule when it is not RFC 8259 JSON.

    Refused: bytes that are not UTF-8, a byte order mark, ``NaN``/``Infinity``, numbers
    beyond a 64-bit float, lone surrogate escapes, anything after the value, nesting
    deeper than the parser follows, and (with ``unique_names``) an object naming one
    member twice, which parsers disagree about.
    """
    if value.startswith(b"\xef\xbb\xbf"):
        raise NotJson("it starts with a byte order mark (JSON values are UTF-8 without one)")
    if value.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotJson("it starts with a UTF-16 byte order mark (JSON values are UTF-8)")
    try:
        doc = _decode(value)
    except UnicodeDecodeError:
        raise NotJson(not_utf8(value)) from None
    except msgspec.ValidationError as exc:
        reason = str(exc)
        if "out of range" in reason:
            reason = "a number is out of range (beyond a 64-bit float)"
        raise NotJson(reason) from None
    except msgspec.DecodeError as exc:
        raise NotJson(_explain(value, str(exc))) from None
    except RecursionError:
        raise NotJson("it nests too deeply") from None
    if unique_names and isinstance(doc, dict | list):
        try:
            json.loads(
                value.decode("utf-8"),
                object_pairs_hook=_unique_names,
                parse_float=_ignore,
                parse_int=_ignore,
                parse_constant=_ignore,
            )
        except RecursionError:
            raise NotJson("it nests too deeply") from None
    return doc


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

    def protect(self, value: bytes, aad: bytes) -> bytes:
        """The bytes to store: fields encrypted when the namespace encrypts, else ``value`` unchanged.

        A value that is not RFC 8259 JSON is refused (PiiValueRejected, naming the rule):
        its fields could neither be encrypted nor masked.
        """
        try:
            doc = parse_json(value)
        except NotJson as exc:
            raise PiiValueRejected(
                f"a namespace with PII fields holds only JSON values (RFC 8259), and this one is not: {exc}"
            ) from None
        if not self.encrypt:
            return value
        found = self._fields_in(doc)
        if not found:
            return value
        assert self.keyring is not None
        for parent, name, path in found:
            parent[name] = self.keyring.encrypt(_encode(parent[name]), aad + path.encode("utf-8"))
        return _encode(doc)

    def reveal(self, stored: bytes, aad: bytes, clear: bool) -> bytes:
        """The bytes a reader sees: fields decrypted when ``clear``, masked otherwise.

        Without ``clear`` the reader gets the value as Prism parsed it, re-encoded with
        its fields masked, so no other reading of the stored bytes can show more; a
        stored value that is not JSON is refused (StoredValueNotJson).
        """
        try:
            doc = parse_json(stored, unique_names=False)
        except NotJson as exc:
            if clear:
                return stored
            raise StoredValueNotJson(
                f"the stored value is not JSON ({exc}), so its PII fields cannot be masked; "
                "only callers with pii:read may read it"
            ) from None
        found = self._fields_in(doc)
        if not clear:
            for parent, name, _ in found:
                parent[name] = MASK
            return _encode(doc)
        changed = False
        for parent, name, path in found:
            current = parent[name]
            if _is_envelope(current) and self.keyring is not None:
                parent[name] = _decode(self.keyring.decrypt(current, aad + path.encode("utf-8")))
                changed = True
            elif _is_envelope(current):
                raise PiiError("the value holds encrypted fields but no PII keys are configured")
        return _encode(doc) if changed else stored

    def masked(self, value: bytes) -> Any:
        """The JSON value with every PII field masked, for logs and audit; None when not JSON."""
        try:
            doc = parse_json(value, unique_names=False)
        except NotJson:
            return None
        for parent, name, _ in self._fields_in(doc):
            parent[name] = MASK
        return doc
