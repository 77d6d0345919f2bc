"""Configuration from the environment: the variable names ``faststream-callout dev`` sets.

``faststream-callout dev`` starts a local nats-server and runs your app with these set;
in production set them yourself (from a secret store):

- ``NATS_URL``: the server the service connects to
- ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``: the service's ``auth_users`` login
- ``CALLOUT_ISSUER_SEED``: the seed (``SA...``) of the ``auth_callout.issuer`` account key
- ``CALLOUT_XKEY_SEED``: the seed (``SX...``) of the service's xkey, when the server has one

Key rotation without code changes, with :func:`keyring_from_env` (see docs/keys.md,
key rotation):

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
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.signing import SigningKeys
from faststream_callout.protocol.nkeys import KeyKind, KeyPair
from faststream_callout.protocol.xkeys import XKeyPair

__all__ = [
    "CALLOUT_CREDS",
    "CALLOUT_ISSUER_SEED",
    "CALLOUT_NEXT_ISSUER_SEED",
    "CALLOUT_NEXT_XKEY_SEED",
    "CALLOUT_PASSWORD",
    "CALLOUT_USER",
    "CALLOUT_XKEY_SEED",
    "NATS_URL",
    "keyring_from_env",
    "signing_keys_from_env",
]

NATS_URL: Final = "NATS_URL"
CALLOUT_USER: Final = "CALLOUT_USER"
CALLOUT_PASSWORD: Final = "CALLOUT_PASSWORD"  # noqa: S105 - a variable name, not a secret
CALLOUT_CREDS: Final = "CALLOUT_CREDS"  # operator mode: the callout connection's creds file
CALLOUT_ISSUER_SEED: Final = "CALLOUT_ISSUER_SEED"
CALLOUT_XKEY_SEED: Final = "CALLOUT_XKEY_SEED"
CALLOUT_NEXT_XKEY_SEED: Final = "CALLOUT_NEXT_XKEY_SEED"
CALLOUT_NEXT_ISSUER_SEED: Final = "CALLOUT_NEXT_ISSUER_SEED"


def signing_keys_from_env(environ: Mapping[str, str] | None = None) -> SigningKeys:
    """Config-mode :class:`SigningKeys` from ``CALLOUT_ISSUER_SEED`` (and ``CALLOUT_XKEY_SEED``).

    Raises:
        ConfigurationError: the issuer seed is missing, a seed is not valid, or a
            rotation variable (``CALLOUT_NEXT_...``) is set: those are read by
            :func:`keyring_from_env`, and ignoring them would refuse logins. The
            message names the variable, never its value.

    """
    env = os.environ if environ is None else environ
    for name in (CALLOUT_NEXT_ISSUER_SEED, CALLOUT_NEXT_XKEY_SEED):
        if env.get(name, "").strip():
            raise ConfigurationError(
                f"{name} is set: rotating keys need a Keyring, from keyring_from_env()"
            )
    issuer, xkey, _ = _seeds(env)
    return SigningKeys(issuer, xkey=xkey)


def keyring_from_env(environ: Mapping[str, str] | None = None) -> Keyring:
    """A config-mode :class:`Keyring` from the four seed variables.

    ``CALLOUT_ISSUER_SEED`` and ``CALLOUT_XKEY_SEED`` as for
    :func:`signing_keys_from_env`; with ``CALLOUT_NEXT_ISSUER_SEED`` requests
    naming either issuer are answered, each with its own; with
    ``CALLOUT_NEXT_XKEY_SEED`` requests encrypted for either xkey are opened
    (it is the xkey of each issuer's next keys, see :meth:`Keyring.rotate`).

    Raises:
        ConfigurationError: the issuer seed is missing, or a seed is not valid.
            The message names the variable, never its value.

    """
    env = os.environ if environ is None else environ
    issuer, xkey, next_xkey = _seeds(env)
    issuers = [issuer]
    following = _issuer(env, CALLOUT_NEXT_ISSUER_SEED)
    if following is not None:
        if following.public_key == issuer.public_key:
            raise ConfigurationError(
                f"{CALLOUT_NEXT_ISSUER_SEED} is the same key as {CALLOUT_ISSUER_SEED}"
            )
        issuers.append(following)
    current = [SigningKeys(key, xkey=xkey) for key in issuers]
    next_keys = [SigningKeys(key, xkey=next_xkey) for key in issuers] if next_xkey else []
    return Keyring(*current, next_keys=next_keys)


def _seeds(env: Mapping[str, str]) -> tuple[KeyPair, XKeyPair | None, XKeyPair | None]:
    # The issuer, its xkey and the next xkey; the next one only next to a current one.
    issuer = _issuer(env, CALLOUT_ISSUER_SEED)
    if issuer is None:
        raise ConfigurationError(
            f"{CALLOUT_ISSUER_SEED} is not set: the seed (SA...) of the auth_callout issuer key"
        )
    xkey = _xkey(env, CALLOUT_XKEY_SEED)
    next_xkey = _xkey(env, CALLOUT_NEXT_XKEY_SEED)
    if next_xkey is not None and xkey is None:
        raise ConfigurationError(f"{CALLOUT_NEXT_XKEY_SEED} is set but {CALLOUT_XKEY_SEED} is not")
    return issuer, xkey, next_xkey


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
