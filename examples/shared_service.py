"""A callout service for every core of a host: N processes, one memory (JetStream KV).

Run N worker processes of it; each is an instance in the callout's queue group, and
they share the revocation list, the sessions, the cache invalidations and the
throttle counts through JetStream KV buckets in the callout account (``SharedStateProvider``)::

    NATS_URL=nats://127.0.0.1:4222 CALLOUT_USER=auth CALLOUT_PASSWORD=... \\
    CALLOUT_ISSUER_SEED=SA... faststream run examples.shared_service:app --workers 2

The callout account needs JetStream (config mode: ``jetstream: enabled`` in its
account block, and JetStream on the server). Each worker logs its decisions with its
process id. Revoke, kick or invalidate from any process that holds a
``SharedState`` on the same buckets (another instance, an admin script).
"""

from __future__ import annotations

import hmac
import logging
import os

from dishka import Provider, Scope, make_async_container, provide
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import (
    AuthorizationRequest,
    CalloutPipeline,
    CalloutProvider,
    Denied,
    Grant,
    Identity,
    IdentityLookup,
    Permission,
    PermissionBuilder,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.env import signing_keys_from_env
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.shared import SharedStateProvider

logging.basicConfig(
    level=logging.INFO, format="%(levelname)s pid=%(process)d %(name)s: %(message)s"
)

USERS = {"alice": "alice-secret", "bob": "bob-secret"}  # demo only: store password hashes


class TableLookup:
    """Users by name and password (constant-time comparison)."""

    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        secret = USERS.get(opts.user)
        if secret is None or not hmac.compare_digest(secret, opts.password):
            raise Denied("bad user or password")
        return Identity(opts.user)


class ChatRules:
    """Everyone chats under their own name for an hour."""

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(
            account="APP",
            pub=Permission(allow=[f"chat.{identity.name}.>"]),
            sub=Permission(allow=["chat.>", "_INBOX.>"]),
            ttl=3600,
        )


class Policy(Provider):
    """The keys, and a decision cache over the table (its invalidations are shared)."""

    scope = Scope.APP

    @provide
    def keys(self) -> SigningKeys:
        return signing_keys_from_env()  # CALLOUT_ISSUER_SEED (+ CALLOUT_XKEY_SEED)

    @provide
    def cache(self) -> DecisionCache:
        return DecisionCache(TableLookup(), ChatRules(), max_ttl=30)

    @provide
    def lookup(self, cache: DecisionCache) -> IdentityLookup:
        return cache

    @provide
    def permissions(self, cache: DecisionCache) -> PermissionBuilder:
        return cache


# SharedStateProvider logs in like the service (CALLOUT_USER / CALLOUT_PASSWORD).
container = make_async_container(CalloutProvider(), Policy(), SharedStateProvider())
broker = NatsBroker(
    os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
    security=SASLPlaintext(
        username=os.environ.get("CALLOUT_USER", "auth"),
        password=os.environ.get("CALLOUT_PASSWORD", ""),
    ),
    max_reconnect_attempts=-1,
)
broker.include_router(callout_router(container))
app = FastStream(broker, after_shutdown=[container.close])


@app.on_startup
async def load_shared_state() -> None:
    """Build the pipeline (and load the shared buckets) before serving: fail fast."""
    await container.get(CalloutPipeline)
