"""The protocol layer: claims, JWTs, nkeys, xkeys, grant validation and nats-server version rules.

Pure code: no asyncio, no FastStream, no Dishka. Everything above builds on it.
"""

from __future__ import annotations

from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponse,
    AuthorizationResponseClaims,
    ClientInfo,
    ClientTLS,
    ConnectOptions,
    Permission,
    ResponsePermission,
    ServerId,
    TimeRange,
    User,
    UserClaims,
)
from faststream_callout.protocol.errors import (
    CalloutError,
    ConfigurationError,
    InvalidJWTError,
    InvalidKeyError,
)
from faststream_callout.protocol.nkeys import (
    KeyKind,
    KeyPair,
)
from faststream_callout.protocol.xkeys import (
    XKeyPair,
)

__all__ = [
    "AuthorizationRequest",
    "AuthorizationRequestClaims",
    "AuthorizationResponse",
    "AuthorizationResponseClaims",
    "CalloutError",
    "ClientInfo",
    "ClientTLS",
    "ConfigurationError",
    "ConnectOptions",
    "InvalidJWTError",
    "InvalidKeyError",
    "KeyKind",
    "KeyPair",
    "Permission",
    "ResponsePermission",
    "ServerId",
    "TimeRange",
    "User",
    "UserClaims",
    "XKeyPair",
]
