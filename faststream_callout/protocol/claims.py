"""NATS JWT claims as ``msgspec`` structs, with the exact wire names of nats-io/jwt v2.

Field order follows the Go structs, so what we encode reads like what Go encodes.
``omit_defaults`` mirrors Go's ``omitempty``: empty strings, zeros, false and
empty lists are left out, while struct-typed fields (``pub``, ``sub``,
``server_id`` ...) are always written, as Go does (msgspec never omits a
``default_factory`` struct). Unknown fields from newer servers are ignored on
decode. ``type`` and ``version`` have no default, so
they are always written and a token without them does not decode.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "AUTH_REQUEST_AUDIENCE",
    "AUTH_REQUEST_TYPE",
    "AUTH_RESPONSE_TYPE",
    "USER_CLAIM_TYPE",
    "AuthorizationRequest",
    "AuthorizationRequestClaims",
    "AuthorizationResponse",
    "AuthorizationResponseClaims",
    "ClientInfo",
    "ClientTLS",
    "ConnectOptions",
    "Permission",
    "ResponsePermission",
    "ServerId",
    "TimeRange",
    "User",
    "UserClaims",
]

AUTH_REQUEST_AUDIENCE: Final = "nats-authorization-request"
AUTH_REQUEST_TYPE: Final = "authorization_request"
AUTH_RESPONSE_TYPE: Final = "authorization_response"
USER_CLAIM_TYPE: Final = "user"
CLAIMS_VERSION: Final = 2


class _Wire(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Base of every claim struct: Go ``omitempty`` semantics, keyword-only."""


# --- authorization request (sent by nats-server) -----------------------------


class ServerId(_Wire, frozen=True, kw_only=True):
    """The server that asks: ``nats.server_id`` of the request."""

    name: str = ""
    host: str = ""
    id: str = ""
    version: str = ""
    cluster: str = ""
    tags: list[str] = []
    xkey: str = ""


class ClientInfo(_Wire, frozen=True, kw_only=True):
    """What nats-server knows about the connecting client."""

    host: str = ""
    id: int = 0
    user: str = ""
    name: str = ""
    tags: list[str] = []
    name_tag: str = ""
    kind: str = ""
    type: str = ""
    mqtt_id: str = ""
    nonce: str = ""


class ConnectOptions(_Wire, frozen=True, kw_only=True):
    """The client's CONNECT options, passed on unverified."""

    jwt: str = ""
    nkey: str = ""
    sig: str = ""
    auth_token: str = ""
    user: str = ""
    password: str = msgspec.field(default="", name="pass")
    name: str = ""
    lang: str = ""
    version: str = ""
    protocol: int = msgspec.field(default_factory=int)  # Go always writes it (no omitempty)

    def __repr__(self) -> str:
        # Credentials stay out of logs and tracebacks.
        shown = {"user": self.user, "nkey": self.nkey, "name": self.name, "lang": self.lang}
        hidden = [k for k in ("jwt", "sig", "auth_token", "password") if getattr(self, k)]
        body = ", ".join(f"{k}={v!r}" for k, v in shown.items() if v)
        if hidden:
            body += (", " if body else "") + "with " + "+".join(hidden)
        return f"ConnectOptions({body})"

    def __rich_repr__(self) -> list[tuple[str, object]]:
        # msgspec's own rich repr would list the credentials.
        return [(name, getattr(self, name)) for name in ("user", "nkey", "name", "lang")]


class ClientTLS(_Wire, frozen=True, kw_only=True):
    """TLS state of the client connection (present only after a TLS handshake)."""

    version: str = ""
    cipher: str = ""
    certs: list[str] = []
    verified_chains: list[list[str]] = []


