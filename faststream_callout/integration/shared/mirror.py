"""A local copy of one KV bucket, kept up to date by a watch, that knows how up to date it is.

Reads of the shared stores never wait on the network: they read this copy. What
makes that safe is knowing the copy's age. Every ``probe_interval`` the mirror
asks the stream's leader for its last sequence; once the watch has applied
everything up to that sequence (or the leader has nothing between the watch's
position and it: entries that expired or were purged), the copy is *confirmed*
as of the moment the probe was sent: every write acknowledged before then is in
it. A watch served by a replica that is still catching up is not confirmed
until it has caught up. :meth:`BucketMirror.age` is the
time since the last confirmation, and the stores decide what an old copy means
(the revocation list refuses logins; the decision cache stops caching).

Writes reach the copy two ways: the watch (an ordered consumer: complete and in
order, re-created by the mirror when it falls behind, e.g. because it lived on
a node that died) and, for buckets that republish, the live feed
(``callout.shared.<bucket>.>``), which reaches the instance in milliseconds
even while the watch is being re-created. Only the watch confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from faststream_callout.integration.shared.buckets import Bucket, logger

__all__ = ["BucketMirror", "Entry"]

Entry = KeyValue.Entry
_SEQUENCE: Final = "Nats-Sequence"  # header of a republished message: its stream sequence
_MARKERS: Final = {"MaxAge": KV_PURGE, "Purge": KV_PURGE, "Remove": KV_DEL}
_UNAVAILABLE: Final = (nats.errors.Error, OSError, TimeoutError)
# nats-server's stream peers hear from each other every second; an election takes 4 s at least.
_PEER_SILENCE_NS: Final = 3_000_000_000


class _LostQuorum(Exception):  # noqa: N818 - a reason, logged by name
    """The leader that answered has not heard from a quorum of its peers lately."""


def _with_quorum(cluster: api.ClusterInfo | None) -> bool:
    """Whether the stream's leader heard from a quorum of its replicas within the last seconds.

    A leader cut off from its peers (a partition, or they are down) still answers
    stream info, with the last sequence *it* knows, while the others may elect a
    new leader and take writes (after an election timeout of 4 s at least). Its
    answers confirm nothing once its peers have been silent for longer than
    :data:`_PEER_SILENCE`. A leaderless answer confirms nothing: a follower resets
    what it saw of the other peers to zero, and nats-server reports a zero as
    "active 0 ago" (``jetstream_cluster.go`` ``clusterInfo``, ``raft.go``). No
    cluster (a single server): nothing to lose.
    """
    if cluster is None or not cluster.replicas:
        return True
    if not cluster.leader:
        return False
    heard = 1 + sum(
        1
        for peer in cluster.replicas
        if not peer.offline and peer.active is not None and 0 < peer.active < _PEER_SILENCE_NS
    )
    return heard > (len(cluster.replicas) + 1) // 2


class BucketMirror:
    """Follows one bucket into ``apply`` and tracks how current the copy is.

    Args:
        nc: the connection (for the live feed).
        js: its JetStream context (requests time out after its ``timeout``).
        kv: the bucket.
        bucket: the bucket's settings (name, stream, whether it republishes).
        apply: called with every entry, in order per source; put, delete
            (``operation == "DEL"``) or purge (``"PURGE"``). Entries from the
            live feed may repeat or precede the watch's: ``apply`` must be
            idempotent and, where order matters, compare revisions.
        probe_interval: seconds between confirmations.
        timer: a monotonic clock; injectable for tests.

    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: Bucket,
        apply: Callable[[Entry], None],
        *,
        probe_interval: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = bucket
        self.probe_interval = probe_interval
        self.revision = 0  # the watch's position: every sequence up to it is applied
        self.restarts = 0  # watches re-created because the old one fell behind or died
        self.probes: list[Callable[[], None]] = []  # called after each probe
        self._nc = nc
        self._js = js
        self._kv = kv
        self._apply = apply
        self._timer = timer
        self._confirmed: float | None = None
        self._pending: tuple[float, int] | None = None  # a probe the watch has not reached
        self._stuck_at: int | None = None  # the watch's position at the last "behind" probe
        self._watcher: KeyValue.KeyWatcher | None = None
        self._follower: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._probing: asyncio.Task[None] | None = None
        self._feed: Subscription | None = None
        self._synced = asyncio.Event()
        self._reachable = True

    def __repr__(self) -> str:
        return (
            f"BucketMirror({self.bucket.name!r}, revision={self.revision}, "
            f"age={self.age():.1f}s, restarts={self.restarts})"
        )

    def age(self) -> float:
        """Seconds since the copy was last confirmed complete; infinite before the first time."""
        return math.inf if self._confirmed is None else self._timer() - self._confirmed

    async def start(self, *, timeout: float) -> None:  # noqa: ASYNC109 - a start budget
        """Load the bucket and follow it; return once the first copy is complete.

        Raises:
            TimeoutError: the first copy was not complete within ``timeout`` s.

        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def in_time() -> None:
            # By hand too: Python 3.11's wait_for (in nats-py's requests) may lose the
            # one cancellation the timeout sends.
            if loop.time() >= deadline:
                raise TimeoutError

        async with asyncio.timeout_at(deadline):
            if self.bucket.republish:
                self._feed = await self._nc.subscribe(f"{self.bucket.feed}.>", cb=self._on_feed)
            while True:
                try:
                    await self._restart()
                    break
                except _UNAVAILABLE:
                    in_time()
                    await asyncio.sleep(0.2)
            await self._synced.wait()
            while self._confirmed is None:
                await self.probe()
                if self._confirmed is None:
                    in_time()
                    await asyncio.sleep(0.05)
        self._prober = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        """Stop following (the copy stays as it is)."""
        for task in (self._prober, self._probing, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._prober = self._probing = self._follower = None
        await self._stop_watcher()
        if self._feed is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._feed.unsubscribe()
            self._feed = None

    # -- the watch ---------------------------------------------------------------------------

    async def _restart(self) -> None:
        """A new watch from the bucket's current state; the old one is dropped."""
        watcher = await self._kv.watchall()
        if self._follower is not None:
            self._follower.cancel()
        await self._stop_watcher()
        self._watcher = watcher
        self._follower = asyncio.create_task(self._follow(watcher))

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the snapshot is in (probes confirm it)
                self._synced.set()
                continue
            self._deliver(entry)
            if entry.revision is not None and entry.revision > self.revision:
                self.revision = entry.revision
                if self._pending is not None and self.revision >= self._pending[1]:
                    self._confirm(*self._pending)

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]

    # -- the live feed -----------------------------------------------------------------------

    async def _on_feed(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            revision = int(headers.get(_SEQUENCE, ""))
        except ValueError:
            return
        operation = headers.get(KV_OP) or _MARKERS.get(headers.get(KV_MARKER_REASON, ""))
        key = msg.subject.removeprefix(self.bucket.feed + ".")
        self._deliver(Entry(self.bucket.name, key, msg.data, revision, None, None, operation))

    def _deliver(self, entry: Entry) -> None:
        try:
            self._apply(entry)
        except Exception:  # noqa: BLE001 - one bad entry must not stop the copy
            logger.exception("bucket %s: cannot apply entry %s", self.bucket.name, entry.revision)

    # -- confirmation ------------------------------------------------------------------------

    def _confirm(self, at: float, sequence: int) -> None:
        """The probe sent at ``at`` saw ``sequence`` as the last: confirmed if the watch has it."""
        if self.revision >= sequence:
            self._confirmed = at if self._confirmed is None else max(self._confirmed, at)
            self._pending = None
        else:
            self._pending = (at, sequence)

    async def probe(self) -> None:
        """Ask the stream for its last sequence; confirm the copy or re-create a stuck watch."""
        at = self._timer()
        try:
            info = await self._js.stream_info(self.bucket.stream)
            if not _with_quorum(info.cluster):
                raise _LostQuorum
            last = info.state.last_seq
            if self.revision < last and not await self._anything_after(self.revision, last):
                self.revision = last  # what lay between is gone (expired, purged)
        except (*_UNAVAILABLE, _LostQuorum) as exc:
            if self._reachable:
                self._reachable = False
                logger.warning(
                    "bucket %s: JetStream does not answer (%s); serving the copy confirmed "
                    "%.1fs ago",
                    self.bucket.name,
                    type(exc).__name__,
                    self.age(),
                )
            return
        if not self._reachable:
            self._reachable = True
            logger.info("bucket %s: JetStream answers again", self.bucket.name)
        self._confirm(at, last)
        if self.revision >= last:
            self._stuck_at = None
            return
        follower = self._follower
        if self._stuck_at == self.revision or follower is None or follower.done():
            # Behind at two probes in a row without moving: its consumer is gone.
            self._stuck_at = None
            self.restarts += 1
            logger.info(
                "bucket %s: watch behind at %d of %d; re-created",
                self.bucket.name,
                self.revision,
                last,
            )
            try:
                await self._restart()
            except _UNAVAILABLE as exc:
                logger.warning("bucket %s: cannot re-create the watch (%s)", self.bucket.name, exc)
        else:
            self._stuck_at = self.revision

    async def _anything_after(self, revision: int, last: int) -> bool:
        """Whether the stream's leader still holds an entry after ``revision``, up to ``last``."""
        try:
            found = await self._js.get_msg(
                self.bucket.stream, seq=revision + 1, subject=f"$KV.{self.bucket.name}.>", next=True
            )
        except nats.js.errors.NotFoundError:
            return False
        return found.seq is not None and found.seq <= last

    async def _probe_forever(self) -> None:
        # A probe may hang for the request timeout: the listeners still run on time.
        while True:
            await asyncio.sleep(self.probe_interval)
            if self._probing is None or self._probing.done():
                self._probing = asyncio.create_task(self.probe())
            for listener in self.probes:
                try:
                    listener()
                except Exception:  # noqa: BLE001 - the probes go on
                    logger.exception("bucket %s: probe listener failed", self.bucket.name)
