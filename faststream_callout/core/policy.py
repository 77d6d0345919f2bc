"""The policy ports and the values they exchange.

:class:`IdentityLookup` says who the client is, :class:`PermissionBuilder` what
they may do.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    Permission,
    ResponsePermission,
    TimeRange,
)

__all__ = ["NO_LIMIT", "Grant", "Identity", "IdentityLookup", "PermissionBuilder"]

NO_LIMIT = -1
_T = TypeVar("_T")


async def resolve(value: _T | Awaitable[_T]) -> _T:
    """Await ``value`` if it is awaitable: ports may be sync or async."""
    if inspect.isawaitable(value):
        return await value
    return value


async def resolve_by(deadline: float | None, value: _T | Awaitable[_T]) -> _T:
    """Like :func:`resolve`, but an awaitable must finish by the loop time ``deadline``.

    Raises:
        TimeoutError: the deadline passed first.

    """
    # A plain value skips the timer: arming and cancelling one costs ~5 us, and
    # synchronous code cannot be interrupted anyway.
    if not inspect.isawaitable(value):
        return value
    if deadline is None:
        return await value
    async with asyncio.timeout_at(deadline):
        return await value


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the client is, as established by an :class:`IdentityLookup`.

    Attributes:
        name: the user's name; it becomes the connection's user name in
            nats-server (monitoring, events) unless the grant names another.
        groups: roles or groups, for permission builders.
        attributes: anything else the lookup learned (tenant, email, claims).

    """

    name: str
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What an identity may do: becomes the user JWT nats-server applies.

    Attributes:
        account: the target account. Config mode: the account *name* from the
            server configuration (``"APP"``, ``"$G"``). Operator mode: the
            account *public key* (``A...``).
        pub: publish permissions.
        sub: subscribe permissions (``"subject queue"`` entries allowed).
        resp: allow replies to received requests.
            nats-server leaves a direction the grant does not restrict open to
            everything; strict settings (the default) deny it instead
            (``deny: [">"]``). To leave one open, say so: ``Permission(allow=[">"])``.
        ttl: seconds until the user JWT expires and nats-server disconnects the
            client. JWT times are whole seconds: ``exp`` is ``now + ttl`` rounded
            up, so the client gets ``ttl`` to ``ttl + 1`` seconds. ``None`` sets
            no expiry.
        expires_at: an absolute Unix time the JWT must not outlive (e.g. the
            expiry of the credential the client presented). With ``ttl`` the
            earlier one wins.
        not_before: Unix time before which the JWT is not valid.
        name: the connection's user name; defaults to the identity's name.
        src: CIDRs (nats-server does not enforce them for callout users).
        times: daily connect windows; ``times_location`` is their IANA zone.
        allowed_connection_types: ``STANDARD``, ``WEBSOCKET``, ``MQTT`` ...
        subs, data, payload: limits, -1 (the default) for unlimited, as Go's
            ``NewUserClaims`` writes them. nats-server does not apply them to
            callout users (account limits apply); 0 would mean "none allowed"
            wherever they are applied.
        proxy_required: the client must come through a trusted proxy (2.12+; older
            servers would ignore it, so the pipeline refuses such a grant there).
        tags: free-form tags on the user JWT.
        account_defaults: the grant sets no ``pub``, ``sub`` or ``resp`` on
            purpose: the account's default permissions apply (nats-server applies
            them only then; strict settings refuse such a grant without this flag,
            and refuse the flag on a grant that sets any of the three).

    """

    account: str
    pub: Permission = Permission()
    sub: Permission = Permission()
    resp: ResponsePermission | None = None
    ttl: float | None = None
    expires_at: float | None = None
    not_before: float | None = None
    name: str | None = None
    src: tuple[str, ...] = ()
    times: tuple[TimeRange, ...] = ()
    times_location: str = ""
    allowed_connection_types: tuple[str, ...] = ()
    subs: int = NO_LIMIT
    data: int = NO_LIMIT
    payload: int = NO_LIMIT
    proxy_required: bool = False
    tags: tuple[str, ...] = ()
    account_defaults: bool = False


@runtime_checkable
class IdentityLookup(Protocol):
    """Turns an authorization request into an :class:`Identity`.

    Read the credentials from ``request.connect_opts`` (``user``/``password``,
    ``auth_token``, ``jwt``, ``nkey``/``sig``), ``request.client_info`` and
    ``request.client_tls``. Raise :class:`~faststream_callout.Denied` to refuse.
    May be ``async def`` or plain ``def``.
    """

    def lookup(self, request: AuthorizationRequest) -> Identity | Awaitable[Identity]:
        """Return who the client is, or raise ``Denied``."""
        ...


@runtime_checkable
class PermissionBuilder(Protocol):
    """Turns an :class:`Identity` into a :class:`Grant`.

    Raise :class:`~faststream_callout.Denied` to refuse. May be ``async def`` or
    plain ``def``.
    """

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant | Awaitable[Grant]:
        """Return what ``identity`` may do, or raise ``Denied``."""
        ...
