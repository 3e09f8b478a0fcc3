"""``Idempotency-Key``: a retried write returns the first response instead of applying twice.

The first request with a key claims it (a conditional put of a *pending* marker that
expires after ``pending_ttl``), runs, and stores its response for ``ttl`` (24 h by
default). A retry with the same key and the same request gets the stored response
back with ``Idempotent-Replayed: true``; the same key with a different request is a
client bug and gets 422; a retry while the first is still running gets 409.

Keys are scoped to the caller (subject, kind and tenant) and to the namespace, so
two clients can never see each other's responses, and are kept through the KeyValue layer in the
``prism-idempotency`` namespace of a configured store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable

import msgspec

from prism.errors import PreconditionFailed, PrismError
from prism.gateway.auth import Principal
from prism.gateway.config import IDEMPOTENCY_NAMESPACE, IdempotencyConfig
from prism.gateway.problem import HTTPProblem
from prism.gateway.reply import Reply
from prism.kv.namespace import Namespace

__all__ = ["IDEMPOTENCY_NAMESPACE", "IdempotencyCache"]

#: Response headers that are replayed; the rest (dates, request ids) belong to each response.
_REPLAYED_HEADERS = frozenset({b"etag", b"content-type", b"location", b"x-prism-expires-at"})


class _Entry(msgspec.Struct, array_like=True):
    fingerprint: str
    done: bool
    status: int = 0
    headers: list[tuple[str, str]] = []
    body: bytes = b""


_encode = msgspec.msgpack.Encoder().encode
_SCOPE_ENCODER = msgspec.json.Encoder()
_decode = msgspec.msgpack.Decoder(_Entry).decode


def fingerprint(method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes) -> str:
    """A digest of everything that makes two requests the same request."""
    h = hashlib.sha256()
    for part in (method, path, query):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    for name, value in headers:
        h.update(f"{name}:{value}\x00".encode("utf-8", "surrogateescape"))
    h.update(body)
    return h.hexdigest()


class IdempotencyCache:
    """Stored replies by (caller, Idempotency-Key)."""

    def __init__(self, namespace: Namespace, config: IdempotencyConfig, retry_after: int) -> None:
        self._ns = namespace
        self.config = config
        self._retry_after = retry_after

    def check_key(self, key: str) -> None:
        """Raise a 400 problem unless ``key`` is 1 to max_key_length printable ASCII characters."""
        if not key or len(key) > self.config.max_key_length or not key.isascii() or not key.isprintable():
            raise HTTPProblem(
                400,
                "INVALID_IDEMPOTENCY_KEY",
                f"Idempotency-Key must be 1 to {self.config.max_key_length} printable ASCII characters",
            )

    @staticmethod
    def _storage_key(principal: Principal, namespace: str, key: str) -> str:
        # A JSON array is unambiguous whatever the parts hold (a subject may contain any character);
        # the owner names the credential kind and issuer, so only the same caller replays.
        scope = _SCOPE_ENCODER.encode([principal.owner, principal.tenant, namespace, key])
        return hashlib.sha256(scope).hexdigest()

    async def run(
        self,
        principal: Principal,
        namespace: str,
        key: str,
        request_fingerprint: str,
        handler: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """The stored response for this key, or ``handler()``'s response, stored for replays.

        Keys are scoped to the caller (kind, subject, tenant) and to the logical
        ``namespace``, so the same key sent by another caller, or to another
        namespace, is a different request.
        """
        self.check_key(key)
        storage_key = self._storage_key(principal, namespace, key)
        pending = _Entry(request_fingerprint, False)
        for _ in range(2):
            existing = await self._ns.get(storage_key, consistency="strong")
            if existing is not None:
                return self._replay(_decode(existing.value), request_fingerprint)
            try:
                await self._ns.put(storage_key, _encode(pending), ttl=self.config.pending_ttl, if_absent=True)
            except PreconditionFailed:
                continue
            break
        else:
            raise self._in_progress()
        try:
            reply = await handler()
        except BaseException:
            await self._release(storage_key)
            raise
        if reply.status >= 500:
            await self._release(storage_key)
            return reply
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.headers if k in _REPLAYED_HEADERS
        ]
        done = _Entry(request_fingerprint, True, reply.status, headers, reply.body)
        await self._ns.put(storage_key, _encode(done), ttl=self.config.ttl)
        return reply

    async def _release(self, storage_key: str) -> None:
        try:
            await self._ns.delete(storage_key)
        except PrismError:
            # The pending marker expires on its own after pending_ttl.
            pass

    def _replay(self, entry: _Entry, request_fingerprint: str) -> Reply:
        if entry.fingerprint != request_fingerprint:
            raise HTTPProblem(
                422,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used for a different request; use a new key",
            )
        if not entry.done:
            raise self._in_progress()
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in entry.headers]
        headers.append((b"idempotent-replayed", b"true"))
        return Reply(entry.status, entry.body, headers)

    def _in_progress(self) -> HTTPProblem:
        return HTTPProblem(
            409,
            "IDEMPOTENCY_KEY_IN_USE",
            "a request with this Idempotency-Key is still running; retry later",
            headers={"Retry-After": str(self._retry_after)},
        )
