"""faststream-callout: NATS auth callout services for FastStream and Dishka."""

from faststream_callout.cache import CacheStats, DecisionCache
from faststream_callout.claims import (
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
from faststream_callout.doctor import diagnose
from faststream_callout.errors import (
    CalloutError,
    ConfigurationError,
    Denied,
    Drop,
    InvalidJWTError,
    InvalidKeyError,
    NotApplicable,
    SignerError,
)
from faststream_callout.keys import KeyKind, KeyPair
from faststream_callout.pipeline import (
    NO_REPLY,
    CalloutPipeline,
    CalloutSettings,
    Decision,
    Outcome,
)
from faststream_callout.policy import Grant, Identity, IdentityLookup, PermissionBuilder
from faststream_callout.providers import CalloutProvider, PolicyProvider
from faststream_callout.router import (
    AUTH_CALLOUT_SUBJECT,
    CalloutMessage,
    Dispatch,
    callout_router,
)
from faststream_callout.sessions import (
    KickResult,
    KickStatus,
    RevocationGuard,
    RevocationList,
    Session,
    SessionRegistry,
    kick,
    revoke_users,
)
from faststream_callout.signing import CalloutMode, Signer, SigningKeys, UserSigner
from faststream_callout.throttle import MemoryThrottle, NoThrottle, Throttle, ThrottlePolicy
from faststream_callout.xkeys import XKeyPair

__all__ = [
    "AUTH_CALLOUT_SUBJECT",
    "NO_REPLY",
    "AuthorizationRequest",
    "AuthorizationRequestClaims",
    "AuthorizationResponse",
    "AuthorizationResponseClaims",
    "CacheStats",
    "CalloutError",
    "CalloutMessage",
    "CalloutMode",
    "CalloutPipeline",
    "CalloutProvider",
    "CalloutSettings",
    "ClientInfo",
    "ClientTLS",
    "ConfigurationError",
    "ConnectOptions",
    "Decision",
    "DecisionCache",
    "Denied",
    "Dispatch",
    "Drop",
    "Grant",
    "Identity",
    "IdentityLookup",
    "InvalidJWTError",
    "InvalidKeyError",
    "KeyKind",
    "KeyPair",
    "KickResult",
    "KickStatus",
    "MemoryThrottle",
    "NoThrottle",
    "NotApplicable",
    "Outcome",
    "Permission",
    "PermissionBuilder",
    "PolicyProvider",
    "ResponsePermission",
    "RevocationGuard",
    "RevocationList",
    "ServerId",
    "Session",
    "SessionRegistry",
    "Signer",
    "SignerError",
    "SigningKeys",
    "Throttle",
    "ThrottlePolicy",
    "TimeRange",
    "User",
    "UserClaims",
    "UserSigner",
    "XKeyPair",
    "callout_router",
    "diagnose",
    "kick",
    "revoke_users",
]
