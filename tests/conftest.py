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
from faststream_callout.claims import AuthorizationRequest
from faststream_callout.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.pipeline import CalloutPipeline


class TableLookup:
    """Users by password or token; 'boom' makes the lookup fail unexpectedly."""

    def __init__(self) -> None:
        self.passwords = {"alice": "alice-pw", "bob": "bob-pw", "short": "short-pw"}
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


class TablePermissions:
    """alice -> APP with chat.alice.>; bob -> OTHER; carol -> APP read-only; short -> 2 s."""

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        name = identity.name
        if name == "bob":
            return Grant(account="OTHER", pub=Permission(allow=[">"]), sub=Permission(allow=[">"]))
        if name == "carol":
            return Grant(
                account="APP", pub=Permission(deny=[">"]), sub=Permission(allow=["news.>"])
            )
        if name == "short":
            return Grant(account="APP", ttl=2)
        return Grant(
            account="APP",
            pub=Permission(allow=[f"chat.{name}.>", "news.>"], deny=["chat.secret"]),
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


@dataclass
class RealServer:
    server: LocalNatsServer
    config: CalloutServerConfig

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def real_server(issuer: KeyPair) -> Iterator[RealServer]:
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}, "OTHER": {}})
    server = LocalNatsServer(config.render(), port=config.port).start()
    assert server.is_running()
    try:
        yield RealServer(server, config)
    finally:
        pid = server.pid
        server.close()
        assert pid is not None


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
    try:
        yield broker
    finally:
        await broker.stop()