class AuthorizationRequest(_Wire, frozen=True, kw_only=True):
    """The ``nats`` part of an authorization request: what user code decides on.

    ``callout_account`` is the account the request was sent for (operator mode:
    the callout account's public key; config mode: ``auth_callout.issuer``).
    """

    server_id: ServerId = msgspec.field(default_factory=ServerId)
    user_nkey: str
    client_info: ClientInfo = msgspec.field(default_factory=ClientInfo)
    connect_opts: ConnectOptions = msgspec.field(default_factory=ConnectOptions)
    client_tls: ClientTLS | None = None
    request_nonce: str = ""
    tags: list[str] = []
    type: str
    version: int
    # Not sent by nats-server: the pipeline sets it from the verified request JWT's
    # ``sub``, so a policy serving several callout accounts knows which one asks.
    callout_account: str = ""

    def __repr__(self) -> str:
        # Servers before 2.10.28/2.11.2 put the token itself in client_info.user.
        info = self.client_info
        user = (
            "[REDACTED]" if info.user and info.user == self.connect_opts.auth_token else info.user
        )
        return (
            f"AuthorizationRequest(server={self.server_id.name or self.server_id.id}, "
            f"user_nkey={self.user_nkey}, client={user!r}@{info.host} ({info.kind} {info.type}), "
            f"{self.connect_opts!r}, tls={self.client_tls is not None})"
        )

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("repr", repr(self))]


# --- user JWT (issued by us) ---------------------------------------------------


class Permission(_Wire, frozen=True, kw_only=True):
    """Subjects a user may (``allow``) or may not (``deny``) publish or subscribe to."""

    allow: list[str] = []
    deny: list[str] = []


class ResponsePermission(_Wire, frozen=True, kw_only=True, omit_defaults=False):
    """Allow publishing to reply subjects of received requests.

    ``ttl`` is a Go ``time.Duration`` in **nanoseconds**; 0 means 2 minutes and
    ``max`` 0 means 1 reply.
    """

    max: int = 0
    ttl: int = 0


class TimeRange(_Wire, frozen=True, kw_only=True, omit_defaults=False):
    """A daily connect window, ``"HH:MM:SS"`` 24-hour strings; start > end wraps midnight."""

    start: str
    end: str


class User(_Wire, frozen=True, kw_only=True):
    """The ``nats`` part of a user JWT."""

    pub: Permission = msgspec.field(default_factory=Permission)
    sub: Permission = msgspec.field(default_factory=Permission)
    resp: ResponsePermission | None = None
    src: list[str] = []
    times: list[TimeRange] = []
    times_location: str = ""
    subs: int = 0
    data: int = 0
    payload: int = 0
    bearer_token: bool = False
    proxy_required: bool = False
    allowed_connection_types: list[str] = []
    issuer_account: str = ""
    tags: list[str] = []
    type: str
    version: int


# --- authorization response (sent by us) ---------------------------------------


class AuthorizationResponse(_Wire, frozen=True, kw_only=True):
    """The ``nats`` part of an authorization response: a user JWT or an error."""

    jwt: str = ""
    error: str = ""
    issuer_account: str = ""
    tags: list[str] = []
    type: str
    version: int


# --- the JWTs: standard claims, then "nats" ------------------------------------


class _Claims(_Wire, frozen=True, kw_only=True):
    # nats-io/jwt ClaimsData, in its order; the jti hash is taken over these.
    aud: str = ""
    exp: int = 0
    jti: str = ""
    iat: int = 0
    iss: str = ""
    name: str = ""
    nbf: int = 0
    sub: str = ""
    # A top-level "type" marks a v1 token, whose signature nats-io/jwt checks
    # over the payload only; decoding refuses it. Never set when encoding.
    v1_type: str = msgspec.field(default="", name="type")


class AuthorizationRequestClaims(_Claims, frozen=True, kw_only=True):
    """An authorization request JWT, signed by a server key (``N...``)."""

    nats: AuthorizationRequest


class AuthorizationResponseClaims(_Claims, frozen=True, kw_only=True):
    """An authorization response JWT, signed by an account key (``A...``)."""

    nats: AuthorizationResponse


class UserClaims(_Claims, frozen=True, kw_only=True):
    """A user JWT, signed by an account key (``A...``)."""

    nats: User


class StandardClaims(_Claims, frozen=True, kw_only=True):
    """Only the standard claims: the input of the ``jti`` hash."""
