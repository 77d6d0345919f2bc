"""Sessions and revocation: who the callout let in, and how to get them out again.

:class:`SessionRegistry` is a pipeline observer that remembers every login the
pipeline allowed (user_nkey, identity, account, server, client id, expiry).
With a system-account connection it can kick those connections
(``$SYS.REQ.SERVER.<server_id>.KICK``, :func:`kick`) and, told by
:meth:`SessionRegistry.follow`, forget the ones that disconnected. In operator
mode :func:`revoke_users` adds user keys to an account JWT's ``revocations`` and
pushes it (``$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE``): every server then drops
those connections. A kicked user simply logs in again: :class:`RevocationList`
makes the callout refuse that.

What the registry knows: it records the logins *issued* (allowed by the
pipeline). nats-server may still refuse one, and a client may leave at any
time; only :meth:`SessionRegistry.follow` (disconnect events from the system
account) turns "issued" into "connected". Without it entries
live until their user JWT expires (when nats-server disconnects the client
anyway) or ``max_entries`` pushes them out.

A connection is named by ``(server_id, client_id)``: nats-server never reuses a
client id, and its server id (a public key) changes at every start, so a stale
entry can only miss (the server answers "no such client"), never hit another
connection.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Protocol, runtime_checkable

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from faststream_callout.core.errors import ConfigurationError, Denied, InvalidJWTError
from faststream_callout.core.pipeline import Decision
from faststream_callout.core.policy import Identity, IdentityLookup, resolve
from faststream_callout.core.stages import printable
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key
from faststream_callout.protocol.operator import decode_account_jwt

__all__ = [
    "DISCONNECT_SUBJECT",
    "ClaimsUpdate",
    "KickResult",
    "KickStatus",
    "Revocation",
    "RevocationGuard",
    "RevocationList",
    "Revocations",
    "Session",
    "SessionRegistry",
    "SessionStore",
    "kick",
    "push_account_jwt",
    "revocation_deadline",
    "revoke_users",
    "with_revocations",
]

#: Disconnect advisories, published in the system account for every account; a
#: login the server refused (also one we allowed) gets one too ("Authentication Failure").
DISCONNECT_SUBJECT: Final = "$SYS.ACCOUNT.*.DISCONNECT"
_DISCONNECT_TYPE: Final = "io.nats.server.advisory.v1.client_disconnect"
_NO_SUCH_CLIENT: Final = "no such client"  # DisconnectClientByID's error text
_NO_RESPONDERS: Final = (
    "no server answered: it is gone (a restarted server has a new id), "
    "or this connection is not in the system account"
)
_ALL_USERS: Final = "*"

sessions_logger: Final = logging.getLogger("faststream_callout.sessions")


@dataclass(frozen=True, slots=True)
class Session:
    """A login the pipeline allowed: one client connection on one server.

    Attributes:
        user_nkey: the user public key nats-server generated for this
            connection (the issued JWT's subject); new at every login.
        identity: the :class:`~faststream_callout.Identity` name.
        account: the account the user was placed in (name, or ``A...`` key).
        server_id: the server's public key (``N...``); the kick subject uses it.
        server_name: the server's configured name, for people.
        client_id: the connection id (``cid``) on that server.
        issued_at: Unix time the user JWT was issued (its ``iat``).
        expires_at: Unix time it expires and the server disconnects; 0 for never.
        host: the client's address as the server saw it.
        client_name: the name the client gave in CONNECT (unverified).

    """

    user_nkey: str
    identity: str
    account: str
    server_id: str
    server_name: str
    client_id: int
    issued_at: int
    expires_at: int = 0
    host: str = ""
    client_name: str = ""

    @property
    def key(self) -> tuple[str, int]:
        """``(server_id, client_id)``: what names the connection."""
        return (self.server_id, self.client_id)

    def expired(self, now: float) -> bool:
        """Whether the user JWT is past its expiry at Unix time ``now``."""
        return 0 < self.expires_at < now


class KickStatus(Enum):
    """What a server said about one kick."""

    KICKED = "kicked"  # the server closed the connection and said so
    NOT_FOUND = "not_found"  # the server has no such client (it already left)
    ERROR = "error"  # no (valid) answer: nothing is known


@dataclass(frozen=True, slots=True)
class KickResult:
    """The outcome of kicking one connection; ``detail`` is the server's words or our reason."""

    server_id: str
    client_id: int
    status: KickStatus
    detail: str = ""
    session: Session | None = None

    @property
    def kicked(self) -> bool:
        """Whether the server confirmed it closed the connection."""
        return self.status is KickStatus.KICKED


async def kick(
    nc: Client,
    server_id: str,
    client_id: int,
    *,
    timeout: float = 2.0,  # noqa: ASYNC109 - per request
) -> KickResult:
    """Ask server ``server_id`` to close connection ``client_id``.

    ``nc`` must be connected to the system account. Only the server's own answer
    counts: ``KICKED`` when it confirms, ``NOT_FOUND`` when it has no such
    client, ``ERROR`` otherwise (no responders, a timeout, an unexpected answer).
    """

    def result(status: KickStatus, detail: str = "") -> KickResult:
        return KickResult(server_id, client_id, status, detail)

    if not is_public_key(server_id, KeyKind.SERVER):
        return result(KickStatus.ERROR, "server id is not a server public key (N...)")
    if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 1:
        return result(KickStatus.ERROR, "client id must be a positive integer")
    answer = await _ask(
        nc, f"$SYS.REQ.SERVER.{server_id}.KICK", json.dumps({"cid": client_id}).encode(), timeout
    )
    if isinstance(answer, str):
        return result(KickStatus.ERROR, answer)
    error = answer.get("error")
    if error is not None:
        description = _description(error)
        if _NO_SUCH_CLIENT in description:
            return result(KickStatus.NOT_FOUND, description)
        return result(KickStatus.ERROR, description)
    if _server_id(answer) != server_id:
        return result(KickStatus.ERROR, "the answer did not come from that server")
    return result(KickStatus.KICKED)


async def _ask(
    nc: Client,
    subject: str,
    payload: bytes,
    timeout: float,  # noqa: ASYNC109 - per request
) -> dict[str, Any] | str:
    """The JSON object a system service answered, or why there is none."""
    try:
        reply: Msg = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        return _NO_RESPONDERS
    except TimeoutError:  # nats.errors.TimeoutError is one too
        return f"no answer within {timeout:g}s"
    except (nats.errors.Error, OSError) as exc:
        return f"request failed: {type(exc).__name__}"
    try:
        body = json.loads(reply.data)
    except ValueError:
        return "the answer is not JSON"
    if not isinstance(body, dict):
        return "the answer is not a JSON object"
    return body


def _description(error: object) -> str:
    if isinstance(error, Mapping):
        return str(error.get("description") or "the server reported an error")
    return str(error) or "the server reported an error"


def _server_id(answer: Mapping[str, Any]) -> str:
    server = answer.get("server")
    return str(server.get("id", "")) if isinstance(server, Mapping) else ""


class SessionStore(Protocol):
    """Where a :class:`SessionRegistry` shares its sessions with other instances.

    The registry keeps the policy (indexes, expiry, bounds, kicks) and tells the
    store what changed here; the store brings in what changed elsewhere through
    the two functions it is given by :meth:`attach`, which do not call it back.
    Both calls come from the login path and must not block (queue the write).
    :class:`faststream_callout.integration.shared.SharedSessions` keeps them in
    a JetStream KV bucket.
    """

    def attach(
        self, remember: Callable[[Session], object], drop: Callable[[str, int], object]
    ) -> None:
        """Called once by the registry: apply sessions recorded and ended elsewhere."""
        ...

    def recorded(self, session: Session) -> None:
        """Called when this instance recorded ``session`` (a login it allowed)."""
        ...

    def ended(self, session: Session) -> None:
        """``session``'s connection is gone here: kicked, revoked or disconnected."""
        ...


class SessionRegistry:
    """Remembers allowed logins, finds them by identity, account or user_nkey, kicks them.

    It is a pipeline observer: ``observers=[registry]``, ``observe(pipeline,
    registry)`` or ``ObserverProvider(registry)``. Without a ``store`` it knows
    the logins *this* instance allowed; with a shared one (see
    :mod:`faststream_callout.integration.shared`) those of every instance.

    Memory is bounded: an entry goes when its user JWT expires (checked on every
    call, so no timer is needed: nothing grows while nothing is recorded), when
    a disconnect event names it (see :meth:`follow`), after a kick the server
    confirmed, or, oldest first, when ``max_entries`` is reached (counted in
    :attr:`evicted`). Logins without expiry (no ``ttl``) are only forgotten the
    last two ways: give grants a ttl or follow the events.

    Args:
        max_entries: at most this many sessions are kept.
        clock: returns Unix time in seconds (the JWT times are Unix seconds).
        store: shares sessions with other instances; ``None``: this process only.

    """

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        store: SessionStore | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self.store = store
        self._sessions: OrderedDict[tuple[str, int], Session] = OrderedDict()
        self._by_identity: dict[str, set[tuple[str, int]]] = {}
        self._by_account: dict[str, set[tuple[str, int]]] = {}
        self._by_nkey: dict[str, tuple[str, int]] = {}
        self._expiries: list[tuple[int, str, int]] = []  # heap of (expires_at, server_id, cid)
        self.following = False
        self.evicted = 0
        if store is not None:
            store.attach(self._remember, self._drop)

    def __repr__(self) -> str:
        return (
            f"SessionRegistry({len(self._sessions)} sessions, max_entries={self.max_entries}, "
            f"{'connected' if self.following else 'issued'})"
        )

    def __len__(self) -> int:
        """How many sessions are remembered (expired ones dropped first)."""
        self.prune()
        return len(self._sessions)

    # -- recording ---------------------------------------------------------------

    def __call__(self, decision: Decision) -> None:
        """Pipeline observer: remember an allowed login."""
        request = decision.request
        if not decision.allowed or request is None:
            return
        self.add(_session(decision, request))

    def add(self, session: Session) -> None:
        """Remember ``session`` (replacing one with the same server and client id)."""
        if self._remember(session) and self.store is not None:
            self.store.recorded(session)

    def forget(self, server_id: str, client_id: int) -> Session | None:
        """Drop the session of connection ``client_id`` on ``server_id`` (it ended); return it.

        With a shared store every instance forgets it.
        """
        session = self._drop(server_id, client_id)
        if session is not None and self.store is not None:
            self.store.ended(session)
        return session

    def _remember(self, session: Session) -> bool:
        # Here, not in add(): a store applies sessions recorded elsewhere through it.
        now = self._clock()
        self.prune(now)
        if session.expired(now):
            return False
        self._drop(session.server_id, session.client_id)
        key = session.key
        self._sessions[key] = session
        self._by_identity.setdefault(session.identity, set()).add(key)
        self._by_account.setdefault(session.account, set()).add(key)
        self._by_nkey[session.user_nkey] = key
        if session.expires_at:
            heapq.heappush(self._expiries, (session.expires_at, *key))
        while len(self._sessions) > self.max_entries:
            oldest = next(iter(self._sessions.values()))
            self._drop(*oldest.key)  # out of memory here, not ended: kept in a store
            self.evicted += 1
        return True

    def _drop(self, server_id: str, client_id: int) -> Session | None:
        session = self._sessions.pop((server_id, client_id), None)
        if session is None:
            return None
        key = session.key
        _unindex(self._by_identity, session.identity, key)
        _unindex(self._by_account, session.account, key)
        if self._by_nkey.get(session.user_nkey) == key:
            del self._by_nkey[session.user_nkey]
        return session

    def prune(self, now: float | None = None) -> int:
        """Drop sessions whose user JWT expired; return how many."""
        now = self._clock() if now is None else now
        heap = self._expiries
        dropped = 0
        while heap and heap[0][0] < now:
            expires_at, server_id, client_id = heapq.heappop(heap)
            session = self._sessions.get((server_id, client_id))
            if session is not None and session.expires_at == expires_at:
                self._drop(server_id, client_id)  # a store expires it on its own
                dropped += 1
        # Forgotten sessions leave their heap entries behind: rebuild when they dominate.
        if len(heap) > 2 * len(self._sessions) + 64:
            self._expiries = [
                (s.expires_at, *s.key) for s in self._sessions.values() if s.expires_at
            ]
            heapq.heapify(self._expiries)
        return dropped

    # -- queries -----------------------------------------------------------------

    def get(self, server_id: str, client_id: int) -> Session | None:
        """The session of connection ``client_id`` on ``server_id``, if remembered."""
        self.prune()
        return self._sessions.get((server_id, client_id))

    def sessions(
        self,
        *,
        identity: str | None = None,
        account: str | None = None,
        user_nkey: str | None = None,
    ) -> list[Session]:
        """Remembered sessions matching every given filter (all without filters), oldest first."""
        self.prune()
        keys: set[tuple[str, int]] | None = None
        if identity is not None:
            keys = set(self._by_identity.get(identity, ()))
        if account is not None:
            found = self._by_account.get(account, set())
            keys = set(found) if keys is None else keys & found
        if user_nkey is not None:
            key = self._by_nkey.get(user_nkey)
            found = {key} if key is not None else set()
            keys = found if keys is None else keys & found
        if keys is None:
            return list(self._sessions.values())
        return [s for k, s in self._sessions.items() if k in keys]

    # -- events ------------------------------------------------------------------

    def handle_event(self, event: bytes | str | Mapping[str, Any]) -> Session | None:
        """Forget the connection a disconnect advisory names; return it.

        Also takes ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` events (the same advisory type).
        """
        if isinstance(event, bytes | str):
            try:
                event = json.loads(event)
            except ValueError:
                return None
        if not isinstance(event, Mapping) or event.get("type") != _DISCONNECT_TYPE:
            return None
        server, client = event.get("server"), event.get("client")
        if not isinstance(server, Mapping) or not isinstance(client, Mapping):
            return None
        server_id, client_id = server.get("id"), client.get("id")
        if not isinstance(server_id, str) or not isinstance(client_id, int):
            return None
        return self.forget(server_id, client_id)

    async def follow(self, nc: Client) -> Subscription:
        """Learn disconnects (and refused logins) from ``nc``, a system-account connection.

        Subscribes to :data:`DISCONNECT_SUBJECT` and returns the subscription
        (unsubscribe it to stop). From then on the registry holds connected
        clients, not only issued logins.
        """

        async def on_event(msg: Msg) -> None:
            self.handle_event(msg.data)

        subscription = await nc.subscribe(DISCONNECT_SUBJECT, cb=on_event)
        await nc.flush()
        self.following = True
        return subscription

    # -- kicking -----------------------------------------------------------------

    async def kick_sessions(
        self,
        nc: Client,
        sessions: Iterable[Session],
        *,
        timeout: float = 2.0,  # noqa: ASYNC109 - per request
    ) -> list[KickResult]:
        """Kick each session (concurrently) through ``nc``, a system-account connection.

        A session the server kicked or did not know any more is forgotten; one
        that got no answer stays, so it can be kicked again.
        """
        chosen = list(sessions)
        results = await asyncio.gather(
            *(kick(nc, s.server_id, s.client_id, timeout=timeout) for s in chosen)
        )
        reported = []
        for session, result in zip(chosen, results, strict=True):
            if result.status is not KickStatus.ERROR:
                self.forget(*session.key)
            sessions_logger.info(
                "kick %s (cid %d on %s): %s%s",
                printable(repr(session.identity)),
                session.client_id,
                printable(session.server_name or session.server_id),
                result.status.value,
                f" ({printable(result.detail)})" if result.detail else "",
            )
            reported.append(
                KickResult(
                    result.server_id, result.client_id, result.status, result.detail, session
                )
            )
        return reported

    async def kick_user(
        self,
        nc: Client,
        identity: str,
        *,
        timeout: float = 2.0,  # noqa: ASYNC109 - per request
    ) -> list[KickResult]:
        """Kick every remembered connection of ``identity``, on every server; one result each."""
        return await self.kick_sessions(nc, self.sessions(identity=identity), timeout=timeout)

    async def revoke_user(
        self,
        nc: Client,
        identity: str,
        *,
        account_jwts: Mapping[str, str],
        signer: KeyPair,
        timeout: float = 2.0,  # noqa: ASYNC109 - per request
    ) -> list[Revocation]:
        """Operator mode: revoke every remembered session of ``identity``, per account.

        ``account_jwts`` maps each account public key to its current JWT; each
        :class:`Revocation` carries the new one, which the caller must keep (and
        persist: a server restarted from an old JWT forgets the revocation).
        Sessions whose revocation a server applied are forgotten.
        """
        by_account: dict[str, list[Session]] = {}
        for session in self.sessions(identity=identity):
            by_account.setdefault(session.account, []).append(session)
        missing = sorted(set(by_account) - set(account_jwts))
        if missing:
            raise ConfigurationError(f"no account JWT for {', '.join(missing)}")
        revocations = []
        for account, sessions in by_account.items():
            # At or after every iat: a revocation at T rejects JWTs issued at or before T.
            at = max(int(self._clock()), *(s.issued_at for s in sessions))
            revocation = await revoke_users(
                nc,
                account_jwts[account],
                signer,
                [s.user_nkey for s in sessions],
                at=at,
                timeout=timeout,
            )
            if revocation.applied:
                for session in sessions:
                    self.forget(*session.key)
            revocations.append(revocation)
        return revocations


def _session(decision: Decision, request: AuthorizationRequest) -> Session:
    info = request.client_info
    return Session(
        user_nkey=request.user_nkey,
        identity=decision.identity.name if decision.identity else "",
        account=decision.account,
        server_id=request.server_id.id,
        server_name=request.server_id.name,
        client_id=info.id,
        issued_at=decision.issued_at,
        expires_at=decision.expires_at,
        host=info.host,
        client_name=request.connect_opts.name,
    )


def _unindex(index: dict[str, set[tuple[str, int]]], name: str, key: tuple[str, int]) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]


