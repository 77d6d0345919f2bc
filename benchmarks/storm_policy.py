"""The storm policy and its credentials: what the storm service decides and the clients expect.

User ``u<i>`` with password ``pw-u<i>`` lands in APP (even i) or OTHER (odd i)
and may publish ``storm.u<i>.>`` except ``storm.u<i>.no``; ``watcher-APP`` /
``watcher-OTHER`` may only subscribe to ``storm.>`` in their account.
Everything else is denied. Used by storm_service.py (the service), storm_driver.py
(the clients) and, for their in-suite versions, tests/test_storm.py and tests/test_faults.py.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    IdentityLookup,
    KeyPair,
    Permission,
    PermissionBuilder,
    SigningKeys,
)
from faststream_callout.core.pipeline import Decision
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing.local_server import CalloutServerConfig
from faststream_callout.testing.logins import USER_INFO_SUBJECT, user_info

ACCOUNTS = ("APP", "OTHER")
INVALID_KINDS = ("wrong-password", "unknown-user", "token", "no-credentials")
_KNOWN_USER = re.compile(r"u\d+|watcher-(?:APP|OTHER)")


def password_of(name: str) -> str:
    """The (test-only, deterministic) password of user ``name``."""
    return f"pw-{name}"


def account_of(name: str) -> str:
    if name.startswith("watcher-"):
        return name.removeprefix("watcher-")
    return ACCOUNTS[int(name[1:]) % len(ACCOUNTS)]


def expected_grant(name: str) -> Grant:
    """What ``name`` must get: the service grants exactly this, the checks compare to it."""
    if name.startswith("watcher-"):
        return Grant(
            account=account_of(name),
            pub=Permission(deny=[">"]),
            sub=Permission(allow=["storm.>"]),
        )
    return Grant(
        account=account_of(name),
        pub=Permission(allow=[f"storm.{name}.>", USER_INFO_SUBJECT], deny=[f"storm.{name}.no"]),
        sub=Permission(allow=["_INBOX.>"]),
    )


class StormLookup:
    """``delay``: seconds each lookup waits first, like a slow user database.

    ``pool``: at most that many lookups wait at once (the database's connection
    pool; 0: no limit). ``calls`` counts the lookups.
    """

    def __init__(self, delay: float = 0.0, pool: int = 0) -> None:
        self.delay = delay
        self.pool = asyncio.Semaphore(pool) if pool else None
        self.calls = 0

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        self.calls += 1
        if self.pool is not None:
            async with self.pool:
                await asyncio.sleep(self.delay)
        elif self.delay:
            await asyncio.sleep(self.delay)
        opts = request.connect_opts
        if (
            _KNOWN_USER.fullmatch(opts.user)
            and opts.password
            and hmac.compare_digest(opts.password, password_of(opts.user))
        ):
            return Identity(opts.user)
        raise Denied("bad credentials")


class StormPermissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return expected_grant(identity.name)


def build_pipeline(
    keys: KeyPair | SigningKeys,
    observers: Sequence[Callable[[Decision], object]] = (),
    delay: float = 0.0,
    *,
    cache: bool = False,
    storm_lookup: StormLookup | None = None,
) -> CalloutPipeline:
    """The storm policy; with ``cache`` behind a :class:`DecisionCache`."""
    lookup: IdentityLookup = storm_lookup or StormLookup(delay)
    permissions: PermissionBuilder = StormPermissions()
    if cache:
        lookup = permissions = DecisionCache(lookup, permissions)
    signing = keys if isinstance(keys, SigningKeys) else SigningKeys(keys)
    return CalloutPipeline(signing, lookup, permissions, observers=observers)


def callout_config(
    issuer: KeyPair,
    *,
    timeout: float = 1.0,
    server_name: str = "callout-storm",
    extra: str = "",
    **fields: Any,
) -> CalloutServerConfig:
    """A config-mode callout configuration with the APP and OTHER target accounts."""
    return CalloutServerConfig(
        issuer=issuer.public_key,
        accounts={name: {} for name in ACCOUNTS},
        timeout=timeout,
        server_name=server_name,
        extra=extra,
        **fields,
    )


async def grant_problems(client: Client, name: str) -> list[str]:
    """How the server's view of ``client`` differs from :func:`expected_grant` (empty: none)."""
    expected = expected_grant(name)
    info = await user_info(client)
    problems = []
    if info.get("user") != name:
        problems.append(f"{name}: user is {info.get('user')!r}")
    if info.get("account") != expected.account:
        problems.append(f"{name}: account {info.get('account')!r}, not {expected.account!r}")
    permissions = info.get("permissions") or {}
    for side, granted in (("publish", expected.pub), ("subscribe", expected.sub)):
        seen = permissions.get(side) or {}
        for kind, want in (("allow", granted.allow), ("deny", granted.deny)):
            if sorted(seen.get(kind) or []) != sorted(want or []):
                problems.append(f"{name}: {side}.{kind} {seen.get(kind)}, expected {want}")
    return problems


# -- decisions, one line each (written by the service, read by the checks) ----------


@dataclass(frozen=True)
class DecisionLine:
    outcome: str
    identity: str
    client: str  # the CONNECT name
    server: str  # server_id.name of the node that asked
    cluster: str
    latency_ms: str  # in the pipeline, receipt to reply

    @classmethod
    def parse(cls, text: str) -> list[DecisionLine]:
        return [cls(*line.split("\t")) for line in text.splitlines() if line.count("\t") == 5]


def decision_line(decision: Decision) -> str:
    request = decision.request
    identity = decision.identity.name if decision.identity else ""
    client = request.connect_opts.name if request else ""
    server = request.server_id.name if request else ""
    cluster = request.server_id.cluster if request else ""
    latency = f"{decision.latency * 1000:.3f}"
    return f"{decision.outcome.value}\t{identity}\t{client}\t{server}\t{cluster}\t{latency}\n"


# -- credentials ------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    index: int
    valid: bool
    kind: str
    options: dict[str, str]
    user: str = ""  # the user logging in, when several clients share one (u<index> if empty)

    @property
    def name(self) -> str:
        return self.user or f"u{self.index}"


def storm_credentials(count: int, invalid_every: int = 3) -> list[Credential]:
    """``count`` logins; every ``invalid_every``-th is invalid (of varying kinds)."""
    credentials = []
    for index in range(count):
        name = f"u{index}"
        if invalid_every and index % invalid_every == invalid_every - 1:
            kind = INVALID_KINDS[(index // invalid_every) % len(INVALID_KINDS)]
            options = {
                "wrong-password": {"user": name, "password": password_of(name) + "x"},
                "unknown-user": {"user": f"x{index}", "password": password_of(f"x{index}")},
                "token": {"token": f"tok-{index}"},
                "no-credentials": {},
            }[kind]
            credentials.append(Credential(index, valid=False, kind=kind, options=options))
        else:
            options = {"user": name, "password": password_of(name)}
            credentials.append(Credential(index, valid=True, kind="valid", options=options))
    return credentials


def shared_credentials(count: int, users: int, invalid_every: int = 0) -> list[Credential]:
    """Like :func:`storm_credentials`, but the valid logins share ``users`` users (a fleet)."""
    credentials = storm_credentials(count, invalid_every)
    for position, credential in enumerate(credentials):
        if credential.valid:
            user = f"u{credential.index % users}"
            options = {"user": user, "password": password_of(user)}
            credentials[position] = Credential(credential.index, True, "valid", options, user)
    return credentials


def storm_name(credential: Credential) -> str:
    """The CONNECT name of a storm client."""
    return f"storm-{credential.index}-{credential.kind}"
