"""The stages of one authorization request, each a small function with one job.

``open -> verify -> identify -> authorize -> issue -> respond``:

- :func:`open_request` decrypts the body (xkey) and :func:`decode_request` checks
  the request JWT's signature; :func:`select_keys` picks the keys of the callout
  account the signed ``sub`` names. Failing any of them, nothing can be answered.
- :func:`verify` runs the named checks of :data:`CLAIMS_CHECKS` and
  :data:`SEAL_CHECKS` and returns the first problem; :func:`claims_problems` and
  :func:`seal_problems` return every problem (``faststream-callout doctor``).
- :func:`identify` and :func:`authorize` call the policy ports by a deadline.
- :func:`issue` turns a grant into a signed user JWT, rule by rule:
  :func:`placement_problem`, :func:`version_problem`, :func:`expiry`,
  :func:`user_claims`, :func:`sign`.
- :func:`respond` signs the authorization response and seals it (:func:`seal`).

:class:`~faststream_callout.core.pipeline.CalloutPipeline` runs them in that order
and is the only place that knows it; the doctor opens and verifies the requests it
observes with the same functions, so both judge a request alike.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec
import nacl.exceptions

from faststream_callout.core.errors import Denied, InvalidJWTError, InvalidKeyError, SignerError
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.policy import (
    Grant,
    Identity,
    IdentityLookup,
    PermissionBuilder,
    resolve_by,
)
from faststream_callout.core.signing import (
    AccountSigner,
    CalloutMode,
    RequestKeys,
    Signer,
    SigningKeys,
    sign_jwt,
)
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
    Permission,
    ResponsePermission,
    User,
    UserClaims,
)
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key
from faststream_callout.protocol.validation import user_issues
from faststream_callout.protocol.versions import enforces_proxy_required
from faststream_callout.protocol.xkeys import XKeyPair

if TYPE_CHECKING:
    from faststream_callout.core.pipeline import CalloutSettings

__all__ = [
    "CLAIMS_CHECKS",
    "REQUEST_LIFETIME_LEEWAY",
    "SEAL_CHECKS",
    "Exchange",
    "InvalidGrant",
    "Problem",
    "Rejected",
    "Unsigned",
    "authorize",
    "call_port",
    "callout_request",
    "claims_problems",
    "client_label",
    "decision_budget",
    "decode_request",
    "expiry",
    "granted",
    "identify",
    "issue",
    "open_request",
    "placement_problem",
    "printable",
    "raw_user",
    "refused",
    "respond",
    "seal",
    "seal_problems",
    "select_keys",
    "sign",
    "signing_deadline",
    "user_claims",
    "verify",
    "version_problem",
]

logger: Final = logging.getLogger("faststream_callout")
#: Seconds a request's ``exp`` may lie beyond ``iat`` + ``CalloutSettings.auth_timeout``:
#: nats-server writes ``exp`` the timeout after ``iat``, in whole seconds. Generous on
#: purpose: a server whose ``authorization.timeout`` was raised a little above the
#: setting must keep working; the check refuses requests minted to live for long.
REQUEST_LIFETIME_LEEWAY: Final = 10.0
# What strict mode writes for a direction a grant leaves out.
_DENY_ALL: Final = Permission(deny=[">"])


# -- what ends a request early ------------------------------------------------------------


class Rejected(Exception):  # noqa: N818 - an outcome, like Denied
    """The request cannot be trusted: nothing signed may answer it. ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidGrant(Exception):  # noqa: N818 - an outcome, like Denied
    """The policy's grant cannot be issued (a bug or misconfiguration: outcome ``error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unsigned(Exception):  # noqa: N818 - an outcome, like Denied
    """An external signer failed: nothing can be signed, a denial neither."""

    def __init__(self, request: AuthorizationRequest, reason: str) -> None:
        super().__init__(reason)
        self.request = request
        self.reason = reason


# -- the request between the stages --------------------------------------------------------


class Exchange(msgspec.Struct, frozen=True):
    """One opened request and what its reply needs.

    A frozen ``msgspec.Struct``, never encoded: of the frozen kinds the quickest
    to build (0.1 us, a frozen dataclass takes 1 us), and it is built per request.

    Attributes:
        claims: the request JWT, signature checked (the other checks: :func:`verify`).
        request: what the policy sees: ``claims.nats`` with ``callout_account``
            set from the signed ``sub`` (nats-server does not send it).
        keys: the keys of that callout account: they sign the reply.
        accepted_xkeys: that account's xkeys; the one that opened the request must be one.
        server_xkey: the ``Nats-Server-Xkey`` header: the reply is sealed to it.
        xkey: our xkey that opened the request; the server opens the reply with it.
        sign_by: the loop time by which external signers must answer.

    """

    claims: AuthorizationRequestClaims
    request: AuthorizationRequest
    keys: SigningKeys
    accepted_xkeys: tuple[XKeyPair, ...]
    server_xkey: str | None = None
    xkey: XKeyPair | None = None
    sign_by: float | None = None


# -- open -------------------------------------------------------------------------------------


def open_request(
    body: bytes, server_xkey: str | None, xkeys: tuple[XKeyPair, ...], *, max_size: int
) -> tuple[bytes, XKeyPair | None]:
    """The request JWT in ``body`` and the xkey of ``xkeys`` that opened it (``None``: plain).

    Raises:
        Rejected: too large, encrypted without an xkey of ours, or for none of them.

    """
    if len(body) > max_size:
        raise Rejected(f"request of {len(body)} bytes exceeds the size limit")
    if server_xkey is None:
        return body, None
    if not xkeys:
        raise Rejected(
            "request is encrypted (Nats-Server-Xkey header) but this service has no xkey; "
            "give SigningKeys the xkey whose public key the server is configured with"
        )
    # The request does not say which of our keys it is for (during a rotation, or
    # with several callout accounts): a wrong key fails its MAC check quickly.
    for xkey in xkeys:
        try:
            return xkey.open(body, server_xkey), xkey
        except (InvalidKeyError, nacl.exceptions.CryptoError) as exc:
            error = exc
    ours = " or ".join(x.public_key for x in xkeys)
    raise Rejected(
        f"cannot decrypt request ({error}); is the server configured with our xkey {ours}?"
    )


def decode_request(token: bytes) -> AuthorizationRequestClaims:
    """The request claims, once the JWT's form and server signature check out.

    Raises:
        Rejected: not a request JWT signed by the server key in its ``iss``.

    """
    try:
        return jwt.decode(token, AuthorizationRequestClaims)
    except InvalidJWTError as exc:
        # Anyone who may publish the subject can send this: the reason is logged.
        raise Rejected(printable(str(exc))) from None


def select_keys(keys: SigningKeys | Keyring, claims: AuthorizationRequestClaims) -> RequestKeys:
    """The keys for the callout account the request's signed ``sub`` names.

    Raises:
        Rejected: we hold no keys of that account: nothing we sign would be accepted.

    """
    selected = keys.select(claims.sub)
    if selected is None:
        ours = ", ".join(keys.callout_accounts)
        raise Rejected(
            f"request is for callout account {claims.sub}, this service signs for {ours}"
        )
    return selected


def callout_request(claims: AuthorizationRequestClaims) -> AuthorizationRequest:
    """What the policy sees: ``claims.nats``, told which callout account asked."""
    return msgspec.structs.replace(claims.nats, callout_account=claims.sub)


# -- verify -------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """A failed check: its name (see :data:`CLAIMS_CHECKS`, :data:`SEAL_CHECKS`) and why."""

    check: str
    reason: str


def _audience(claims: AuthorizationRequestClaims, _now: float, _s: CalloutSettings) -> str | None:
    if claims.aud != AUTH_REQUEST_AUDIENCE:
        return "request audience is not nats-authorization-request"
    return None


def _signed_by_the_server(
    claims: AuthorizationRequestClaims, _now: float, _s: CalloutSettings
) -> str | None:
    if claims.iss != claims.nats.server_id.id:
        return "request issuer is not the server named in server_id"
    return None


def _has_expiry(claims: AuthorizationRequestClaims, _now: float, _s: CalloutSettings) -> str | None:
    return None if claims.exp else "request has no expiry"


def _lifetime(
    claims: AuthorizationRequestClaims, _now: float, settings: CalloutSettings
) -> str | None:
    # nats-server writes exp = iat + authorization.timeout (whole seconds). A longer
    # one (year 3000) was not minted for one login: it could be answered for long.
    if not claims.exp:
        return None  # _has_expiry says so
    if not claims.iat:
        return "request has no issue time (iat)"
    allowed = settings.auth_timeout + REQUEST_LIFETIME_LEEWAY
    lifetime = claims.exp - claims.iat
    if lifetime > allowed:
        return (
            f"request expires {lifetime}s after it was issued, more than the auth timeout "
            f"allows ({settings.auth_timeout:g}s + {REQUEST_LIFETIME_LEEWAY:g}s); set "
            "CalloutSettings.auth_timeout to the server's authorization.timeout"
        )
    return None


def _in_time(claims: AuthorizationRequestClaims, now: float, _s: CalloutSettings) -> str | None:
    try:
        jwt.validate_times(claims, now=now)
    except InvalidJWTError as exc:
        return f"request {exc}"
    return None


def _user_nkey(claims: AuthorizationRequestClaims, _now: float, _s: CalloutSettings) -> str | None:
    if not is_public_key(claims.nats.user_nkey, KeyKind.USER, cached=False):
        return "request user_nkey is not a user public key"
    return None


def _header_is_signed(exchange: Exchange) -> str | None:
    server_xkey = exchange.server_xkey
    if server_xkey is not None and server_xkey != exchange.claims.nats.server_id.xkey:
        return "Nats-Server-Xkey header does not match the signed server_id.xkey"
    return None


def _encrypted(exchange: Exchange) -> str | None:
    xkeys = exchange.accepted_xkeys
    if exchange.server_xkey is None and xkeys:
        return (
            "request is not encrypted but this service has an xkey; configure the server "
            f"with xkey {xkeys[0].public_key} or remove the xkey from SigningKeys"
        )
    return None


def _for_this_account(exchange: Exchange) -> str | None:
    xkey = exchange.xkey
    if xkey is not None and xkey not in exchange.accepted_xkeys:
        return (
            f"request for callout account {exchange.claims.sub} is encrypted for the xkey "
            f"{xkey.public_key} of another callout account"
        )
    return None


# (the claims, the Unix time the request arrived, the pipeline's settings) -> the problem
ClaimsCheck = Callable[[AuthorizationRequestClaims, float, "CalloutSettings"], str | None]
SealCheck = Callable[[Exchange], str | None]

#: Checks of the signed request claims at a Unix time: name -> the problem, or None.
CLAIMS_CHECKS: Final[tuple[tuple[str, ClaimsCheck], ...]] = (
    ("audience", _audience),
    ("issuer", _signed_by_the_server),
    ("expiry", _has_expiry),
    ("lifetime", _lifetime),
    ("times", _in_time),
    ("user_nkey", _user_nkey),
)
#: Checks of the encryption against the keys of the account the request is for.
SEAL_CHECKS: Final[tuple[tuple[str, SealCheck], ...]] = (
    ("xkey_header", _header_is_signed),
    ("encrypted", _encrypted),
    ("xkey_account", _for_this_account),
)


def verify(exchange: Exchange, now: float, settings: CalloutSettings) -> str | None:
    """The first problem of the request received at Unix time ``now``, or ``None``."""
    claims = exchange.claims
    for _, claims_check in CLAIMS_CHECKS:
        problem = claims_check(claims, now, settings)
        if problem is not None:
            return problem
    for _, seal_check in SEAL_CHECKS:
        problem = seal_check(exchange)
        if problem is not None:
            return problem
    return None


def claims_problems(
    claims: AuthorizationRequestClaims, now: float, settings: CalloutSettings
) -> list[Problem]:
    """Every failed claims check, in :data:`CLAIMS_CHECKS` order."""
    found = ((name, check(claims, now, settings)) for name, check in CLAIMS_CHECKS)
    return [Problem(name, problem) for name, problem in found if problem is not None]


def seal_problems(exchange: Exchange) -> list[Problem]:
    """Every failed seal check, in :data:`SEAL_CHECKS` order."""
    found = ((name, check(exchange)) for name, check in SEAL_CHECKS)
    return [Problem(name, problem) for name, problem in found if problem is not None]


# -- deadlines ----------------------------------------------------------------------------------


def decision_budget(exp: int, now: float, settings: CalloutSettings) -> float:
    """Seconds the policy may take for a request received at Unix time ``now``.

    nats-server gives up ``authorization.timeout`` after it sent the request and
    writes ``exp`` as that instant rounded *down* to whole seconds, so its real
    deadline lies in ``[exp, exp + 1)``: ``exp`` alone would cut up to a second
    off. The receipt time plus the configured timeout is at or after the real
    deadline only by the (small) transit time.
    """
    server_deadline = min(now + settings.auth_timeout, exp + 1)
    return min(settings.max_decision_time, server_deadline - settings.deadline_margin - now)


def signing_deadline(exp: int, now: float, settings: CalloutSettings) -> float:
    """The loop time by which external signers must answer: the server's deadline.

    Denials included: a signature that comes later is of no use.
    """
    server_deadline = now + settings.auth_timeout
    if exp:  # nats-server rounds its deadline down into exp
        server_deadline = min(server_deadline, exp + 1)
    return asyncio.get_running_loop().time() + server_deadline - now


# -- identify, authorize ------------------------------------------------------------------------


async def call_port(
    method: Callable[..., object], deadline: float, *args: object, in_thread: bool = False
) -> object:
    """A policy port's method, sync or async, called by the loop time ``deadline``.

    ``in_thread`` runs a synchronous method in a worker thread, where the deadline
    holds for it too (its late answer is discarded) and the loop keeps serving.
    """
    if not in_thread or inspect.iscoroutinefunction(method):
        return await resolve_by(deadline, method(*args))
    result: object = await resolve_by(deadline, asyncio.to_thread(method, *args))
    return await resolve_by(deadline, result)


async def identify(
    lookup: IdentityLookup,
    request: AuthorizationRequest,
    deadline: float,
    *,
    in_thread: bool = False,
) -> Identity:
    """Who the client is, by ``deadline``; ``Denied`` (or ``Drop``) from the lookup propagates."""
    identity = await call_port(lookup.lookup, deadline, request, in_thread=in_thread)
    if not isinstance(identity, Identity):
        raise TypeError(f"IdentityLookup returned {type(identity).__name__}, not Identity")
    return identity


async def authorize(
    permissions: PermissionBuilder,
    identity: Identity,
    request: AuthorizationRequest,
    deadline: float,
    *,
    in_thread: bool = False,
) -> Grant:
    """What ``identity`` may do, by ``deadline``."""
    grant = await call_port(permissions.build, deadline, identity, request, in_thread=in_thread)
    if not isinstance(grant, Grant):
        raise TypeError(f"PermissionBuilder returned {type(grant).__name__}, not Grant")
    return grant


# -- issue --------------------------------------------------------------------------------------


def placement_problem(grant: Grant, keys: SigningKeys, settings: CalloutSettings) -> str | None:
    """Why users cannot be placed where ``grant`` says, or ``None``."""
    account = grant.account
    problem = keys.placement_issue(account)
    if problem is not None:
        return problem
    if account in settings.protected_accounts:
        return f"grant places the client in protected account {account}"
    if settings.strict and keys.mode is CalloutMode.OPERATOR and account == keys.callout_account:
        # There a client may be able to subscribe to the authorization requests
        # (passwords and tokens, in clear without an xkey).
        return "grant places the client in the callout account (strict mode refuses it)"
    return None


def version_problem(grant: Grant, request: AuthorizationRequest) -> str | None:
    """Why the asking server cannot apply ``grant`` as meant, or ``None``."""
    if grant.proxy_required and not enforces_proxy_required(request.server_id.version):
        # Servers before 2.12 ignore the flag: the client would get in without a proxy.
        return "proxy_required needs nats-server 2.12+; this server would ignore it"
    return None


def expiry(grant: Grant, now: float, settings: CalloutSettings) -> int:
    """The user JWT's ``exp`` (Unix seconds, 0 for none) for a grant issued at ``now``.

    Raises:
        InvalidGrant: a ttl that is not positive.
        Denied: the credential behind the grant (``expires_at``) has expired.

    """
    candidates: list[int] = []
    if settings.max_ttl is not None:
        candidates.append(math.ceil(now + settings.max_ttl))
    if grant.ttl is None and grant.expires_at is None and settings.default_ttl is not None:
        candidates.append(math.ceil(now + settings.default_ttl))
    if grant.ttl is not None:
        if grant.ttl <= 0:
            raise InvalidGrant("grant ttl must be positive")
        candidates.append(math.ceil(now + grant.ttl))
    if grant.expires_at is not None:
        if grant.expires_at <= now:
            raise Denied("credential expired")
        # Never outlive the credential: round down.
        candidates.append(max(int(now), math.floor(grant.expires_at)))
    return min(candidates) if candidates else 0


def user_claims(
    grant: Grant,
    *,
    name: str,
    user_nkey: str,
    signer: AccountSigner,
    mode: CalloutMode,
    expires: int,
    strict: bool,
) -> UserClaims:
    """The user JWT's claims for ``grant``, named ``name``, for the client key ``user_nkey``.

    ``strict`` denies the direction (``pub`` or ``sub``) a grant leaves out, see
    :func:`_closed_directions`.

    Raises:
        InvalidGrant: the permissions or limits are invalid (see ``user_issues``).

    """
    resp = grant.resp
    if resp is not None:
        # Go cannot decode a JSON float into an int: force integers.
        resp = ResponsePermission(max=int(resp.max), ttl=int(resp.ttl))
    pub, sub = grant.pub, grant.sub
    issues: list[str] = []
    if strict:
        pub, sub = _closed_directions(grant, issues)
    user = User(
        pub=pub,
        sub=sub,
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
    issues += user_issues(user, strict=strict)
    if issues:
        logger.error("grant for %r is invalid: %s", name, "; ".join(issues))
        raise InvalidGrant(f"invalid grant: {issues[0]}")
    return UserClaims(
        aud=grant.account if mode is CalloutMode.CONFIG else "",
        exp=expires,
        name=grant.name if grant.name is not None else name,
        nbf=math.ceil(grant.not_before) if grant.not_before else 0,
        sub=user_nkey,
        nats=user,
    )


def _restricts(permission: Permission) -> bool:
    # An empty allow list is omitted from the JWT: the direction is missing.
    return bool(permission.allow or permission.deny)


def _closed_directions(grant: Grant, issues: list[str]) -> tuple[Permission, Permission]:
    """Strict mode: ``pub`` and ``sub`` with every missing direction denied (``deny: [">"]``).

    nats-server leaves a direction the user JWT does not mention unrestricted as
    soon as another one is set; it applies the account's default permissions only
    when ``pub``, ``sub`` and ``resp`` are all missing, and never per direction.
    A missing ``resp`` needs nothing: without it nothing is allowed beyond ``pub``.
    """
    pub, sub = grant.pub, grant.sub
    if not (_restricts(pub) or _restricts(sub) or grant.resp is not None):
        if not grant.account_defaults:
            issues.append(
                "grant sets no permissions, so the account defaults (often everything) apply; "
                "set pub/sub, or account_defaults=True to mean it"
            )
        return pub, sub
    if grant.account_defaults:
        issues.append(
            "account_defaults=True with pub, sub or resp set: nats-server applies the account "
            "defaults only to a grant without any; leave a direction open with "
            "Permission(allow=['>'])"
        )
    return (pub if _restricts(pub) else _DENY_ALL), (sub if _restricts(sub) else _DENY_ALL)


async def issue(
    exchange: Exchange, identity: Identity, grant: Grant, now: float, settings: CalloutSettings
) -> tuple[str, int]:
    """The signed user JWT for ``grant`` and its ``exp``.

    Raises:
        InvalidGrant: placement, server version or the grant itself (see the rules above).
        Denied: the credential has expired.
        Unsigned: the external signer failed.

    """
    keys = exchange.keys
    problem = placement_problem(grant, keys, settings)
    signer = keys.user_jwt_signer(grant.account)
    if problem is not None or signer is None:
        problem = printable(problem or f"no signing key for account {grant.account}")
        logger.error("cannot place %r: %s", identity.name, problem)
        raise InvalidGrant(problem)
    problem = version_problem(grant, exchange.request)
    if problem is not None:
        logger.error("cannot grant %r: %s", identity.name, problem)
        raise InvalidGrant(problem)
    expires = expiry(grant, now, settings)
    claims = user_claims(
        grant,
        name=identity.name,
        user_nkey=exchange.request.user_nkey,
        signer=signer,
        mode=keys.mode,
        expires=expires,
        strict=settings.strict,
    )
    issued_at = int(now)
    if isinstance(signer.key, KeyPair):
        return jwt.encode(claims, signer.key, now=issued_at), expires
    return await sign(claims, signer.key, issued_at, exchange), expires


async def sign(
    claims: UserClaims | AuthorizationResponseClaims, signer: Signer, now: int, exchange: Exchange
) -> str:
    """Sign with an external signer by the exchange's deadline.

    Raises:
        Unsigned: the signer failed; then nothing can be sent but an empty denial.

    """
    try:
        return await sign_jwt(claims, signer, now=now, deadline=exchange.sign_by)
    except SignerError as exc:
        logger.error(  # noqa: TRY400 - the signer's traceback may quote its own secrets
            "cannot sign the reply to client %s: %s; replying empty (an unsigned denial)",
            client_label(exchange.request),
            exc,
        )
        raise Unsigned(exchange.request, str(exc)) from None


# -- respond ------------------------------------------------------------------------------------


def granted(exchange: Exchange, user_jwt: str) -> AuthorizationResponse:
    """The response that lets the client in with ``user_jwt``."""
    return AuthorizationResponse(
        jwt=user_jwt,
        issuer_account=exchange.keys.response_signer.issuer_account,
        type=AUTH_RESPONSE_TYPE,
        version=CLAIMS_VERSION,
    )


def refused(exchange: Exchange, reason: str) -> AuthorizationResponse:
    """The response that denies the login, with ``reason`` for the server's log."""
    return AuthorizationResponse(
        error=reason,
        issuer_account=exchange.keys.response_signer.issuer_account,
        type=AUTH_RESPONSE_TYPE,
        version=CLAIMS_VERSION,
    )