# -- operator mode: revocations ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimsUpdate:
    """A server's answer to an account JWT update."""

    account: str
    updated: bool  # the server said "jwt updated"
    detail: str  # the server's message or error, or why there was no answer
    server_id: str = ""


@dataclass(frozen=True, slots=True)
class Revocation:
    """Revoked user keys of one account, and the new account JWT that carries them."""

    account: str
    revoked: tuple[str, ...]
    at: int  # user JWTs of these keys issued at or before this Unix time are rejected
    update: ClaimsUpdate
    account_jwt: str = field(repr=False)  # keep (and persist) it: it is the account now

    @property
    def applied(self) -> bool:
        """Whether the server confirmed it took the new account JWT."""
        return self.update.updated


def with_revocations(
    account_jwt: str,
    signer: KeyPair,
    revocations: Mapping[str, int],
    *,
    forget_before: int | None = None,
) -> str:
    """Return ``account_jwt`` re-signed by ``signer`` with ``revocations`` added.

    Everything else in the account JWT is kept. ``revocations`` maps user public
    keys (or ``"*"``: every user) to Unix times; JWTs issued at or before that
    time are rejected. An existing entry is never moved back in time.
    ``forget_before`` drops existing entries older than it (user JWTs issued
    before, e.g. ``now - max_ttl``, have expired anyway), to keep the JWT small.

    Raises:
        InvalidJWTError: ``account_jwt`` is not an intact account JWT.
        ConfigurationError: ``signer`` is not an operator key, or a key is not a user key.

    """
    if signer.kind is not KeyKind.OPERATOR:
        raise ConfigurationError("an account JWT is signed by an operator key (O...)")
    claims = decode_account_jwt(account_jwt)
    nats = dict(claims.nats)
    current = nats.get("revocations")
    merged: dict[str, int] = {}
    if isinstance(current, Mapping):
        merged = {
            str(k): int(v)
            for k, v in current.items()
            if isinstance(v, int) and (forget_before is None or v >= forget_before)
        }
    for key, at in revocations.items():
        if key != _ALL_USERS and not is_public_key(key, KeyKind.USER):
            raise ConfigurationError("revocations are user public keys (U...) or '*'")
        merged[key] = max(merged.get(key, 0), int(at))
    if merged:
        nats["revocations"] = merged
    else:
        nats.pop("revocations", None)
    return jwt.encode(msgspec.structs.replace(claims, nats=nats), signer)


