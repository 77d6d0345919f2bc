"""Sessions every instance knows, kept in a JetStream KV bucket.

:class:`SharedSessions` is a :class:`~faststream_callout.integration.sessions.SessionStore`:
the :class:`~faststream_callout.integration.sessions.SessionRegistry` keeps its
policy (indexes, expiry, bounds, kicks) and tells this store what changed here;
the store writes it in the background and brings in what other instances
recorded. So ``kick_user`` on any instance reaches a user's connections
wherever they were granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from faststream_callout.integration.sessions import Session
from faststream_callout.integration.shared.buckets import (
    Bucket,
    StoreUnavailable,
    logger,
    write,
)
from faststream_callout.integration.shared.mirror import Entry

__all__ = ["SharedSessions"]

_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(Session).decode
_MARKER_TTL: Final = 300  # seconds an "ended" marker stays for watches that restart
_BATCH: Final = 256  # session writes in flight at once


class SharedSessions:
    """A :class:`~faststream_callout.integration.sessions.SessionStore` on a KV bucket.

    Keys are ``<server_id>.<client_id>``, values the session as JSON. A session
    with an expiry is written with that lifetime (JetStream per-message TTL, when
    the bucket allows it), so the bucket forgets it when nats-server drops the
    client anyway; an ended one is purged, and the purge marker expires too.

    Failure behaviour: recording never delays a login. Writes wait in a
    bounded queue (``max_pending``; the oldest is dropped past it, counted in
    :attr:`dropped`) and are retried for ``write_timeout`` s each (failures
    counted in :attr:`lost`). While JetStream is out of reach each instance
    still knows the sessions it granted, and the others' as last seen: a
    ``kick_user`` then reaches those; the rest follow once the queue drains.

    Args:
        js: the JetStream context of the shared connection.
        kv: the bucket.
        bucket: its settings.
        ttl_writes: write expiring sessions with a per-message TTL (the bucket
            must allow it: nats-server 2.11+, buckets created by this library).
        write_timeout: seconds one write is retried.
        max_pending: writes queued at most.
        clock: Unix time (session expiries are Unix seconds).

    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: Bucket,
        *,
        ttl_writes: bool,
        write_timeout: float,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.bucket = bucket
        self.ttl_writes = ttl_writes
        self.write_timeout = write_timeout
        self.max_pending = max_pending
        self.written = 0
        self.lost = 0
        self.dropped = 0
        self._js = js
        self._kv = kv
        self._clock = clock
        self._queue: deque[tuple[Literal["put", "end"], Session]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._remember: Callable[[Session], object] | None = None
        self._drop: Callable[[str, int], object] | None = None
        self._failing = False

    def __repr__(self) -> str:
        return (
            f"SharedSessions({self.bucket.name!r}, pending={len(self._queue)}, "
            f"written={self.written}, lost={self.lost}, dropped={self.dropped})"
        )

    @property
    def pending(self) -> int:
        """Writes waiting (the one under way included)."""
        return len(self._queue) + (0 if self._idle.is_set() else 1)

    # -- the SessionStore protocol ------------------------------------------------------------

    def attach(
        self, remember: Callable[[Session], object], drop: Callable[[str, int], object]
    ) -> None:
        """Called by the registry: how sessions from other instances reach it."""
        self._remember, self._drop = remember, drop

    def recorded(self, session: Session) -> None:
        """Queue writing ``session`` (a login this instance allowed)."""
        self._enqueue("put", session)

    def ended(self, session: Session) -> None:
        """Queue purging ``session`` (its connection is gone)."""
        self._enqueue("end", session)

    # -- the copy -----------------------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        """Take one entry of the bucket into the registry (the mirror calls it)."""
        if self._remember is None or self._drop is None:
            return
        server_id, _, client = entry.key.rpartition(".")
        if not server_id or not client.isdigit():
            return
        if entry.operation is not None:
            self._drop(server_id, int(client))
            return
        try:
            session = _DECODE(entry.value or b"")
        except msgspec.DecodeError:
            logger.warning("bucket %s: unreadable session %s ignored", self.bucket.name, entry.key)
            return
        if session.key == (server_id, int(client)):
            self._remember(session)

    # -- writing ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever())

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a wait budget
        """Wait until every queued write was made (or given up).

        Raises:
            TimeoutError: still writing after ``timeout`` s.

        """
        async with asyncio.timeout(timeout):
            while self._queue or not self._idle.is_set():
                await self._idle.wait()
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop writing; what is still queued is not written."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _enqueue(self, kind: Literal["put", "end"], session: Session) -> None:
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((kind, session))
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Written together: one request each, in flight at once (a round trip
            # per write, awaited in turn, costs several times the CPU). The last
            # change of each connection wins, so a put never overtakes its end.
            batch: dict[tuple[str, int], tuple[Literal["put", "end"], Session]] = {}
            while self._queue and len(batch) < _BATCH:
                kind, session = self._queue.popleft()
                batch.pop(session.key, None)
                batch[session.key] = (kind, session)
            self._idle.clear()
            try:
                await asyncio.gather(*(self._write(kind, s) for kind, s in batch.values()))
            finally:
                self._idle.set()

    async def _write(self, kind: Literal["put", "end"], session: Session) -> None:
        operation = self._put if kind == "put" else self._end
        try:
            await write(
                functools.partial(operation, session),
                what=f"session {session.key[1]} on {session.server_id}",
                timeout=self.write_timeout,
            )
            self.written += 1
            if self._failing:
                self._failing = False
                logger.info("bucket %s: sessions are written again", self.bucket.name)
        except StoreUnavailable as exc:
            self.lost += 1
            if not self._failing:
                self._failing = True
                logger.warning("bucket %s: %s; other instances miss it", self.bucket.name, exc)
        except Exception:  # noqa: BLE001 - the writer goes on
            self.lost += 1
            logger.exception("bucket %s: writing a session failed", self.bucket.name)

    async def _put(self, session: Session) -> None:
        key = _key(session)
        data = _ENCODE(session)
        if self.ttl_writes and session.expires_at:
            left = session.expires_at - self._clock()
            if left <= 0:
                return  # expired while queued: nobody needs to know
            # Whole seconds, rounded up, and one more: never before nats-server drops it.
            ttl = math.ceil(left) + 1
            await self._js.publish(f"$KV.{self.bucket.name}.{key}", data, msg_ttl=ttl)
        else:
            await self._kv.put(key, data)

    async def _end(self, session: Session) -> None:
        marker_ttl = _MARKER_TTL if self.ttl_writes else None
        await self._kv.purge(_key(session), msg_ttl=marker_ttl)


def _key(session: Session) -> str:
    return f"{session.server_id}.{session.client_id}"
