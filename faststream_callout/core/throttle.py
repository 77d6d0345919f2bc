"""Brute-force protection that cannot be turned against the users it protects.

A login attempt counts against three records (see :class:`ThrottlePolicy`):

- its **pair**, the subject (user name, nkey, token or JWT fingerprint) from
  one source: a few free failures, then a lockout that doubles. Only that
  source is refused, so guessing from one address cannot lock the user out
  everywhere.
- its **subject** across all sources: a looser limit past which attempts
  from sources that have not logged the subject in recently take turns
  (one per interval) instead of being refused.
- its **source**, the client address (IPv6 aggregated to a /64 by default):
  every attempt that does not succeed counts, timeouts and shed load
  included, then a lockout. Sources that logged the subject in recently are
  not refused for other sources' failures.

The policy is pure (records in, records out) and the counts live in a
:class:`ThrottleStore`, sync or async, so a store shared between instances
(e.g. a NATS KV bucket) applies the same policy as :class:`MemoryStore`.
How the pipeline applies a throttle (turns, the cap on attempts in flight)
is in :mod:`faststream_callout.core.throttle_gate`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import inspect
import ipaddress
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from faststream_callout.core.errors import Denied
from faststream_callout.core.policy import resolve
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = [
    "BUSY_REASON",
    "LOCKED_REASON",
    "SHED_REASON",
    "Admission",
    "Attempt",
    "AttemptResult",
    "Backoff",
    "MemoryStore",
    "MemoryThrottle",
    "NoThrottle",
    "Throttle",
    "ThrottlePolicy",
    "ThrottleRecord",
    "ThrottleStore",
    "Throttled",
    "fold_name",
    "source_of",
]

LOCKED_REASON: Final = "too many failed attempts; try again later"
BUSY_REASON: Final = "too many attempts at once; try again later"
SHED_REASON: Final = "service busy; try again later"


class Throttled(Denied):
    """An attempt refused to protect the service, not judged: a lockout or shed load.

    The pipeline answers it with a signed denial (outcome ``throttled``). A
    lookup may raise it when it sheds load (``StaticTable`` does when its
    hash queue is full): the throttle then counts the attempt against its
    source only, never against the user.
    """


# -- keys: who attempts, from where -----------------------------------------------------------


def fold_name(name: str) -> str:
    """``name`` as one budget: NFKC-normalised, case-folded, format characters dropped.

    ``Alice``, ``ALICE``, ``alice`` followed by a zero-width space (U+200B)
    and ``alice`` in full-width letters all fold to ``alice``. ``StaticTable``
    looks names up folded the same way, so the throttle counts every spelling
    a lookup accepts as one user.
    """
    if name.isascii():  # no compatibility forms or format characters below U+0080
        return name.lower()
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


@functools.lru_cache(maxsize=4096)
def source_of(host: str, *, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network ``host`` counts as: ``203.0.113.7/32``, ``2001:db8:1:2::/64``.

    One IPv6 host usually owns a whole /64, so counting /128s would give it
    billions of fresh budgets. IPv4-mapped IPv6 addresses count as IPv4.
    Anything that is not an IP address is returned as it is.
    """
    if ipv4_prefix == 32 and host.count(".") == 3 and host.replace(".", "").isdigit():
        return f"{host}/32"  # nats-server writes IPv4 addresses canonically: no parsing
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network((address, prefix), strict=False))