async def push_account_jwt(
    nc: Client,
    account_jwt: str,
    *,
    timeout: float = 2.0,  # noqa: ASYNC109 - per request
) -> ClaimsUpdate:
    """Send an account JWT to the servers (``$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE``).

    ``nc`` must be connected to the system account. Works with the memory
    resolver and the full (directory) resolver. In a cluster every server takes
    the update; only the first answer is read, and only a server that says
    ``jwt updated`` counts as success (``jwt update skipped``: that server does
    not have the account loaded).
    """
    try:
        account = decode_account_jwt(account_jwt).sub
    except InvalidJWTError as exc:
        return ClaimsUpdate("", updated=False, detail=f"not an account JWT: {exc}")
    answer = await _ask(
        nc, f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE", account_jwt.encode("ascii"), timeout
    )
    if isinstance(answer, str):
        return ClaimsUpdate(account, updated=False, detail=answer)
    server_id = _server_id(answer)
    error = answer.get("error")
    if error is not None:
        return ClaimsUpdate(account, updated=False, detail=_description(error), server_id=server_id)
    data = answer.get("data")
    if not isinstance(data, Mapping) or data.get("account") != account:
        return ClaimsUpdate(
            account,
            updated=False,
            detail="the answer is not about this account",
            server_id=server_id,
        )
    message = str(data.get("message", ""))
    updated = data.get("code") == 200 and message == "jwt updated"
    return ClaimsUpdate(account, updated=updated, detail=message, server_id=server_id)


