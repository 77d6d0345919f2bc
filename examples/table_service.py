"""A callout service with a static table of users and tokens, each with its own permissions.

Run it against a nats-server configured for auth callout (see docs/modes.md), or let
``examples/run_local.py`` start everything for you. Configuration comes from
the environment:

- ``NATS_URL``: the server (default ``nats://127.0.0.1:4222``)
- ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``: the service's ``auth_users`` login
- ``CALLOUT_ISSUER_SEED``: the seed (``SA...``) of the ``auth_callout.issuer`` key
- ``CALLOUT_XKEY_SEED``: the seed (``SX...``) of the service's xkey, if the server has one

``faststream-callout dev examples.table_service:app`` sets all of these.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from dishka import Provider, Scope, make_async_container, provide
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import (
    AuthorizationRequest,
    CalloutProvider,
    Denied,
    Grant,
    Identity,
    IdentityLookup,
    Permission,
    PermissionBuilder,
    ResponsePermission,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.env import signing_keys_from_env


@dataclass(frozen=True)
class Account:
    secret: str  # demo only: real tables store password hashes
    account: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


USERS = {
    "alice": Account(
        "alice-secret",
        "APP",
        # $SYS.REQ.USER.INFO: lets `faststream-callout check` show what the server applied.
        ("chat.alice.>", "chat.public", "$SYS.REQ.USER.INFO"),
        ("chat.>", "_INBOX.>"),
    ),
    "bob": Account("bob-secret", "APP", ("chat.bob.>", "chat.public"), ("chat.public", "_INBOX.>")),
}
TOKENS = {
    "s3cr3t-sensor-token": Account("", "APP", ("telemetry.sensor1",), ()),
}


class TableLookup:
    """Users by name and password, or by token. Comparisons are constant-time."""

    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.auth_token:
            for token, entry in TOKENS.items():
                if hmac.compare_digest(token, opts.auth_token):
                    return Identity("sensor", attributes={"entry": entry})
            raise Denied("unknown token")
        entry = USERS.get(opts.user)
        if entry is None or not hmac.compare_digest(entry.secret, opts.password):
            raise Denied("bad user or password")
        return Identity(opts.user, attributes={"entry": entry})


class TablePermissions:
    """The table row becomes the grant; logins last an hour."""

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        entry = identity.attributes["entry"]
        assert isinstance(entry, Account)
        return Grant(
            account=entry.account,
            pub=Permission(allow=list(entry.publish)),
            sub=Permission(allow=list(entry.subscribe)),
            resp=ResponsePermission(max=1),
            ttl=3600,
        )


class TablePolicy(Provider):
    """The policy of this example; swap it per environment (tests, production)."""

    scope = Scope.APP
    lookup = provide(TableLookup, provides=IdentityLookup)
    permissions = provide(TablePermissions, provides=PermissionBuilder)

    @provide
    def keys(self) -> SigningKeys:
        return signing_keys_from_env()  # CALLOUT_ISSUER_SEED (+ CALLOUT_XKEY_SEED)


container = make_async_container(CalloutProvider(), TablePolicy())
broker = NatsBroker(
    os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
    security=SASLPlaintext(
        username=os.environ.get("CALLOUT_USER", "auth"),
        password=os.environ.get("CALLOUT_PASSWORD", ""),
    ),
)
broker.include_router(callout_router(container))
app = FastStream(broker, after_shutdown=[container.close])
