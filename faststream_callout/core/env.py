"""Configuration from the environment: the variable names ``faststream-callout dev`` sets.

``faststream-callout dev`` starts a local nats-server and runs your app with these set;
in production set them yourself (from a secret store):

- ``NATS_URL``: the server the service connects to
- ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``: the service's ``auth_users`` login
- ``CALLOUT_ISSUER_SEED``: the seed (``SA...``) of the ``auth_callout.issuer`` account key
- ``CALLOUT_XKEY_SEED``: the seed (``SX...``) of the service's xkey, when the server has one

Key rotation without code changes (see the README's rotation section):

- ``CALLOUT_NEXT_XKEY_SEED``: a second xkey; requests encrypted for either are opened,
  so the servers' ``auth_callout.xkey`` can change one server at a time
- ``CALLOUT_NEXT_ISSUER_SEED``: a second issuer; each request is answered with the
  issuer the server named in it, so ``auth_callout.issuer`` can change one server at a time
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from faststream_callout.core.errors import ConfigurationError, InvalidKeyError
from faststream_callout.core.signing import SigningKeys
from faststream_callout.protocol.nkeys import KeyKind, KeyPair
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = [
    "CALLOUT_ISSUER_SEED",
    "CALLOUT_NEXT_ISSUER_SEED",
    "CALLOUT_NEXT_XKEY_SEED",
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
CALLOUT_NEXT_XKEY_SEED: Final = "CALLOUT_NEXT_XKEY_SEED"
CALLOUT_NEXT_ISSUER_SEED: Final = "CALLOUT_NEXT_ISSUER_SEED"


def signing_keys_from_env(environ: Mapping[str, str] | None = None) -> SigningKeys:
    """Config-mode :class:`SigningKeys` from ``CALLOUT_ISSUER_SEED`` (and the xkey seeds).

    With ``CALLOUT_NEXT_ISSUER_SEED`` the keys of both issuers are combined
    (:meth:`SigningKeys.combine`); with ``CALLOUT_NEXT_XKEY_SEED`` requests
    encrypted for either xkey are opened.

    Raises:
        ConfigurationError: the issuer seed is missing, or a seed is not valid.
            The message names the variable, never its value.

    """
    env = os.environ if environ is None else environ
    issuer = _issuer(env, CALLOUT_ISSUER_SEED)
    if issuer is None:
        raise ConfigurationError(
            f"{CALLOUT_ISSUER_SEED} is not set: the seed (SA...) of the auth_callout issuer key"
        )
    xkey = _xkey(env, CALLOUT_XKEY_SEED)
    next_xkey = _xkey(env, CALLOUT_NEXT_XKEY_SEED)
    if next_xkey is not None and xkey is None:
        raise ConfigurationError(f"{CALLOUT_NEXT_XKEY_SEED} is set but {CALLOUT_XKEY_SEED} is not")
    keys = SigningKeys(issuer, xkey=xkey, next_xkey=next_xkey)
    following = _issuer(env, CALLOUT_NEXT_ISSUER_SEED)
    if following is None:
        return keys
    if following.public_key == issuer.public_key:
        raise ConfigurationError(
            f"{CALLOUT_NEXT_ISSUER_SEED} is the same key as {CALLOUT_ISSUER_SEED}"
        )
    return SigningKeys.combine(keys, SigningKeys(following, xkey=xkey, next_xkey=next_xkey))


def _issuer(env: Mapping[str, str], name: str) -> KeyPair | None:
    seed = env.get(name, "").strip()
    if not seed:
        return None
    try:
        issuer = KeyPair.from_seed(seed)
    except InvalidKeyError:
        raise ConfigurationError(f"{name} is not a valid nkey seed") from None
    if issuer.kind is not KeyKind.ACCOUNT:
        raise ConfigurationError(f"{name} must be an account seed (SA...)")
    return issuer


def _xkey(env: Mapping[str, str], name: str) -> XKeyPair | None:
    seed = env.get(name, "").strip()
    if not seed:
        return None
    try:
        return XKeyPair.from_seed(seed)
    except InvalidKeyError:
        raise ConfigurationError(f"{name} is not a valid curve (xkey) seed (SX...)") from None
