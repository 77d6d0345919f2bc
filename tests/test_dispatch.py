"""The auth subscriber's dispatch, with a real nats-server and real nats-py clients.

``direct`` runs the pipeline straight from nats-py's callback and publishes the
reply itself; ``framework`` goes through FastStream's ``consume`` (middlewares
see each request); ``auto`` picks by whether the broker has middlewares. All of
them must bound concurrency by ``max_workers`` and let requests in flight finish
on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from callout_env import CONFIG, CalloutEnv, run_in
from faststream import BaseMiddleware
from faststream.nats import NatsBroker
from policies import FixedGrant, Passwords

from faststream_callout import (
    CalloutPipeline,
    KeyPair,
    SigningKeys,
    callout_router,
)
from faststream_callout.integration._faststream import DirectSubscriber
from faststream_callout.testing import CalloutDeployment, LoginRefused

# Dispatch is the router's business, the same in every server set-up.
pytestmark = run_in(CONFIG)

USERS = {f"u{i}": f"p{i}" for i in range(10)}


def gated_lookup(delay: float = 0.0) -> Passwords:
    """u<N>/p<N>; waits ``delay`` like a database and records the overlap."""
    return Passwords(USERS, delay=delay)


class CountingMiddleware(BaseMiddleware):
    seen = 0

    async def on_receive(self) -> None:
        CountingMiddleware.seen += 1
        await super().on_receive()


@dataclass
class Service:
    deployment: CalloutDeployment
    broker: NatsBroker
    subscriber: DirectSubscriber


@contextlib.asynccontextmanager
async def running(
    env: CalloutEnv,
    lookup: Passwords,
    *,
    middlewares: tuple[Any, ...] = (),
    **router_options: Any,
) -> AsyncIterator[Service]:
    """The router over ``lookup`` in a broker with ``middlewares``, serving on ``env``."""
    pipeline = env.pipeline(lookup, FixedGrant(pub=["chat.{user}.>"]))
    broker = env.broker(callout_router(pipeline, **router_options), middlewares=middlewares)
    (subscriber,) = broker.subscribers
    assert isinstance(subscriber, DirectSubscriber)
    async with env.run(broker) as deployment:
        yield Service(deployment, broker, subscriber)


async def login(deployment: CalloutDeployment, user: str, password: str) -> bool:
    try:
        async with deployment.connect(user=user, password=password):
            return True
    except LoginRefused as refusal:
        reason = refusal.service_reason
    assert reason == "bad credentials", reason  # our denial, not a timeout
    return False


@pytest.mark.parametrize("dispatch", ["direct", "framework"])
async def test_each_dispatch_serves_allowed_and_denied_logins(
    callout_env: CalloutEnv, dispatch: Any
) -> None:
    async with running(callout_env, gated_lookup(), dispatch=dispatch) as service:
        assert service.subscriber.direct is (dispatch == "direct")
        assert await login(service.deployment, "u1", "p1")
        assert not await login(service.deployment, "u1", "wrong")


async def test_auto_is_direct_without_middlewares(callout_env: CalloutEnv) -> None:
    async with running(callout_env, gated_lookup()) as service:
        assert service.subscriber.dispatch == "auto"
        assert service.subscriber.direct
        assert await login(service.deployment, "u2", "p2")


async def test_auto_goes_through_broker_middlewares(callout_env: CalloutEnv) -> None:
    before = CountingMiddleware.seen
    async with running(callout_env, gated_lookup(), middlewares=(CountingMiddleware,)) as service:
        assert not service.subscriber.direct
        assert await login(service.deployment, "u3", "p3")
        assert not await login(service.deployment, "u3", "nope")
    assert CountingMiddleware.seen - before == 2  # both requests passed the middleware


async def test_direct_dispatch_ignores_middlewares_when_asked(callout_env: CalloutEnv) -> None:
    before = CountingMiddleware.seen
    async with running(
        callout_env, gated_lookup(), middlewares=(CountingMiddleware,), dispatch="direct"
    ) as service:
        assert service.subscriber.direct
        assert await login(service.deployment, "u4", "p4")
    assert CountingMiddleware.seen == before


@pytest.mark.parametrize("dispatch", ["direct", "framework"])
async def test_concurrency_is_bounded_by_max_workers(
    callout_env: CalloutEnv, dispatch: Any
) -> None:
    lookup = gated_lookup(delay=0.15)
    async with running(callout_env, lookup, max_workers=3, dispatch=dispatch) as service:
        logins = (login(service.deployment, f"u{i}", f"p{i}") for i in range(9))
        results = await asyncio.gather(*logins)
    assert all(results)
    assert lookup.calls == 9
    assert lookup.peak == 3  # overlapped, and never more than max_workers


async def test_requests_in_flight_are_answered_on_stop(callout_env: CalloutEnv) -> None:
    lookup = gated_lookup(delay=0.4)
    async with running(callout_env, lookup) as service:
        attempt = asyncio.ensure_future(login(service.deployment, "u5", "p5"))
        await asyncio.wait_for(lookup.started.wait(), 3)
        await service.broker.stop()  # unsubscribes at once, then waits for the lookup to finish
        assert await attempt
    assert lookup.calls == 1


def test_unknown_dispatch_is_refused() -> None:
    pipeline = CalloutPipeline(
        SigningKeys(KeyPair.create_account()), gated_lookup(), FixedGrant(pub=["chat.{user}.>"])
    )
    with pytest.raises(ValueError, match="dispatch must be"):
        callout_router(pipeline, dispatch="fast")  # type: ignore[arg-type]
