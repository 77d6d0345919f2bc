"""Exceptions of faststream-callout: the outcomes user code raises, and the protocol errors.

None of their messages ever contains a seed, a password, a token or a signature.
"""

from __future__ import annotations

from faststream_callout.protocol.errors import (
    CalloutError,
    ConfigurationError,
    InvalidJWTError,
    InvalidKeyError,
)

__all__ = [
    "CalloutError",
    "ConfigurationError",
    "Denied",
    "Drop",
    "InvalidJWTError",
    "InvalidKeyError",
    "NotApplicable",
    "SignerError",
    "StoreUnavailable",
]


class SignerError(CalloutError):
    """An external signer failed, timed out, or returned a signature that does not verify.

    Nothing can be signed then, not even a denial: the pipeline answers with an
    empty (unsigned) reply, which nats-server reads as a denial.
    """


class StoreUnavailable(CalloutError):  # noqa: N818 - reads as a state, like Denied
    """A store the decision needs (shared through JetStream, say) could not be reached in time.

    Raised by the shared stores (``faststream_callout.integration.shared``):
    their writes after their retries, the shared revocation list when its copy
    is older than it may be, the shared throttle store when JetStream does not
    answer. An expected failure, not a bug: the pipeline denies the login and
    logs one line, without a traceback. Never holds a secret.
    """


class Denied(Exception):  # noqa: N818 - reads as an outcome: ``raise Denied("...")``
    """Raise from an identity lookup or permission builder to deny a login.

    The reason is sent to nats-server in the signed response; nats-server logs it
    and publishes it on ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` in the callout account.
    The client only ever sees ``Authorization Violation``. Never put a secret in it.

    Args:
        reason: why the login is refused, e.g. ``"unknown user"``.

    """

    def __init__(self, reason: str = "not authorized") -> None:
        super().__init__(reason)
        self.reason = reason or "not authorized"


class NotApplicable(Denied):
    """Raised by a lookup for credentials it does not handle ("not mine").

    Examples: no token was sent to a token lookup, the user is not in this
    table, the password is not a JWT. ``FirstMatch`` (in
    ``faststream_callout.batteries``) then asks the next lookup; anywhere else
    it denies like :class:`Denied`. Wrong credentials for a user the lookup
    *does* know are a plain ``Denied``, which stops ``FirstMatch``.

    Args:
        reason: why the lookup passed, e.g. ``"no token presented"``; never a secret.
    """


class Drop(Exception):  # noqa: N818 - reads as an outcome: ``raise Drop("...")``
    """Raise from an identity lookup or permission builder to send no reply at all.

    Unlike :class:`Denied`, nothing is sent: nats-server waits out its
    ``authorization.timeout`` and then refuses the client with ``Authorization
    Violation``, logging nothing above debug level. Use it when another service
    (in another queue group) should answer, or to let abusive clients wait.
    The decision is still logged and observed (outcome ``dropped``). Not a
    ``Denied``: ``FirstMatch`` does not ask the next lookup and the throttle does
    not count it.

    Args:
        reason: why the request is dropped (logged, never sent); never a secret.

    """

    def __init__(self, reason: str = "dropped") -> None:
        super().__init__(reason)
        self.reason = reason or "dropped"
