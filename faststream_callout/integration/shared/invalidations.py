"""Decision-cache invalidations broadcast to every instance through a JetStream KV bucket."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import msgspec
from nats.js.kv import KeyValue

from faststream_callout.core.stages import printable
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.shared.buckets import (
    ALL_KEYS,
    Bucket,
    key_of,
    logger,
    name_of,
    write,
)
from faststream_callout.integration.shared.mirror import BucketMirror, Entry

__all__ = ["SharedInvalidations"]

_ENCODE: Final = msgspec.json.Encoder().encode


class SharedInvalidations:
    """Makes ``invalidate`` and ``clear`` of :class:`DecisionCache` reach every instance.

    :meth:`invalidate` drops the name from this instance's caches at once, then
    writes it to the bucket; every instance following the bucket drops it from
    the caches :meth:`attach` gave it. Entries live as long as the bucket's
    ``ttl`` (5 minutes by default; keep it above the caches' ``max_ttl``), so an
    instance whose watch was re-created catches up on what it missed.

    Failure behaviour: a write that fails for ``write_timeout`` s raises
    :class:`StoreUnavailable` (this instance's caches are invalidated anyway).
    An instance whose copy of the bucket goes unconfirmed for more than
    ``max_staleness`` s might miss invalidations: it suspends its caches (every
    login is looked up, nothing is kept) until the copy is confirmed again.

    Args:
        kv: the bucket.
        bucket: its settings.
        max_staleness: seconds the copy may go unconfirmed before caching stops.
        write_timeout: seconds a write is retried.
        clock: Unix time (written with each invalidation, for people).

    """

    def __init__(
        self,
        kv: KeyValue,
        bucket: Bucket,
        *,
        max_staleness: float,
        write_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.max_staleness = max_staleness
        self.write_timeout = write_timeout
        self.caches: list[DecisionCache] = []
        self.mirror: BucketMirror | None = None
        """Set by :class:`SharedState` once the bucket is followed."""
        self.received = 0  # invalidations applied from the bucket
        self._kv = kv
        self._clock = clock
        self._suspended = False

    def __repr__(self) -> str:
        return (
            f"SharedInvalidations({self.bucket.name!r}, {len(self.caches)} caches, "
            f"received={self.received}, {'suspended' if self._suspended else 'live'})"
        )

    def attach(self, cache: DecisionCache) -> DecisionCache:
        """Apply every instance's invalidations to ``cache`` (once); return it."""
        if cache not in self.caches:
            self.caches.append(cache)
            if self._suspended:
                cache.suspend()
        return cache

    async def invalidate(self, name: str) -> int:
        """Forget every decision about ``name`` on every instance; return how many here.

        Raises:
            StoreUnavailable: not written in ``write_timeout`` s (only this
                instance forgot them).

        """
        dropped = sum(cache.invalidate(name) for cache in self.caches)
        await self._publish(key_of(name), f"invalidation of {printable(name)!r}")
        return dropped

    async def clear(self) -> None:
        """Forget every decision on every instance (e.g. after a bulk change of users).

        Raises:
            StoreUnavailable: not written in ``write_timeout`` s (only this
                instance forgot them).

        """
        for cache in self.caches:
            cache.clear()
        await self._publish(ALL_KEYS, "clearing the caches")

    async def _publish(self, key: str, what: str) -> None:
        data = _ENCODE({"at": self._clock()})
        await write(lambda: self._kv.put(key, data), what=what, timeout=self.write_timeout)

    def apply(self, entry: Entry) -> None:
        """Apply one invalidation from the bucket (the mirror calls it)."""
        if entry.operation is not None:
            return  # an expired or deleted entry: nothing to invalidate
        self.received += 1
        if entry.key == ALL_KEYS:
            for cache in self.caches:
                cache.clear()
            return
        name = name_of(entry.key)
        if name is not None:
            for cache in self.caches:
                cache.invalidate(name)

    def check(self) -> None:
        """Suspend the caches while the copy is stale, resume them once confirmed (each probe)."""
        age = self.mirror.age() if self.mirror is not None else float("inf")
        stale = age > self.max_staleness
        if stale and not self._suspended:
            logger.warning(
                "cache invalidations unconfirmed for %.1fs: caching suspended until "
                "JetStream answers",
                age,
            )
            for cache in self.caches:
                cache.suspend()
        elif self._suspended and not stale:
            logger.info("cache invalidations confirmed again: caching resumed")
            for cache in self.caches:
                cache.resume()
        self._suspended = stale
