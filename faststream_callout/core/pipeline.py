"""The callout pipeline: runs the stages of :mod:`faststream_callout.core.stages` in order.

open -> verify -> identify -> authorize -> issue -> respond. Plain Python: usable
without FastStream. It never raises: every request gets a reply (or, when the
policy drops it, deliberately none), and a decision that cannot be made is a denial.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from faststream_callout.core import stages
from faststream_callout.core.errors import Denied, Drop, StoreUnavailable
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.policy import Identity, IdentityLookup, PermissionBuilder
from faststream_callout.core.signing import SigningKeys
from faststream_callout.core.throttle import Throttle, Throttled
from faststream_callout.core.throttle_gate import ThrottleGate
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = [
    "DEFAULT_PROTECTED_ACCOUNTS",
    "GENERATED_CALLOUT_ACCOUNT",
    "GENERATED_SYSTEM_ACCOUNT",
    "SERVER_SYSTEM_ACCOUNT",
    "CalloutPipeline",
    "CalloutSettings",
    "Decision",
    "Outcome",
    "log_decision",
]

logger: Final = logging.getLogger("faststream_callout")
# One INFO record per decision, with the fields in ``record.callout``; never secrets.
decision_logger: Final = logging.getLogger("faststream_callout.decisions")
#: The system account's name in a configuration that names none (nats-server's default).
SERVER_SYSTEM_ACCOUNT: Final = "$SYS"
#: The system account's name in the configurations this library writes (``faststream-callout
#: config`` and ``dev``, the testing package's local servers).
GENERATED_SYSTEM_ACCOUNT: Final = "SYS"
#: The callout account's name in the configurations this library writes.
GENERATED_CALLOUT_ACCOUNT: Final = "AUTH"
#: ``CalloutSettings.protected_accounts`` by default: all three.
DEFAULT_PROTECTED_ACCOUNTS: Final = frozenset(
    {SERVER_SYSTEM_ACCOUNT, GENERATED_SYSTEM_ACCOUNT, GENERATED_CALLOUT_ACCOUNT}
)
_TIMEOUT_REASON: Final = "authorization decision timed out"


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
            config mode, public keys in operator mode): the system account, where
            a client could watch and steer the server, and the callout account,
            where it could read every request (passwords too, without an xkey).
            By default the names nats-server and this library's generated
            configurations give them: ``$SYS``, ``SYS`` and ``AUTH``; name yours
            when they differ (``faststream-callout doctor`` compares). In
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
    protected_accounts: Collection[str] = DEFAULT_PROTECTED_ACCOUNTS
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
    THROTTLED = "throttled"  # locked out or too busy (Throttled): denied, mostly without a lookup
    REJECTED = "rejected"  # the request itself failed verification
    DROPPED = "dropped"  # the policy raised Drop: no reply at all (reply None)
    SIGNER_FAILED = "signer_failed"  # nothing could be signed: empty (unsigned) denial


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of one request: the reply bytes and what led to them.

    ``reply`` is ``None`` when nothing must be sent (outcome ``dropped``); an
    empty body is an unsigned denial, which is sent.
    """

    outcome: Outcome
    reply: bytes | None = field(repr=False)  # signed JWTs: kept out of logs and tracebacks
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


def log_decision(decision: Decision) -> None:
    """The decision log, every pipeline's first observer unless replaced (``decision_log``).

    One INFO record per decision on the logger ``faststream_callout.decisions``,
    with the fields in ``record.callout`` (outcome, reason, user, account, client
    host, kind and type, server, latency in ms); never a secret. Nothing is
    formatted when that logger is disabled.
    """
    if not decision_logger.isEnabledFor(logging.INFO):
        return
    request = decision.request
    info = request.client_info if request else None
    user = stages.raw_user(request) if request else ""
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
        stages.printable(info.host) if info else "",
        fields["reason"],
        fields["latency_ms"],
        extra={"callout": fields},
    )


