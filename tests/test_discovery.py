"""The callout as a NATS micro service: $SRV.PING/INFO/STATS through a real nats-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from callout_env import CONFIG, CalloutEnv, login, run_in
from dishka import make_async_container
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.specification import AsyncAPI
from nats.aio.client import Client
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats
from policies import FixedGrant, Never, Passwords

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    KeyPair,
    PolicyProvider,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.discovery import CalloutService, discovery_router
from faststream_callout.integration.observers import ObserverProvider
from faststream_callout.testing import CalloutDeployment

# $SRV is answered by the service's own connection, the same in every server set-up.
pytestmark = run_in(CONFIG)

NAME = "auth-callout"
QUEUE = "callout-q"


def policy(env: CalloutEnv) -> PolicyProvider:
    """alice logs in; 'boom' makes the lookup fail (an error); anyone else is denied."""
    return PolicyProvider(
        keys=env.keys,
        lookup=Passwords({"alice": "pw"}),
        permissions=env.in_accounts(FixedGrant(pub=["x.>"])),
    )


@pytest.fixture(scope="module")
async def srv_service(callout_env: CalloutEnv) -> AsyncIterator[CalloutDeployment]:
    # The two steps the README shows: the service observes the decisions (here
    # through Dishka) and its own router answers $SRV.
    service = CalloutService(NAME, queue_group=QUEUE)
    container = make_async_container(
        CalloutProvider(), policy(callout_env), ObserverProvider(service)
    )
    broker = callout_env.broker(
        callout_router(container, queue=QUEUE, include_in_schema=False),
        discovery_router(service, include_in_schema=False),
    )
    try:
        async with callout_env.run(broker) as deployment:
            yield deployment
    finally:
        await container.close()


@pytest.fixture
async def client(srv_service: CalloutDeployment) -> AsyncIterator[Client]:
    """A plain nats-py client: the callout account's auth user (the service's account)."""
    nc = await login(srv_service.url, **srv_service.server.service_login)
    try:
        yield nc
    finally:
        await nc.close()


async def ask(nc: Client, subject: str) -> dict[str, Any]:
    reply = await nc.request(subject, b"", timeout=2)
    body: dict[str, Any] = json.loads(reply.data)
    return body


async def test_ping_info_stats_on_every_subject_variant(client):
    ping = await ask(client, "$SRV.PING")
    assert ping["type"] == "io.nats.micro.v1.ping_response"
    assert ping["name"] == NAME
    assert set(ping) == {"type", "id", "name", "version", "metadata"}
    service_id = ping["id"]
    ServicePing.from_dict(ping)  # nats.micro reads it back
    for verb in ("PING", "INFO", "STATS"):
        for subject in (f"$SRV.{verb}", f"$SRV.{verb}.{NAME}", f"$SRV.{verb}.{NAME}.{service_id}"):
            body = await ask(client, subject)
            assert body["type"] == f"io.nats.micro.v1.{verb.lower()}_response", subject
            assert (body["id"], body["name"]) == (service_id, NAME)


async def test_info_lists_the_callout_endpoint(client):
    info = await ask(client, f"$SRV.INFO.{NAME}")
    parsed = ServiceInfo.from_dict(info)
    assert parsed.version == info["version"] == "0.1.0"
    assert [e.to_dict() for e in parsed.endpoints] == [
        {
            "name": "authorize",
            "subject": "$SYS.REQ.USER.AUTH",
            "queue_group": QUEUE,
            "metadata": {},
        }
    ]
    assert set(info) == {"type", "id", "name", "version", "description", "endpoints", "metadata"}


async def test_stats_count_logins(srv_service, client):
    before = (await ask(client, f"$SRV.STATS.{NAME}"))["endpoints"][0]
    async with srv_service.connect(user="alice", password="pw"):
        pass
    # a denial (a normal answer), then a lookup that fails (an error)
    await srv_service.expect_denied(user="mallory", password="pw", reason="bad credentials")
    await srv_service.expect_denied(user="boom", password="pw", reason="service error")
    stats = await ask(client, f"$SRV.STATS.{NAME}")
    parsed = ServiceStats.from_dict(stats)  # nats.micro parses `started`
    assert parsed.started <= datetime.now(UTC).replace(tzinfo=None)
    endpoint = stats["endpoints"][0]
    assert set(endpoint) == {
        "name",
        "subject",
        "queue_group",
        "num_requests",
        "num_errors",
        "last_error",
        "processing_time",
        "average_processing_time",
        "data",
    }
    assert endpoint["subject"] == "$SYS.REQ.USER.AUTH"
    assert endpoint["queue_group"] == QUEUE
    assert endpoint["num_requests"] == before["num_requests"] + 3
    assert endpoint["num_errors"] == before["num_errors"] + 1
    assert endpoint["last_error"] == "error: authorization service error"
    assert endpoint["processing_time"] > before["processing_time"]
    assert endpoint["average_processing_time"] == (
        endpoint["processing_time"] // endpoint["num_requests"]
    )
    assert endpoint["data"]["allowed"] == before["data"]["allowed"] + 1
    assert endpoint["data"]["denied"] == before["data"]["denied"] + 1


async def test_other_service_names_are_not_answered(client):
    with pytest.raises(nats.errors.NoRespondersError):
        await client.request(f"$SRV.PING.other-{NAME}", b"", timeout=1)


# -- without a server --------------------------------------------------------------


def test_counts_and_average():
    service = CalloutService("svc", version="1.2.3", id="ID1", metadata={"k": "v"})
    assert service.stats()["endpoints"][0]["average_processing_time"] == 0
    for outcome, latency in [(Outcome.ALLOWED, 0.001), (Outcome.TIMEOUT, 0.003)]:
        service(Decision(outcome, b"", "slow", latency=latency))
    endpoint = service.stats()["endpoints"][0]
    assert endpoint["num_requests"] == 2
    assert endpoint["num_errors"] == 1
    assert endpoint["last_error"] == "timeout: slow"
    assert endpoint["processing_time"] == pytest.approx(4_000_000, abs=2)
    assert endpoint["average_processing_time"] == pytest.approx(2_000_000, abs=2)
    assert service.ping()["metadata"] == {"k": "v"}
    assert service.control_subjects("PING") == ["$SRV.PING", "$SRV.PING.svc", "$SRV.PING.svc.ID1"]
    service.reset()
    assert service.stats()["endpoints"][0]["num_requests"] == 0


def test_generated_ids_are_unique_subject_tokens():
    ids = {CalloutService().id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 22 and i.isalnum() for i in ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "auth callout"}, "name"),
        ({"name": "a.b"}, "name"),
        ({"version": "1.0"}, "version"),
        ({"id": "x.y"}, "id"),
    ],
)
def test_invalid_identity(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalloutService(**kwargs)


def test_the_default_endpoint_is_callout_routers_default():
    pipeline = CalloutPipeline(SigningKeys(KeyPair.create_account()), Never(), Never())
    (subscriber,) = callout_router(pipeline).subscribers
    [endpoint] = CalloutService("svc").info()["endpoints"]
    assert (endpoint["subject"], endpoint["queue_group"]) == (
        subscriber.subject.broker_address,
        subscriber.queue,
    )
    [custom] = CalloutService("svc", subject="custom.auth", queue_group="qq").info()["endpoints"]
    assert (custom["subject"], custom["queue_group"]) == ("custom.auth", "qq")


async def test_discovery_router_answers_every_variant_without_a_queue_group():
    service = CalloutService("svc", id="ID1")
    router = discovery_router(service)
    assert discovery_router(service) is not router  # fresh each call: including moves it
    broker = NatsBroker()
    broker.include_router(router)
    subscribers = broker.subscribers
    assert sorted(s.subject.broker_address for s in subscribers) == sorted(
        subject for verb in ("PING", "INFO", "STATS") for subject in service.control_subjects(verb)
    )
    assert not any(s.queue for s in subscribers)  # every instance answers
    async with TestNatsBroker(broker) as test_broker:
        reply = await test_broker.request(b"", "$SRV.STATS.svc.ID1", timeout=2)
    assert json.loads(reply.body)["type"] == "io.nats.micro.v1.stats_response"


@pytest.mark.parametrize("include", [True, False])
def test_discovery_router_in_schema(include):
    broker = NatsBroker()
    broker.include_router(discovery_router(CalloutService("svc"), include_in_schema=include))
    channels = AsyncAPI(broker).to_specification().to_jsonable().get("channels", {})
    assert bool(channels) is include
