"""Which keys sign what: :class:`SigningKeys`, the keys of one callout account.

A key that signs is a :class:`Signer`: an in-memory :class:`KeyPair`, or any
object with the same ``public_key`` and a ``sign`` that may be ``async`` (a
KMS, an HSM, a signing service). Signatures from signers other than a
``KeyPair`` are checked before use: see :func:`external_signature`.

Several callout accounts in one service, and key rotation, are the job of
:class:`~faststream_callout.core.keyring.Keyring`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, NamedTuple, Protocol, TypeVar, final, runtime_checkable

from faststream_callout.core.errors import ConfigurationError, SignerError
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import _Claims
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key, verify_signature
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = [
    "ANY_ACCOUNT",
    "AccountSigner",
    "CalloutMode",
    "RequestKeys",
    "Signer",
    "SigningKeys",
    "external_signature",
    "probe_signers",
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


@dataclass(frozen=True, slots=True, repr=False)
class AccountSigner:
    """A key that signs JWTs on behalf of one account.

    ``key`` is the account key itself (``issuer_account`` empty) or one of the
    account's signing keys (``issuer_account`` is then the account's public key,
    and the JWTs it signs name it, as nats-server requires). ``repr`` shows
    public keys only, never the signer's own ``repr`` (a KMS client's may hold
    credentials).
    """

    key: Signer
    issuer_account: str = ""

    def __repr__(self) -> str:
        account = f", issuer_account={self.issuer_account}" if self.issuer_account else ""
        return f"AccountSigner({self.key.public_key}{account})"


class RequestKeys(NamedTuple):
    """The keys that answer one request, read once when it arrives.

    ``signing`` are the keys of the request's callout account: they sign the
    response and the user JWT. ``xkeys`` are the curve keys that account accepts
    (during a rotation, the next one too): the key that opened the request must
    be one of them, and the reply is sealed with it.
    """

    signing: SigningKeys
    xkeys: tuple[XKeyPair, ...]


@final
class SigningKeys:
    """The keys of one callout account: what signs responses, what signs user JWTs, the xkey.

    Config mode (``authorization { auth_callout { issuer: A... } }``): one
    account key, the ``issuer``, signs every response and every user JWT; the
    user JWT's ``aud`` names the target account::

        SigningKeys(issuer, xkey=xkey)

    Operator mode: the callout account (or one of its signing keys) signs
    responses, and each target account's key (or a signing key of it) signs
    the user JWTs placed there. Build with :meth:`operator`.

    ``xkey`` is the service's curve key when the server is configured with one.
    The keys never change once built; ``repr`` shows public keys only, and
    pickling is refused.

    Every key may be a :class:`KeyPair` or any other :class:`Signer` (a KMS or
    HSM, ``sign`` sync or ``async``). The pipeline awaits an external signer
    until nats-server's deadline and verifies each signature it returns. When a
    signer fails, times out or returns a bad signature, nothing can be signed,
    not even a denial: the reply is empty, which nats-server reads as a denial
    (``Auth callout violation: "no reason supplied"``), the decision's outcome
    is ``signer_failed`` and an ERROR is logged. Fail closed, and fast.

    Several callout accounts, or the next keys of an account (rotation): give
    the pipeline a :class:`~faststream_callout.core.keyring.Keyring` of
    ``SigningKeys``. A ``SigningKeys`` alone answers requests like a keyring of
    one account (:attr:`xkeys`, :meth:`select`, :attr:`callout_accounts`).
    """

    __slots__ = (
        "_allowed_accounts",
        "_callout_account",
        "_external",
        "_mode",
        "_request_keys",
        "_response_signer",
        "_user_jwt_signers",
        "_xkey",
        "_xkeys",
    )

    def __init__(self, issuer: KeyPair | Signer, *, xkey: XKeyPair | None = None) -> None:
        """Config mode: ``issuer`` (``auth_callout.issuer``) signs responses and user JWTs.

        Args:
            issuer: the issuer account's key pair, or a :class:`Signer` of that key.
            xkey: the curve key named in ``auth_callout.xkey``.

        """
        issuer = _check_signer(issuer, "the auth callout issuer")
        self._init(CalloutMode.CONFIG, issuer.public_key, AccountSigner(issuer), xkey=xkey)

    @classmethod
    def operator(
        cls,
        callout_account: KeyPair | Signer | str,
        *,
        signing_key: KeyPair | Signer | None = None,
        accounts: Mapping[str, KeyPair | Signer] | None = None,
        allowed_accounts: Collection[str] | None = None,
        xkey: XKeyPair | None = None,
    ) -> SigningKeys:
        """Keys for operator mode.

        Args:
            callout_account: the callout account's key pair (or signer), or its
                public key when responses are signed by ``signing_key``.
            signing_key: a signing key of the callout account to sign responses
                (and users placed in the callout account) instead of its own key.
            accounts: target account public key -> the key that signs the user
                JWTs placed there: the account key itself or one of its signing keys.
            allowed_accounts: the callout account JWT's ``authorization.allowed_accounts``
                (``["*"]`` for any). Grants for other accounts are refused here,
                before nats-server would refuse them. Default: the ``accounts`` given.
            xkey: the curve key named in the account JWT's ``authorization.xkey``.

        """
        if not isinstance(callout_account, str):
            callout_account = _check_signer(callout_account, "the callout account")
        account = (
            callout_account if isinstance(callout_account, str) else callout_account.public_key
        )
        if not is_public_key(account, KeyKind.ACCOUNT):
            raise ConfigurationError("the callout account must be an account public key (A...)")
        if signing_key is not None:
            response_key = _check_signer(signing_key, "the callout account's signing key")
        elif not isinstance(callout_account, str):
            response_key = callout_account
        else:
            raise ConfigurationError(
                "give the callout account's key pair or one of its signing keys"
            )
        response_signer = _account_signer(account, response_key)
        # Users placed into the callout account itself are signed like its responses.
        user_jwt_signers = {account: response_signer}
        for target, key in (accounts or {}).items():
            if not is_public_key(target, KeyKind.ACCOUNT):
                raise ConfigurationError(
                    "operator-mode target accounts are account public keys (A...)"
                )
            user_jwt_signers[target] = _account_signer(
                target, _check_signer(key, "the key signing user JWTs")
            )
        allowed = None if allowed_accounts is None else frozenset(allowed_accounts)
        keys = object.__new__(cls)
        keys._init(
            CalloutMode.OPERATOR,
            account,
            response_signer,
            user_jwt_signers=user_jwt_signers,
            allowed_accounts=allowed,
            xkey=xkey,
        )
        return keys

    def _init(
        self,
        mode: CalloutMode,
        callout_account: str,
        response_signer: AccountSigner,
        *,
        user_jwt_signers: dict[str, AccountSigner] | None = None,
        allowed_accounts: frozenset[str] | None = None,
        xkey: XKeyPair | None,
    ) -> None:
        # The one place the fields are set, by either constructor.
        if xkey is not None and not isinstance(xkey, XKeyPair):
            raise ConfigurationError(f"xkey must be an XKeyPair, not {type(xkey).__name__}")
        self._mode = mode
        self._response_signer = response_signer
        self._callout_account = callout_account
        self._user_jwt_signers = user_jwt_signers or {}
        self._allowed_accounts = allowed_accounts
        self._xkey = xkey
        # Read per request by the pipeline: computed once here.
        self._xkeys: tuple[XKeyPair, ...] = () if xkey is None else (xkey,)
        self._external = any(not isinstance(key, KeyPair) for key in self.signers)
        self._request_keys = RequestKeys(self, self._xkeys)

    @property
    def mode(self) -> CalloutMode:
        """Config or operator mode."""
        return self._mode

    @property
    def callout_account(self) -> str:
        """The callout account (config mode: the issuer), the ``sub`` of its requests."""
        return self._callout_account

    @property
    def response_signer(self) -> AccountSigner:
        """The key that signs authorization responses (and how it names its account)."""
        return self._response_signer

    def user_jwt_signer(self, account: str) -> AccountSigner | None:
        """The key that signs user JWTs placed into ``account``, or ``None`` without one.

        Config mode: the issuer, for every account.
        """
        if self._mode is CalloutMode.CONFIG:
            return self._response_signer
        return self._user_jwt_signers.get(account)

    @property
    def signers(self) -> tuple[Signer, ...]:
        """Every key that signs: the response signer, then the user JWT signers (no repeats)."""
        keys = [self._response_signer.key, *(s.key for s in self._user_jwt_signers.values())]
        return tuple({id(key): key for key in keys}.values())

    @property
    def external(self) -> bool:
        """Whether some key is not an in-memory :class:`KeyPair` (a KMS, an HSM)."""
        return self._external

    @property
    def xkey(self) -> XKeyPair | None:
        """The curve key the server encrypts requests for, if it is configured with one."""
        return self._xkey

    @property
    def xkeys(self) -> tuple[XKeyPair, ...]:
        """The curve keys a request may be encrypted for: ``(xkey,)``, or none."""
        return self._xkeys

    @property
    def callout_accounts(self) -> tuple[str, ...]:
        """The callout accounts these keys answer for: ``(callout_account,)``."""
        return (self._callout_account,)

    def select(self, callout_account: str) -> RequestKeys | None:
        """The keys that answer a request sent for ``callout_account`` (its signed ``sub``)."""
        return self._request_keys if callout_account == self._callout_account else None

    def placement_issue(self, account: str) -> str | None:
        """Why users cannot be placed into ``account``, or ``None`` if they can."""
        if self._mode is CalloutMode.CONFIG:
            return None if account else "grant names no account"
        if not is_public_key(account, KeyKind.ACCOUNT):
            return "operator-mode grants name the account by its public key (A...)"
        allowed = self._allowed_accounts
        if (
            account != self._callout_account
            and allowed is not None
            and allowed != {ANY_ACCOUNT}
            and account not in allowed
        ):
            return f"account {account} is not in the callout account's allowed_accounts"
        if account not in self._user_jwt_signers:
            return f"no signing key for account {account}"
        return None

    @property
    def allowed_accounts(self) -> frozenset[str]:
        """Operator mode: where users may be placed (``{"*"}`` for any account)."""
        if self._allowed_accounts is not None:
            return self._allowed_accounts
        return frozenset(self._user_jwt_signers) - {self._callout_account}

    @property
    def target_accounts(self) -> frozenset[str]:
        """Operator mode: the accounts we can place users into. Config mode: empty."""
        return frozenset(self._user_jwt_signers)

    async def probe(self, *, within: float = 5.0) -> None:
        """Have every external signer sign a probe and check the signatures.

        For start-up (``after_startup=[keys.probe]``): a misconfigured KMS then
        fails the start instead of the first logins. In-memory keys are skipped.

        Raises:
            SignerError: the first signer that failed, by public key.

        """
        await probe_signers(self.signers, within=within)

    def __repr__(self) -> str:
        xkey = f", xkey={self._xkey.public_key}" if self._xkey is not None else ""
        return f"SigningKeys({self._mode.value}, callout_account={self._callout_account}{xkey})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would write the keys (or a KMS client's credentials) somewhere else.
        raise TypeError("SigningKeys cannot be pickled; build them from their seeds")


async def probe_signers(signers: Iterable[Signer], *, within: float = 5.0) -> None:
    """Have each external signer sign a probe, all by ``within`` seconds from now.

    In-memory :class:`KeyPair` keys are skipped.

    Raises:
        SignerError: the first signer that failed, by public key.

    """
    deadline = asyncio.get_running_loop().time() + within
    for signer in {id(s): s for s in signers}.values():
        if not isinstance(signer, KeyPair):
            await external_signature(signer, b"faststream-callout signer probe", deadline=deadline)


def _account_signer(account: str, key: Signer) -> AccountSigner:
    return AccountSigner(key, "" if key.public_key == account else account)
