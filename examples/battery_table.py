"""Battery: a static table of users (argon2id) and tokens, with role-based permissions.

    uv run python examples/battery_table.py     # demo: local nats-server, a few logins
    faststream run examples.battery_table:create_app --factory   # against your server

Configuration (environment): ``NATS_URL``, ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``
(the service's ``auth_users`` login), ``CALLOUT_ISSUER_SEED`` (``SA...``) and
``CALLOUT_USERS`` (the table file, default examples/battery_users.toml).
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
    KeyPair,
    PolicyProvider,
    ResponsePermission,
    SigningKeys,
    callout_router,
)
from faststream_callout.batteries import PermissionSet, RoleBasedPermissions, StaticTable

USERS = Path(__file__).with_name("battery_users.toml")

ROLES = RoleBasedPermissions(
    {
        "chat": PermissionSet(
            pub=["chat.{user}.>", "chat.team.{team}.>"],  # {team}: the table entry's attribute
            sub=["chat.>", "_INBOX_{user}.>"],
            resp=ResponsePermission(max=1),
        ),
        "telemetry": PermissionSet(pub=["telemetry.{user}"], ttl=300),
    },
    account="APP",
    default_ttl=3600,  # no grant lives forever
)


def create_app() -> FastStream:
    policy = PolicyProvider(
        keys=SigningKeys(KeyPair.from_seed(os.environ["CALLOUT_ISSUER_SEED"])),
        lookup=StaticTable.from_file(os.environ.get("CALLOUT_USERS", USERS)),  # the battery
        permissions=ROLES,
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
    from battery_demo import Login, run

    raise SystemExit(
        run(
            create_app,
            [
                Login(
                    "alice / alice-secret",
                    allowed=True,
                    options={"user": "alice", "password": "alice-secret"},
                ),
                Login("alice / wrong", allowed=False, options={"user": "alice", "password": "x"}),
                Login(
                    "mallory / guess",
                    allowed=False,
                    options={"user": "mallory", "password": "guess"},
                ),
                Login(
                    "sensor token",
                    allowed=True,
                    options={"token": "s3cr3t-sensor-token-3b9f6c1e2a7d4058"},
                ),
            ],
        )
    )
