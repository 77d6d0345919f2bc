"""nats-server configuration files: read them as nats-server does, and write them.

:mod:`~faststream_callout.tools.natsconf.reader` parses a configuration (doctor
compares it with the service's keys); :mod:`~faststream_callout.tools.natsconf.render`
writes the auth callout configurations the CLI prints and the local servers run.
"""

from __future__ import annotations

from faststream_callout.tools.natsconf.reader import NatsConfigError, load, option, parse
from faststream_callout.tools.natsconf.render import (
    AUTH_TIMEOUT,
    AUTH_USER,
    CALLOUT_ACCOUNT,
    SYSTEM_ACCOUNT,
    SYSTEM_USER,
    TARGET_ACCOUNT,
    new_password,
    operator_authorization,
    quote,
    render_config_mode,
    render_operator_mode,
)

__all__ = [
    "AUTH_TIMEOUT",
    "AUTH_USER",
    "CALLOUT_ACCOUNT",
    "SYSTEM_ACCOUNT",
    "SYSTEM_USER",
    "TARGET_ACCOUNT",
    "NatsConfigError",
    "load",
    "new_password",
    "operator_authorization",
    "option",
    "parse",
    "quote",
    "render_config_mode",
    "render_operator_mode",
]
