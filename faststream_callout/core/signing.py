"""Which keys sign what: :class:`SigningKeys` for config and operator mode.

A key that signs is a :class:`Signer`: an in-memory :class:`KeyPair`, or any
object with the same ``public_key`` and a ``sign`` that may be ``async`` (a
KMS, an HSM, a signing service). Signatures from signers other than a
``KeyPair`` are checked before use: see :func:`external_signature`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol, TypeVar, runtime_checkable

from faststream_callout.core.errors import ConfigurationError, SignerError
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import _Claims
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key, verify_signature
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = [
    "ANY_ACCOUNT",
    "CalloutMode",
    "Signer",
    "SigningKeys",
    "UserSigner",
    "external_signature",
    "sign_jwt",
]

ANY_ACCOUNT = "*"
SIGNATURE_SIZE: Final = 64
_ClaimsT = TypeVar("_ClaimsT", bound=_Claims)


@runtime_checkable
class Signer(Protocol):
    """An Ed25519 nkey that signs, wherever its private half lives.

    :class:`KeyPair` is the in-memory implementation. Anything else with a
    ``public_key`` (the nkey, ``A...``) and a ``sign`` returning the 64-byte
    Ed25519 signature, directly or as an awaitable, works too: a KMS or HSM
    client, a remote signing service. ``sign`` may raise; see :class:`SigningKeys`
    for what the pipeline then does.
    """

    @property
    def public_key(self) -> str:
        """The public nkey whose private key makes the signatures (``A...``)."""
        ...

    def sign(self, data: bytes) -> bytes | Awaitable[bytes]:
        """Return the Ed25519 signature of ``data`` (64 bytes), or an awaitable of it."""
        ...


async def external_signature(
    signer: Signer, data: bytes, *, public_key: str | None = None, deadline: float | None = None
) -> bytes:
    """Have ``signer`` sign ``data`` and check the result before anyone relies on it.

    The signature must be 64 bytes and verify against the signer's public key
    (about 50 us, next to the milliseconds a KMS takes): a signer pointed at
    the wrong key, or returning garbage, never gets a reply sent.

    Args:
        signer: the signer.
        data: the bytes to sign.
        public_key: the key the signature must verify with (default: the signer's).
        deadline: the event loop time (``loop.time()``) by which an ``async``
            signer must have answered.

    Raises:
        SignerError: the signer raised, timed out or returned an invalid signature.
            The message names the signer's public key, never data or signature.

    """
    key = signer.public_key if public_key is None else public_key
    try:
        signature = signer.sign(data)
        if inspect.isawaitable(signature):
            if deadline is None:
                signature = await signature
            else:
                async with asyncio.timeout_at(deadline):
                    signature = await signature
    except TimeoutError:
        raise SignerError(f"signer {key} did not answer in time") from None
    except Exception as exc:  # whatever the KMS client raises
        raise SignerError(f"signer {key} failed: {type(exc).__name__}") from exc
    if not isinstance(signature, bytes | bytearray | memoryview):
        raise SignerError(f"signer {key} returned {type(signature).__name__}, not bytes")
    signature = bytes(signature)
    if len(signature) != SIGNATURE_SIZE:
        raise SignerError(
            f"signer {key} returned {len(signature)} bytes, not a 64-byte Ed25519 signature"
        )
    if not verify_signature(key, data, signature):
        raise SignerError(
            f"signature from signer {key} does not verify with that public key "
            "(is the signer using another key?)"
        )
    return signature


async def sign_jwt(
    claims: _ClaimsT, signer: Signer, *, now: int | None = None, deadline: float | None = None
) -> str:
    """Encode ``claims`` as a JWT issued and signed by ``signer``.

    A :class:`KeyPair` signs in line; any other signer goes through
    :func:`external_signature` (awaited by ``deadline``, signature checked).

    Raises:
        SignerError: see :func:`external_signature`.

    """
    if isinstance(signer, KeyPair):
        return jwt.encode(claims, signer, now=now)
    public_key = signer.public_key
    data = jwt.signing_input(claims, public_key, now=now)
    signature = await external_signature(signer, data, public_key=public_key, deadline=deadline)
    return jwt.compact(data, signature)


def _check_signer(signer: object, what: str) -> Signer:
    """``signer`` if it is a Signer with an account public key, else a ConfigurationError."""
    if isinstance(signer, KeyPair):
        if signer.kind is not KeyKind.ACCOUNT:
            raise ConfigurationError(f"{what} must be an account key (A...)")
        return signer
    if not isinstance(signer, Signer):
        raise ConfigurationError(
            f"{what} must be a KeyPair or a Signer (public_key and sign), "
            f"not {type(signer).__name__}"
        )
    public_key = signer.public_key
    if not isinstance(public_key, str) or not is_public_key(public_key, KeyKind.ACCOUNT):
        raise ConfigurationError(f"{what} must be an account key (A...)")
    return signer


class CalloutMode(Enum):
    """How nats-server is configured: ``authorization.auth_callout`` or operator JWTs."""

    CONFIG = "config"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class UserSigner:
    """The key that signs user JWTs for one target account.

    ``issuer_account`` is the account's public key when ``key`` is one of its
    signing keys, and empty when ``key`` is the account key itself.
    """

    key: Signer
    issuer_account: str = ""


class SigningKeys:
    """The keys of a callout service.

    Config mode (``authorization { auth_callout { issuer: A... } }``): one
    account key, the ``issuer``, signs every response and every user JWT; the
    user JWT's ``aud`` names the target account.

    Operator mode: the callout account (or one of its signing keys) signs
    responses, and each target account's key (or a signing key of it) signs
    the user JWTs placed there. Build with :meth:`operator`.

    ``xkey`` is the service's curve key when the server is configured with one.
    ``repr`` shows public keys only.

    Every key may be a :class:`KeyPair` or any other :class:`Signer` (a KMS or
    HSM, ``sign`` sync or ``async``). The pipeline awaits an external signer
    until nats-server's deadline and verifies each signature it returns. When a
    signer fails, times out or returns a bad signature, nothing can be signed,
    not even a denial: the reply is empty, which nats-server reads as a denial
    (``Auth callout violation: "no reason supplied"``), the decision's outcome
    is ``signer_failed`` and an ERROR is logged. Fail closed, and fast.

    Rotation: ``next_xkey`` is accepted besides ``xkey`` (requests are opened
    with whichever of the two they were encrypted for, and the reply is sealed
    with that one), and operator mode's ``next_signing_key`` waits to sign
    until :meth:`rotate`. Several callout accounts: :meth:`combine`.
    """

    __slots__ = (
        "_allowed_accounts",
        "_external",
        "_members",
        "_mode",
        "_next_response_signer",
        "_next_xkey",
        "_response_signer",
        "_user_signers",
        "_xkey",
        "_xkeys",
        "callout_account",
    )

    def __init__(
        self,
        issuer: KeyPair | Signer,
        *,
        xkey: XKeyPair | None = None,
        next_xkey: XKeyPair | None = None,
    ) -> None:
        issuer = _check_signer(issuer, "the auth callout issuer")
        self._mode = CalloutMode.CONFIG
        self.callout_account: str = issuer.public_key
        self._response_signer = UserSigner(issuer)
        self._next_response_signer: UserSigner | None = None
        self._user_signers: dict[str, UserSigner] = {}
        self._allowed_accounts: frozenset[str] | None = None
        self._members: dict[str, SigningKeys] = {}  # several callout accounts: see combine()
        self._xkey = xkey
        self._next_xkey = next_xkey
        self._refresh()

    @classmethod
    def operator(
        cls,
        callout_account: KeyPair | Signer | str,
        *,
        signing_key: KeyPair | Signer | None = None,
        next_signing_key: KeyPair | Signer | None = None,
        accounts: Mapping[str, KeyPair | Signer] | None = None,
        allowed_accounts: Collection[str] | None = None,
        xkey: XKeyPair | None = None,
        next_xkey: XKeyPair | None = None,
    ) -> SigningKeys:
        """Keys for operator mode.

        Args:
            callout_account: the callout account's key pair (or signer), or its
                public key when responses are signed by ``signing_key``.
            signing_key: a signing key of the callout account to sign responses
                (and users placed in the callout account) instead of its own key.
            next_signing_key: the callout account's key that takes over at
                :meth:`rotate`; list it in the account JWT's ``signing_keys``
                before you rotate.
            accounts: target account public key -> the key that issues its
                users: the account key itself or one of its signing keys.
            allowed_accounts: the callout account JWT's ``authorization.allowed_accounts``
                (``["*"]`` for any). Grants for other accounts are refused here,
                before nats-server would refuse them. Default: the ``accounts`` given.
            xkey: the curve key named in the account JWT's ``authorization.xkey``.
            next_xkey: a curve key whose requests are accepted too: the one the
                account JWT is about to name (or named until just now).

        """
        if not isinstance(callout_account, str):
            callout_account = _check_signer(callout_account, "the callout account")
        account_pub = (
            callout_account if isinstance(callout_account, str) else callout_account.public_key
        )
        if not is_public_key(account_pub, KeyKind.ACCOUNT):
            raise ConfigurationError("the callout account must be an account public key (A...)")
        signer_key = signing_key
        if signer_key is None and not isinstance(callout_account, str):
            signer_key = callout_account
        if signer_key is None:
            raise ConfigurationError(
                "give the callout account's key pair or one of its signing keys"
            )
        self = cls(signer_key, xkey=xkey, next_xkey=next_xkey)
        self._mode = CalloutMode.OPERATOR
        self.callout_account = account_pub
        self._response_signer = _signer(account_pub, signer_key)
        if next_signing_key is not None:
            next_key = _check_signer(next_signing_key, "the next signing key")
            self._next_response_signer = _signer(account_pub, next_key)
        self._user_signers = {account_pub: self._response_signer}
        for target, key in (accounts or {}).items():
            if not is_public_key(target, KeyKind.ACCOUNT):
                raise ConfigurationError(
                    "operator-mode target accounts are account public keys (A...)"
                )
            key = _check_signer(key, "the key signing user JWTs")  # noqa: PLW2901
            self._user_signers[target] = _signer(target, key)
        if allowed_accounts is not None:
            self._allowed_accounts = frozenset(allowed_accounts)
        self._refresh()
        return self

    @classmethod
    def combine(cls, *keys: SigningKeys) -> SigningKeys:
        """One service for several callout accounts (or config-mode issuers).

        Each request is answered with the keys of the callout account it was
        sent for: the request JWT's ``sub``, signed by the server (operator mode:
        the callout account; config mode: ``auth_callout.issuer``). Requests
        for any other account get an empty reply (a denial). Requests are
        opened with the xkeys of all of them. Subscribe in each callout account
        (one connection, so one broker, per account) with the same pipeline.

        In config mode this also changes the issuer without a gap: combine the
        old and the new issuer while the servers of a cluster restart one by one.

        The combination's own ``callout_account``, ``mode``, ``xkey`` and
        signers are those of the first keys; :meth:`select` gives each one.
        """
        if not keys:
            raise ConfigurationError("combine at least one SigningKeys")
        members: dict[str, SigningKeys] = {}
        for key in keys:
            if not isinstance(key, SigningKeys):
                raise ConfigurationError(f"combine SigningKeys, not {type(key).__name__}")
            for member in key.members:
                if member.callout_account in members:
                    raise ConfigurationError(
                        f"two SigningKeys for callout account {member.callout_account}; "
                        "rotate keys with next_signing_key/next_xkey instead"
                    )
                members[member.callout_account] = member
        if len(members) == 1:
            return next(iter(members.values()))
        first = next(iter(members.values()))
        self = object.__new__(cls)
        for name in cls.__slots__:
            object.__setattr__(self, name, getattr(first, name))
        self._members = members
        self._refresh()
        return self

    @property
    def members(self) -> tuple[SigningKeys, ...]:
        """The keys of each callout account: ``(self,)`` unless combined (:meth:`combine`)."""
        return tuple(self._members.values()) if self._members else (self,)

    def select(self, callout_account: str) -> SigningKeys | None:
        """The keys for requests sent for ``callout_account`` (a request JWT's ``sub``)."""
        if self._members:
            return self._members.get(callout_account)
        return self if callout_account == self.callout_account else None

    @property
    def xkey(self) -> XKeyPair | None:
        """The curve key the server is configured with (the first of :attr:`xkeys`)."""
        return self._xkey

    @xkey.setter
    def xkey(self, value: XKeyPair | None) -> None:
        self._xkey = value
        self._refresh()

    @property
    def next_xkey(self) -> XKeyPair | None:
        """The other curve key accepted during an xkey rotation."""
        return self._next_xkey

    @property
    def xkeys(self) -> tuple[XKeyPair, ...]:
        """Every curve key a request may be encrypted for (combined: of every member)."""
        if self._members:
            return tuple(x for member in self._members.values() for x in member.xkeys)
        return self._xkeys

    @property
    def next_signing_key(self) -> Signer | None:
        """Operator mode: the key that signs responses after :meth:`rotate`."""
        signer = self._next_response_signer
        return None if signer is None else signer.key

    def rotate(self) -> None:
        """Switch to the next keys: ``next_signing_key`` signs, ``next_xkey`` becomes ``xkey``.

        The previous keys become the next ones: the old xkey is still accepted
        (servers that have not seen the new account JWT yet keep using it) and a
        second ``rotate()`` switches back. :meth:`retire` forgets them. Requests
        in flight finish with the keys they started with. Combined keys rotate
        every member; rotate one account with ``keys.select(account).rotate()``.
        """
        for member in self._members.values():
            member.rotate()
        if self._members:
            return
        if self._next_response_signer is not None:
            self._response_signer, self._next_response_signer = (
                self._next_response_signer,
                self._response_signer,
            )
            if self._mode is CalloutMode.OPERATOR:
                self._user_signers[self.callout_account] = self._response_signer
        if self._next_xkey is not None:
            self._xkey, self._next_xkey = self._next_xkey, self._xkey
        self._refresh()

    def retire(self) -> None:
        """Forget the next (after :meth:`rotate`: the previous) signing key and xkey."""
        for member in self._members.values():
            member.retire()
        self._next_response_signer = None
        self._next_xkey = None
        self._refresh()

    @property
    def external(self) -> bool:
        """Whether some key is not an in-memory :class:`KeyPair` (a KMS, an HSM)."""
        return self._external

    def _refresh(self) -> None:
        # Read per request by the pipeline: computed when the keys change, not then.
        self._xkeys = tuple(x for x in (self._xkey, self._next_xkey) if x is not None)
        self._external = any(not isinstance(s.key, KeyPair) for s in self._all_signers())

    def _all_signers(self) -> list[UserSigner]:
        if self._members:
            return [s for member in self._members.values() for s in member._all_signers()]  # noqa: SLF001
        signers = [self._response_signer, *self._user_signers.values()]
        if self._next_response_signer is not None:
            signers.append(self._next_response_signer)
        return signers

    async def probe(self, *, within: float = 5.0) -> None:
        """Have every external signer sign a probe and check the signatures.

        For start-up (``after_startup=[keys.probe]``): a misconfigured KMS then
        fails the start instead of the first logins. In-memory keys are skipped.

        Raises:
            SignerError: the first signer that failed, by public key.

        """
        deadline = asyncio.get_running_loop().time() + within
        for signer in {id(s.key): s.key for s in self._all_signers()}.values():
            if not isinstance(signer, KeyPair):
                await external_signature(
                    signer, b"faststream-callout signer probe", deadline=deadline
                )

    @property
    def mode(self) -> CalloutMode:
        """Config or operator mode."""
        return self._mode

    @property
    def response_signer(self) -> UserSigner:
        """The key that signs authorization responses (and how it names its account)."""
        return self._response_signer

    def user_signer(self, account: str) -> UserSigner | None:
        """Return the signer of user JWTs placed into ``account``, or ``None`` without a key."""
        if self._mode is CalloutMode.CONFIG:
            return self._response_signer
        return self._user_signers.get(account)

    def placement_issue(self, account: str) -> str | None:
        """Why users cannot be placed into ``account``, or ``None`` if they can."""
        if self._mode is CalloutMode.CONFIG:
            return None if account else "grant names no account"
        if not is_public_key(account, KeyKind.ACCOUNT):
            return "operator-mode grants name the account by its public key (A...)"
        allowed = self._allowed_accounts
        if (
            account != self.callout_account
            and allowed is not None
            and allowed != {ANY_ACCOUNT}
            and account not in allowed
        ):
            return f"account {account} is not in the callout account's allowed_accounts"
        if account not in self._user_signers:
            return f"no signing key for account {account}"
        return None

    @property
    def allowed_accounts(self) -> frozenset[str]:
        """Operator mode: where users may be placed (``{"*"}`` for any account)."""
        if self._allowed_accounts is not None:
            return self._allowed_accounts
        return frozenset(self._user_signers) - {self.callout_account}

    @property
    def target_accounts(self) -> frozenset[str]:
        """Operator mode: the accounts we can place users into. Config mode: empty."""
        return frozenset(self._user_signers)

    def __repr__(self) -> str:
        if self._members:
            inner = ", ".join(repr(member) for member in self._members.values())
            return f"SigningKeys.combine({inner})"
        xkeys = ", ".join(x.public_key for x in self._xkeys)
        xkey = f", xkeys=[{xkeys}]" if len(self._xkeys) > 1 else f", xkey={xkeys}" if xkeys else ""
        rotating = ", rotating" if self._next_response_signer is not None else ""
        return (
            f"SigningKeys({self._mode.value}, callout_account={self.callout_account}"
            f"{xkey}{rotating})"
        )


def _signer(account: str, key: Signer) -> UserSigner:
    return UserSigner(key, "" if key.public_key == account else account)
