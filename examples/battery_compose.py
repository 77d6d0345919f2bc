"""Batteries composed: passwords and tokens from a table, nkeys, and OIDC tokens if configured.

``ByCredential`` picks the lookup by what the client sent; ``FirstMatch`` tries
lookups in order, passing on when one says "not mine" (an unknown user, a
token that is not a JWT) and stopping at a definite "no" (a wrong password).

    uv run python examples/battery_compose.py   # demo: local nats-server, a few logins

Configuration (environment): ``NATS_URL``, ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``,
``CALLOUT_ISSUER_SEED``, ``CALLOUT_USERS`` (table file), ``CALLOUT_NKEYS`` (nkey
file), and optionally ``OIDC_ISSUER`` / ``OIDC_AUDIENCE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from dishka import make_async_container
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import (
    CalloutProvider,
    IdentityLookup,
    KeyPair,
    PolicyProvider,
    SigningKeys,
    callout_router,
)
from faststream_callout.batteries import (
    ByCredential,
    FirstMatch,
    NKeyLookup,
    OIDCLookup,
    PermissionSet,
    RoleBasedPermissions,
    StaticTable,
)

USERS = Path(__file__).with_name("battery_users.toml")


def lookup() -> IdentityLookup:
    table = StaticTable.from_file(os.environ.get("CALLOUT_USERS", USERS))
    tokens: IdentityLookup = table
    if "OIDC_ISSUER" in os.environ:
        oidc = OIDCLookup(
            issuer=os.environ["OIDC_ISSUER"], audience=os.environ.get("OIDC_AUDIENCE", "nats")
        )
        tokens = FirstMatch(table, oidc)  # table tokens first, then access tokens
    return ByCredential(
        password=table,
        token=tokens,
        nkey=NKeyLookup.from_file(os.environ["CALLOUT_NKEYS"]),
    )


def create_app() -> FastStream:
    policy = PolicyProvider(
        keys=SigningKeys(KeyPair.from_seed(os.environ["CALLOUT_ISSUER_SEED"])),
        lookup=lookup(),
        permissions=RoleBasedPermissions(
            {
                "chat": PermissionSet(pub=["chat.{user}.>"], sub=["chat.>"]),
                "telemetry": PermissionSet(pub=["telemetry.{user}.>"]),
            },
            account="APP",
        ),
    )
    container = make_async_container(CalloutProvider(), policy)
    broker = NatsBroker(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        security=SASLPlaintext(
            username=os.environ.get("CALLOUT_USER", "auth"),
            password=os.environ.get("CALLOUT_PASSWORD", ""),
        ),
    )
    broker.include_router(callout_router(container))
    return FastStream(broker, after_shutdown=[container.close])


if __name__ == "__main__":
    import tempfile

    from battery_demo import Login, run

    device = KeyPair.create_user()
    with tempfile.TemporaryDirectory() as directory:
        nkeys = Path(directory) / "nkeys.toml"
        nkeys.write_text(
            f'[users.device-9]\nnkey = "{device.public_key}"\ngroups = ["telemetry"]\n'
        )
        os.environ["CALLOUT_NKEYS"] = str(nkeys)
        status = run(
            create_app,
            [
                Login(
                    "password: alice",
                    allowed=True,
                    options={"user": "alice", "password": "alice-secret"},
                ),
                Login(
                    "token: sensor-1",
                    allowed=True,
                    options={"token": "s3cr3t-sensor-token-3b9f6c1e2a7d4058"},
                ),
                Login("nkey: device-9", allowed=True, options={"nkeys_seed_str": device.seed}),
                Login("unknown token", allowed=False, options={"token": "nope"}),
            ],
            nkey_placeholder=True,
        )
    raise SystemExit(status)
