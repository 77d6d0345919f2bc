"""Operator mode plumbing: operator, account and user JWTs, and ``.creds`` files.

nats-server in operator (decentralized) mode trusts an operator JWT; accounts are
account JWTs signed by the operator. Auth callout is switched on by the callout
account's ``authorization`` section. Production setups mint these with ``nsc``;
this module mints them for local development and tests, with the exact wire
format of nats-io/jwt v2.
"""

from __future__ import annotations

from typing import Final

import msgspec

from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import (
    CLAIMS_VERSION,
    Permission,
    User,
    UserClaims,
    _Claims,
    _Wire,
)
from faststream_callout.protocol.errors import ConfigurationError, InvalidJWTError, InvalidKeyError
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, decode_public_key, verify_signature

__all__ = [
    "AccountClaims",
    "ExternalAuthorization",
    "OperatorClaims",
    "account_jwt",
    "creds",
    "decode_account_jwt",
    "operator_jwt",
    "user_jwt",
]

NO_LIMIT = -1


class ExternalAuthorization(_Wire, frozen=True, kw_only=True):
    """The ``authorization`` section of an account JWT: turns auth callout on.

    ``auth_users`` (user public keys) bypass the callout: the service itself.
    ``allowed_accounts`` are account public keys users may be placed into, or ``["*"]``.
    ``xkey`` is the service's public curve key; requests are then encrypted.
    """

    auth_users: list[str] = []
    allowed_accounts: list[str] = []
    xkey: str = ""


class AccountLimits(_Wire, frozen=True, kw_only=True, omit_defaults=False):
    """Account limits as nats-io/jwt flattens them; the defaults mean unlimited.

    Always written in full: an omitted limit is 0, and a 0 connection limit admits no one.
    """

    subs: int = NO_LIMIT
    data: int = NO_LIMIT
    payload: int = NO_LIMIT
    imports: int = NO_LIMIT
    exports: int = NO_LIMIT
    wildcards: bool = True
    conn: int = NO_LIMIT
    leaf: int = NO_LIMIT


class Operator(_Wire, frozen=True, kw_only=True):
    """The ``nats`` part of an operator JWT."""

    signing_keys: list[str] = []
    system_account: str = ""
    type: str
    version: int


class AccountClaims(_Claims, frozen=True, kw_only=True):
    """An account JWT, signed by the operator (``nats`` kept as a mapping)."""

    nats: dict[str, object]


class OperatorClaims(_Claims, frozen=True, kw_only=True):
    """An operator JWT, self-signed."""

    nats: Operator


def _encode(claims: _Claims, key: KeyPair) -> str:
    # jwt.encode is typed for any claims struct; account/operator claims are not
    # decoded here, so only encoding is needed.
    return jwt.encode(claims, key)


def operator_jwt(operator: KeyPair, *, name: str = "operator", system_account: str = "") -> str:
    """A self-signed operator JWT naming the system account."""
    if operator.kind is not KeyKind.OPERATOR:
        raise ConfigurationError("an operator JWT is signed by an operator key (O...)")
    claims = OperatorClaims(
        name=name,
        sub=operator.public_key,
        nats=Operator(system_account=system_account, type="operator", version=CLAIMS_VERSION),
    )
    return _encode(claims, operator)


def account_jwt(
    account: str,
    operator: KeyPair,
    *,
    name: str,
    signing_keys: list[str] | None = None,
    authorization: ExternalAuthorization | None = None,
    revocations: dict[str, int] | None = None,
) -> str:
    """An account JWT for ``account`` (public key), signed by ``operator``.

    Args:
        account: the account public key (``A...``).
        operator: the operator key pair.
        name: the account's name.
        signing_keys: public keys of the account's signing keys.
        authorization: set to turn auth callout on for this account.
        revocations: user public key (or ``*``) -> Unix time: JWTs issued before are revoked.

    """
    if operator.kind is not KeyKind.OPERATOR:
        raise ConfigurationError("an account JWT is signed by an operator key (O...)")
    # Built as a mapping: empty sections are left out, as Go's omitempty does.
    nats: dict[str, object] = {"limits": AccountLimits()}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    if revocations:
        nats["revocations"] = dict(revocations)
    if authorization is not None:
        nats["authorization"] = authorization
    nats["type"] = "account"
    nats["version"] = CLAIMS_VERSION
    return _encode(AccountClaims(name=name, sub=account, nats=nats), operator)


_ACCOUNT_DECODER: Final = msgspec.json.Decoder(AccountClaims)


def decode_account_jwt(token: str) -> AccountClaims:
    """Decode an account JWT and verify its signature by an operator key (``O...``).

    Whether that operator (or signing key) is trusted is the server's call; this
    only makes sure the token is intact, so a re-signed copy changes nothing else.

    Raises:
        InvalidJWTError: with a reason that never quotes the token.

    """
    data = token.encode("ascii", "replace")
    if len(data) > jwt.MAX_TOKEN_SIZE:
        raise InvalidJWTError(f"token size {len(data)} exceeds maximum of {jwt.MAX_TOKEN_SIZE}")
    parts = data.split(b".")
    if len(parts) != 3:
        raise InvalidJWTError("expected 3 chunks")
    header, payload, signature = parts
    # jwt.decode needs typed ``nats`` claims; its helpers apply the same Go rules here.
    unb64 = jwt._b64decode  # noqa: SLF001
    jwt._check_header(unb64(header))  # noqa: SLF001
    try:
        claims = _ACCOUNT_DECODER.decode(unb64(payload))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidJWTError("JWT claims are not a valid account JWT") from None
    nats = claims.nats
    if claims.v1_type or nats.get("type") != "account" or nats.get("version") != CLAIMS_VERSION:
        raise InvalidJWTError("not a version 2 account claim")
    try:
        decode_public_key(claims.sub, KeyKind.ACCOUNT)
        decode_public_key(claims.iss, KeyKind.OPERATOR)
    except InvalidKeyError:
        raise InvalidJWTError(
            "account JWT subject or issuer is not the right kind of key"
        ) from None
    if not verify_signature(claims.iss, header + b"." + payload, unb64(signature)):
        raise InvalidJWTError("claim failed V2 signature verification")
    return claims


def user_jwt(
    user: str,
    account: KeyPair,
    *,
    name: str = "",
    issuer_account: str = "",
    bearer_token: bool = False,
    pub: Permission | None = None,
    sub: Permission | None = None,
) -> str:
    """A user JWT for ``user`` (public key) signed by ``account`` (or its signing key).

    For the callout service's own credentials and for sentinels (``bearer_token=True``
    with ``pub``/``sub`` denying ``>``).
    """
    claims = UserClaims(
        name=name,
        sub=user,
        nats=User(
            pub=pub or Permission(),
            sub=sub or Permission(),
            subs=NO_LIMIT,  # an omitted limit is 0: no subscriptions at all
            data=NO_LIMIT,
            payload=NO_LIMIT,
            bearer_token=bearer_token,
            issuer_account=issuer_account,
            type="user",
            version=CLAIMS_VERSION,
        ),
    )
    return jwt.encode(claims, account)


def creds(user_jwt_token: str, user_key: KeyPair) -> str:
    """The text of a ``.creds`` file (user JWT + seed), as ``nsc`` writes it. Secret."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt_token}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_key.seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