async def revoke_users(
    nc: Client,
    account_jwt: str,
    signer: KeyPair,
    user_nkeys: Iterable[str],
    *,
    at: int | None = None,
    forget_before: int | None = None,
    timeout: float = 2.0,  # noqa: ASYNC109 - per request
) -> Revocation:
    """Operator mode: revoke ``user_nkeys`` in their account and push the new account JWT.

    Every server that applies the update closes the connections whose user JWT
    is revoked ("Credentials Revoked"), wherever they are. For callout-issued
    users a user_nkey names one connection (the server makes a new key at every
    login), so a revoked user simply logs in again unless the callout refuses
    it: see :class:`RevocationList`. ``"*"`` revokes every user of the account
    issued at or before ``at`` (also logins in that very second).

    Args:
        nc: a system-account connection.
        account_jwt: the account's current JWT.
        signer: the operator key (or operator signing key) that signs account JWTs.
        user_nkeys: the user public keys to revoke (``U...``, or ``"*"``).
        at: the revocation time, Unix seconds; now by default.
        forget_before: see :func:`with_revocations`.
        timeout: seconds to wait for the server's answer.

    Returns:
        The :class:`Revocation`, with the server's answer and the new account JWT,
        which the caller must keep: it is the account's JWT from now on.

    """
    when = int(time.time()) if at is None else int(at)
    keys = tuple(dict.fromkeys(user_nkeys))
    token = with_revocations(
        account_jwt, signer, dict.fromkeys(keys, when), forget_before=forget_before
    )
    update = await push_account_jwt(nc, token, timeout=timeout)
    sessions_logger.info(
        "revoked %d user key(s) in account %s at %d: %s",
        len(keys),
        printable(update.account),
        when,
        printable(update.detail),
    )
    return Revocation(update.account, keys, when, update, token)


