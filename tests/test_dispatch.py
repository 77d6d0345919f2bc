"""The auth subscriber's dispatch, with a real nats-server and real nats-py clients.

``direct`` runs the pipeline straight from nats-py's callback and publishes the
reply itself; ``framework`` goes through FastStream's ``consume`` (middlewares
see each request); ``auto`` picks by whether the broker has middlewares. All of
them must bound concurrency by ``max_workers`` and let requests in flight finish
on stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from faststream import BaseMiddleware
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.errors import Error as NatsError
from policies import FixedGrant, Passwords

from faststream_callout import (
    CalloutPipeline,
    KeyPair,
    SigningKeys,
    callout_router,
)
from faststream_callout.integration._faststream import DirectSubscriber
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.probes import settle

USERS = {f"u{i}": f"p{i}" for i in range(10)}


def gated_lookup(delay: float = 0.0) -> Passwords:
    """u<N>/p<N>; waits ``delay`` like a database and records the overlap."""
    return Passwords(USERS, delay=delay)


class CountingMiddleware(BaseMiddleware):
    seen = 0

    async def on_receive(self) -> None:
        CountingMiddleware.seen += 1
        await super().on_receive()


@pytest.fixture(scope="module")
def issuer() -> KeyPair:
    return KeyPair.create_account()


@pytest.fixture(scope="module")
def deployment(issuer: KeyPair) -> Iterator[CalloutServerConfig]:
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}})
    server = LocalNatsServer(config.render(), port=config.port).start()
    process = server.process
    assert process is not None
    assert server.is_running(), server.log()[-2000:]
    try:
        yield config
        assert server.is_running(), f"nats-server died:\n{server.log()[-2000:]}"
    finally:
        server.close()
        assert process.poll() is not None, f"nats-server pid {process.pid} still running"


def url(config: CalloutServerConfig) -> str:
    return f"nats://127.0.0.1:{config.port}"


async def start_service(
    config: CalloutServerConfig,
    pipeline: CalloutPipeline,
    *,
    middlewares: tuple[Any, ...] = (),
    **router_options: Any,
) -> tuple[NatsBroker, DirectSubscriber]:
    broker = NatsBroker(
        url(config),
        security=SASLPlaintext(username=config.auth_user, password=config.auth_password),
        middlewares=middlewares,
        logger=None,
    )
    broker.include_router(callout_router(pipeline, **router_options))
    await broker.start()
    # Push the SUB out before the first login (nats-py 2.16 flush race, see testing.probes.settle).
    await settle(broker.connection, timeout=5)
    (subscriber,) = broker.subscribers
    assert isinstance(subscriber, DirectSubscriber)
    return broker, subscriber


@pytest.fixture
async def services() -> AsyncIterator[list[NatsBroker]]:
    started: list[NatsBroker] = []
    yield started
    for broker in started:
        await broker.stop()


async def login(config: CalloutServerConfig, user: str, password: str) -> bool:
    try:
        nc = await nats.connect(
            url(config),
            user=user,
            password=password,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=4,
            error_cb=_quiet,
        )
    except (NatsError, OSError, TimeoutError):
        return False
    await nc.close()
    return True


async def _quiet(_: Exception) -> None:
    pass


def pipeline_for(issuer: KeyPair, lookup: Passwords) -> CalloutPipeline:
    return CalloutPipeline(SigningKeys(issuer), lookup, FixedGrant(pub=["chat.{user}.>"]))


@pytest.mark.parametrize("dispatch", ["direct", "framework"])
async def test_each_dispatch_serves_allowed_and_denied_logins(
    issuer, deployment, services, dispatch
):
    broker, subscriber = await start_service(
        deployment, pipeline_for(issuer, gated_lookup()), dispatch=dispatch
    )
    services.append(broker)
    assert subscriber.direct is (dispatch == "direct")
    assert await login(deployment, "u1", "p1")
    assert not await login(deployment, "u1", "wrong")


async def test_auto_is_direct_without_middlewares(issuer, deployment, services):
    broker, subscriber = await start_service(deployment, pipeline_for(issuer, gated_lookup()))
    services.append(broker)
    assert subscriber.dispatch == "auto"
    assert subscriber.direct
    assert await login(deployment, "u2", "p2")


async def test_auto_goes_through_broker_middlewares(issuer, deployment, services):
    before = CountingMiddleware.seen
    broker, subscriber = await start_service(
        deployment, pipeline_for(issuer, gated_lookup()), middlewares=(CountingMiddleware,)
    )
    services.append(broker)
    assert not subscriber.direct
    assert await login(deployment, "u3", "p3")
    assert not await login(deployment, "u3", "nope")
    assert CountingMiddleware.seen - before == 2  # both requests passed the middleware


async def test_direct_dispatch_ignores_middlewares_when_asked(issuer, deployment, services):
    before = CountingMiddleware.seen
    broker, subscriber = await start_service(
        deployment,
        pipeline_for(issuer, gated_lookup()),
        middlewares=(CountingMiddleware,),
        dispatch="direct",
    )
    services.append(broker)
    assert subscriber.direct
    assert await login(deployment, "u4", "p4")
    assert CountingMiddleware.seen == before


@pytest.mark.parametrize("dispatch", ["direct", "framework"])
async def test_concurrency_is_bounded_by_max_workers(issuer, deployment, services, dispatch):
    lookup = gated_lookup(delay=0.15)
    broker, _ = await start_service(
        deployment, pipeline_for(issuer, lookup), max_workers=3, dispatch=dispatch
    )
    services.append(broker)
    results = await asyncio.gather(*(login(deployment, f"u{i}", f"p{i}") for i in range(9)))
    assert all(results)
    assert lookup.calls == 9
    assert lookup.peak == 3  # overlapped, and never more than max_workers


async def test_requests_in_flight_are_answered_on_stop(issuer, deployment):
    lookup = gated_lookup(delay=0.4)
    broker, _ = await start_service(deployment, pipeline_for(issuer, lookup))
    attempt = asyncio.ensure_future(login(deployment, "u5", "p5"))
    await asyncio.wait_for(lookup.started.wait(), 3)
    await broker.stop()  # unsubscribes at once, then waits for the lookup to finish
    assert await attempt
    assert lookup.calls == 1


def test_unknown_dispatch_is_refused(issuer):
    with pytest.raises(ValueError, match="dispatch must be"):
        callout_router(pipeline_for(issuer, gated_lookup()), dispatch="fast")  # type: ignore[arg-type]
