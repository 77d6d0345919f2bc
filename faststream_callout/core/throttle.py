"""Brute-force protection: back off, then lock out, after repeated failed logins.

Failures are counted per *subject* (a user name, nkey or token fingerprint) and
per client host, with separate allowances: a host may be a NAT gateway in front
of many honest users, so it gets more room than one user name. A throttled
attempt is denied before the identity lookup runs, so it costs almost nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = ["MemoryThrottle", "NoThrottle", "Throttle", "ThrottlePolicy", "throttle_keys"]


@runtime_checkable
class Throttle(Protocol):
    """Counts failed logins and says when to refuse without looking.

    Implementations may be sync or async (e.g. backed by a NATS KV bucket to
    share counts between service instances).
    """

    def blocked(self, keys: Iterable[str]) -> object:
        """Return the seconds until the first of ``keys`` may try again, or 0.

        May return a float or an awaitable of one.
        """
        ...

    def failed(self, keys: Iterable[str]) -> object:
        """Record a failed login for ``keys`` (may return an awaitable)."""
        ...

    def succeeded(self, keys: Iterable[str]) -> object:
        """Record a successful login for ``keys`` (may return an awaitable)."""
        ...


def throttle_keys(request: AuthorizationRequest) -> list[str]:
    """The keys a login attempt counts against: its subject and its host.

    Tokens and JWTs are fingerprinted (a SHA-256 prefix), never stored.
    """
    opts = request.connect_opts
    keys: list[str] = []
    if opts.user:
        keys.append(f"user:{opts.user}")
    elif opts.nkey:
        keys.append(f"nkey:{opts.nkey}")
    elif opts.auth_token:
        keys.append("token:" + hashlib.sha256(opts.auth_token.encode()).hexdigest()[:24])
    elif opts.jwt:
        keys.append("jwt:" + hashlib.sha256(opts.jwt.encode()).hexdigest()[:24])
    if request.client_info.host:
        keys.append(f"host:{request.client_info.host}")
    return keys


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """How many failures are free, and how the lockout grows after them.

    Attributes:
        free_failures: failures allowed before any lockout.
        base_lockout: the first lockout, in seconds; each further failure doubles it.
        max_lockout: the longest lockout, in seconds.
        forget_after: seconds without a failure after which the count starts over.
    """

    free_failures: int
    base_lockout: float = 1.0
    max_lockout: float = 300.0
    forget_after: float = 900.0


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class MemoryThrottle:
    """An in-process :class:`Throttle` with bounded memory.

    Args:
        per_subject: the policy for user names, nkeys and token fingerprints.
        per_host: the policy for client hosts (looser: many users share NATs).
        max_entries: records kept; the least recently failed are dropped first.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        *,
        per_subject: ThrottlePolicy | None = None,
        per_host: ThrottlePolicy | None = None,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_subject = per_subject or ThrottlePolicy(free_failures=5)
        self.per_host = per_host or ThrottlePolicy(free_failures=100, max_lockout=60.0)
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def _policy(self, key: str) -> ThrottlePolicy:
        return self.per_host if key.startswith("host:") else self.per_subject

    def _live(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if now - record.last_failure > self._policy(key).forget_after:
            del self._records[key]
            return None
        return record

    def blocked(self, keys: Iterable[str]) -> float:
        """Seconds until every one of ``keys`` may try again (0: not blocked)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            record = self._live(key, now)
            if record is not None and record.locked_until > now:
                wait = max(wait, record.locked_until - now)
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        """Count a failure; past the free ones, lock out for a doubling period."""
        now = self._clock()
        for key in keys:
            policy = self._policy(key)
            record = self._live(key, now) or _Record(0, now, 0.0)
            record.failures += 1
            record.last_failure = now
            over = record.failures - policy.free_failures
            if over > 0:
                lockout = min(policy.max_lockout, policy.base_lockout * 2 ** min(over - 1, 30))
                record.locked_until = now + lockout
            self._records[key] = record
            self._records.move_to_end(key)
        while len(self._records) > self._max_entries:
            self._records.popitem(last=False)

    def succeeded(self, keys: Iterable[str]) -> None:
        """A success clears the subject's count (not the host's: it may be shared)."""
        for key in keys:
            if not key.startswith("host:"):
                self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


class NoThrottle:
    """A :class:`Throttle` that never throttles: provide it to turn throttling off."""

    def blocked(self, keys: Iterable[str]) -> float:
        """Never blocked."""
        del keys
        return 0.0

    def failed(self, keys: Iterable[str]) -> None:
        """Ignored."""

    def succeeded(self, keys: Iterable[str]) -> None:
        """Ignored."""