@dataclass(frozen=True, slots=True)
class Attempt:
    """The records one login attempt counts against (see :meth:`ThrottlePolicy.attempt`).

    Attributes:
        subject: ``user:<folded name>``, ``nkey:<key>``, ``token:<fingerprint>`` or
            ``jwt:<fingerprint>``; empty when the client presented none of them.
        source: ``src:<network>``; empty when the server did not say.

    """

    subject: str
    source: str
    pair: str = field(init=False, repr=False)
    """The key of the subject from this source (empty without a subject)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pair", f"{self.subject}|{self.source}" if self.subject else "")

    @property
    def keys(self) -> tuple[str, str, str]:
        """The pair, subject and source keys; empty strings for the missing ones."""
        return self.pair, self.subject, self.source


# -- the policy: pure functions of records ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleRecord:
    """What a :class:`ThrottleStore` keeps per key; written only by the policy.

    Times are the throttle's clock (wall time for a store shared between
    processes). A store may drop a record once its clock passes ``expires_at``.

    Attributes:
        failures: counted failures since the record was last forgotten or reset.
        last_failure: when the last one was counted.
        locked_until: pairs and sources are refused until then; for a subject,
            untrusted attempts take turns. 0 while within the free failures:
            a store keeps records with a lockout longer than others.
        next_turn: subjects: when the last reserved turn starts.
        trusted_until: pairs: the source logged the subject in recently.
        expires_at: nothing in the record matters after this.

    """

    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0
    next_turn: float = 0.0
    trusted_until: float = 0.0
    expires_at: float = 0.0


_EMPTY: Final = ThrottleRecord()


def _live(record: ThrottleRecord | None, now: float) -> ThrottleRecord | None:
    return None if record is None or record.expires_at < now else record


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """One record's allowance: free failures, then a period that doubles per failure.

    Attributes:
        free_failures: failures allowed before the first period.
        base_lockout: the first period, in seconds.
        max_lockout: the longest period, in seconds.
        forget_after: seconds without a failure after which the count starts over.

    """

    free_failures: int
    base_lockout: float = 1.0
    max_lockout: float = 300.0
    forget_after: float = 900.0

    def __post_init__(self) -> None:
        if self.free_failures < 0:
            raise ValueError("free_failures must not be negative")
        if not 0 < self.base_lockout <= self.max_lockout:
            raise ValueError("need 0 < base_lockout <= max_lockout")
        if self.forget_after <= 0:
            raise ValueError("forget_after must be positive")

    def lockout(self, failures: int) -> float:
        """The period after ``failures`` failures: 0 within the free ones."""
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_lockout, self.base_lockout * 2.0 ** min(over - 1, 30))

    def count_failure(self, record: ThrottleRecord | None, now: float) -> ThrottleRecord:
        """``record`` with one more failure at ``now`` (a forgotten one starts over)."""
        live = _live(record, now) or _EMPTY
        failures = live.failures + 1
        period = self.lockout(failures)
        locked_until = now + period if period else 0.0
        return ThrottleRecord(
            failures,
            now,
            locked_until,
            live.next_turn,
            live.trusted_until,
            max(now + self.forget_after, locked_until, live.trusted_until),
        )


class AttemptResult(enum.Enum):
    """How an attempt ended, for :meth:`Throttle.record`."""

    SUCCEEDED = "succeeded"  # the lookup returned an identity
    FAILED = "failed"  # Denied (wrong or unknown credentials): counts everywhere
    UNANSWERED = "unanswered"  # too many at once, timed out, shed, failed: the source only


@dataclass(frozen=True, slots=True)
class Admission:
    """The throttle's answer before the lookup.

    Attributes:
        admitted: whether the lookup may run.
        reason: why not (the denial's reason).
        wait: seconds to wait for the attempt's turn before the lookup.
        trusted: the source logged this subject in recently.
        capped: the source's attempts in flight are capped (``max_in_flight``):
            it has half its free unsuccessful attempts on record.

    """

    admitted: bool = True
    reason: str = ""
    wait: float = 0.0
    trusted: bool = False
    capped: bool = False


_ADMIT: Final = Admission()
_ADMIT_CAPPED: Final = Admission(capped=True)
_ADMIT_TRUSTED: Final = Admission(trusted=True)
_LOCKED: Final = Admission(admitted=False, reason=LOCKED_REASON)


@dataclass(frozen=True, slots=True)
class _TurnNeeded:
    """The subject is past its free failures: the attempt must reserve a turn."""

    capped: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """How many attempts are free, what follows, and how attempts are keyed.

    The defaults, and what each limit does:

    Attributes:
        per_pair: failures of one subject from one source: 5 free, then that
            source is refused for that subject for 1 s, doubling to 5 min.
        per_subject: failures of one subject from all sources: 20 free, then
            attempts from sources not trusted for it take turns, one per
            period (1 s), each waiting at most 2/3 of its decision budget
            (refused when no turn is free in time). Never a refusal outright.
        per_source: attempts from one source that did not succeed (wrong or
            unknown credentials, too many at once, timeouts, shed load,
            errors; not those refused by a lockout): 100 free, then the source
            is refused for 1 s, doubling to 1 min, except for subjects it is
            trusted for.
        max_in_flight: attempts from one source being looked up at once, per
            process, once the source has half its free unsuccessful attempts
            on record (trusted attempts are not counted); more are refused at
            once. An honest burst (a fleet behind one NAT reconnecting after a
            restart, with a few wrong passwords) is not capped. ``None``: no cap.
        trust_for: seconds a source stays trusted for a subject after logging it in.
        ipv4_prefix: IPv4 addresses in one network of this size count as one source.
        ipv6_prefix: the same for IPv6 (a /64 is usually one host or site).
        normalize_user: maps a CONNECT user name to its budget; by default
            :func:`fold_name`, as ``StaticTable`` matches names. A lookup that
            matches names differently should pass its own normalisation here.

    """

    per_pair: Backoff = Backoff(free_failures=5, base_lockout=1.0, max_lockout=300.0)
    per_subject: Backoff = Backoff(free_failures=20, base_lockout=1.0, max_lockout=1.0)
    per_source: Backoff = Backoff(free_failures=100, base_lockout=1.0, max_lockout=60.0)
    max_in_flight: int | None = 8
    trust_for: float = 7 * 86400.0
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    normalize_user: Callable[[str], str] = fold_name

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (or None)")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("prefixes must be 0-32 (IPv4) and 0-128 (IPv6)")
        if self.trust_for < 0:
            raise ValueError("trust_for must not be negative")

    def attempt(self, request: AuthorizationRequest) -> Attempt:
        """The records ``request`` counts against.

        Tokens and JWTs are fingerprinted (a SHA-256 prefix), never stored.
        """
        opts = request.connect_opts
        if opts.user:
            subject = f"user:{self.normalize_user(opts.user)}"
        elif opts.nkey:
            subject = f"nkey:{opts.nkey}"
        elif opts.auth_token:
            subject = "token:" + _fingerprint(opts.auth_token)
        elif opts.jwt:
            subject = "jwt:" + _fingerprint(opts.jwt)
        else:
            subject = ""
        host = request.client_info.host
        source = (
            "src:" + source_of(host, ipv4_prefix=self.ipv4_prefix, ipv6_prefix=self.ipv6_prefix)
            if host
            else ""
        )
        return Attempt(subject, source)

    def admission(
        self,
        pair: ThrottleRecord | None,
        subject: ThrottleRecord | None,
        source: ThrottleRecord | None,
        now: float,
    ) -> Admission | _TurnNeeded:
        """Whether an attempt with these records may be looked up now."""
        pair, subject, source = _live(pair, now), _live(subject, now), _live(source, now)
        if pair is not None and pair.locked_until > now:
            return _LOCKED
        if pair is not None and pair.trusted_until >= now:
            return _ADMIT_TRUSTED  # other sources' failures do not block a known source
        if source is not None and source.locked_until > now:
            return _LOCKED
        # Half the source's allowance used up: it may be flooding; cap it.
        capped = source is not None and 2 * source.failures >= self.per_source.free_failures
        if subject is not None and subject.failures > self.per_subject.free_failures:
            return _TurnNeeded(capped)
        return _ADMIT_CAPPED if capped else _ADMIT

    def take_turn(
        self, subject: ThrottleRecord | None, now: float, max_wait: float
    ) -> tuple[ThrottleRecord | None, float | None]:
        """Reserve the subject's next turn: the new record and the turn's start.

        The start is ``None`` when no turn begins within ``max_wait`` seconds
        (the record is then unchanged).
        """
        live = _live(subject, now)
        if live is None or live.failures <= self.per_subject.free_failures:
            return subject, now  # forgotten meanwhile: no turns needed
        # Each turn a period after the one before (the first: at once).
        start = max(now, live.next_turn + self.per_subject.lockout(live.failures))
        if start - now > max_wait:
            return subject, None
        reserved = ThrottleRecord(
            live.failures,
            live.last_failure,
            live.locked_until,
            start,
            live.trusted_until,
            live.expires_at,
        )
        return reserved, start

    def trust(self, pair: ThrottleRecord | None, now: float) -> ThrottleRecord:
        """The pair after a login: failures cleared, the source trusted for ``trust_for``."""
        del pair  # a login starts the pair over
        until = now + self.trust_for
        return ThrottleRecord(trusted_until=until, expires_at=until)

    def changes(
        self, attempt: Attempt, result: AttemptResult, now: float
    ) -> list[tuple[str, Callable[[ThrottleRecord | None], ThrottleRecord | None]]]:
        """The record updates (key, change) that count ``result``."""
        pair, subject, source = attempt.keys
        updates: list[tuple[str, Callable[[ThrottleRecord | None], ThrottleRecord | None]]] = []
        if result is AttemptResult.SUCCEEDED:
            if pair:
                updates.append((pair, functools.partial(self.trust, now=now)))
            return updates
        if result is AttemptResult.FAILED:
            if pair:
                updates.append((pair, functools.partial(self.per_pair.count_failure, now=now)))
            if subject:
                updates.append(
                    (subject, functools.partial(self.per_subject.count_failure, now=now))
                )
        if source:
            updates.append((source, functools.partial(self.per_source.count_failure, now=now)))
        return updates


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:24]


# -- storage -----------------------------------------------------------------------------------


@runtime_checkable
class ThrottleStore(Protocol):
    """Where a :class:`Throttle` keeps its records; methods may be sync or async.

    Keys are opaque strings of any characters (a store with a restricted key
    alphabet, such as a NATS KV bucket, encodes or hashes them). A store shared
    between processes must apply ``update`` atomically (compare-and-set by
    revision, retried), and should drop records after their ``expires_at``.
    """

    def load(
        self, keys: Sequence[str]
    ) -> Sequence[ThrottleRecord | None] | Awaitable[Sequence[ThrottleRecord | None]]:
        """The records of ``keys`` (``None`` for a missing one), in order."""
        ...

    def update(
        self, key: str, change: Callable[[ThrottleRecord | None], ThrottleRecord | None]
    ) -> ThrottleRecord | Awaitable[ThrottleRecord | None] | None:
        """Atomically replace the record of ``key`` by ``change(record)``; ``None`` deletes it.

        ``change`` is pure and may be called more than once (retries after a
        conflict); the value stored is that of its last call. Returns the new
        record.
        """
        ...


class MemoryStore:
    """A :class:`ThrottleStore` in this process, holding at most ``max_entries`` records.

    When full, the least recently updated record goes, but in three tiers:
    records within their free failures first, then records of trusted pairs,
    and records past their free failures (a lockout under way or a count
    that would double it) last. A spray of distinct names therefore cannot
    end a victim's lockout; memory stays bounded even when every record is
    locked.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._size = 0
        # Tiers in eviction order; each an LRU by last update.
        self._tiers: tuple[OrderedDict[str, ThrottleRecord], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )

    @staticmethod
    def _tier(record: ThrottleRecord) -> int:
        if record.locked_until:
            return 2
        return 1 if record.trusted_until else 0

    def get(self, key: str) -> ThrottleRecord | None:
        """The record of ``key``, or ``None``."""
        for tier in self._tiers:
            record = tier.get(key)
            if record is not None:
                return record
        return None

    def load(self, keys: Sequence[str]) -> list[ThrottleRecord | None]:
        """The records of ``keys``, in order."""
        return [self.get(key) for key in keys]

    def update(
        self, key: str, change: Callable[[ThrottleRecord | None], ThrottleRecord | None]
    ) -> ThrottleRecord | None:
        """Replace the record of ``key`` by ``change(record)``; evict when over the bound."""
        old = None
        for tier in self._tiers:
            old = tier.pop(key, None)
            if old is not None:
                self._size -= 1
                break
        new = change(old)
        if new is not None:
            self._tiers[self._tier(new)][key] = new
            self._size += 1
            if self._size > self.max_entries:
                self._evict()
        return new

    def _evict(self) -> None:
        for tier in self._tiers:
            if tier:
                tier.popitem(last=False)
                self._size -= 1
                return

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


# -- the throttle: the policy over a store -------------------------------------------------


@dataclass(slots=True)
class _Reservation:
    """Captures the turn reserved by the store's last call of :meth:`change`."""

    policy: ThrottlePolicy
    now: float
    max_wait: float
    capped: bool
    start: float | None = None

    def change(self, record: ThrottleRecord | None) -> ThrottleRecord | None:
        record, self.start = self.policy.take_turn(record, self.now, self.max_wait)
        return record

    def admission(self) -> Admission:
        if self.start is None:
            return _LOCKED
        return Admission(wait=self.start - self.now, capped=self.capped)


class Throttle:
    """Brute-force protection: a :class:`ThrottlePolicy` applied to the records of a store.

    Provide one to the pipeline (``CalloutPipeline(throttle=...)``, or
    ``PolicyProvider(throttle=...)``). :class:`MemoryThrottle` keeps the records
    in this process; to share them between instances, pass a store that
    shares them: the same policy then applies to the shared counts.

    Args:
        store: where the records live; its methods may be sync or async.
        policy: the limits; :class:`ThrottlePolicy` defaults when ``None``.
        clock: seconds; wall time (the default) for a store shared between processes.

    """

    def __init__(
        self,
        store: ThrottleStore,
        policy: ThrottlePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy or ThrottlePolicy()
        self._clock = clock

    def attempt(self, request: AuthorizationRequest) -> Attempt:
        """The records ``request`` counts against."""
        return self.policy.attempt(request)

    def check(self, attempt: Attempt, max_wait: float = 0.0) -> Admission | Awaitable[Admission]:
        """Whether ``attempt`` may be looked up, waiting at most ``max_wait`` s for a turn.

        An admission with ``wait`` has reserved the subject's turn that many
        seconds from now. Awaitable here; :class:`MemoryThrottle` answers at once.
        """
        return self._check(attempt, max_wait)

    def record(self, attempt: Attempt, result: AttemptResult) -> Awaitable[None] | None:
        """Count how ``attempt`` ended. Awaitable here; :class:`MemoryThrottle` counts at once."""
        return self._record(attempt, result)

    async def _check(self, attempt: Attempt, max_wait: float) -> Admission:
        now = self._clock()
        present = [key for key in attempt.keys if key]
        loaded = await resolve(self.store.load(present))
        found = dict(zip(present, loaded, strict=True))
        pair, subject, source = (found.get(key) for key in attempt.keys)
        admission = self.policy.admission(pair, subject, source, now)
        if isinstance(admission, Admission):
            return admission
        reservation = _Reservation(self.policy, now, max_wait, admission.capped)
        await resolve(self.store.update(attempt.subject, reservation.change))
        return reservation.admission()

    async def _record(self, attempt: Attempt, result: AttemptResult) -> None:
        # Separate records, written at once: a shared store's write is a round trip.
        changes = self.policy.changes(attempt, result, self._clock())
        writes = [self.store.update(key, change) for key, change in changes]
        await asyncio.gather(*(write for write in writes if inspect.isawaitable(write)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.store).__name__})"


class MemoryThrottle(Throttle):
    """A :class:`Throttle` over a :class:`MemoryStore`: counts kept in this process.

    Args:
        policy: the limits; :class:`ThrottlePolicy` defaults when ``None``.
        max_entries: records kept (see :class:`MemoryStore` for which go first).
        clock: monotonic seconds; injectable for tests.

    """

    store: MemoryStore

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(MemoryStore(max_entries), policy, clock=clock)

    # The same steps as Throttle's, without awaiting: no coroutine, no timer.

    def check(self, attempt: Attempt, max_wait: float = 0.0) -> Admission:
        """Whether ``attempt`` may be looked up, waiting at most ``max_wait`` s for a turn."""
        now = self._clock()
        store = self.store
        pair, subject, source = attempt.keys
        admission = self.policy.admission(
            store.get(pair), store.get(subject), store.get(source), now
        )
        if isinstance(admission, Admission):
            return admission
        reservation = _Reservation(self.policy, now, max_wait, admission.capped)
        store.update(subject, reservation.change)
        return reservation.admission()

    def record(self, attempt: Attempt, result: AttemptResult) -> None:
        """Count how ``attempt`` ended."""
        for key, change in self.policy.changes(attempt, result, self._clock()):
            self.store.update(key, change)

    def __len__(self) -> int:
        return len(self.store)


class NoThrottle(Throttle):
    """A :class:`Throttle` that admits everything: provide it to turn throttling off."""

    def __init__(self) -> None:
        super().__init__(MemoryStore(1), ThrottlePolicy(max_in_flight=None))

    def check(self, attempt: Attempt, max_wait: float = 0.0) -> Admission:
        """Always admitted."""
        del attempt, max_wait
        return _ADMIT

    def record(self, attempt: Attempt, result: AttemptResult) -> None:
        """Ignored."""
