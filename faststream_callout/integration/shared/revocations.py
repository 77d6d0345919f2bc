"""A revocation list every instance shares, kept in a JetStream KV bucket.

The policy is :class:`~faststream_callout.integration.sessions.RevocationList`'s
(refuse a name until a time, for a while, or for good): one of those is the
local copy each instance reads at every login, kept current by a
:class:`~faststream_callout.integration.shared.mirror.BucketMirror`. A login
never waits on the network; what it relies on is the copy's age.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_OP, KeyValue

from faststream_callout.core.policy import IdentityLookup
from faststream_callout.core.stages import printable
from faststream_callout.integration.sessions import (
    RevocationGuard,
    RevocationList,
    revocation_deadline,
)
from faststream_callout.integration.shared.buckets import (
    Bucket,
    StoreUnavailable,
    key_of,
    logger,
    name_of,
    write,
)
from faststream_callout.integration.shared.mirror import BucketMirror, Entry

__all__ = ["SharedRevocationList"]


class _Revoked(msgspec.Struct, forbid_unknown_fields=False):
    until: float | None = None  # Unix time; None: for good
    at: float = 0.0  # when it was written (for people reading the bucket)


_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(_Revoked).decode


class SharedRevocationList:
    """Identity names whose logins every instance refuses (see ``RevocationList``).

    Made by :class:`~faststream_callout.integration.shared.SharedState` (one per
    instance). :meth:`revoke` and :meth:`restore` write the bucket and return
    once JetStream has stored the change; every instance has it within
    milliseconds (the live feed), and for sure within ``max_staleness``.

    Failure behaviour: logins read the local copy. While JetStream is out of
    reach the copy is served as last confirmed for up to ``max_staleness``
    seconds; after that :meth:`is_revoked` raises :class:`StoreUnavailable` and
    the pipeline denies every login (an error outcome, not counted by the
    throttle) until the copy is confirmed again. A revoked user never gets in
    because the store was out of reach. A :meth:`revoke` that cannot be written
    in ``write_timeout`` seconds raises, but this instance refuses the name anyway.

    Args:
        js: the JetStream context of the shared connection.
        kv: the bucket.
        bucket: its settings.
        max_staleness: seconds the copy may go unconfirmed before logins are refused.
        write_timeout: seconds :meth:`revoke` and :meth:`restore` retry a write.
        clock: Unix time, for ``ttl`` and expiry.

    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: Bucket,
        *,
        max_staleness: float,
        write_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = RevocationList(clock=clock)
        """The local copy (reading it directly skips the staleness check)."""
        self.bucket = bucket
        self.max_staleness = max_staleness
        self.write_timeout = write_timeout
        self.mirror: BucketMirror | None = None
        """Set by :class:`SharedState` once the bucket is followed."""
        self._js = js
        self._kv = kv
        self._clock = clock
        # The revision each key was last applied at: the live feed and the watch
        # may deliver one write twice, or out of order with the next one.
        self._applied: dict[str, int] = {}
        self._stale = False

    def __repr__(self) -> str:
        age = self.mirror.age() if self.mirror else float("inf")
        return (
            f"SharedRevocationList({self.bucket.name!r}, {len(self.local)} identities, "
            f"confirmed {age:.1f}s ago)"
        )

    def __len__(self) -> int:
        """How many identities are refused right now (as far as the copy knows)."""
        return len(self.local)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_revoked(name)

    # -- logins ----------------------------------------------------------------------------

    def is_revoked(self, name: str) -> bool:
        """Whether logins of ``name`` are refused, by a copy confirmed within ``max_staleness``.

        Raises:
            StoreUnavailable: the copy is older than that (or was never loaded).

        """
        age = self.mirror.age() if self.mirror is not None else float("inf")
        if age > self.max_staleness:
            raise StoreUnavailable(
                f"the shared revocation list was last confirmed {age:.1f}s ago "
                f"(more than max_staleness={self.max_staleness:g}s): JetStream is out of reach"
            )
        return self.local.is_revoked(name)

    def guard(self, lookup: IdentityLookup, *, reason: str = "access revoked") -> RevocationGuard:
        """Wrap ``lookup`` so that revoked identities are denied with ``reason``."""
        return RevocationGuard(lookup, self, reason=reason)

    # -- changes -----------------------------------------------------------------------------

    async def revoke(
        self, name: str, *, until: float | None = None, ttl: float | None = None
    ) -> None:
        """Refuse ``name`` on every instance: until ``until``, for ``ttl`` s, or for good.

        Raises:
            StoreUnavailable: not stored in ``write_timeout`` s (this instance refuses
                ``name`` all the same).
            ValueError: an empty name, or one over 1024 bytes.

        """
        deadline = revocation_deadline(self._clock, until=until, ttl=ttl)
        key = key_of(name)
        record = _ENCODE(_Revoked(until=deadline, at=self._clock()))
        try:
            revision = await write(
                lambda: self._kv.put(key, record),
                what=f"revocation of {printable(name)!r}",
                timeout=self.write_timeout,
            )
        except StoreUnavailable:
            self.local.revoke(name, until=deadline)  # fail safe: at least here
            raise
        self._change(key, name, revision, revoked=True, until=deadline)
        logger.info("revoked %r on every instance (revision %d)", printable(name), revision)

    async def restore(self, name: str) -> bool:
        """Let ``name`` in again on every instance; return whether this copy refused it.

        Raises:
            StoreUnavailable: not stored in ``write_timeout`` s (still refused everywhere).

        """
        key = key_of(name)
        was = self.local.is_revoked(name)

        async def delete() -> int:
            ack = await self._js.publish(f"$KV.{self.bucket.name}.{key}", headers={KV_OP: KV_DEL})
            return ack.seq

        revision = await write(
            delete, what=f"restoring {printable(name)!r}", timeout=self.write_timeout
        )
        self._change(key, name, revision, revoked=False)
        logger.info("restored %r on every instance (revision %d)", printable(name), revision)
        return was

    # -- the copy ----------------------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        """Take one entry of the bucket into the local copy (the mirror calls it)."""
        name = name_of(entry.key)
        if name is None or entry.revision is None:
            if entry.operation is None:
                logger.warning("bucket %s: ignoring a key no name makes", self.bucket.name)
            return
        if entry.operation is not None:  # deleted or purged: restored
            self._change(entry.key, name, entry.revision, revoked=False)
            return
        try:
            until = _DECODE(entry.value or b"").until
        except msgspec.DecodeError:
            # Someone wrote what we cannot read: refuse rather than guess.
            logger.warning(
                "bucket %s: unreadable revocation of %r; refused for good",
                self.bucket.name,
                printable(name),
            )
            until = None
        self._change(entry.key, name, entry.revision, revoked=True, until=until)

    def _change(
        self, key: str, name: str, revision: int, *, revoked: bool, until: float | None = None
    ) -> None:
        if revision <= self._applied.get(key, 0):
            return  # this write, or a later one, is in already
        self._applied[key] = revision
        if revoked:
            self.local.revoke(name, until=until)
        else:
            self.local.restore(name)

    def check(self) -> None:
        """Log when the copy goes stale and when it is confirmed again (after each probe)."""
        age = self.mirror.age() if self.mirror is not None else float("inf")
        stale = age > self.max_staleness
        if stale and not self._stale:
            logger.error(
                "shared revocation list unconfirmed for %.1fs (max_staleness %gs): "
                "refusing every login until JetStream answers",
                age,
                self.max_staleness,
            )
        elif self._stale and not stale:
            logger.warning("shared revocation list confirmed again: logins are decided again")
        self._stale = stale
