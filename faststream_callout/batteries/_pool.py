"""Worker threads for costly blocking checks, shared fairly between sources.

A ``ThreadPoolExecutor`` serves its queue first come, first served and lets it
grow without bound: a flood from one address queues ahead of everybody else
until every login times out. :class:`FairPool` instead

- serves trusted checks first (a source that logged the user in recently),
  then the sources in turn, one check each (round robin);
- keeps one thread for trusted checks (untrusted ones run on all threads but
  one), and one of the others for other sources (one source runs on all the
  untrusted threads but one): with the cores busy (argon2 computes its lanes
  in threads of its own), a check that waits for a thread is what makes a
  login late, so a returning user's check starts at once whatever floods in,
  and a single network never holds every thread;
- holds at most ``max_queue`` waiting checks; when full, it sheds the newest
  check of the source with the most waiting (longest queue drop), so a
  flooding source loses its own checks, not other people's;
- fails a shed check at once with :class:`Throttled`: a signed denial now
  instead of a timeout later.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream_callout.core.throttle import SHED_REASON, Throttled

__all__ = ["FairPool"]

_T = TypeVar("_T")


@dataclass(eq=False, slots=True)
class _Job:
    call: Callable[[], Any]
    source: str
    trusted: bool
    future: Future[Any] = field(default_factory=Future)


class FairPool:
    """Runs blocking calls in ``workers`` threads, fairly by source, from a bounded queue.

    Args:
        workers: threads (started when first needed).
        max_queue: checks waiting for a thread; more are shed.
        name: the threads' name prefix.

    """

    def __init__(self, workers: int, max_queue: int, *, name: str) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError("need workers >= 1 and max_queue >= 0")
        self.workers = workers
        self.max_queue = max_queue
        self._name = name
        self._lock = threading.Condition()
        self._trusted: deque[_Job] = deque()
        self._sources: OrderedDict[str, deque[_Job]] = OrderedDict()  # next to serve first
        self._running: Counter[str] = Counter()  # untrusted checks running, per source
        self._untrusted_threads = max(1, workers - 1)
        self._per_source = max(1, workers - 2)
        self._queued = 0
        self._free = 0  # threads not running a check (waiting, or about to take one)
        self._idle = 0  # threads waiting for a check
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def queued(self) -> int:
        """Checks waiting for a thread."""
        return self._queued

    async def run(self, call: Callable[[], _T], *, source: str, trusted: bool = False) -> _T:
        """Run ``call`` in a worker thread; cancelled while waiting, it never runs.

        Raises:
            Throttled: shed (the queue was full), now or while waiting.

        """
        job = _Job(call, source, trusted)
        shed = self._submit(job)
        if shed is not None and not shed.future.done():
            shed.future.set_exception(Throttled(SHED_REASON))
        job.future.add_done_callback(lambda _: self._forget(job))
        result: _T = await asyncio.wrap_future(job.future)
        return result

    def _submit(self, job: _Job) -> _Job | None:
        """Queue ``job``; return the job shed to make room (maybe ``job`` itself)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is closed")
            if job.trusted:
                self._trusted.append(job)
            else:
                self._sources.setdefault(job.source, deque()).append(job)
            self._queued += 1
            if self._idle:
                self._lock.notify()
            elif self._free < self._queued and len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                self._free += 1
                thread.start()
            # Checks a free thread is about to take are not waiting.
            return self._drop_one() if self._queued - self._free > self.max_queue else None

    def _drop_one(self) -> _Job:
        # The newest check of the longest queue: ties go to the most recently
        # served source (the end of the round), so a newcomer sheds itself.
        longest: deque[_Job] | None = None
        for queue in self._sources.values():
            if longest is None or len(queue) >= len(longest):
                longest = queue
        if longest is None:  # only trusted checks wait: the newest goes
            job = self._trusted.pop()
        else:
            job = longest.pop()
            if not longest:
                del self._sources[job.source]
        self._queued -= 1
        return job

    def _forget(self, job: _Job) -> None:
        """Take a cancelled (or shed) job out of the queue, if it is still there."""
        if not job.future.cancelled():
            return
        with self._lock:
            queue = self._trusted if job.trusted else self._sources.get(job.source)
            if queue is not None and job in queue:
                queue.remove(job)
                self._queued -= 1
                if not queue and not job.trusted:
                    del self._sources[job.source]

    def _take(self) -> _Job | None:
        """The next check to run: trusted first, then the next source not running one."""
        if self._trusted:
            return self._trusted.popleft()
        if self._running.total() >= self._untrusted_threads:
            return None
        for source, queue in self._sources.items():
            if self._running[source] >= self._per_source:
                continue
            job = queue.popleft()
            if queue:
                self._sources.move_to_end(source)
            else:
                del self._sources[source]
            self._running[source] += 1
            return job
        return None

    def _work(self) -> None:
        job: _Job | None = None
        while True:
            with self._lock:
                if job is not None:
                    self._free += 1
                    if not job.trusted:
                        self._running[job.source] -= 1
                        if not self._running[job.source]:
                            del self._running[job.source]
                while (job := None if self._closed else self._take()) is None:
                    if self._closed:
                        return
                    self._idle += 1
                    self._lock.wait()
                    self._idle -= 1
                self._queued -= 1
                self._free -= 1
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.call()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def close(self) -> None:
        """Stop the threads; waiting checks are cancelled, running ones finish."""
        with self._lock:
            self._closed = True
            waiting = [*self._trusted, *(job for q in self._sources.values() for job in q)]
            self._trusted.clear()
            self._sources.clear()
            self._queued = 0
            self._lock.notify_all()
        for job in waiting:
            job.future.cancel()
