"""Composing identity lookups: try several in order, or choose by the credential sent.

A lookup tells "these credentials are not mine" from "these credentials are
wrong" by raising :class:`NotApplicable` for the former and plain
:class:`~faststream_callout.Denied` for the latter. :class:`NotApplicable` *is*
a ``Denied``, so a lookup used on its own still denies with its reason; only
the composites look at the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from faststream_callout.batteries._common import resolve
from faststream_callout.core.errors import NotApplicable
from faststream_callout.core.policy import Identity, IdentityLookup
from faststream_callout.protocol.claims import AuthorizationRequest

__all__ = [
    "CREDENTIAL_KINDS",
    "ByCredential",
    "CredentialKind",
    "FirstMatch",
    "NotApplicable",
    "presented_credentials",
]

CredentialKind = Literal["nkey", "jwt", "token", "password", "tls"]

#: Every kind of credential a client can present, in :class:`ByCredential`'s
#: default order: explicit credentials first, a TLS client certificate last
#: (it comes with every mutual-TLS connection, whatever else the client sends).
CREDENTIAL_KINDS: Final[tuple[CredentialKind, ...]] = ("nkey", "jwt", "token", "password", "tls")


def presented_credentials(request: AuthorizationRequest) -> list[CredentialKind]:
    """The kinds of credentials the client presented, in :data:`CREDENTIAL_KINDS` order."""
    opts = request.connect_opts
    tls = request.client_tls
    present: dict[CredentialKind, bool] = {
        "nkey": bool(opts.nkey),
        "jwt": bool(opts.jwt),
        "token": bool(opts.auth_token),
        "password": bool(opts.user or opts.password),
        "tls": tls is not None and bool(tls.verified_chains or tls.certs),
    }
    return [kind for kind in CREDENTIAL_KINDS if present[kind]]


class FirstMatch:
    """Try lookups in order; the first that does not pass with :class:`NotApplicable` decides.

    A lookup that returns an identity wins; one that raises ``Denied`` (not
    ``NotApplicable``) ends the login; any other exception propagates (the
    pipeline turns it into a generic denial): an outage must not let a later
    lookup decide in its place. When every lookup passes, the login is denied
    with :class:`NotApplicable` naming their reasons, so FirstMatch nests.

    Example:
        ``FirstMatch(StaticTable.from_file("users.toml"), OIDCLookup(issuer=..., audience=...))``

    Args:
        lookups: the lookups, tried in this order.

    """

    __slots__ = ("_lookups",)

    def __init__(self, *lookups: IdentityLookup) -> None:
        if not lookups:
            raise ValueError("FirstMatch needs at least one lookup")
        for lookup in lookups:
            if isinstance(lookup, type) or not isinstance(lookup, IdentityLookup):
                raise TypeError(f"FirstMatch needs IdentityLookup instances, got {lookup!r}")
        self._lookups = lookups

    @property
    def lookups(self) -> tuple[IdentityLookup, ...]:
        """The lookups, in order."""
        return self._lookups

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Return the identity from the first lookup that handles the credentials."""
        reasons: list[str] = []
        for lookup in self._lookups:
            try:
                identity: Identity = await resolve(lookup.lookup(request))
            except NotApplicable as exc:
                reasons.append(exc.reason)
                continue
            return identity
        raise NotApplicable("no lookup accepted the credentials: " + "; ".join(reasons))

    def __repr__(self) -> str:
        return f"FirstMatch({', '.join(map(repr, self._lookups))})"


class ByCredential:
    """Choose the lookup by the kind of credential the client presented.

    The client's credentials are checked in ``order`` (default
    :data:`CREDENTIAL_KINDS`: nkey, jwt, token, password, tls); the first kind
    the client presented *and* that has a lookup here is handed to that lookup,
    whose answer is final. A client presenting nothing this service takes is
    denied with :class:`NotApplicable`.

    Example:
        ``ByCredential(password=table, token=oidc, nkey=NKeyLookup(...), tls=certs)``

    Args:
        nkey: for clients that sent ``nkey`` and ``sig`` (nonce signature).
        jwt: for clients that sent a JWT in CONNECT (``connect_opts.jwt``).
        token: for clients that sent ``auth_token``.
        password: for clients that sent ``user`` and/or ``pass``.
        tls: for clients that presented a TLS client certificate.
        order: the precedence of the kinds when a client sent several.

    """

    __slots__ = ("_by_kind", "_order")

    def __init__(
        self,
        *,
        nkey: IdentityLookup | None = None,
        jwt: IdentityLookup | None = None,
        token: IdentityLookup | None = None,
        password: IdentityLookup | None = None,
        tls: IdentityLookup | None = None,
        order: Sequence[CredentialKind] = CREDENTIAL_KINDS,
    ) -> None:
        given: dict[CredentialKind, IdentityLookup | None] = {
            "nkey": nkey,
            "jwt": jwt,
            "token": token,
            "password": password,
            "tls": tls,
        }
        unknown = [kind for kind in order if kind not in given]
        if unknown or len(set(order)) != len(order):
            raise ValueError(f"order must list distinct kinds from {CREDENTIAL_KINDS}")
        by_kind: dict[CredentialKind, IdentityLookup] = {}
        for kind, lookup in given.items():
            if lookup is None:
                continue
            if isinstance(lookup, type) or not isinstance(lookup, IdentityLookup):
                raise TypeError(f"ByCredential({kind}=...) needs an IdentityLookup, got {lookup!r}")
            if kind not in order:
                raise ValueError(f"ByCredential({kind}=...) is given but {kind!r} is not in order")
            by_kind[kind] = lookup
        if not by_kind:
            raise ValueError("ByCredential needs at least one lookup")
        self._by_kind: Mapping[CredentialKind, IdentityLookup] = by_kind
        self._order = tuple(order)

    def choose(self, request: AuthorizationRequest) -> tuple[CredentialKind, IdentityLookup] | None:
        """The kind and lookup that will handle ``request``, or ``None``."""
        presented = set(presented_credentials(request))
        for kind in self._order:
            if kind in presented and kind in self._by_kind:
                return kind, self._by_kind[kind]
        return None

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Hand the request to the lookup for the credential presented."""
        chosen = self.choose(request)
        if chosen is None:
            raise NotApplicable(
                "no credentials of a supported kind (" + ", ".join(self._by_kind) + ")"
            )
        identity: Identity = await resolve(chosen[1].lookup(request))
        return identity

    def __repr__(self) -> str:
        body = ", ".join(f"{kind}={self._by_kind[kind]!r}" for kind in self._by_kind)
        return f"ByCredential({body})"
