"""How the pipeline applies a :class:`~faststream_callout.core.throttle.Throttle`.

:class:`ThrottleGate` stands in front of the identity lookup: attempts from
one source for one subject take turns, attempts in flight per source are
capped, every admitted attempt is counted (a timeout too), and a broken store
locks nobody out. :func:`admitted_attempt` tells a lookup which attempt it
serves, so that costly work can be queued fairly by source.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final, TypeVar

from faststream_callout.core.errors import Denied, Drop, StoreUnavailable
from faststream_callout.core.policy import resolve_by
from faststream_callout.core.throttle import (
    BUSY_REASON,
    Admission,
    Attempt,
    AttemptResult,
    Throttle,
    Throttled,
)
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = ["AdmittedAttempt", "ThrottleGate", "admitted_attempt"]

logger: Final = logging.getLogger("faststream_callout")
_T = TypeVar("_T")
_ADMIT: Final = Admission()
# An attempt that failed after the deadline is recorded in the background, within this.
_LATE_RECORD_TIMEOUT: Final = 2.0


@dataclass(frozen=True, slots=True)
class AdmittedAttempt:
    """The attempt whose lookup runs now (see :func:`admitted_attempt`).

    Attributes:
        attempt: its keys; ``attempt.source`` names its network.
        trusted: its source logged its subject in recently.

    """

    attempt: Attempt
    trusted: bool


_ADMITTED: ContextVar[AdmittedAttempt | None] = ContextVar("callout_admitted", default=None)


def admitted_attempt() -> AdmittedAttempt | None:
    """The attempt the throttle admitted for the lookup running now, or ``None``.

    For lookups that queue costly work: ``StaticTable`` queues password checks
    fairly by ``attempt.source`` and serves trusted attempts first.
    """
    return _ADMITTED.get()


@dataclass(slots=True)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting; the entry goes when it drops to 0


class ThrottleGate:
    """Puts a :class:`Throttle` in front of the identity lookup.

    Attempts for one subject from one source take turns from the throttle
    check until their result is counted, so concurrent guesses cannot all pass
    the check before the first failure is recorded; no other attempts wait for
    each other. Once a source has half its free unsuccessful attempts on
    record, at most ``policy.max_in_flight`` of its attempts (not counting
    trusted ones) are looked up at once; more are refused without a lookup.
    Every attempt past the lockouts is counted: a success, a failure
    (Denied), or one that went unanswered (too many at once, timed out, shed,
    failed: the source's count only). A throttle that raises is logged and
    ignored: a broken store must not lock anyone out.

    Args:
        throttle: the policy and its records.

    """

    __slots__ = ("_in_flight", "_tasks", "_turns", "throttle")

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle
        self._turns: dict[str, _Turn] = {}  # pairs with an attempt under way
        self._in_flight: dict[str, int] = {}  # capped sources with lookups under way
        self._tasks: set[asyncio.Task[None]] = set()  # late records

    @property
    def pending(self) -> int:
        """Pairs with an attempt under way (holding or waiting for their turn)."""
        return len(self._turns)

    def in_flight(self, source: str) -> int:
        """Capped attempts from ``source`` being looked up now."""
        return self._in_flight.get(source, 0)

    async def admit(
        self, request: AuthorizationRequest, deadline: float, lookup: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Run ``lookup`` unless the attempt is throttled, and count its result.

        Raises:
            Throttled: refused without a lookup (locked out, too many at once,
                no turn free in time), or shed by the lookup.
            TimeoutError: the loop time ``deadline`` passed, waiting for the
                turn, the throttle or the lookup.

        """
        try:
            attempt = self.throttle.attempt(request)
        except Exception:
            logger.exception("throttle failed; not throttling")
            return await lookup()
        if not attempt.subject:
            return await self._admitted(attempt, deadline, lookup)
        turn = await self._take_turn(attempt.pair, deadline)
        try:
            return await self._admitted(attempt, deadline, lookup)
        finally:
            self._end_turn(attempt.pair, turn)

    async def _admitted(
        self, attempt: Attempt, deadline: float, lookup: Callable[[], Awaitable[_T]]
    ) -> _T:
        admission = await self._check(attempt, deadline)
        if not admission.admitted:
            raise Throttled(admission.reason)
        # Only a source with many unsuccessful attempts is capped, never a trusted
        # attempt: a reconnect storm behind one NAT gets in, a flood from it does not.
        source = attempt.source if admission.capped else ""
        if source:
            cap = self.throttle.policy.max_in_flight
            if cap is not None and self.in_flight(source) >= cap:
                # Counted against the source (only): a flood locks its source out sooner.
                await self._record(attempt, AttemptResult.UNANSWERED, deadline)
                raise Throttled(BUSY_REASON)
            self._in_flight[source] = self.in_flight(source) + 1
        result: AttemptResult | None = AttemptResult.UNANSWERED
        token = _ADMITTED.set(AdmittedAttempt(attempt, admission.trusted))
        try:
            if admission.wait > 0:
                await asyncio.sleep(admission.wait)  # the turn reserved for it
            identity = await lookup()
        except Throttled:
            raise  # shed: the source's count, not the user's
        except Denied:
            result = AttemptResult.FAILED
            raise
        except (Drop, StoreUnavailable, asyncio.CancelledError):
            result = None  # silence, a store down, shutting down: not the client's attempt
            raise
        else:
            result = AttemptResult.SUCCEEDED
            return identity
        finally:
            _ADMITTED.reset(token)
            self._leave(source)
            if result is not None:
                await self._record(attempt, result, deadline)

    def _leave(self, source: str) -> None:
        if not source:
            return
        left = self._in_flight[source] - 1
        if left:
            self._in_flight[source] = left
        else:
            del self._in_flight[source]

    async def _check(self, attempt: Attempt, deadline: float) -> Admission:
        # A turn may take two thirds of what is left; the lookup gets the rest.
        max_wait = max(0.0, (deadline - asyncio.get_running_loop().time()) * 2 / 3)
        try:
            admission = self.throttle.check(attempt, max_wait)
            if not isinstance(admission, Admission):
                admission = await resolve_by(deadline, admission)
        except TimeoutError:
            raise
        except StoreUnavailable as exc:  # expected while its store is down: one line
            logger.warning("throttle store unavailable; not throttling: %s", exc)
            return _ADMIT
        except Exception:
            logger.exception("throttle failed; not throttling")
            return _ADMIT
        return admission if isinstance(admission, Admission) else _ADMIT

    async def _record(self, attempt: Attempt, result: AttemptResult, deadline: float) -> None:
        # Errors and a store that misses the deadline are logged: the decision stands.
        try:
            recorded = self.throttle.record(attempt, result)
        except Exception:
            logger.exception("throttle failed to record a %s attempt", result.value)
            return
        if recorded is None or not inspect.isawaitable(recorded):
            return
        if asyncio.get_running_loop().time() < deadline:
            await self._settle(recorded, result, asyncio.timeout_at(deadline))
            return
        # Past the deadline (a timeout): count it without delaying the reply further.
        late = asyncio.timeout(_LATE_RECORD_TIMEOUT)
        task = asyncio.ensure_future(self._settle(recorded, result, late))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _settle(
        recorded: Awaitable[object], result: AttemptResult, limit: asyncio.Timeout
    ) -> None:
        """Await a store's recording within ``limit``; a failing store is logged, not raised."""
        try:
            async with limit:
                await recorded
        except StoreUnavailable as exc:
            logger.warning(
                "throttle store unavailable; %s attempt not counted: %s", result.value, exc
            )
        except Exception:
            logger.exception("throttle failed to record a %s attempt", result.value)

    async def _take_turn(self, pair: str, deadline: float) -> _Turn:
        turn = self._turns.get(pair)
        if turn is None:
            turn = self._turns[pair] = _Turn()
        turn.users += 1
        try:
            if turn.lock.locked():  # a timer only when someone else's turn runs
                async with asyncio.timeout_at(deadline):
                    await turn.lock.acquire()
            else:
                await turn.lock.acquire()
        except BaseException:
            self._leave_turn(pair, turn)
            raise
        return turn

    def _end_turn(self, pair: str, turn: _Turn) -> None:
        turn.lock.release()
        self._leave_turn(pair, turn)

    def _leave_turn(self, pair: str, turn: _Turn) -> None:
        turn.users -= 1
        if turn.users == 0:
            del self._turns[pair]