async def respond(exchange: Exchange, response: AuthorizationResponse, now: int) -> bytes:
    """The reply body: ``response`` signed for the asking server, sealed if the request was.

    Raises:
        Unsigned: the external signer failed.

    """
    request = exchange.request
    claims = AuthorizationResponseClaims(
        aud=request.server_id.id, sub=request.user_nkey, nats=response
    )
    key = exchange.keys.response_signer.key
    if isinstance(key, KeyPair):
        token = jwt.encode_bytes(claims, key, now=now)
    else:
        token = (await sign(claims, key, now, exchange)).encode("ascii")
    return seal(token, exchange)


def seal(token: bytes, exchange: Exchange) -> bytes:
    """``token`` sealed to the ``Nats-Server-Xkey`` header with the xkey that opened the request.

    For an allowed reply the header was verified equal to the signed
    ``server_id.xkey``; otherwise the reply is only a denial. The server opens
    the reply with the key it sealed the request for: ours that opened it.
    """
    if exchange.server_xkey is not None and exchange.xkey is not None:
        return exchange.xkey.seal(token, exchange.server_xkey)
    return token


# -- how requests are named in logs -------------------------------------------------------------


def raw_user(request: AuthorizationRequest) -> str:
    """The client's user name as the server reported it; a token reported as one is redacted."""
    # nats-server before 2.10.28/2.11.2 reported the token itself as the user.
    user = request.client_info.user
    token = request.connect_opts.auth_token
    return "[REDACTED]" if token and user == token else user


def printable(text: str) -> str:
    """``text`` with every unprintable character escaped, so a log record stays one line.

    Client-supplied text (a CONNECT user name, say) could otherwise forge log lines
    with a newline, a carriage return or a Unicode line separator.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def client_label(request: AuthorizationRequest) -> str:
    """``user@host (cid N, kind type)`` for log lines; never a secret, always one line."""
    info = request.client_info
    user = printable(raw_user(request)) or "?"
    host = printable(info.host) or "?"
    return f"{user}@{host} (cid {info.id}, {printable(info.kind) or '?'} {printable(info.type)})"
