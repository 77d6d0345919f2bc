"""Brute-force protection: back off, then lock out, after repeated failed logins.

Failures are counted per *subject* (a user name, nkey or token fingerprint) and
per client host, with separate allowances: a host may be a NAT gateway in front
of many honest users, so it gets more room than one user name. A throttled
attempt is denied before the identity lookup runs, so it costs almost nothing.

:class:`ThrottleGate` is how the pipeline uses a :class:`Throttle`: it lets the
attempts for one subject take turns, and keeps a broken store from locking
anyone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar, runtime_checkable

from faststream_callout.core.errors import Denied
from faststream_callout.core.policy import resolve_by
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = [
    "MemoryThrottle",
    "NoThrottle",
    "Throttle",
    "ThrottleGate",
    "ThrottlePolicy",
    "throttle_keys",
]

logger: Final = logging.getLogger("faststream_callout")
_T = TypeVar("_T")


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


@dataclass(slots=True)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting; the entry goes when it drops to 0


class ThrottleGate:
    """Puts a :class:`Throttle` in front of the identity lookup.

    Attempts for one subject (user name, nkey, token) take turns from the
    throttle check until their failure is counted, so concurrent guesses cannot
    all pass the check before the first failure is recorded; attempts for
    different subjects never wait for each other. A throttle that raises is
    logged and ignored: a broken store must not lock everyone out.

    Args:
        throttle: the failure counts.

    """

    __slots__ = ("_turns", "throttle")

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle
        self._turns: dict[str, _Turn] = {}  # subjects with an attempt under way

    @property
    def pending(self) -> int:
        """Subjects with an attempt under way (holding or waiting for their turn)."""
        return len(self._turns)

    async def admit(
        self, keys: list[str], deadline: float, lookup: Callable[[], Awaitable[_T]]
    ) -> _T | None:
        """Run ``lookup`` unless ``keys`` are throttled; ``None`` when they are.

        A :class:`~faststream_callout.Denied` from the lookup is counted as a
        failed attempt (by ``deadline``) before it propagates.

        Raises:
            TimeoutError: the loop time ``deadline`` passed, waiting for the turn,
                the throttle or the lookup.

        """
        subject = keys[0] if keys and not keys[0].startswith("host:") else None
        if subject is not None:
            await self._take_turn(subject, deadline)
        try:
            if keys and await self._blocked(keys, deadline):
                return None
            try:
                return await lookup()
            except Denied:
                if keys:
                    await self._record("failed", keys, deadline)
                raise
        finally:
            if subject is not None:
                self._end_turn(subject)

    async def succeeded(self, keys: list[str], deadline: float) -> None:
        """Record a successful login for ``keys`` by ``deadline`` (a failing store is logged)."""
        if keys:
            await self._record("succeeded", keys, deadline)

    async def _blocked(self, keys: list[str], deadline: float) -> bool:
        try:
            wait = await resolve_by(deadline, self.throttle.blocked(keys))
        except Exception:
            logger.exception("throttle failed; not throttling")
            return False
        return isinstance(wait, int | float) and wait > 0

    async def _record(self, event: str, keys: list[str], deadline: float) -> None:
        # Errors and a store that misses the deadline are logged: the decision stands.
        try:
            await resolve_by(deadline, getattr(self.throttle, event)(keys))
        except Exception:
            logger.exception("throttle failed to record a %s login", event)

    async def _take_turn(self, subject: str, deadline: float) -> None:
        turn = self._turns.get(subject)
        if turn is None:
            turn = self._turns[subject] = _Turn()
        turn.users += 1
        try:
            if turn.lock.locked():  # a timer only when someone else's turn runs
                async with asyncio.timeout_at(deadline):
                    await turn.lock.acquire()
            else:
                await turn.lock.acquire()
        except BaseException:
            self._leave_turn(subject, turn)
            raise

    def _end_turn(self, subject: str) -> None:
        turn = self._turns[subject]
        turn.lock.release()
        self._leave_turn(subject, turn)

    def _leave_turn(self, subject: str, turn: _Turn) -> None:
        turn.users -= 1
        if turn.users == 0:
            del self._turns[subject]
