"""An opt-in cache of decisions, so a reconnect storm costs one lookup per credential.

:class:`DecisionCache` wraps an :class:`~faststream_callout.IdentityLookup` and a
:class:`~faststream_callout.PermissionBuilder` and is both: give it to the
pipeline (or ``PolicyProvider``) as the lookup *and* as the permission builder.
It keeps the :class:`~faststream_callout.Identity` and the
:class:`~faststream_callout.Grant`, never the reply: every login still gets a
fresh user JWT for its own ``user_nkey``, signed now.

Security properties:

- The key is an HMAC-SHA256, under a random key made per cache, of every
  request field the decision may depend on (:data:`CREDENTIAL_FIELDS`, always,
  and :data:`DEFAULT_KEY_FIELDS` unless narrowed). The cache holds no
  credential and no hash of one that could be attacked offline.
- NKey (and signed user JWT) logins are never cached: their signature is over a
  fresh nonce. Neither are requests without any credential.
- An entry lives at most ``max_ttl`` (the staleness bound after a password
  change or revocation), the grant's ``ttl`` and ``expires_at``, and the
  credential's expiry (the identity attribute ``expires_at``, or the ``exp`` of
  a JWT the client sent, read unverified and only ever to shorten the life).
- Denials are not cached unless ``negative_ttl`` is set: wrong passwords keep
  reaching the throttle and the store. Errors (an outage) are never cached.
- Concurrent identical logins share one lookup (single flight); if it fails,
  every waiter gets the same failure and nothing is cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import math
import operator
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import msgspec

from faststream_callout.core.errors import Denied, NotApplicable
from faststream_callout.core.policy import (
    Grant,
    Identity,
    IdentityLookup,
    PermissionBuilder,
    resolve,
)
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = [
    "CREDENTIAL_FIELDS",
    "DEFAULT_KEY_FIELDS",
    "OPTIONAL_KEY_FIELDS",
    "CacheStats",
    "DecisionCache",
]

#: Always in the key: the credentials a client presents (``client_tls`` with its
#: certificate chains). ``connect_opts.nkey``/``sig`` are absent on purpose: such
#: requests are never cached.
CREDENTIAL_FIELDS: Final = (
    "connect_opts.user",
    "connect_opts.password",
    "connect_opts.auth_token",
    "connect_opts.jwt",
    "client_tls",
)

#: In the key unless ``key_fields=`` says otherwise: where and how the client
#: connects and which server asks. Each is stable across one client's
#: reconnects; drop ``client_info.host`` only if no policy looks at addresses.
DEFAULT_KEY_FIELDS: Final = (
    "client_info.host",
    "client_info.kind",
    "client_info.type",
    "client_info.mqtt_id",
    "client_info.tags",
    "client_info.name_tag",
    "server_id.name",
    "server_id.cluster",
    "server_id.tags",
    "tags",
)

#: Left out by default, add them with ``key_fields=`` if your policy reads
#: them: descriptive fields that usually differ between client instances (so
#: they would defeat the cache) or between the nodes of a cluster.
OPTIONAL_KEY_FIELDS: Final = (
    "client_info.name",
    "client_info.user",
    "connect_opts.name",
    "connect_opts.lang",
    "connect_opts.version",
    "connect_opts.protocol",
    "server_id.id",
    "server_id.host",
    "server_id.version",
    "server_id.xkey",
)

# Never in the key, because they change on every attempt: user_nkey,
# client_info.id, client_info.nonce, request_nonce, connect_opts.sig.

_EXPIRES_AT: Final = "expires_at"  # the identity attribute the batteries set
_ENCODER: Final = msgspec.json.Encoder()


class _JWTPayload(msgspec.Struct):
    exp: float | None = None


_PAYLOAD_DECODER: Final = msgspec.json.Decoder(_JWTPayload)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a :class:`DecisionCache` since it was made.

    Attributes:
        hits: logins answered from the cache (negative hits included).
        misses: logins that started a lookup.
        coalesced: logins that waited for a lookup another login had started.
        bypassed: logins that are never cached (nkey signatures, no credential).
        negative_hits: logins denied from a cached denial (``negative_ttl``).
        evictions: entries dropped to stay within the size bounds.
        entries: grants cached now (expired ones not yet dropped included).
        denials: denials cached now.
        in_flight: lookups running now.
        suspended: whether the cache is suspended (:meth:`DecisionCache.suspend`).

    """

    hits: int
    misses: int
    coalesced: int
    bypassed: int
    negative_hits: int
    evictions: int
    entries: int
    denials: int
    in_flight: int
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: Identity | None  # None: the lookup denied
    grant: Grant | None  # None: a denial
    denial: type[Denied] | None
    reason: str
    deadline: float  # on the monotonic timer
    names: frozenset[str]  # for invalidate(): identity name, user name sent


