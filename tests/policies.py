"""Test policies shared by the test files: identity lookups and permission builders.

One module, so a test file says which policy it uses instead of writing its own.
Lookups count their calls and the peak number in flight, so tests can assert on them.
Grants name accounts by name ("APP"); the real-server environments (tests/callout_env.py)
map a name to what the server calls the account (its public key in operator mode).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from faststream_callout import AuthorizationRequest, Denied, Grant, Identity, Permission
from faststream_callout.core.errors import Drop

__all__ = [
    "USER_INFO_SUBJECT",
    "Everyone",
    "FixedGrant",
    "FixedLookup",
    "GrantByName",
    "Never",
    "Passwords",
    "TableLookup",
    "TablePermissions",
]

USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"


class _Counting:
    """Counts calls and the peak number of calls in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.peak = 0
        self.started = asyncio.Event()

    async def _enter(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)

    def _leave(self) -> None:
        self.in_flight -= 1


class Passwords(_Counting):
    """Users by password or token; a user named in ``failing`` makes the lookup raise.

    Args:
        users: user name -> password; ``None``: any user whose password is ``<name>-pw``.
        tokens: token -> user name.
        delay: seconds each lookup waits (an I/O-bound lookup).
        failing: user names whose lookup raises ``RuntimeError`` (a database outage).
        dropped: user names whose lookup raises ``Drop`` (left for another service).

    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        *,
        delay: float = 0.0,
        failing: frozenset[str] = frozenset({"boom"}),
        dropped: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(delay)
        self.passwords = None if users is None else dict(users)
        self.tokens = dict(tokens or {})
        self.failing = failing
        self.dropped = dropped

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        await self._enter()
        try:
            opts = request.connect_opts
            if opts.user in self.failing:
                raise RuntimeError("database is down")
            if opts.user in self.dropped:
                raise Drop("left for another service")
            if opts.auth_token:
                name = self.tokens.get(opts.auth_token)
                if name is None:
                    raise Denied("unknown token")
                return Identity(name)
            if opts.password and self._password_of(opts.user) == opts.password:
                return Identity(opts.user)
            raise Denied("bad credentials")
        finally:
            self._leave()

    def _password_of(self, user: str) -> str | None:
        if self.passwords is None:
            return f"{user}-pw" if user else None
        return self.passwords.get(user)


class Everyone(_Counting):
    """Anyone who names a user (in ``names``, when given) is that user; no password check."""

    def __init__(self, names: frozenset[str] | None = None, *, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.names = names

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        await self._enter()
        try:
            user = request.connect_opts.user
            if not user or (self.names is not None and user not in self.names):
                raise Denied("bad credentials")
            return Identity(user)
        finally:
            self._leave()


class Never:
    """A lookup and permission builder that must not be called."""

    def lookup(self, request: AuthorizationRequest) -> Identity:
        raise AssertionError("the lookup must not be called")

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        raise AssertionError("the permission builder must not be called")


class FixedLookup:
    """Every lookup returns ``outcome`` (an identity) or raises it (an exception); counts calls.

    ``sync=True`` makes ``lookup`` a plain function (the pipeline takes both).
    """

    def __init__(self, outcome: Identity | Exception, *, sync: bool = False) -> None:
        self.outcome = outcome
        self.calls = 0
        if sync:
            self.lookup = self._answer  # type: ignore[method-assign]

    def _answer(self, request: AuthorizationRequest) -> Identity:
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        return self._answer(request)

    def __repr__(self) -> str:
        return f"FixedLookup({self.outcome!r})"


class FixedGrant:
    """The same grant for everyone, with ``{user}`` in subjects replaced by the identity's name.

    ``account`` is one account, or identity name -> account (placement by name).
    """

    def __init__(
        self,
        account: str | Mapping[str, str] = "APP",
        *,
        pub: list[str] | None = None,
        sub: list[str] | None = None,
        **grant: object,
    ) -> None:
        self.account = account
        self.pub = pub
        self.sub = sub
        self.grant = grant

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        def fill(subjects: list[str] | None) -> Permission | None:
            if subjects is None:
                return None
            return Permission(allow=[s.replace("{user}", identity.name) for s in subjects])

        pub, sub = fill(self.pub), fill(self.sub)
        extra: dict[str, object] = dict(self.grant)
        if pub is not None:
            extra["pub"] = pub
        if sub is not None:
            extra["sub"] = sub
        account = self.account if isinstance(self.account, str) else self.account[identity.name]
        return Grant(account=account, **extra)  # type: ignore[arg-type]


class GrantByName:
    """A grant per identity name, with a default (or a denial) for the others."""

    def __init__(
        self,
        grants: Mapping[str, Grant | Callable[[Identity], Grant]],
        default: Grant | None = None,
    ) -> None:
        self.grants = dict(grants)
        self.default = default

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        grant = self.grants.get(identity.name, self.default)
        if grant is None:
            raise Denied("no grant for this user")
        return grant(identity) if callable(grant) else grant


class TableLookup(Passwords):
    """alice, bob, short and watcher by password, carol by token; 'boom' makes the lookup fail."""

    def __init__(self) -> None:
        super().__init__(
            {"alice": "alice-pw", "bob": "bob-pw", "short": "short-pw", "watcher": "watcher-pw"},
            {"tok-carol-123": "carol"},
        )


class TablePermissions:
    """Grants by name.

    - alice (the default) -> APP: publish chat.alice.>, news.> and the user-info
      request, but not chat.secret nor chat.alice.secret (a deny inside an allow);
      subscribe chat.alice.>, news.>, _INBOX.>, but not news.hidden.
    - bob -> OTHER, everything.
    - carol (token) -> APP, read-only on news.>.
    - watcher -> APP, read-only on chat.> and news.> (an independent observer).
    - short -> APP, account default permissions, a user JWT valid for 2 s.
    """

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        name = identity.name
        if name == "bob":
            return Grant(account="OTHER", pub=Permission(allow=[">"]), sub=Permission(allow=[">"]))
        if name == "carol":
            return Grant(
                account="APP", pub=Permission(deny=[">"]), sub=Permission(allow=["news.>"])
            )
        if name == "watcher":
            return Grant(
                account="APP",
                pub=Permission(deny=[">"]),
                sub=Permission(allow=["chat.>", "news.>"]),
            )
        if name == "short":
            return Grant(account="APP", ttl=2, account_defaults=True)
        return Grant(
            account="APP",
            pub=Permission(
                allow=[f"chat.{name}.>", "news.>", USER_INFO_SUBJECT],
                deny=["chat.secret", f"chat.{name}.secret"],
            ),
            sub=Permission(allow=[f"chat.{name}.>", "news.>", "_INBOX.>"], deny=["news.hidden"]),
        )
