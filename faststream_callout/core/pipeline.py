"""The callout pipeline: open -> verify -> identify -> authorize -> issue -> seal.

Plain Python: usable without FastStream. It never raises: every request gets
a reply, and a decision that cannot be made is a denial.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, TypeVar

import msgspec
import nacl.exceptions

from faststream_callout.core.errors import (
    Denied,
    Drop,
    InvalidJWTError,
    InvalidKeyError,
    SignerError,
)
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.policy import (
    Grant,
    Identity,
    IdentityLookup,
    PermissionBuilder,
)
from faststream_callout.core.signing import CalloutMode, Signer, SigningKeys, sign_jwt
from faststream_callout.core.throttle import Throttle, throttle_keys
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import (
    AUTH_REQUEST_AUDIENCE,
    AUTH_RESPONSE_TYPE,
    CLAIMS_VERSION,
    USER_CLAIM_TYPE,
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponse,
    AuthorizationResponseClaims,
    ResponsePermission,
    User,
    UserClaims,
)
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key
from faststream_callout.protocol.validation import user_issues
from faststream_callout.protocol.versions import enforces_proxy_required
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = ["NO_REPLY", "CalloutPipeline", "CalloutSettings", "Decision", "Outcome"]

logger: Final = logging.getLogger("faststream_callout")
# One INFO record per decision, with the fields in ``record.callout``; never secrets.
decision_logger: Final = logging.getLogger("faststream_callout.decisions")
_THROTTLED_REASON: Final = "too many failed attempts; try again later"
_TIMEOUT_REASON: Final = "authorization decision timed out"


class _NoReply(bytes):
    __slots__ = ()


# The reply of a dropped request: empty like an unsigned denial, but told apart by
# identity (``reply is NO_REPLY``): nothing at all must be sent for it.
NO_REPLY: Final[bytes] = _NoReply()


@dataclass(frozen=True, slots=True, kw_only=True)
class CalloutSettings:
    """Tunables of the pipeline; the defaults are safe.

    Attributes:
        max_request_size: bodies larger than this are refused unparsed. Requests
            are a few KB; client certificate chains make them larger.
        error_reason: the reason sent to nats-server when user code fails
            unexpectedly (the exception itself is only logged).
        strict: also refuse grants nats-server would accept but that are
            almost surely mistakes (``foo*`` wildcards, unknown connection types).
        max_decision_time: seconds the lookup and permission builder may take
            together; past it the login is denied (signed, in time).
        deadline_margin: seconds kept in hand before the server's deadline for
            signing and sending the reply.
        default_ttl: seconds a grant lives when it sets neither ``ttl`` nor
            ``expires_at``; ``None`` lets such grants live as long as the connection.
        max_ttl: a cap on every grant's lifetime, in seconds.
        auth_timeout: nats-server's ``authorization.timeout`` (2 s by default,
            3 s with TLS). With ``exp`` from the request it places the server's
            deadline; set it to match the server configuration.
        trusted_servers: server public keys (``N...``) allowed to send requests,
            or a callable deciding per key; ``None`` trusts any server whose
            signature verifies. Requests from others get no reply at all.
        run_sync_in_thread: call synchronous lookups and permission builders in a
            worker thread (``asyncio.to_thread``), so that the deadline holds for
            them too and a slow one does not stall other requests; costs a thread
            hop per call. Off: they run on the event loop, which suits fast code.
        protected_accounts: accounts no grant may place a client in (names in
            config mode, public keys in operator mode): the system account
            (nats-server's default name ``$SYS``; add yours, e.g. ``"SYS"``) and
            the callout account, where a client could read every request. In
            operator mode strict settings also protect the callout account.

    """

    max_request_size: int = 256 * 1024
    error_reason: str = "authorization service error"
    strict: bool = True
    max_decision_time: float = 1.5
    deadline_margin: float = 0.25
    auth_timeout: float = 2.0
    default_ttl: float | None = None
    max_ttl: float | None = None
    trusted_servers: Collection[str] | Callable[[str], bool] | None = None
    protected_accounts: Collection[str] = frozenset({"$SYS"})
    run_sync_in_thread: bool = False

    def trusts(self, server: str) -> bool:
        """Whether requests signed by the server key ``server`` are answered."""
        trusted = self.trusted_servers
        if trusted is None:
            return True
        if callable(trusted):
            return bool(trusted(server))
        return server in trusted


class Outcome(Enum):
    """How a request ended."""

    ALLOWED = "allowed"
    DENIED = "denied"  # policy said no (Denied raised)
    ERROR = "error"  # policy or grant failed; denied with a generic reason
    TIMEOUT = "timeout"  # the policy took too long; denied before the server gave up
    THROTTLED = "throttled"  # too many failed attempts; denied without a lookup
    REJECTED = "rejected"  # the request itself failed verification
    DROPPED = "dropped"  # the policy raised Drop: no reply at all (NO_REPLY)
    SIGNER_FAILED = "signer_failed"  # nothing could be signed: empty (unsigned) denial


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of one request: the reply bytes and what led to them."""

    outcome: Outcome
    reply: bytes = field(repr=False)  # signed JWTs: kept out of logs and tracebacks
    reason: str = ""
    request: AuthorizationRequest | None = None
    identity: Identity | None = None
    account: str = ""
    latency: float = 0.0  # seconds from receipt to reply
    # Of the issued user JWT (ALLOWED only): Unix seconds; expires_at 0 means no expiry.
    issued_at: int = 0
    expires_at: int = 0

    @property
    def allowed(self) -> bool:
        """Whether the reply grants access."""
        return self.outcome is Outcome.ALLOWED


class _Refusal(Exception):  # noqa: N818 - internal control flow, never escapes
    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class _Unsigned(Exception):  # noqa: N818 - internal control flow, never escapes decide()
    def __init__(self, request: AuthorizationRequest, reason: str) -> None:
        super().__init__(reason)
        self.request = request
        self.reason = reason


@dataclass(slots=True)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting; the entry goes when it drops to 0


@dataclass(slots=True)
class _Exchange:
    """What the reply to one request needs: keys, the seal, the signing deadline."""

    keys: SigningKeys  # of the callout account the request is for: they sign the reply
    accepted_xkeys: tuple[XKeyPair, ...]  # that account's: the one that opened it must be one
    server_xkey: str | None = None  # the Nats-Server-Xkey header: seal the reply to it
    xkey: XKeyPair | None = None  # ours that opened the request: the server opens with it
    sign_by: float | None = None  # loop time external signers must answer by


_T = TypeVar("_T")


async def _by(deadline: float | None, value: _T | Awaitable[_T]) -> _T:
    # Like policy.resolve, but an awaitable (a lookup, a shared throttle store) must
    # finish by the loop-time ``deadline``. A plain value skips the timer: arming and
    # cancelling one costs ~5 us, and synchronous code cannot be interrupted anyway.
    if not inspect.isawaitable(value):
        return value
    if deadline is None:
        return await value
    async with asyncio.timeout_at(deadline):
        return await value


class CalloutPipeline:
    """Answers nats-server authorization requests.

    Args:
        keys: the keys that sign responses and user JWTs (and the xkey): the
            :class:`SigningKeys` of one callout account, or a :class:`Keyring`
            (several callout accounts, key rotation).
        lookup: who the client is.
        permissions: what the identity may do.
        settings: tunables.
        throttle: brute-force protection (see :class:`MemoryThrottle`); ``None`` for none.
        observers: called with every :class:`Decision` (metrics, audit); must not block.
        clock: returns Unix time in seconds; injectable for tests.

    """

    def __init__(
        self,
        keys: SigningKeys | Keyring,
        lookup: IdentityLookup,
        permissions: PermissionBuilder,
        settings: CalloutSettings | None = None,
        *,
        throttle: Throttle | None = None,
        observers: Sequence[Callable[[Decision], object]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.lookup = lookup
        self.permissions = permissions
        self.settings = settings or CalloutSettings()
        self.throttle = throttle
        self.observers = list(observers)
        self.in_flight = 0  # requests being decided right now (a gauge for metrics)
        self._clock = clock
        self._turns: dict[str, _Turn] = {}  # throttled subjects with an attempt under way

    async def __call__(self, body: bytes, server_xkey: str | None = None) -> bytes:
        """Return the reply body for a request body (and its ``Nats-Server-Xkey`` header).

        The reply is :data:`NO_REPLY` (empty, tested with ``is``) when the policy
        dropped the request: send nothing at all then.
        """
        return (await self.decide(body, server_xkey)).reply

    async def decide(self, body: bytes, server_xkey: str | None = None) -> Decision:
        """Like calling the pipeline, but also says what was decided and why."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            decision = await self._decide(body, server_xkey)
        except _Unsigned as exc:  # nothing can be signed, a denial neither: empty reply
            decision = Decision(Outcome.SIGNER_FAILED, b"", exc.reason, exc.request)
        except Exception:  # last line of defence: a bug here must still be a denial
            logger.exception("auth callout pipeline failed; replying with a denial")
            decision = Decision(Outcome.ERROR, b"", self.settings.error_reason)
        finally:  # also when cancelled: the count never drifts
            self.in_flight -= 1
        # Frozen for users; set here once without the cost of dataclasses.replace.
        object.__setattr__(decision, "latency", time.perf_counter() - started)
        if decision_logger.isEnabledFor(logging.INFO):
            _log_decision(decision)
        for observe in self.observers:
            try:
                observe(decision)
            except Exception:
                logger.exception("decision observer %r failed", observe)
        return decision

    # -- stages ---------------------------------------------------------------

    def _open(
        self, body: bytes, server_xkey: str | None, xkeys: tuple[XKeyPair, ...]
    ) -> tuple[bytes, XKeyPair | None]:
        if len(body) > self.settings.max_request_size:
            raise _Refusal(Outcome.REJECTED, f"request of {len(body)} bytes exceeds the size limit")
        if server_xkey is None:
            return body, None
        if not xkeys:
            raise _Refusal(
                Outcome.REJECTED,
                "request is encrypted (Nats-Server-Xkey header) but this service has no xkey; "
                "give SigningKeys the xkey whose public key the server is configured with",
            )
        # The request does not say which of our keys it is for (during a rotation,
        # or with several callout accounts): a wrong key fails its MAC check quickly.
        for xkey in xkeys:
            try:
                return xkey.open(body, server_xkey), xkey
            except (InvalidKeyError, nacl.exceptions.CryptoError) as exc:
                error = exc
        ours = " or ".join(x.public_key for x in xkeys)
        raise _Refusal(
            Outcome.REJECTED,
            f"cannot decrypt request ({error}); is the server configured with our xkey {ours}?",
        )

    def _verify(
        self, claims: AuthorizationRequestClaims, exchange: _Exchange, now: float
    ) -> str | None:
        request = claims.nats
        server_xkey, xkeys = exchange.server_xkey, exchange.accepted_xkeys
        if claims.aud != AUTH_REQUEST_AUDIENCE:
            return "request audience is not nats-authorization-request"
        if claims.iss != request.server_id.id:
            return "request issuer is not the server named in server_id"
        if not claims.exp:
            return "request has no expiry"
        try:
            jwt.validate_times(claims, now=now)
        except InvalidJWTError as exc:
            return f"request {exc}"
        if not is_public_key(request.user_nkey, KeyKind.USER, cached=False):
            return "request user_nkey is not a user public key"
        if server_xkey is not None and server_xkey != request.server_id.xkey:
            return "Nats-Server-Xkey header does not match the signed server_id.xkey"
        if server_xkey is None and xkeys:
            return (
                "request is not encrypted but this service has an xkey; configure the server "
                f"with xkey {xkeys[0].public_key} or remove the xkey from SigningKeys"
            )
        if exchange.xkey is not None and exchange.xkey not in xkeys:
            return (
                f"request for callout account {claims.sub} is encrypted for the xkey "
                f"{exchange.xkey.public_key} of another callout account"
            )
        return None

    async def _decide(self, body: bytes, server_xkey: str | None) -> Decision:
        now = self._clock()
        keyring = self.keys  # read once: keys swapped meanwhile apply to the next request
        try:
            plaintext, xkey = self._open(body, server_xkey, keyring.xkeys)
            claims = jwt.decode(plaintext, AuthorizationRequestClaims)
        except (_Refusal, InvalidJWTError) as exc:
            # Nothing trustworthy to answer to: deny with an empty body.
            logger.warning("auth callout request rejected: %s", exc)
            return Decision(Outcome.REJECTED, b"", str(exc))
        request = claims.nats
        if not self.settings.trusts(claims.iss):
            logger.warning("auth callout request from untrusted server %s ignored", claims.iss)
            return Decision(Outcome.REJECTED, b"", "request from an untrusted server")
        request_keys = keyring.select(claims.sub)  # the signed sub names the callout account
        if request_keys is None:
            # No key of that account: nothing we sign would be accepted. Deny, unsigned.
            ours = ", ".join(keyring.callout_accounts)
            wrong = f"request is for callout account {claims.sub}, this service signs for {ours}"
            logger.warning("auth callout request rejected: %s", wrong)
            return Decision(Outcome.REJECTED, b"", wrong, request)
        msgspec.structs.force_setattr(request, "callout_account", claims.sub)
        account_keys = request_keys.signing  # fixed for this request, whatever rotates
        exchange = _Exchange(account_keys, request_keys.xkeys, server_xkey, xkey)
        if account_keys.external:
            # External signers may take until the server's deadline, denials included.
            server_deadline = now + self.settings.auth_timeout
            if claims.exp:  # nats-server rounds its deadline down into exp
                server_deadline = min(server_deadline, claims.exp + 1)
            exchange.sign_by = asyncio.get_running_loop().time() + server_deadline - now
        problem = self._verify(claims, exchange, now)
        if problem is not None:
            logger.warning("auth callout request rejected: %s", problem)
            return await self._deny(request, Outcome.REJECTED, problem, exchange)
        keys = throttle_keys(request) if self.throttle is not None else []
        budget = self._budget(claims.exp, now)
        # One deadline for everything that may wait: the throttle store included.
        deadline = asyncio.get_running_loop().time() + budget
        identity: Identity | None = None
        try:
            identity = await self._admit(request, keys, deadline)
            if identity is None:
                return await self._deny(request, Outcome.THROTTLED, _THROTTLED_REASON, exchange)
            grant = await self._port(deadline, self.permissions.build, identity, request)
            if not isinstance(grant, Grant):
                raise TypeError(f"PermissionBuilder returned {type(grant).__name__}, not Grant")
            user_jwt, expires = await self._issue(request, identity, grant, now, exchange)
        except Denied as exc:
            return await self._deny(request, Outcome.DENIED, exc.reason, exchange, identity)
        except _Refusal as exc:
            return await self._deny(request, exc.outcome, exc.reason, exchange, identity)
        except Drop as exc:
            return Decision(Outcome.DROPPED, NO_REPLY, exc.reason, request, identity)
        except _Unsigned:
            raise
        except TimeoutError:
            logger.warning(
                "auth callout decision for client %s exceeded %.2fs; denying",
                _client(request),
                budget,
            )
            return await self._deny(request, Outcome.TIMEOUT, _TIMEOUT_REASON, exchange, identity)
        except Exception:
            logger.exception("auth callout policy failed for client %s; denying", _client(request))
            return await self._deny(
                request, Outcome.ERROR, self.settings.error_reason, exchange, identity
            )
        if keys:
            await self._tell_throttle("succeeded", keys, deadline)
        reply = await self._respond(
            request,
            AuthorizationResponse(
                jwt=user_jwt,
                issuer_account=exchange.keys.response_signer.issuer_account,
                type=AUTH_RESPONSE_TYPE,
                version=CLAIMS_VERSION,
            ),
            exchange,
        )
        return Decision(
            Outcome.ALLOWED,
            reply,
            "",
            request,
            identity,
            grant.account,
            issued_at=int(now),
            expires_at=expires,
        )

    async def _port(self, deadline: float, method: Callable[..., object], *args: object) -> object:
        # A port's method, sync or async, by the deadline.
        if not self.settings.run_sync_in_thread or inspect.iscoroutinefunction(method):
            return await _by(deadline, method(*args))
        # In a worker thread the deadline holds for synchronous code too (its late
        # answer is discarded) and the loop keeps serving other requests.
        result: object = await _by(deadline, asyncio.to_thread(method, *args))
        return await _by(deadline, result)

    async def _admit(
        self, request: AuthorizationRequest, keys: list[str], deadline: float
    ) -> Identity | None:
        """The identity, or ``None`` when the throttle refuses the attempt.

        Attempts for one subject take turns from the throttle check until their
        failure is counted, so concurrent guesses cannot all pass the check first.
        """
        subject = keys[0] if keys and not keys[0].startswith("host:") else None
        if subject is not None:
            await self._take_turn(subject, deadline)  # TimeoutError: the deadline passed
        try:
            if keys and await self._throttled(keys, deadline):
                return None
            return await self._identify(request, keys, deadline)
        finally:
            if subject is not None:
                self._end_turn(subject)

    async def _take_turn(self, subject: str, deadline: float) -> None:
        turn = self._turns.get(subject)
        if turn is None:
            turn = self._turns[subject] = _Turn()
        turn.users += 1
        try:
            if turn.lock.locked():  # a timer only when someone else's turn runs
                async with asyncio.timeout_at(deadline):
                    await turn.lock.acquire()
            else:
                await turn.lock.acquire()
        except BaseException:
            self._leave_turn(subject, turn)
            raise

    def _end_turn(self, subject: str) -> None:
        turn = self._turns[subject]
        turn.lock.release()
        self._leave_turn(subject, turn)

    def _leave_turn(self, subject: str, turn: _Turn) -> None:
        turn.users -= 1
        if turn.users == 0:
            del self._turns[subject]

    async def _identify(
        self, request: AuthorizationRequest, keys: list[str], deadline: float
    ) -> Identity:
        try:
            identity = await self._port(deadline, self.lookup.lookup, request)
        except Denied:
            if keys:
                await self._tell_throttle("failed", keys, deadline)
            raise
        if not isinstance(identity, Identity):
            raise TypeError(f"IdentityLookup returned {type(identity).__name__}, not Identity")
        return identity

    def _budget(self, exp: int, now: float) -> float:
        """Seconds the policy may take for a request received at ``now``.

        nats-server gives up ``authorization.timeout`` after it sent the request
        and writes ``exp`` as that instant rounded *down* to whole seconds, so
        its real deadline lies in ``[exp, exp + 1)``: ``exp`` alone would cut
        up to a second off. The receipt time plus the configured timeout is at
        or after the real deadline only by the (small) transit time.
        """
        settings = self.settings
        server_deadline = min(now + settings.auth_timeout, exp + 1)
        return min(settings.max_decision_time, server_deadline - settings.deadline_margin - now)

    async def _throttled(self, keys: list[str], deadline: float) -> bool:
        if self.throttle is None:
            return False
        try:
            wait = await _by(deadline, self.throttle.blocked(keys))
        except Exception:
            # A broken rate limiter must not lock everyone out: the lookup still decides.
            logger.exception("throttle failed; not throttling")
            return False
        return isinstance(wait, int | float) and wait > 0

    async def _tell_throttle(
        self, event: str, keys: list[str], deadline: float | None = None
    ) -> None:
        # ``failed`` runs inside the decision's timeout; ``succeeded`` gets its own.
        try:
            await _by(deadline, getattr(self.throttle, event)(keys))
        except Exception:
            logger.exception("throttle failed to record a %s login", event)

    async def _issue(
        self,
        request: AuthorizationRequest,
        identity: Identity,
        grant: Grant,
        now: float,
        exchange: _Exchange,
    ) -> tuple[str, int]:
        keys = exchange.keys
        problem = keys.placement_issue(grant.account)
        if problem is None and grant.account in self.settings.protected_accounts:
            problem = f"grant places the client in protected account {grant.account}"
        if (
            problem is None
            and self.settings.strict
            and keys.mode is CalloutMode.OPERATOR
            and grant.account == keys.callout_account
        ):
            # There a client may be able to subscribe to the authorization requests
            # (passwords and tokens, in clear without an xkey).
            problem = "grant places the client in the callout account (strict mode refuses it)"
        signer = keys.user_jwt_signer(grant.account)
        if problem is not None or signer is None:
            problem = problem or f"no signing key for account {grant.account}"
            logger.error("cannot place %r: %s", identity.name, problem)
            raise _Refusal(Outcome.ERROR, problem)
        if grant.proxy_required and not enforces_proxy_required(request.server_id.version):
            # Servers before 2.12 ignore the flag: the client would get in without a proxy.
            problem = "proxy_required needs nats-server 2.12+; this server would ignore it"
            logger.error("cannot grant %r: %s", identity.name, problem)
            raise _Refusal(Outcome.ERROR, problem)
        issued_at = int(now)
        expires = _expiry(grant, issued_at, now, self.settings)
        resp = grant.resp
        if resp is not None:
            # Go cannot decode a JSON float into an int: force integers.
            resp = ResponsePermission(max=int(resp.max), ttl=int(resp.ttl))
        user = User(
            pub=grant.pub,
            sub=grant.sub,
            resp=resp,
            src=list(grant.src),
            times=list(grant.times),
            times_location=grant.times_location,
            subs=int(grant.subs),
            data=int(grant.data),
            payload=int(grant.payload),
            proxy_required=grant.proxy_required,
            allowed_connection_types=[t.upper() for t in grant.allowed_connection_types],
            issuer_account=signer.issuer_account,
            tags=list(grant.tags),
            type=USER_CLAIM_TYPE,
            version=CLAIMS_VERSION,
        )
        issues = user_issues(user, strict=self.settings.strict)
        if (
            self.settings.strict
            and not grant.account_defaults
            and not (user.pub.allow or user.pub.deny or user.sub.allow or user.sub.deny)
            and user.resp is None
        ):
            issues.append(
                "grant sets no permissions, so the account defaults (often everything) apply; "
                "set pub/sub, or account_defaults=True to mean it"
            )
        if issues:
            logger.error("grant for %r is invalid: %s", identity.name, "; ".join(issues))
            raise _Refusal(Outcome.ERROR, f"invalid grant: {issues[0]}")
        claims = UserClaims(
            aud=grant.account if keys.mode is CalloutMode.CONFIG else "",
            exp=expires,
            name=grant.name if grant.name is not None else identity.name,
            nbf=math.ceil(grant.not_before) if grant.not_before else 0,
            sub=request.user_nkey,
            nats=user,
        )
        if isinstance(signer.key, KeyPair):
            return jwt.encode(claims, signer.key, now=issued_at), expires
        return await self._sign(claims, signer.key, issued_at, request, exchange), expires

    async def _deny(
        self,
        request: AuthorizationRequest,
        outcome: Outcome,
        reason: str,
        exchange: _Exchange,
        identity: Identity | None = None,
    ) -> Decision:
        response = AuthorizationResponse(
            error=reason,
            issuer_account=exchange.keys.response_signer.issuer_account,
            type=AUTH_RESPONSE_TYPE,
            version=CLAIMS_VERSION,
        )
        reply = await self._respond(request, response, exchange)
        return Decision(outcome, reply, reason, request, identity)

    async def _respond(
        self,
        request: AuthorizationRequest,
        response: AuthorizationResponse,
        exchange: _Exchange,
    ) -> bytes:
        claims = AuthorizationResponseClaims(
            aud=request.server_id.id, sub=request.user_nkey, nats=response
        )
        keys = exchange.keys
        key = keys.response_signer.key
        now = int(self._clock())
        if isinstance(key, KeyPair):
            token = jwt.encode_bytes(claims, key, now=now)
        else:
            token = (await self._sign(claims, key, now, request, exchange)).encode("ascii")
        if exchange.server_xkey is not None and exchange.xkey is not None:
            # Sealed to the header key; for an allowed reply it was verified equal
            # to the signed server_id.xkey, otherwise the reply is only a denial.
            # With the xkey that opened the request: the server opens with that one.
            return exchange.xkey.seal(token, exchange.server_xkey)
        return token

    async def _sign(
        self,
        claims: UserClaims | AuthorizationResponseClaims,
        signer: Signer,
        now: int,
        request: AuthorizationRequest,
        exchange: _Exchange,
    ) -> str:
        """Sign with an external signer; if it cannot, nothing can be sent but an empty denial."""
        try:
            return await sign_jwt(claims, signer, now=now, deadline=exchange.sign_by)
        except SignerError as exc:
            logger.error(  # noqa: TRY400 - the signer's traceback may quote its own secrets
                "cannot sign the reply to client %s: %s; replying empty (an unsigned denial)",
                _client(request),
                exc,
            )
            raise _Unsigned(request, str(exc)) from None


def _expiry(grant: Grant, issued_at: int, now: float, settings: CalloutSettings) -> int:
    candidates: list[int] = []
    if settings.max_ttl is not None:
        candidates.append(math.ceil(now + settings.max_ttl))
    if grant.ttl is None and grant.expires_at is None and settings.default_ttl is not None:
        candidates.append(math.ceil(now + settings.default_ttl))
    if grant.ttl is not None:
        if grant.ttl <= 0:
            raise _Refusal(Outcome.ERROR, "grant ttl must be positive")
        candidates.append(math.ceil(now + grant.ttl))
    if grant.expires_at is not None:
        if grant.expires_at <= now:
            raise _Refusal(Outcome.DENIED, "credential expired")
        # Never outlive the credential: round down.
        candidates.append(max(issued_at, math.floor(grant.expires_at)))
    return min(candidates) if candidates else 0


def _log_decision(decision: Decision) -> None:
    request = decision.request
    info = request.client_info if request else None
    user = _raw_user(request) if request else ""
    fields = {
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "user": decision.identity.name if decision.identity else user,
        "account": decision.account,
        "client_host": info.host if info else "",
        "client_kind": info.kind if info else "",
        "client_type": info.type if info else "",
        "server": request.server_id.id if request else "",
        "latency_ms": round(decision.latency * 1000, 3),
    }
    decision_logger.info(
        "%s user=%r account=%r host=%s reason=%r (%.1f ms)",
        fields["outcome"],
        fields["user"],
        fields["account"],
        fields["client_host"],
        fields["reason"],
        fields["latency_ms"],
        extra={"callout": fields},
    )


def _raw_user(request: AuthorizationRequest) -> str:
    # nats-server before 2.10.28/2.11.2 reported the token itself as the user.
    user = request.client_info.user
    token = request.connect_opts.auth_token
    return "[REDACTED]" if token and user == token else user


def _client(request: AuthorizationRequest) -> str:
    info = request.client_info
    user = _raw_user(request)
    return f"{user or '?'}@{info.host or '?'} (cid {info.id}, {info.kind or '?'} {info.type})"
