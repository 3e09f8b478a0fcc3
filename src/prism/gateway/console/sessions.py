"""Console sign-ins: a credential exchanged for a session cookie, and the CSRF token of each session.

The session id is 32 random bytes in an HttpOnly, SameSite=Strict cookie (Secure when
the gateway serves TLS) that expires with the session; the process keeps the sha256
of the id, never the id. The credential stays in this process only, to call the API
on the principal's behalf; it is never written to a file, a log or a page. A session
ends at sign-out, after ``admin.session_ttl``, or when its JWT expires, whichever is
first. Every state-changing request carries the session's CSRF token.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from prism.model import Principal

__all__ = ["COOKIE", "AttemptLimiter", "Session", "Sessions", "SessionsFull"]

#: The session cookie's name (scoped to ``/admin``).
COOKIE = "prism_console"


@dataclass(slots=True)
class Session:
    """One sign-in: whose it is, the credential header that names it to the API, and its CSRF token."""

    principal: Principal
    credential: tuple[str, str]
    csrf: str
    expires_at: float
    #: Set when the session is signed out or pushed out, so open event streams end too.
    ended: bool = False

    @property
    def live(self) -> bool:
        """True until the session is signed out, pushed out or expired."""
        return not self.ended and self.expires_at > time.time()

    def check_csrf(self, token: str | None) -> bool:
        """True when ``token`` is this session's CSRF token (compared in constant time)."""
        return token is not None and hmac.compare_digest(token.encode("utf-8"), self.csrf.encode("utf-8"))


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class SessionsFull(Exception):
    """Every session slot of this process is taken by live sessions of other principals."""


class Sessions:
    """The sessions of this process: at most ``limit`` in all and ``per_principal`` of one principal.

    A principal at its own bound loses its oldest session to its new one; a sign-in
    that would need another principal's session to end is refused (SessionsFull), so
    no principal can push another one out.
    """

    def __init__(self, ttl: float, limit: int, per_principal: int | None = None) -> None:
        self.ttl = ttl
        self.limit = limit
        self.per_principal = limit if per_principal is None else per_principal
        self._by_digest: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def open(
        self, principal: Principal, credential: tuple[str, str], expires_at: float | None = None
    ) -> tuple[str, Session]:
        """A new session (its id for the cookie): it ends after ``ttl`` or at ``expires_at`` if sooner."""
        self._sweep()
        owner = principal.owner
        own = [d for d, s in self._by_digest.items() if s.principal.owner == owner]
        # The principal's own oldest make room, first for its own bound, then for the table's.
        while own and (len(own) >= self.per_principal or len(self._by_digest) >= self.limit):
            self._by_digest.pop(own.pop(0)).ended = True
        if len(self._by_digest) >= self.limit:
            raise SessionsFull("every console session slot is taken; try again later")
        ends = time.time() + self.ttl
        if expires_at is not None:
            ends = min(ends, expires_at)
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, credential, secrets.token_urlsafe(32), ends)
        self._by_digest[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (None when unknown, ended or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        digest = _digest(session_id)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if not session.live:
            del self._by_digest[digest]
            session.ended = True
            return None
        return session

    def close(self, session_id: str | None) -> None:
        """End the session of ``session_id`` (nothing when there is none)."""
        if session_id:
            session = self._by_digest.pop(_digest(session_id), None)
            if session is not None:
                session.ended = True

    def close_all(self) -> None:
        """End every session (the gateway stops)."""
        for session in self._by_digest.values():
            session.ended = True
        self._by_digest.clear()

    def __len__(self) -> int:
        return len(self._by_digest)

    def _sweep(self) -> None:
        now = time.time()
        for digest in [d for d, s in self._by_digest.items() if s.expires_at <= now]:
            self._by_digest.pop(digest).ended = True


class AttemptLimiter:
    """Sign-in attempts of each client address: a token bucket of ``rate`` a second, ``burst`` at once.

    At most ``addresses`` buckets are kept; the one used longest ago is dropped first.
    """

    def __init__(self, rate: float, burst: int, addresses: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.addresses = addresses
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, address: str) -> float:
        """0.0 when ``address`` may try now (a token is taken), else the seconds until it may."""
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens < 1.0:
            wait = (1.0 - tokens) / self.rate
        else:
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self.addresses:
            self._buckets.popitem(last=False)
        return wait
