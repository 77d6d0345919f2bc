"""Which keys sign what: :class:`SigningKeys` for config and operator mode."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from faststream_callout.errors import ConfigurationError
from faststream_callout.keys import KeyKind, KeyPair, is_public_key
from faststream_callout.xkeys import XKeyPair

__all__ = ["ANY_ACCOUNT", "CalloutMode", "SigningKeys", "UserSigner"]

ANY_ACCOUNT = "*"


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

    key: KeyPair
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
    """

    __slots__ = (
        "_allowed_accounts",
        "_mode",
        "_response_signer",
        "_user_signers",
        "callout_account",
        "xkey",
    )

    def __init__(self, issuer: KeyPair, *, xkey: XKeyPair | None = None) -> None:
        if issuer.kind is not KeyKind.ACCOUNT:
            raise ConfigurationError("the auth callout issuer must be an account key (A...)")
        self._mode = CalloutMode.CONFIG
        self.callout_account: str = issuer.public_key
        self._response_signer = UserSigner(issuer)
        self._user_signers: dict[str, UserSigner] = {}
        self._allowed_accounts: frozenset[str] | None = None
        self.xkey = xkey

    @classmethod
    def operator(
        cls,
        callout_account: KeyPair | str,
        *,
        signing_key: KeyPair | None = None,
        accounts: Mapping[str, KeyPair] | None = None,
        allowed_accounts: Collection[str] | None = None,
        xkey: XKeyPair | None = None,
    ) -> SigningKeys:
        """Keys for operator mode.

        Args:
            callout_account: the callout account's key pair, or its public key
                when responses are signed by ``signing_key``.
            signing_key: a signing key of the callout account to sign responses
                (and users placed in the callout account) instead of its own key.
            accounts: target account public key -> the key that issues its
                users: the account key itself or one of its signing keys.
            allowed_accounts: the callout account JWT's ``authorization.allowed_accounts``
                (``["*"]`` for any). Grants for other accounts are refused here,
                before nats-server would refuse them. Default: the ``accounts`` given.
            xkey: the curve key named in the account JWT's ``authorization.xkey``.

        """
        account_pub = (
            callout_account if isinstance(callout_account, str) else callout_account.public_key
        )
        if not is_public_key(account_pub, KeyKind.ACCOUNT):
            raise ConfigurationError("the callout account must be an account public key (A...)")
        signer_key = signing_key or (
            callout_account if isinstance(callout_account, KeyPair) else None
        )
        if signer_key is None:
            raise ConfigurationError(
                "give the callout account's key pair or one of its signing keys"
            )
        self = cls(signer_key, xkey=xkey)
        self._mode = CalloutMode.OPERATOR
        self.callout_account = account_pub
        self._response_signer = _signer(account_pub, signer_key)
        self._user_signers = {account_pub: self._response_signer}
        for target, key in (accounts or {}).items():
            if not is_public_key(target, KeyKind.ACCOUNT):
                raise ConfigurationError(
                    "operator-mode target accounts are account public keys (A...)"
                )
            if key.kind is not KeyKind.ACCOUNT:
                raise ConfigurationError("user JWTs are signed by account keys (A...)")
            self._user_signers[target] = _signer(target, key)
        if allowed_accounts is not None:
            self._allowed_accounts = frozenset(allowed_accounts)
        return self

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
        xkey = f", xkey={self.xkey.public_key}" if self.xkey else ""
        return f"SigningKeys({self._mode.value}, callout_account={self.callout_account}{xkey})"


def _signer(account: str, key: KeyPair) -> UserSigner:
    return UserSigner(key, "" if key.public_key == account else account)