class CalloutPipeline:
    """Answers nats-server authorization requests.

    Args:
        keys: the keys that sign responses and user JWTs (and the xkey): the
            :class:`SigningKeys` of one callout account, or a :class:`Keyring`
            (several callout accounts, key rotation).
        lookup: who the client is.
        permissions: what the identity may do.
        settings: tunables.
        throttle: brute-force and flood protection (see :class:`MemoryThrottle`); ``None``
            for none.
        observers: called with every :class:`Decision` (metrics, audit); must not block.
        decision_log: the first observer, :func:`log_decision` by default; ``None``
            for none, or your own. ``pipeline.observers`` is the plain list of
            both: the decision log, then ``observers``.
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
        decision_log: Callable[[Decision], object] | None = log_decision,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.lookup = lookup
        self.permissions = permissions
        self.settings = settings or CalloutSettings()
        self.throttle = throttle
        self.observers = [decision_log, *observers] if decision_log else list(observers)
        self.in_flight = 0  # requests being decided right now (a gauge for metrics)
        self._clock = clock

    @property
    def throttle(self) -> Throttle | None:
        """The failure counts consulted before each lookup; ``None`` for none."""
        return None if self._gate is None else self._gate.throttle

    @throttle.setter
    def throttle(self, throttle: Throttle | None) -> None:
        self._gate = None if throttle is None else ThrottleGate(throttle)

    async def __call__(self, body: bytes, server_xkey: str | None = None) -> bytes | None:
        """Return the reply body for a request body (and its ``Nats-Server-Xkey`` header).

        ``None`` when the policy dropped the request: send nothing at all then.
        """
        return (await self.decide(body, server_xkey)).reply

    async def decide(self, body: bytes, server_xkey: str | None = None) -> Decision:
        """Like calling the pipeline, but also says what was decided and why."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            decision = await self._decide(body, server_xkey, started)
        except stages.Unsigned as exc:  # nothing can be signed, a denial neither: empty reply
            latency = time.perf_counter() - started
            decision = Decision(
                Outcome.SIGNER_FAILED, b"", exc.reason, exc.request, latency=latency
            )
        except Exception:  # last line of defence: a bug here must still be a denial
            logger.exception("auth callout pipeline failed; replying with a denial")
            latency = time.perf_counter() - started
            decision = Decision(Outcome.ERROR, b"", self.settings.error_reason, latency=latency)
        finally:  # also when cancelled: the count never drifts
            self.in_flight -= 1
        for observe in self.observers:
            try:
                observe(decision)
            except Exception:
                logger.exception("decision observer %r failed", observe)
        return decision

    def _open(
        self, body: bytes, server_xkey: str | None, now: float, started: float
    ) -> stages.Exchange | Decision:
        """The opened request, or the decision when nothing trustworthy can be answered."""
        settings = self.settings
        all_keys = self.keys  # read once: keys swapped meanwhile apply to the next request
        try:
            token, xkey = stages.open_request(
                body, server_xkey, all_keys.xkeys, max_size=settings.max_request_size
            )
            claims = stages.decode_request(token)
            if not settings.trusts(claims.iss):
                logger.warning("auth callout request from untrusted server %s ignored", claims.iss)
                reason = "request from an untrusted server"
                return Decision(
                    Outcome.REJECTED, b"", reason, latency=time.perf_counter() - started
                )
        except stages.Rejected as exc:
            # Nothing trustworthy to answer to: deny with an empty body.
            logger.warning("auth callout request rejected: %s", exc.reason)
            return Decision(
                Outcome.REJECTED, b"", exc.reason, latency=time.perf_counter() - started
            )
        try:
            selected = stages.select_keys(all_keys, claims)
        except stages.Rejected as exc:
            # Nothing we sign would be accepted. Deny, unsigned.
            logger.warning("auth callout request rejected: %s", exc.reason)
            latency = time.perf_counter() - started
            return Decision(Outcome.REJECTED, b"", exc.reason, claims.nats, latency=latency)
        keys = selected.signing  # fixed for this request, whatever rotates meanwhile
        sign_by = stages.signing_deadline(claims.exp, now, settings) if keys.external else None
        request = stages.callout_request(claims)
        return stages.Exchange(claims, request, keys, selected.xkeys, server_xkey, xkey, sign_by)

    async def _decide(self, body: bytes, server_xkey: str | None, started: float) -> Decision:
        now = self._clock()
        settings = self.settings
        exchange = self._open(body, server_xkey, now, started)
        if isinstance(exchange, Decision):
            return exchange
        request = exchange.request
        problem = stages.verify(exchange, now, settings)
        if problem is not None:
            logger.warning("auth callout request rejected: %s", problem)
            return await self._deny(exchange, Outcome.REJECTED, problem, started)
        budget = stages.decision_budget(exchange.claims.exp, now, settings)
        # One deadline for everything that may wait: the throttle store included.
        deadline = asyncio.get_running_loop().time() + budget
        gate = self._gate
        in_thread = settings.run_sync_in_thread
        identity: Identity | None = None
        try:
            if gate is None:
                identity = await stages.identify(
                    self.lookup, request, deadline, in_thread=in_thread
                )
            else:
                identity = await gate.admit(
                    request,
                    deadline,
                    lambda: stages.identify(self.lookup, request, deadline, in_thread=in_thread),
                )
            grant = await stages.authorize(
                self.permissions, identity, request, deadline, in_thread=in_thread
            )
            user_jwt, expires = await stages.issue(exchange, identity, grant, now, settings)
        except Throttled as exc:
            return await self._deny(exchange, Outcome.THROTTLED, exc.reason, started, identity)
        except Denied as exc:
            return await self._deny(exchange, Outcome.DENIED, exc.reason, started, identity)
        except stages.InvalidGrant as exc:
            return await self._deny(exchange, Outcome.ERROR, exc.reason, started, identity)
        except Drop as exc:
            latency = time.perf_counter() - started
            return Decision(Outcome.DROPPED, None, exc.reason, request, identity, latency=latency)
        except stages.Unsigned:
            raise
        except TimeoutError:
            logger.warning(
                "auth callout decision for client %s exceeded %.2fs; denying",
                stages.client_label(request),
                budget,
            )
            return await self._deny(exchange, Outcome.TIMEOUT, _TIMEOUT_REASON, started, identity)
        except StoreUnavailable as exc:  # expected while a store is down: no traceback per login
            logger.error(  # noqa: TRY400 - one line per login, not a traceback
                "auth callout store unavailable for client %s; denying: %s",
                stages.client_label(request),
                stages.printable(str(exc)),
            )
            return await self._deny(
                exchange, Outcome.ERROR, settings.error_reason, started, identity
            )
        except Exception:
            logger.exception(
                "auth callout policy failed for client %s; denying", stages.client_label(request)
            )
            return await self._deny(
                exchange, Outcome.ERROR, settings.error_reason, started, identity
            )
        reply = await stages.respond(
            exchange, stages.granted(exchange, user_jwt), int(self._clock())
        )
        return Decision(
            Outcome.ALLOWED,
            reply,
            "",
            request,
            identity,
            grant.account,
            latency=time.perf_counter() - started,
            issued_at=int(now),
            expires_at=expires,
        )

    async def _deny(
        self,
        exchange: stages.Exchange,
        outcome: Outcome,
        reason: str,
        started: float,
        identity: Identity | None = None,
    ) -> Decision:
        reply = await stages.respond(exchange, stages.refused(exchange, reason), int(self._clock()))
        latency = time.perf_counter() - started
        return Decision(outcome, reply, reason, exchange.request, identity, latency=latency)