# -- refusing re-login ----------------------------------------------------------------


@runtime_checkable
class Revocations(Protocol):
    """What :class:`RevocationGuard` asks: whether an identity is refused right now.

    :class:`RevocationList` (one process) and
    :class:`~faststream_callout.integration.shared.SharedRevocationList` (every
    instance, through JetStream KV) answer it. An answer that cannot be given
    must raise, never return ``False``.
    """

    def is_revoked(self, name: str) -> bool:
        """Whether logins of ``name`` are refused right now."""
        ...


def revocation_deadline(
    clock: Callable[[], float], *, until: float | None = None, ttl: float | None = None
) -> float | None:
    """The Unix time a revocation ends: ``until``, now + ``ttl``, or ``None`` (for good)."""
    if until is not None and ttl is not None:
        raise ValueError("give until or ttl, not both")
    for value in (until, ttl):
        if value is not None and not math.isfinite(value):
            raise ValueError("until and ttl must be finite numbers of seconds")
    return clock() + ttl if ttl is not None else until


class RevocationList:
    """Identity names whose logins the callout refuses, for a while or for good.

    A kick closes a connection and a revocation rejects one user JWT, but the
    client logs in again and the callout would allow it: put the identity here
    and wrap the lookup with :meth:`guard`. In-memory and per process; for
    several instances use
    :class:`~faststream_callout.integration.shared.SharedRevocationList`, which
    keeps one of these as its local copy.

    Args:
        clock: returns Unix time in seconds.

    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float | None] = {}

    def __repr__(self) -> str:
        return f"RevocationList({len(self)} identities)"

    def __len__(self) -> int:
        """How many identities are refused right now."""
        now = self._clock()
        expired = [n for n, until in self._until.items() if until is not None and until <= now]
        for name in expired:
            del self._until[name]
        return len(self._until)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_revoked(name)

    def revoke(self, name: str, *, until: float | None = None, ttl: float | None = None) -> None:
        """Refuse ``name`` until Unix time ``until``, for ``ttl`` seconds, or (neither) for good."""
        self._until[name] = revocation_deadline(self._clock, until=until, ttl=ttl)

    def restore(self, name: str) -> bool:
        """Let ``name`` in again; return whether it was refused."""
        revoked = self.is_revoked(name)
        self._until.pop(name, None)
        return revoked

    def is_revoked(self, name: str) -> bool:
        """Whether logins of ``name`` are refused right now."""
        if name not in self._until:
            return False
        until = self._until[name]
        if until is not None and until <= self._clock():
            del self._until[name]
            return False
        return True

    def guard(self, lookup: IdentityLookup, *, reason: str = "access revoked") -> RevocationGuard:
        """Wrap ``lookup`` so that revoked identities are denied with ``reason``."""
        return RevocationGuard(lookup, self, reason=reason)


class RevocationGuard:
    """An :class:`~faststream_callout.IdentityLookup` that refuses revoked identities.

    The wrapped lookup runs first (it says who the client is); a revoked name is
    then denied, which also counts as a failed attempt for the throttle. When
    the revocations cannot answer (a shared list whose store is out of reach
    for longer than it may be), their error propagates and the pipeline denies.
    """

    def __init__(
        self, lookup: IdentityLookup, revocations: Revocations, *, reason: str = "access revoked"
    ) -> None:
        self.inner = lookup
        self.revocations = revocations
        self.reason = reason

    def __repr__(self) -> str:
        return f"RevocationGuard({self.inner!r}, {self.revocations!r})"

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """The wrapped lookup's identity, unless it is revoked."""
        identity: Identity = await resolve(self.inner.lookup(request))
        if isinstance(identity, Identity) and self.revocations.is_revoked(identity.name):
            raise Denied(self.reason)
        return identity
