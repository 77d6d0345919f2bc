"""Configuration from the environment: the variable names ``faststream-callout dev`` sets.

``faststream-callout dev`` starts a local nats-server and runs your app with these set;
in production set them yourself (from a secret store):

- ``NATS_URL``: the server the service connects to
- ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``: the service's ``auth_users`` login
- ``CALLOUT_ISSUER_SEED``: the seed (``SA...``) of the ``auth_callout.issuer`` account key
- ``CALLOUT_XKEY_SEED``: the seed (``SX...``) of the service's xkey, when the server has one
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from faststream_callout.errors import ConfigurationError, InvalidKeyError
from faststream_callout.keys import KeyKind, KeyPair
from faststream_callout.signing import SigningKeys
from faststream_callout.xkeys import XKeyPair

__all__ = [
    "CALLOUT_ISSUER_SEED",
    "CALLOUT_PASSWORD",
    "CALLOUT_USER",
    "CALLOUT_XKEY_SEED",
    "NATS_URL",
    "signing_keys_from_env",
]

NATS_URL: Final = "NATS_URL"
CALLOUT_USER: Final = "CALLOUT_USER"
CALLOUT_PASSWORD: Final = "CALLOUT_PASSWORD"  # noqa: S105 - a variable name, not a secret
CALLOUT_ISSUER_SEED: Final = "CALLOUT_ISSUER_SEED"
CALLOUT_XKEY_SEED: Final = "CALLOUT_XKEY_SEED"


def signing_keys_from_env(environ: Mapping[str, str] | None = None) -> SigningKeys:
    """Config-mode :class:`SigningKeys` from ``CALLOUT_ISSUER_SEED`` (and ``CALLOUT_XKEY_SEED``).

    Raises:
        ConfigurationError: the issuer seed is missing, or a seed is not valid.
            The message names the variable, never its value.

    """
    env = os.environ if environ is None else environ
    issuer_seed = env.get(CALLOUT_ISSUER_SEED, "").strip()
    if not issuer_seed:
        raise ConfigurationError(
            f"{CALLOUT_ISSUER_SEED} is not set: the seed (SA...) of the auth_callout issuer key"
        )
    try:
        issuer = KeyPair.from_seed(issuer_seed)
    except InvalidKeyError:
        raise ConfigurationError(f"{CALLOUT_ISSUER_SEED} is not a valid nkey seed") from None
    if issuer.kind is not KeyKind.ACCOUNT:
        raise ConfigurationError(f"{CALLOUT_ISSUER_SEED} must be an account seed (SA...)")
    xkey_seed = env.get(CALLOUT_XKEY_SEED, "").strip()
    xkey = None
    if xkey_seed:
        try:
            xkey = XKeyPair.from_seed(xkey_seed)
        except InvalidKeyError:
            raise ConfigurationError(
                f"{CALLOUT_XKEY_SEED} is not a valid curve (xkey) seed (SX...)"
            ) from None
    return SigningKeys(issuer, xkey=xkey)
