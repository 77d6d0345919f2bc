"""Test helpers: play nats-server's side of auth callout.

:class:`FakeServer` mints authorization requests exactly as nats-server 2.15
does and checks replies with every check nats-server makes (SPEC §4), so a
test sees *why* nats-server would refuse a reply instead of a bare
``Authorization Violation``. It behaves like the ``version`` it claims
(2.15.1 by default, the strictest): older versions check the response signer
less, ignore ``proxy_required`` (before 2.12) and report a token as the
client's user name (before 2.10.28/2.11.2); see
:mod:`faststream_callout.protocol.versions`. It works without a broker (pass the bytes to a
:class:`~faststream_callout.CalloutPipeline`) and with FastStream's
``TestNatsBroker`` (:meth:`FakeServer.login`).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec

from faststream_callout.core.errors import InvalidJWTError, InvalidKeyError
from faststream_callout.core.signing import ANY_ACCOUNT, CalloutMode, SigningKeys
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import (
    AUTH_REQUEST_AUDIENCE,
    AUTH_REQUEST_TYPE,
    CLAIMS_VERSION,
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponseClaims,
    ClientInfo,
    ClientTLS,
    ConnectOptions,
    ServerId,
    UserClaims,
)
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key
from faststream_callout.protocol.validation import user_issues
from faststream_callout.protocol.versions import (
    checks_response_signer_strictly,
    enforces_proxy_required,
    redacts_token_user,
)
from faststream_callout.protocol.xkeys import XKeyPair

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

__all__ = ["FakeServer", "MintedRequest", "Verdict"]

_INVALID: Final = "authorization response had validation errors: "
_client_ids = itertools.count(1)
_ClaimsT = TypeVar("_ClaimsT", AuthorizationResponseClaims, UserClaims)


@dataclass(frozen=True, slots=True)
class MintedRequest:
    """A request as nats-server would publish it on ``$SYS.REQ.USER.AUTH``."""

    body: bytes
    headers: Mapping[str, str]
    claims: AuthorizationRequestClaims

    @property
    def user_nkey(self) -> str:
        """The per-attempt user key the reply must be for."""
        return self.claims.nats.user_nkey

    @property
    def server_xkey(self) -> str | None:
        """The ``Nats-Server-Xkey`` header, if the request is encrypted."""
        return self.headers.get(XKEY_HEADER)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What nats-server makes of a reply.

    Attributes:
        allowed: the client would be let in.
        reason: why not, worded as nats-server logs it (empty when allowed).
        account: where the client lands: an account name (config mode) or
            public key (operator mode).
        user: the decoded user JWT claims, when the reply carried one.
        response: the decoded response claims, when the reply decoded.
        encrypted: the reply was an ``xkv1`` box.
        invalid: the reply is malformed or wrongly signed: nats-server would
            refuse it although the service meant to answer (a bug, not a deny).

    """

    allowed: bool
    reason: str = ""
    account: str = ""
    user: UserClaims | None = None
    # Not in the repr: it holds the signed user JWT.
    response: AuthorizationResponseClaims | None = field(default=None, repr=False)
    encrypted: bool = False
    invalid: bool = False

    @property
    def error(self) -> str:
        """The ``nats.error`` the service sent, if it denied with a reason."""
        return self.response.nats.error if self.response else ""


