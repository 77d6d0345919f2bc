"""The core layer: the pipeline and its stages, keys and keyring, throttle, policy ports, errors.

It imports only the protocol layer; FastStream and Dishka live one layer up.
"""

from __future__ import annotations

from faststream_callout.core.env import (
    keyring_from_env,
    signing_keys_from_env,
)
from faststream_callout.core.errors import (
    CalloutError,
    ConfigurationError,
    Denied,
    Drop,
    InvalidJWTError,
    InvalidKeyError,
    NotApplicable,
    SignerError,
)
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import (
    CalloutPipeline,
    CalloutSettings,
    Decision,
    Outcome,
    log_decision,
)
from faststream_callout.core.policy import (
    Grant,
    Identity,
    IdentityLookup,
    PermissionBuilder,
)
from faststream_callout.core.signing import (
    AccountSigner,
    CalloutMode,
    Signer,
    SigningKeys,
)
from faststream_callout.core.throttle import (
    Backoff,
    MemoryStore,
    MemoryThrottle,
    NoThrottle,
    Throttle,
    Throttled,
    ThrottlePolicy,
    ThrottleStore,
)

__all__ = [
    "AccountSigner",
    "Backoff",
    "CalloutError",
    "CalloutMode",
    "CalloutPipeline",
    "CalloutSettings",
    "ConfigurationError",
    "Decision",
    "Denied",
    "Drop",
    "Grant",
    "Identity",
    "IdentityLookup",
    "InvalidJWTError",
    "InvalidKeyError",
    "Keyring",
    "MemoryStore",
    "MemoryThrottle",
    "NoThrottle",
    "NotApplicable",
    "Outcome",
    "PermissionBuilder",
    "Signer",
    "SignerError",
    "SigningKeys",
    "Throttle",
    "ThrottlePolicy",
    "ThrottleStore",
    "Throttled",
    "keyring_from_env",
    "log_decision",
    "signing_keys_from_env",
]
