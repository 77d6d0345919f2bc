"""Shared fixtures: generated keys, a pipeline over the shared test policies, a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from policies import TableLookup, TablePermissions

from faststream_callout import (
    KeyPair,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.probes import settle


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
