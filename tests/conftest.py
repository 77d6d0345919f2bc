"""Shared fixtures: generated keys, a policy, and a real nats-server in config mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import (
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.probes import settle


class TableLookup:
    """Users by password or token; 'boom' makes the lookup fail unexpectedly."""

    def __init__(self) -> None:
        self.passwords = {
            "alice": "alice-pw",
            "bob": "bob-pw",
            "short": "short-pw",
            "watcher": "watcher-pw",
        }
        self.tokens = {"tok-carol-123": "carol"}

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "boom":
            raise RuntimeError("database is down")
        if opts.auth_token:
            name = self.tokens.get(opts.auth_token)
            if name is None:
                raise Denied("unknown token")
            return Identity(name)
        if self.passwords.get(opts.user) == opts.password and opts.password:
            return Identity(opts.user)
        raise Denied("bad credentials")


USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"


class TablePermissions:
    """Grants by name.

    - alice (the default) -> APP: publish chat.alice.>, news.> and the user-info
      request, but not chat.secret nor chat.alice.secret (a deny inside an allow);
      subscribe chat.alice.>, news.>, _INBOX.>, but not news.hidden.
    - bob -> OTHER, everything.
    - carol (token) -> APP, read-only on news.>.
    - watcher -> APP, read-only on chat.> and news.> (an independent observer).
    - short -> APP, account default permissions, a user JWT valid for 2 s.
    """

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        name = identity.name
        if name == "bob":
            return Grant(account="OTHER", pub=Permission(allow=[">"]), sub=Permission(allow=[">"]))
        if name == "carol":
            return Grant(
                account="APP", pub=Permission(deny=[">"]), sub=Permission(allow=["news.>"])
            )
        if name == "watcher":
            return Grant(
                account="APP",
                pub=Permission(deny=[">"]),
                sub=Permission(allow=["chat.>", "news.>"]),
            )
        if name == "short":
            return Grant(account="APP", ttl=2, account_defaults=True)
        return Grant(
            account="APP",
            pub=Permission(
                allow=[f"chat.{name}.>", "news.>", USER_INFO_SUBJECT],
                deny=["chat.secret", f"chat.{name}.secret"],
            ),
            sub=Permission(allow=[f"chat.{name}.>", "news.>", "_INBOX.>"], deny=["news.hidden"]),
        )


@pytest.fixture(scope="session")
def issuer() -> KeyPair:
    return KeyPair.create_account()


@pytest.fixture(scope="session")
def signing_keys(issuer: KeyPair) -> SigningKeys:
    return SigningKeys(issuer)


@pytest.fixture(scope="session")
def pipeline(signing_keys: SigningKeys) -> CalloutPipeline:
    return CalloutPipeline(signing_keys, TableLookup(), TablePermissions())


STATIC_USER = "dave"
STATIC_PASSWORD = "dave-static-pw"


@dataclass
class RealServer:
    server: LocalNatsServer
    config: CalloutServerConfig

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def real_server(issuer: KeyPair) -> Iterator[RealServer]:
    # dave is a statically configured APP user, deliberately not in auth_users and
    # unknown to TableLookup: the callout still decides about him (SPEC 1.2).
    config = CalloutServerConfig(
        issuer=issuer.public_key,
        accounts={"APP": {STATIC_USER: STATIC_PASSWORD}, "OTHER": {}},
    )
    server = LocalNatsServer(config.render(), port=config.port).start()
    assert server.is_running(), server.log()[-2000:]
    process = server.process
    assert process is not None
    try:
        yield RealServer(server, config)
        # A server that crashed mid-session would explain odd failures: say so.
        assert server.is_running(), f"nats-server died:\n{server.log()[-2000:]}"
    finally:
        server.close()  # terminate by PID, kill if it lingers
        assert process.poll() is not None, f"nats-server pid {process.pid} still running"


@pytest.fixture(scope="session")
async def callout_service(
    real_server: RealServer, pipeline: CalloutPipeline
) -> AsyncIterator[NatsBroker]:
    """Our router, connected as the callout account's auth user."""
    broker = NatsBroker(
        real_server.url,
        security=SASLPlaintext(
            username=real_server.config.auth_user, password=real_server.config.auth_password
        ),
        logger=None,
    )
    broker.include_router(callout_router(pipeline))
    await broker.start()
    # The SUB must reach the server before the first client logs in, or that
    # login waits out the callout timeout and is refused. nats-py 2.16's flush()
    # can overtake commands still queued for its flusher: push those out first.
    await settle(broker.connection, timeout=5)
    try:
        yield broker
    finally:
        await broker.stop()
