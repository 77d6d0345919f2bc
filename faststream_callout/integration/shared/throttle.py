"""Throttle counts every instance shares, kept in a JetStream KV bucket.

:class:`SharedThrottleStore` is a :class:`~faststream_callout.core.throttle.ThrottleStore`:
``Throttle(store, policy)`` applies the same policy as ``MemoryThrottle`` to counts
and lockouts every instance reads and writes. So N instances give an attacker
the guesses of one, and a subject's turns are taken across instances.
Turn-taking per (subject, source) and the cap on attempts in flight stay per
process (:class:`~faststream_callout.core.throttle_gate.ThrottleGate`).

Reads go to JetStream at every login (no local copy): a login reads the latest
counts (a lockout written by another instance a millisecond ago holds), and a
flood of distinct names fills the bucket, not every instance's memory. Measured
in ``benchmarks/shared_state.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from faststream_callout.core.errors import StoreUnavailable
from faststream_callout.core.throttle import ThrottleRecord
from faststream_callout.integration.shared.buckets import Bucket, logger

__all__ = ["SharedThrottleStore", "throttle_key"]

# The record's fields in order, as a JSON array (what ThrottleRecord holds, compactly).
_Fields = tuple[int, float, float, float, float, float]
_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(_Fields).decode
_WRONG_LAST_SEQUENCE: Final = (10071, 10164)  # another instance wrote the key meanwhile
_SEEN: Final = 4096  # revisions remembered from reads, to write without reading again


class _KeptConflicting(Exception):  # noqa: N818 - a state, like StoreUnavailable
    """Every compare-and-set attempt of one write lost.

    With writes of a key taking turns in each process, only other instances
    conflict, rarely 8 times in a row; seen when a stream leader lost its
    quorum (its uncommitted writes fail every later compare-and-set).
    """


# What the client or JetStream raises when a request does not get through.
_UNREACHABLE: Final = (nats.errors.Error, TimeoutError, OSError, _KeptConflicting)
_T = TypeVar("_T")


def throttle_key(key: str) -> str:
    """The KV key of a throttle key: 22 characters of URL-safe base64 of its SHA-256.

    Throttle keys hold user names, sources and fingerprints in any characters
    and lengths; their hash is a valid KV key of fixed length, and keeps user
    names out of the bucket's subjects.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(slots=True)
class _Writers:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # writing or waiting; the entry goes when it drops to 0