@dataclass(frozen=True, slots=True)
class _Outcome:
    # What a flight produced for its waiters: an identity and either a grant or
    # the exception the permission builder raised (raised again by build()).
    identity: Identity
    grant: Grant | None
    error: Exception | None


@dataclass(frozen=True, slots=True)
class _Handoff:
    request: AuthorizationRequest
    identity: Identity
    grant: Grant | None
    error: Exception | None


@dataclass(slots=True)
class _Flight:
    task: asyncio.Task[_Outcome]
    waiters: int = 0


# lookup() hands the cached grant to build() through the request's own context:
# the pipeline calls both in one task, one after the other, with the same objects.
_handoff: ContextVar[_Handoff | None] = ContextVar("faststream_callout_cache_handoff", default=None)


class DecisionCache:
    """Caches identities and grants by a keyed hash of the credential; coalesces identical logins.

    Use one object as both ports::

        cache = DecisionCache(MyLookup(), MyPermissions(), max_ttl=30)
        CalloutPipeline(keys, cache, cache)  # or PolicyProvider(lookup=cache, permissions=cache)

    Cached objects are shared between logins: treat identities and grants as
    immutable. One cache belongs to one pipeline and one event loop.

    Args:
        lookup: the identity lookup whose answers are cached.
        permissions: the permission builder whose grants are cached.
        max_entries: grants kept at most; the least recently used goes first.
        max_ttl: seconds an entry lives at most: how long a changed password or
            a revoked user may still get in on a cached decision (see
            :meth:`invalidate` to act at once).
        negative_ttl: seconds a denial is cached; 0 (the default) caches none,
            so every wrong password reaches the lookup and the throttle.
        max_negative_entries: denials kept at most, apart from the grants (they
            are made by whoever guesses, and must not push grants out).
        key_fields: request fields in the key besides :data:`CREDENTIAL_FIELDS`
            (which are always in): names from :data:`DEFAULT_KEY_FIELDS` and
            :data:`OPTIONAL_KEY_FIELDS`. Every field your policy reads must be in
            the key; narrow it only knowingly.
        extra_key: returns more input for the key (e.g. a tenant chosen outside
            the request), or ``None`` to not cache this request at all.
        max_flight_time: seconds a shared lookup may run before it fails for
            everyone waiting on it (a hung lookup must not hold a credential
            hostage while new logins keep joining it).
        clock: Unix time (for absolute expiries); injectable for tests.
        timer: a monotonic clock (for entry lifetimes); injectable for tests.

    """

    def __init__(
        self,
        lookup: IdentityLookup,
        permissions: PermissionBuilder,
        *,
        max_entries: int = 10_000,
        max_ttl: float = 30.0,
        negative_ttl: float = 0.0,
        max_negative_entries: int = 1_000,
        key_fields: Iterable[str] = DEFAULT_KEY_FIELDS,
        extra_key: Callable[[AuthorizationRequest], str | bytes | None] | None = None,
        max_flight_time: float = 10.0,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(lookup, type) or not isinstance(lookup, IdentityLookup):
            raise TypeError(f"DecisionCache needs an IdentityLookup instance, got {lookup!r}")
        if isinstance(permissions, type) or not isinstance(permissions, PermissionBuilder):
            raise TypeError(
                f"DecisionCache needs a PermissionBuilder instance, got {permissions!r}"
            )
        if max_entries < 1 or max_negative_entries < 0:
            raise ValueError("max_entries must be >= 1 and max_negative_entries >= 0")
        for name, value in (("max_ttl", max_ttl), ("max_flight_time", max_flight_time)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not (negative_ttl >= 0 and math.isfinite(negative_ttl)):
            raise ValueError("negative_ttl must be >= 0 seconds")
        fields = list(dict.fromkeys(key_fields))
        unknown = [f for f in fields if f not in DEFAULT_KEY_FIELDS + OPTIONAL_KEY_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown or per-attempt key fields {unknown}; choose from "
                f"DEFAULT_KEY_FIELDS and OPTIONAL_KEY_FIELDS"
            )
        self._lookup = lookup
        self._permissions = permissions
        self.max_entries = max_entries
        self.max_ttl = float(max_ttl)
        self.negative_ttl = float(negative_ttl)
        self.max_negative_entries = max_negative_entries
        self.key_fields: tuple[str, ...] = (*CREDENTIAL_FIELDS, *fields)
        self._fields = operator.attrgetter(*self.key_fields)
        self._extra_key = extra_key
        self._max_flight_time = float(max_flight_time)
        self._clock = clock
        self._timer = timer
        # Per cache: keys are worthless outside this process and this object.
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._denials: OrderedDict[bytes, _Entry] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}
        self._generation = 0  # bumped by invalidate()/clear(): older flights do not store
        self._suspended = False
        self._hits = self._misses = self._coalesced = self._bypassed = 0
        self._negative_hits = self._evictions = 0

    # -- the two ports ----------------------------------------------------------

    def lookup(self, request: AuthorizationRequest) -> Identity | Awaitable[Identity]:
        """Return who the client is: cached, shared with an identical login, or looked up.

        Raises ``Denied`` as the wrapped lookup does (or from a cached denial).
        """
        _handoff.set(None)
        key = None if self._suspended else self._key(request)
        if key is None:
            self._bypassed += 1
            return self._lookup.lookup(request)
        now = self._timer()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.deadline > now:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._replay(request, entry)
            del self._entries[key]
        entry = self._denials.get(key)
        if entry is not None:
            if entry.deadline > now:
                self._hits += 1
                self._negative_hits += 1
                return self._replay(request, entry)
            del self._denials[key]
        return self._join(key, request)

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant | Awaitable[Grant]:
        """Return the grant decided with the identity :meth:`lookup` returned for ``request``.

        Falls back to the wrapped builder for identities that did not come from
        this cache's :meth:`lookup` (e.g. another lookup of a ``FirstMatch``).
        """
        handoff = _handoff.get()
        if handoff is not None and handoff.request is request and handoff.identity is identity:
            _handoff.set(None)
            if handoff.error is not None:
                raise handoff.error
            if handoff.grant is not None:
                return handoff.grant
        return self._permissions.build(identity, request)

    # -- management -------------------------------------------------------------

    def invalidate(self, name: str) -> int:
        """Forget every decision about ``name`` (identity name or the user name sent).

        Call it when a user's password, groups or permissions change. Lookups
        running now still answer their own logins but are not cached.
        Returns the number of entries dropped.
        """
        self._generation += 1
        dropped = 0
        for table in (self._entries, self._denials):
            for key in [k for k, entry in table.items() if name in entry.names]:
                del table[key]
                dropped += 1
        return dropped

    def clear(self) -> None:
        """Forget everything (e.g. after a bulk change in the user store)."""
        self._generation += 1
        self._entries.clear()
        self._denials.clear()

    def suspend(self) -> None:
        """Forget everything and look every login up until :meth:`resume`.

        For when invalidations may be missed: a shared cache whose invalidation
        feed is out of reach (:mod:`faststream_callout.integration.shared`).
        """
        self._suspended = True
        self.clear()

    def resume(self) -> None:
        """Cache again after :meth:`suspend`."""
        self._suspended = False

    @property
    def suspended(self) -> bool:
        """Whether the cache is suspended: every login is looked up, nothing is kept."""
        return self._suspended

    @property
    def stats(self) -> CacheStats:
        """The counters so far."""
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            coalesced=self._coalesced,
            bypassed=self._bypassed,
            negative_hits=self._negative_hits,
            evictions=self._evictions,
            entries=len(self._entries),
            denials=len(self._denials),
            in_flight=len(self._flights),
            suspended=self._suspended,
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        # Counts only: never a key, a name or a credential.
        return (
            f"DecisionCache({type(self._lookup).__name__}, {type(self._permissions).__name__}, "
            f"entries={len(self._entries)}/{self.max_entries}, max_ttl={self.max_ttl}, "
            f"negative_ttl={self.negative_ttl}, hits={self._hits}, misses={self._misses}, "
            f"coalesced={self._coalesced})"
        )

    # -- internals --------------------------------------------------------------

    def _key(self, request: AuthorizationRequest) -> bytes | None:
        """The keyed hash of the request's decision inputs; ``None``: not cacheable."""
        opts = request.connect_opts
        if opts.sig or opts.nkey:
            return None  # signed over a fresh nonce: the next attempt is a new credential
        tls = request.client_tls
        if not (
            opts.user
            or opts.password
            or opts.auth_token
            or opts.jwt
            or (tls is not None and (tls.certs or tls.verified_chains))
        ):
            return None  # nothing proves who it is: decide afresh
        extra: tuple[int, str | bytes] = (0, "")
        if self._extra_key is not None:
            supplied = self._extra_key(request)
            if supplied is None:
                return None
            # Tagged: bytes encode as base64 text, which must not equal a str.
            extra = (1, supplied) if isinstance(supplied, str) else (2, supplied)
        # JSON of a list is unambiguous (strings are quoted and escaped).
        payload = _ENCODER.encode((extra, self._fields(request)))
        return hmac.digest(self._secret, payload, "sha256")

    def _replay(self, request: AuthorizationRequest, entry: _Entry) -> Identity:
        # A fresh exception per login: a shared one would collect every traceback.
        error = entry.denial(entry.reason) if entry.denial is not None else None
        if entry.identity is None:
            raise error or Denied(entry.reason)
        _handoff.set(_Handoff(request, entry.identity, entry.grant, error))
        return entry.identity

    async def _join(self, key: bytes, request: AuthorizationRequest) -> Identity:
        flight = self._flights.get(key)
        if flight is None:
            self._misses += 1
            task = asyncio.create_task(self._fill(key, request, self._generation))
            flight = self._flights[key] = _Flight(task)
            task.add_done_callback(self._lander(key, flight))
        else:
            self._coalesced += 1
        flight.waiters += 1
        try:
            # Shielded: a waiter that gives up (its own deadline) leaves the
            # lookup running for the others.
            outcome = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.task.done():
                # Nobody waits any more: stop the lookup, as the pipeline would.
                flight.task.cancel()
                self._land(key, flight)
        _handoff.set(_Handoff(request, outcome.identity, outcome.grant, outcome.error))
        return outcome.identity

    def _lander(self, key: bytes, flight: _Flight) -> Callable[[object], None]:
        def land(_: object) -> None:
            self._land(key, flight)

        return land

    def _land(self, key: bytes, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _fill(self, key: bytes, request: AuthorizationRequest, generation: int) -> _Outcome:
        started = self._timer()
        async with asyncio.timeout(self._max_flight_time):
            try:
                identity = await resolve(self._lookup.lookup(request))
            except Denied as exc:
                self._store_denial(
                    key,
                    request=request,
                    identity=None,
                    exc=exc,
                    started=started,
                    generation=generation,
                )
                raise
            if not isinstance(identity, Identity):
                raise TypeError(f"IdentityLookup returned {type(identity).__name__}, not Identity")
            try:
                grant = await resolve(self._permissions.build(identity, request))
            except Denied as exc:
                self._store_denial(
                    key,
                    request=request,
                    identity=identity,
                    exc=exc,
                    started=started,
                    generation=generation,
                )
                return _Outcome(identity, None, exc)
            except Exception as exc:  # noqa: BLE001 - an outage: raised by each waiter's build()
                return _Outcome(identity, None, exc)
        if not isinstance(grant, Grant):
            error = TypeError(f"PermissionBuilder returned {type(grant).__name__}, not Grant")
            return _Outcome(identity, None, error)
        self._store(
            key,
            request=request,
            identity=identity,
            grant=grant,
            started=started,
            generation=generation,
        )
        return _Outcome(identity, grant, None)

    def _store(
        self,
        key: bytes,
        *,
        request: AuthorizationRequest,
        identity: Identity,
        grant: Grant,
        started: float,
        generation: int,
    ) -> None:
        if generation != self._generation:
            return  # invalidated while looking up: the answer may predate the change
        ttl = grant.ttl if grant.ttl is not None else math.inf
        deadline = started + min(self.max_ttl, ttl)  # counted from before the store was read
        absolute = [grant.expires_at, _credential_expiry(request)]
        if _EXPIRES_AT in identity.attributes:
            raw = identity.attributes[_EXPIRES_AT]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return  # an expiry we cannot read: do not cache
            absolute.append(float(raw))
        bounds = [a for a in absolute if a is not None]
        if any(math.isnan(b) for b in (ttl, *bounds)):
            return  # min() would skip a NaN: an unreadable expiry means no caching
        if bounds:
            deadline = min(deadline, self._timer() + (min(bounds) - self._clock()))
        if not deadline > self._timer():
            return
        names = frozenset(n for n in (identity.name, request.connect_opts.user) if n)
        self._entries[key] = _Entry(identity, grant, None, "", deadline, names)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evictions += 1

    def _store_denial(
        self,
        key: bytes,
        *,
        request: AuthorizationRequest,
        identity: Identity | None,
        exc: Denied,
        started: float,
        generation: int,
    ) -> None:
        if not self.negative_ttl or not self.max_negative_entries:
            return
        if generation != self._generation:
            return
        kind = NotApplicable if isinstance(exc, NotApplicable) else Denied
        names = frozenset(
            n for n in (identity.name if identity else "", request.connect_opts.user) if n
        )
        entry = _Entry(identity, None, kind, exc.reason, started + self.negative_ttl, names)
        self._denials[key] = entry
        self._denials.move_to_end(key)
        while len(self._denials) > self.max_negative_entries:
            self._denials.popitem(last=False)
            self._evictions += 1


def _credential_expiry(request: AuthorizationRequest) -> float | None:
    """The earliest ``exp`` of a JWT the client sent (bearer JWT, token or password).

    Read without verifying: it only ever shortens an entry's life, and the
    lookup (which does verify) decided whether the JWT is any good.
    """
    opts = request.connect_opts
    found: list[float] = []
    for value in (opts.jwt, opts.auth_token, opts.password):
        exp = _jwt_exp(value)
        if exp is not None:
            found.append(exp)
    return min(found) if found else None


def _jwt_exp(value: str) -> float | None:
    if value.count(".") != 2 or not value.startswith("eyJ"):
        return None
    payload = value.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        exp = _PAYLOAD_DECODER.decode(raw).exp
    except (binascii.Error, ValueError, msgspec.DecodeError):
        # Looks like a JWT but is not one we can read: no lifetime, no caching.
        return -math.inf
    return exp