class _Refused(Exception):  # noqa: N818 - internal: a verdict, not a failure
    def __init__(self, reason: str, *, invalid: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invalid = invalid


@dataclass
class FakeServer:
    """nats-server's side of auth callout, for tests.

    Build it with :meth:`config_mode`, :meth:`operator_mode` or :meth:`for_keys`.

    Attributes:
        mode: config or operator mode.
        callout_account: the ``auth_callout.issuer`` (config mode) or the
            callout account public key (operator mode): the request ``sub``.
        accounts: config mode: the configured account names a user JWT ``aud``
            may name (``None``: any). Operator mode: account public key ->
            its signing keys (public keys), for every account the server knows.
        allowed_accounts: operator mode: where the service may place users
            (``["*"]`` for any).
        service_xkey: the service's public xkey the server is configured with;
            requests are then encrypted.
        version: the nats-server version to claim in ``server_id`` and to
            behave like (see :mod:`faststream_callout.protocol.versions`).

    """

    mode: CalloutMode
    callout_account: str
    accounts: Mapping[str, Collection[str]] | None = None
    allowed_accounts: Collection[str] = ()
    service_xkey: str | None = None
    name: str = "fake-server"
    host: str = "127.0.0.1"
    version: str = "2.15.1"
    auth_timeout: float = 2.0
    key: KeyPair = field(default_factory=KeyPair.create_server)
    xkey: XKeyPair = field(default_factory=XKeyPair.generate)

    @classmethod
    def config_mode(
        cls,
        issuer: str,
        *,
        accounts: Iterable[str] | None = None,
        xkey: str | None = None,
    ) -> FakeServer:
        """Simulate a server with ``authorization { auth_callout { issuer: <issuer> } }``.

        ``accounts`` are the configured account names (``$G`` is always there).
        """
        known = None if accounts is None else dict.fromkeys([*accounts, "$G"], ())
        return cls(CalloutMode.CONFIG, issuer, known, (), xkey)

    @classmethod
    def operator_mode(
        cls,
        callout_account: str,
        *,
        accounts: Mapping[str, Collection[str]],
        allowed_accounts: Collection[str] = (),
        xkey: str | None = None,
    ) -> FakeServer:
        """Simulate a server in operator mode whose account ``callout_account`` has external auth.

        ``accounts`` maps every account public key the server knows (include the
        callout account) to its signing keys' public keys.
        """
        return cls(CalloutMode.OPERATOR, callout_account, accounts, allowed_accounts, xkey)

    @classmethod
    def for_keys(cls, keys: SigningKeys) -> FakeServer:
        """Simulate a server configured to match ``keys`` (issuer, xkey, target accounts)."""
        xkey = keys.xkey.public_key if keys.xkey else None
        if keys.mode is CalloutMode.CONFIG:
            return cls.config_mode(keys.callout_account, xkey=xkey)
        signing: dict[str, set[str]] = {}
        for account in keys.target_accounts:
            signer = keys.user_jwt_signer(account)
            signing.setdefault(account, set())
            if signer is not None and signer.issuer_account:
                signing[account].add(signer.key.public_key)
        allowed = sorted(keys.allowed_accounts)
        return cls.operator_mode(
            keys.callout_account,
            accounts=signing,
            allowed_accounts=allowed,
            xkey=xkey,
        )

    # -- requests ---------------------------------------------------------------

    def request(
        self,
        *,
        user: str = "",
        password: str = "",
        token: str = "",
        jwt_token: str = "",
        nkey: str = "",
        sig: str = "",
        nonce: str = "",
        client_name: str = "",
        client_host: str = "127.0.0.1",
        client_type: str = "nats",
        kind: str = "Client",
        tls: ClientTLS | None = None,
        client_id: int | None = None,
        lang: str = "python3",
        lang_version: str = "2.16.0",
        now: float | None = None,
    ) -> MintedRequest:
        """Mint the request nats-server publishes when a client connects with these options."""
        issued = int(time.time() if now is None else now)
        user_nkey = KeyPair.create_user().public_key
        raw_user = nkey or user or (_jwt_subject(jwt_token) if jwt_token else "")
        if not raw_user and token:
            raw_user = "[REDACTED]" if redacts_token_user(self.version) else token
        encrypted = self.service_xkey is not None
        request = AuthorizationRequest(
            server_id=ServerId(
                name=self.name,
                host=self.host,
                id=self.key.public_key,
                version=self.version,
                xkey=self.xkey.public_key if encrypted else "",
            ),
            user_nkey=user_nkey,
            client_info=ClientInfo(
                host=client_host,
                id=next(_client_ids) if client_id is None else client_id,
                user=raw_user,
                name=client_name,
                kind=kind,
                type=client_type,
                nonce=nonce if sig else "",
            ),
            connect_opts=ConnectOptions(
                jwt=jwt_token,
                nkey=nkey,
                sig=sig,
                auth_token=token,
                user=user,
                password=password,
                name=client_name,
                lang=lang,
                version=lang_version,
                protocol=1,
            ),
            client_tls=tls,
            type=AUTH_REQUEST_TYPE,
            version=CLAIMS_VERSION,
        )
        claims = AuthorizationRequestClaims(
            aud=AUTH_REQUEST_AUDIENCE,
            exp=issued + max(1, int(self.auth_timeout)),
            sub=self.callout_account,
            nats=request,
        )
        token_bytes = jwt.encode(claims, self.key, now=issued).encode("ascii")
        signed = jwt.decode(token_bytes, AuthorizationRequestClaims)
        if self.service_xkey is None:
            return MintedRequest(token_bytes, {}, signed)
        sealed = self.xkey.seal(token_bytes, self.service_xkey)
        return MintedRequest(sealed, {XKEY_HEADER: self.xkey.public_key}, signed)

    async def login(
        self,
        broker: NatsBroker,
        *,
        subject: str = AUTH_CALLOUT_SUBJECT,
        timeout: float = 2.0,  # noqa: ASYNC109 - passed on to broker.request
        **connect: str,
    ) -> Verdict:
        """Send a minted request through ``broker`` (``TestNatsBroker``); judge the reply."""
        minted = self.request(**connect)  # type: ignore[arg-type]
        reply = await broker.request(
            minted.body, subject, headers=dict(minted.headers), timeout=timeout
        )
        return self.check(minted, reply.body)

    # -- replies -----------------------------------------------------------------

    def check(
        self, minted: MintedRequest, reply: bytes | None, *, now: float | None = None
    ) -> Verdict:
        """Judge ``reply`` to ``minted`` as nats-server would (SPEC §4).

        ``None`` is no reply at all (a dropped request): the server times out.
        """
        encrypted = False
        response: AuthorizationResponseClaims | None = None
        user: UserClaims | None = None
        try:
            if reply is None:  # a dropped request: the server waits out its timeout
                raise _Refused("authorization callout response not received in time", invalid=False)
            if not reply:
                raise _Refused('auth callout violation: "no reason supplied"', invalid=False)
            body = reply
            if self.service_xkey is not None and not reply.startswith(b"eyJ"):
                try:
                    body = self.xkey.open(reply, self.service_xkey)
                except InvalidKeyError as exc:
                    raise _Refused(
                        f"error decrypting auth callout response: nkeys: {exc}"
                    ) from None
                encrypted = True
            response = _decode(body, AuthorizationResponseClaims)
            self._check_envelope(minted, response, now)
            # 2.15.1 checks the signer before the error, older servers after it; an
            # encrypted response skips the check: the box authenticates the sender.
            strict = checks_response_signer_strictly(self.version)
            if strict and not encrypted:
                self._check_signer_strictly(response)
            if response.nats.error:
                raise _Refused(
                    f"auth callout service returned an error: {response.nats.error}",
                    invalid=False,
                )
            if not strict and not encrypted:
                self._check_signer_before_2_15_1(response)
            user = _decode(response.nats.jwt, UserClaims)
            account = self._check_user(minted, user, now)
        except _Refused as refused:
            return Verdict(
                allowed=False,
                reason=refused.reason,
                user=user,
                response=response,
                encrypted=encrypted,
                invalid=refused.invalid,
            )
        return Verdict(
            allowed=True, account=account, user=user, response=response, encrypted=encrypted
        )

    def _check_envelope(
        self,
        minted: MintedRequest,
        response: AuthorizationResponseClaims,
        now: float | None,
    ) -> None:
        nats = response.nats
        if not is_public_key(response.sub, KeyKind.USER):
            raise _Refused(_INVALID + "Subject must be a user public key")
        if not is_public_key(response.aud, KeyKind.SERVER):
            raise _Refused(_INVALID + "Audience must be a server public key")
        if not nats.error and not nats.jwt:
            raise _Refused(_INVALID + "Error or Jwt is required")
        if nats.error and nats.jwt:
            raise _Refused(_INVALID + "Only Error or Jwt can be set")
        if nats.issuer_account and not is_public_key(nats.issuer_account, KeyKind.ACCOUNT):
            raise _Refused(_INVALID + "issuer_account is not an account public key")
        try:
            jwt.validate_times(response, now=now)
        except InvalidJWTError as exc:
            raise _Refused(_INVALID + str(exc)) from None
        if response.sub != minted.user_nkey:
            raise _Refused("auth callout violation: auth callout response is not for expected user")
        if response.aud != minted.claims.nats.server_id.id:
            raise _Refused("auth callout violation: auth callout response is not for server")

    def _check_signer_strictly(self, response: AuthorizationResponseClaims) -> None:
        # nats-server 2.15.1 checks the response signer in both modes.
        nats = response.nats
        if self.mode is CalloutMode.CONFIG:
            if response.iss != self.callout_account:
                raise _Refused("auth callout signing key is unknown")
            return
        if nats.issuer_account and nats.issuer_account != self.callout_account:
            raise _Refused(
                f"auth callout response issuer account {nats.issuer_account!r} "
                "is not the callout account"
            )
        if response.iss != self.callout_account and response.iss not in self._signing_keys(
            self.callout_account
        ):
            raise _Refused("auth callout signing key is unknown")

    def _check_signer_before_2_15_1(self, response: AuthorizationResponseClaims) -> None:
        # Operator mode only: issuer_account (else iss) must be the callout account
        # or one of its signing keys. Config mode does not check the signer at all.
        if self.mode is CalloutMode.CONFIG:
            return
        signer = response.nats.issuer_account or response.iss
        if signer != self.callout_account and signer not in self._signing_keys(
            self.callout_account
        ):
            raise _Refused("auth callout signing key is unknown")

    def _check_user(self, minted: MintedRequest, user: UserClaims, now: float | None) -> str:
        if user.nats.proxy_required and enforces_proxy_required(self.version):
            raise _Refused("proxy connection required")
        try:
            jwt.validate_times(user, now=now)
        except InvalidJWTError as exc:
            raise _Refused(f"error validating user JWT: {exc}") from None
        issues = user_issues(user.nats, strict=False)
        if issues:
            raise _Refused(f"error validating user JWT: {issues[0]}")
        if user.sub != minted.user_nkey:
            raise _Refused(f"expected authorized user of {minted.user_nkey!r} but got {user.sub!r}")
        if self.mode is CalloutMode.CONFIG:
            if user.nats.issuer_account:
                raise _Refused("error non operator mode account: attempted to use issuer_account")
            if user.iss != self.callout_account:
                raise _Refused(
                    f"wrong issuer for auth callout response, expected {self.callout_account!r} "
                    f"got {user.iss!r}"
                )
            if not user.aud or (self.accounts is not None and user.aud not in self.accounts):
                raise _Refused(
                    f"no valid account {user.aud!r} for auth callout response: account missing"
                )
            return user.aud
        signer = user.nats.issuer_account or user.iss
        allowed = set(self.allowed_accounts)
        if signer != self.callout_account and signer not in allowed and allowed != {ANY_ACCOUNT}:
            raise _Refused(
                f"account {user.iss!r} not permitted as valid account option for auth callout"
            )
        if self.accounts is not None and signer not in self.accounts:
            raise _Refused(
                f"no valid account {signer!r} for auth callout response: account missing"
            )
        if user.iss != signer and user.iss not in self._signing_keys(signer):
            raise _Refused(f"user JWT issuer {user.iss!r} is not known")
        return signer

    def _signing_keys(self, account: str) -> Collection[str]:
        return (self.accounts or {}).get(account, ())


def _decode(token: str | bytes, claims_type: type[_ClaimsT]) -> _ClaimsT:
    try:
        return jwt.decode(token, claims_type, go_nulls=True)
    except InvalidJWTError as exc:
        raise _Refused(str(exc)) from None


def _jwt_subject(token: str) -> str:
    # nats-server reports the presented user JWT's public key as the raw auth user.
    try:
        payload = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        sub = claims.get("sub", "") if isinstance(claims, dict) else ""
        return sub if isinstance(sub, str) else ""
    except (IndexError, ValueError):
        return ""
