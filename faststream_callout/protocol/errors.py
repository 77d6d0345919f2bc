"""Errors raised while reading or writing the protocol: keys, JWTs and configuration.

None of their messages ever contains a seed, a password, a token or a signature.
"""

from __future__ import annotations

__all__ = ["CalloutError", "ConfigurationError", "InvalidJWTError", "InvalidKeyError"]


class CalloutError(Exception):
    """Base class of the library's own errors."""


class InvalidKeyError(CalloutError, ValueError):
    """A string is not a valid nkey or xkey of the expected kind."""


class InvalidJWTError(CalloutError, ValueError):
    """A JWT could not be decoded, or failed a check (signature, issuer, claims)."""


class ConfigurationError(CalloutError, ValueError):
    """The callout service is configured in a way nats-server would not accept."""
