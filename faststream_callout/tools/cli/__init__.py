"""The ``faststream-callout`` command line, one module per command.

- ``keys``: generate the issuer account key (and an xkey); seeds go to 0600 files.
- ``config``: print the nats-server configuration for those public keys.
- ``dev MODULE:APP``: a local nats-server with fresh keys, running your app (or its factory).
- ``check URL``: log in and show what the callout decided.
- ``doctor [URL]``: check a deployment (login, permissions, keys, server configuration).

Also ``python -m faststream_callout``. Standard library only (``argparse``).
"""

from __future__ import annotations

from faststream_callout.tools.cli.main import main

__all__ = ["main"]
