"""faststream-callout: NATS auth callout services for FastStream and Dishka.

This page holds what a service author writes every day: the router, the callout of
an existing app, the Dishka providers, the policy ports and the values they exchange,
the outcomes, and the keys. Everything else is imported from its layer:

- ``faststream_callout.protocol``: claims, JWTs, nkeys, xkeys (pure, no I/O);
- ``faststream_callout.core``: the pipeline, signing keys and keyring, throttle, errors;
- ``faststream_callout.integration``: router, providers, observers, cache, sessions;
- ``faststream_callout.batteries``: ready-made lookups and permission builders;
- ``faststream_callout.testing``: FakeServer, local servers, the pytest plugin;
- ``faststream_callout.tools``: the ``faststream-callout`` command and doctor.
"""

from faststream_callout.core.env import signing_keys_from_env
from faststream_callout.core.errors import (
    CalloutError,
    ConfigurationError,
    Denied,
    Drop,
    NotApplicable,
)
from faststream_callout.core.pipeline import CalloutPipeline, CalloutSettings
from faststream_callout.core.policy import Grant, Identity, IdentityLookup, PermissionBuilder
from faststream_callout.core.signing import Signer, SigningKeys
from faststream_callout.integration.app import AuthCallout
from faststream_callout.integration.providers import CalloutProvider, PolicyProvider
from faststream_callout.integration.router import callout_router
from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    Permission,
    ResponsePermission,
)
from faststream_callout.protocol.nkeys import KeyPair
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = [
    "AuthCallout",
    "AuthorizationRequest",
    "CalloutError",
    "CalloutPipeline",
    "CalloutProvider",
    "CalloutSettings",
    "ConfigurationError",
    "Denied",
    "Drop",
    "Grant",
    "Identity",
    "IdentityLookup",
    "KeyPair",
    "NotApplicable",
    "Permission",
    "PermissionBuilder",
    "PolicyProvider",
    "ResponsePermission",
    "Signer",
    "SigningKeys",
    "XKeyPair",
    "callout_router",
    "signing_keys_from_env",
]
