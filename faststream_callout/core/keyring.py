"""Several callout accounts in one service, and key rotation: :class:`Keyring`.

A keyring holds :class:`SigningKeys` (immutable, one callout account each): the
current keys of every account it serves and, while a rotation is under way, the
next keys of some. The pipeline reads it once per request: every xkey a request
may be encrypted for (:attr:`Keyring.xkeys`), then, once the request is opened
and verified, the keys of the callout account it names (:meth:`Keyring.select`).
"""

from __future__ import annotations

from collections.abc import Iterable

from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.signing import RequestKeys, SigningKeys, probe_signers
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = ["Keyring"]


class Keyring:
    """The keys of several callout accounts, and their rotation.

    Several callout accounts: each request is answered with the keys of the
    callout account it was sent for, the request JWT's ``sub``, signed by the
    server (operator mode: the callout account; config mode:
    ``auth_callout.issuer``). Requests for any other account get an empty reply
    (a denial). Requests are opened with the xkeys of all of them. Subscribe in
    each callout account (one connection, so one broker, per account) with the
    same pipeline. In config mode this also changes the issuer without a gap:
    a keyring of the old and the new issuer serves the servers of a cluster
    while they restart one by one.

    Rotation: ``next_keys`` are the keys an account switches to at
    :meth:`rotate`. Until then they sign nothing, but requests encrypted for
    their xkey are opened already (and the reply is sealed with the xkey that
    opened the request: the server opens it with that one). After
    :meth:`rotate` the previous keys are the next ones: their xkey is still
    accepted (servers that have not seen the new account JWT yet keep using
    it) and a second ``rotate()`` switches back. :meth:`retire` forgets them.

    Each request reads the keys once: a request in flight finishes with the keys
    it started with, whatever is rotated meanwhile. ``repr`` shows public keys
    only, and pickling is refused.

    Args:
        *keys: the current keys of each callout account, one ``SigningKeys`` per account.
        next_keys: the keys some of these accounts rotate to: same callout
            account and mode, with another signing key or xkey.

    Raises:
        ConfigurationError: no keys, something that is not ``SigningKeys``, two
            current (or two next) keys for one account, next keys for an account
            without current keys, or of the other mode.

    """

    __slots__ = ("_current", "_next", "_request_keys", "_xkeys")

    def __init__(self, *keys: SigningKeys, next_keys: Iterable[SigningKeys] = ()) -> None:
        if not keys:
            raise ConfigurationError("a Keyring needs the SigningKeys of at least one account")
        self._current: dict[str, SigningKeys] = {}
        for given in keys:
            account = _checked(given).callout_account
            if account in self._current:
                raise ConfigurationError(
                    f"two SigningKeys for callout account {account}; "
                    "give the keys to rotate to as next_keys"
                )
            self._current[account] = given
        self._next: dict[str, SigningKeys] = {}
        for following in next_keys:
            account = _checked(following).callout_account
            current = self._current.get(account)
            if current is None:
                raise ConfigurationError(
                    f"next keys for callout account {account}, which has no current keys"
                )
            if account in self._next:
                raise ConfigurationError(f"two next SigningKeys for callout account {account}")
            if following.mode is not current.mode:
                raise ConfigurationError(
                    f"the next keys of callout account {account} are for {following.mode.value} "
                    f"mode, the current ones for {current.mode.value} mode"
                )
            self._next[account] = following
        self._refresh()

    @property
    def xkeys(self) -> tuple[XKeyPair, ...]:
        """Every curve key a request may be encrypted for: current and next, of every account."""
        return self._xkeys

    def select(self, callout_account: str) -> RequestKeys | None:
        """The keys that answer a request sent for ``callout_account`` (its signed ``sub``).

        The current keys of that account sign; its current and next xkeys are accepted.
        """
        return self._request_keys.get(callout_account)

    @property
    def callout_accounts(self) -> tuple[str, ...]:
        """The callout accounts this keyring answers for, in the order given."""
        return tuple(self._current)

    @property
    def current(self) -> tuple[SigningKeys, ...]:
        """The keys that sign now, one per callout account."""
        return tuple(self._current.values())

    @property
    def next_keys(self) -> tuple[SigningKeys, ...]:
        """The keys that sign after :meth:`rotate` (after it: the previous ones)."""
        return tuple(self._next.values())

    def rotate(self, callout_account: str | None = None) -> None:
        """Switch to the next keys: of every account, or of ``callout_account`` only.

        The next keys sign from now on and the current ones become the next
        ones (their xkey is still accepted). Accounts without next keys keep
        their keys.

        Raises:
            ConfigurationError: ``callout_account`` is not in the keyring.

        """
        for account in self._accounts(callout_account):
            following = self._next.get(account)
            if following is not None:
                self._next[account], self._current[account] = self._current[account], following
        self._refresh()

    def retire(self, callout_account: str | None = None) -> None:
        """Forget the next (after :meth:`rotate`: the previous) keys, of all or one account.

        Raises:
            ConfigurationError: ``callout_account`` is not in the keyring.

        """
        for account in self._accounts(callout_account):
            self._next.pop(account, None)
        self._refresh()

    async def probe(self, *, within: float = 5.0) -> None:
        """Have every external signer, current and next, sign a probe and check it.

        For start-up (``after_startup=[keyring.probe]``): see :meth:`SigningKeys.probe`.

        Raises:
            SignerError: the first signer that failed, by public key.

        """
        every = [*self._current.values(), *self._next.values()]
        await probe_signers((key for keys in every for key in keys.signers), within=within)

    def _accounts(self, callout_account: str | None) -> list[str]:
        if callout_account is None:
            return list(self._current)
        if callout_account not in self._current:
            raise ConfigurationError(f"no keys for callout account {callout_account}")
        return [callout_account]

    def _refresh(self) -> None:
        # What the pipeline reads per request, computed when the keys change. Both
        # are replaced whole, never changed in place.
        request_keys: dict[str, RequestKeys] = {}
        for account, current in self._current.items():
            following = self._next.get(account)
            xkeys = current.xkeys if following is None else _unique(current.xkeys, following.xkeys)
            request_keys[account] = RequestKeys(current, xkeys)
        self._request_keys = request_keys
        self._xkeys = _unique(*(keys.xkeys for keys in request_keys.values()))

    def __repr__(self) -> str:
        keys = ", ".join(repr(keys) for keys in self._current.values())
        following = ", ".join(repr(keys) for keys in self._next.values())
        return f"Keyring({keys}, next_keys=[{following}])" if following else f"Keyring({keys})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Keyring cannot be pickled; build it from the keys' seeds")


def _checked(keys: object) -> SigningKeys:
    if not isinstance(keys, SigningKeys):
        raise ConfigurationError(f"a Keyring holds SigningKeys, not {type(keys).__name__}")
    return keys


def _unique(*groups: tuple[XKeyPair, ...]) -> tuple[XKeyPair, ...]:
    # One key given twice (current and next keys that keep the xkey) is tried once.
    found: dict[str, XKeyPair] = {}
    for group in groups:
        for xkey in group:
            found.setdefault(xkey.public_key, xkey)
    return tuple(found.values())