class SharedThrottleStore:
    """A :class:`~faststream_callout.core.throttle.ThrottleStore` on a KV bucket.

    Made by :class:`~faststream_callout.integration.shared.SharedState`; use it
    through ``state.throttle(policy)``. Keys are :func:`throttle_key` hashes,
    values the record's fields as a JSON array. A record is written with its
    own lifetime (JetStream per-message TTL, until its ``expires_at``), so the
    bucket forgets it when the policy would.

    Updates are compare-and-set by revision: a new key is created only if it is
    still missing, an existing one updated only from the revision the change
    was computed on. On a conflict the key is read again and ``change`` called
    again, up to ``max_attempts`` times (writes of one key take turns within a
    process, so only other instances conflict: keep ``max_attempts`` above
    the number of instances). A write needs no read first when this instance
    read or wrote the key last (its revision is remembered).

    Failure behaviour: every call is bounded by ``timeout`` seconds. When
    JetStream does not answer in that time (or refuses), the call raises
    :class:`StoreUnavailable` and the store is *down*: for ``retry_after``
    seconds calls raise at once, then one call tries again. The throttle gate
    logs one line and decides without the counts (admits; the lookup still
    judges), so an outage locks nobody out and adds at most ``timeout`` to a
    login. Counts written before the outage hold again once it is over.

    Args:
        js: the JetStream context of the shared connection.
        bucket: the bucket's settings.
        ttl_writes: write records with a per-message TTL (the bucket must allow it:
            nats-server 2.11+, buckets created by this library).
        timeout: seconds one load or update may take, retries included.
        retry_after: seconds calls fail at once after JetStream did not answer.
        max_attempts: compare-and-set attempts of one update.
        clock: Unix time, the throttle's clock (for the records' TTL).

    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: Bucket,
        *,
        ttl_writes: bool,
        timeout: float = 0.25,
        retry_after: float = 1.0,
        max_attempts: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError("timeout must be a positive number of seconds")
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.bucket = bucket
        self.ttl_writes = ttl_writes
        self.timeout = timeout
        self.retry_after = retry_after
        self.max_attempts = max_attempts
        self.conflicts = 0  # compare-and-set attempts that lost to another writer
        self.failures = 0  # calls that raised StoreUnavailable
        self._js = js
        self._clock = clock
        self._subject = f"$KV.{bucket.name}."
        self._seen: OrderedDict[str, tuple[ThrottleRecord | None, int]] = OrderedDict()
        self._writers: dict[str, _Writers] = {}  # keys with a write under way or queued
        self._down_until = 0.0  # monotonic; > 0 while down
        self._down = False

    def __repr__(self) -> str:
        state = "down" if self._down else "up"
        return (
            f"SharedThrottleStore({self.bucket.name!r}, {state}, "
            f"conflicts={self.conflicts}, failures={self.failures})"
        )

    @property
    def available(self) -> bool:
        """Whether the last call reached JetStream."""
        return not self._down

    # -- the ThrottleStore protocol -----------------------------------------------------------

    async def load(self, keys: Sequence[str]) -> list[ThrottleRecord | None]:
        """The records of ``keys``, read together (``None`` for a missing one).

        Raises:
            StoreUnavailable: JetStream did not answer within ``timeout``, or is down.

        """
        subjects = [throttle_key(key) for key in keys]
        read = await self._bounded(
            lambda: asyncio.gather(*(self._read(subject) for subject in subjects)), "read"
        )
        return [record for record, _ in read]

    async def update(
        self, key: str, change: Callable[[ThrottleRecord | None], ThrottleRecord | None]
    ) -> ThrottleRecord | None:
        """Replace the record of ``key`` by ``change(record)``, compare-and-set by revision.

        ``change`` is called again with the new record after each conflict; the
        value stored is that of its last call. An unchanged record is not written.

        Raises:
            StoreUnavailable: JetStream did not answer within ``timeout``, is down,
                or each of ``max_attempts`` compare-and-set attempts conflicted.

        """
        kv_key = throttle_key(key)
        turn = self._writers.get(kv_key)
        if turn is None:
            turn = self._writers[kv_key] = _Writers()
        turn.users += 1
        try:
            # One write per key at a time in this process: conflicts come only from
            # other instances (a burst from one source updates its record at once).
            try:
                async with asyncio.timeout(self.timeout):
                    await turn.lock.acquire()
            except TimeoutError:
                self.failures += 1
                raise StoreUnavailable(
                    f"throttle bucket {self.bucket.name}: too many writes queued for one "
                    f"record (none within {self.timeout:g}s)"
                ) from None
            try:
                return await self._bounded(lambda: self._update(kv_key, change), "write")
            finally:
                turn.lock.release()
        finally:
            turn.users -= 1
            if not turn.users:
                del self._writers[kv_key]

    # -- reading and writing ------------------------------------------------------------------

    async def _bounded(self, operation: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run ``operation`` within ``timeout``; a failure to get through makes the store down."""
        now = time.monotonic()
        if self._down and now < self._down_until:
            self.failures += 1
            raise StoreUnavailable(
                f"throttle bucket {self.bucket.name}: down (JetStream failed); "
                f"trying again within {self.retry_after:g}s"
            )
        if self._down:
            self._down_until = now + self.retry_after  # this call tries; the others wait
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation()
        except _UNREACHABLE as exc:
            reason = (
                f"{self.max_attempts} conflicts"
                if isinstance(exc, _KeptConflicting)
                else type(exc).__name__
            )
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_after
            if not self._down:
                self._down = True
                logger.warning(
                    "throttle bucket %s: a %s failed (%s, %gs at most); logins are "
                    "decided without the shared counts until JetStream answers again",
                    self.bucket.name,
                    what,
                    reason,
                    self.timeout,
                )
            raise StoreUnavailable(
                f"throttle bucket {self.bucket.name}: a {what} failed "
                f"({reason}, {self.timeout:g}s at most)"
            ) from None
        if self._down:
            self._down = False
            logger.info("throttle bucket %s: JetStream answers again", self.bucket.name)
        return result

    async def _read(self, key: str) -> tuple[ThrottleRecord | None, int]:
        """The record of ``key`` and its revision (0: never written, or forgotten)."""
        try:
            msg = await self._js.get_msg(self.bucket.stream, subject=self._subject + key)
        except nats.js.errors.NotFoundError:
            found: tuple[ThrottleRecord | None, int] = (None, 0)
        else:
            found = (self._decode(key, msg.data or b"", msg.headers), msg.seq or 0)
        self._remember(key, found)
        return found

    def _decode(
        self, key: str, data: bytes, headers: dict[str, str] | None
    ) -> ThrottleRecord | None:
        if headers and headers.get(KV_OP) in (KV_DEL, KV_PURGE):
            return None
        try:
            return ThrottleRecord(*_DECODE(data))
        except (msgspec.DecodeError, TypeError):
            # Overwritten by the next update: a fresh count, as after a restart.
            logger.warning(
                "throttle bucket %s: unreadable record %s ignored", self.bucket.name, key
            )
            return None

    async def _update(
        self, key: str, change: Callable[[ThrottleRecord | None], ThrottleRecord | None]
    ) -> ThrottleRecord | None:
        seen = self._seen.pop(key, None)
        record, revision = seen if seen is not None else await self._read(key)
        for _ in range(self.max_attempts):
            new = change(record)
            if new == record:
                self._remember(key, (record, revision))
                return new
            try:
                written = await self._write(key, new, revision)
            except nats.js.errors.APIError as exc:
                if exc.err_code not in _WRONG_LAST_SEQUENCE:
                    raise
                self.conflicts += 1
                record, revision = await self._read(key)
                continue
            self._remember(key, (new, written))
            return new
        self._seen.pop(key, None)
        raise _KeptConflicting

    async def _write(self, key: str, record: ThrottleRecord | None, revision: int) -> int:
        """Write ``record`` (``None``: purge) if ``revision`` is still the key's last one."""
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision)}
        if record is None:
            headers.update({KV_OP: KV_PURGE, api.Header.ROLLUP.value: "sub"})
            ack = await self._js.publish(self._subject + key, b"", headers=headers)
            return ack.seq
        ttl = None
        if self.ttl_writes:
            # Whole seconds, rounded up, and one more: never before the policy forgets it.
            ttl = max(1, math.ceil(record.expires_at - self._clock()) + 1)
        data = _ENCODE(
            (
                record.failures,
                record.last_failure,
                record.locked_until,
                record.next_turn,
                record.trusted_until,
                record.expires_at,
            )
        )
        ack = await self._js.publish(self._subject + key, data, headers=headers, msg_ttl=ttl)
        return ack.seq

    def _remember(self, key: str, found: tuple[ThrottleRecord | None, int]) -> None:
        self._seen[key] = found
        self._seen.move_to_end(key)
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
