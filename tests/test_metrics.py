"""Prometheus metrics: decisions by outcome, latency, requests in flight; off by default."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from dishka import make_async_container
from faststream.nats import NatsBroker, TestNatsBroker
from prometheus_client import CollectorRegistry, generate_latest

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    PolicyProvider,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.pipeline import Decision, Outcome, log_decision
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.metrics import PrometheusMetrics
from faststream_callout.integration.observers import ObserverProvider, observe
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer

DECISIONS = "faststream_callout_decisions_total"
SECONDS = "faststream_callout_decision_seconds"
IN_FLIGHT = "faststream_callout_requests_in_flight"


class Lookup:
    """alice by password; 'boom' fails; 'slow' waits for the test's gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "boom":
            raise RuntimeError("database is down")
        if opts.user == "slow":
            await self.gate.wait()
            return Identity("slow")
        if opts.user == "alice" and opts.password == "alice-pw":
            return Identity("alice")
        raise Denied("bad credentials")


class Permissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(account="APP", pub=Permission(allow=["chat.>"]), sub=Permission(deny=[">"]))


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys(KeyPair.create_account())


@pytest.fixture
def server(keys: SigningKeys) -> FakeServer:
    return FakeServer.for_keys(keys)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


async def decide(pipeline: CalloutPipeline, server: FakeServer, **connect: str) -> Decision:
    minted = server.request(**connect)  # type: ignore[arg-type]
    return await pipeline.decide(minted.body, minted.server_xkey)


async def test_decisions_are_counted_and_timed_by_outcome(
    keys: SigningKeys, server: FakeServer, registry: CollectorRegistry
) -> None:
    metrics = PrometheusMetrics(registry)
    pipeline = metrics.instrument(CalloutPipeline(keys, Lookup(), Permissions()))
    assert pipeline.observers == [log_decision, metrics]  # the decision log comes first

    for _ in range(3):
        assert (await decide(pipeline, server, user="alice", password="alice-pw")).allowed
    await decide(pipeline, server, user="alice", password="wrong")
    await decide(pipeline, server, user="mallory", password="x")
    await decide(pipeline, server, user="boom", password="x")
    await pipeline.decide(b"not a jwt")

    assert value(registry, DECISIONS, outcome="allowed") == 3
    assert value(registry, DECISIONS, outcome="denied") == 2
    assert value(registry, DECISIONS, outcome="error") == 1
    assert value(registry, DECISIONS, outcome="rejected") == 1
    assert value(registry, DECISIONS, outcome="timeout") == 0  # every outcome is exported
    assert value(registry, f"{SECONDS}_count", outcome="allowed") == 3
    assert 0 < value(registry, f"{SECONDS}_sum", outcome="allowed") < 1
    assert value(registry, f"{SECONDS}_bucket", outcome="allowed", le="+Inf") == 3
    assert value(registry, IN_FLIGHT) == 0

    text = generate_latest(registry).decode()
    for name in (DECISIONS, f"{SECONDS}_bucket", IN_FLIGHT):
        assert name in text
    assert "alice" not in text  # no label a client chooses
    assert "alice-pw" not in text


async def test_requests_in_flight(
    keys: SigningKeys, server: FakeServer, registry: CollectorRegistry
) -> None:
    lookup = Lookup()
    metrics = PrometheusMetrics(registry)
    pipeline = metrics.instrument(CalloutPipeline(keys, lookup, Permissions()))
    other = metrics.instrument(CalloutPipeline(keys, lookup, Permissions()))

    waiting = [
        asyncio.create_task(decide(p, server, user="slow")) for p in (pipeline, pipeline, other)
    ]
    await asyncio.sleep(0.05)
    assert value(registry, IN_FLIGHT) == 3  # summed over the instrumented pipelines
    assert (await decide(pipeline, server, user="alice", password="alice-pw")).allowed
    assert value(registry, IN_FLIGHT) == 3

    waiting[0].cancel()  # a cancelled request leaves the gauge too
    await asyncio.gather(waiting[0], return_exceptions=True)
    assert value(registry, IN_FLIGHT) == 2

    lookup.gate.set()
    assert all(d.allowed for d in await asyncio.gather(*waiting[1:]))
    assert value(registry, IN_FLIGHT) == 0
    assert value(registry, DECISIONS, outcome="allowed") == 3


async def test_through_the_router(
    keys: SigningKeys, server: FakeServer, registry: CollectorRegistry
) -> None:
    metrics = PrometheusMetrics(registry)
    pipeline = metrics.instrument(CalloutPipeline(keys, Lookup(), Permissions()))
    broker = NatsBroker(logger=None)
    broker.include_router(callout_router(pipeline))
    async with TestNatsBroker(broker) as test_broker:
        assert (await server.login(test_broker, user="alice", password="alice-pw")).allowed
        assert not (await server.login(test_broker, user="alice", password="no")).allowed
    assert value(registry, DECISIONS, outcome="allowed") == 1
    assert value(registry, DECISIONS, outcome="denied") == 1


async def test_enabled_with_dishka(
    keys: SigningKeys, server: FakeServer, registry: CollectorRegistry
) -> None:
    metrics = PrometheusMetrics(registry)
    seen: list[Decision] = []
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keys, lookup=Lookup(), permissions=Permissions()),
        ObserverProvider(metrics, seen.append),
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        assert metrics in pipeline.observers
        assert seen.append in pipeline.observers
        assert (await decide(pipeline, server, user="alice", password="alice-pw")).allowed
        assert value(registry, DECISIONS, outcome="allowed") == 1
        assert [d.outcome.value for d in seen] == ["allowed"]
        # Attaching twice changes nothing.
        observe(pipeline, metrics, seen.append)
        assert pipeline.observers == [log_decision, metrics, seen.append]
    finally:
        await container.close()


async def test_off_by_default(keys: SigningKeys, server: FakeServer) -> None:
    # Only the decision log observes a pipeline unless told otherwise.
    pipeline = CalloutPipeline(keys, Lookup(), Permissions())
    assert pipeline.observers == [log_decision]
    assert CalloutPipeline(keys, Lookup(), Permissions(), decision_log=None).observers == []
    container = make_async_container(
        CalloutProvider(), PolicyProvider(keys=keys, lookup=Lookup(), permissions=Permissions())
    )
    try:
        assert (await container.get(CalloutPipeline)).observers == [log_decision]
    finally:
        await container.close()


def test_importing_the_library_imports_no_extra() -> None:
    # Importing the library (metrics and tracing modules included) imports no extra:
    # no prometheus_client, and no more of opentelemetry than faststream.nats itself.
    code = (
        "import sys\n"
        "def otel(): return sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "import faststream.nats\n"
        "before = otel()\n"
        "import faststream_callout, faststream_callout.integration.metrics\n"
        "import faststream_callout.integration.tracing\n"
        "import faststream_callout.integration.observers, faststream_callout.tools.cli\n"
        "print('prometheus_client' in sys.modules, otel() == before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.split() == ["False", "True"]


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"faststream-callout\[prometheus\]"):
        PrometheusMetrics(CollectorRegistry())


def test_one_instance_per_registry(registry: CollectorRegistry) -> None:
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(registry)
    other = PrometheusMetrics(registry, namespace="auth")
    other(Decision(Outcome.ALLOWED, b""))
    assert value(registry, "auth_decisions_total", outcome="allowed") == 1


async def test_decision_cache_stats_are_exported_at_scrape_time(
    keys: SigningKeys, server: FakeServer, registry: CollectorRegistry
) -> None:
    metrics = PrometheusMetrics(registry)
    cache = DecisionCache(Lookup(), Permissions())
    assert metrics.track_cache(cache, "users") is cache
    pipeline = metrics.instrument(CalloutPipeline(keys, cache, cache))
    for _ in range(3):
        assert (await decide(pipeline, server, user="alice", password="alice-pw")).allowed
    assert not (await decide(pipeline, server, user="alice", password="nope")).allowed
    stats = cache.stats
    assert (stats.hits, stats.misses) == (2, 2)  # the wrong password is a miss, not cached
    assert value(registry, "faststream_callout_cache_hits_total", cache="users") == 2
    assert value(registry, "faststream_callout_cache_misses_total", cache="users") == 2
    assert value(registry, "faststream_callout_cache_entries", cache="users") == 1
    assert value(registry, "faststream_callout_cache_in_flight", cache="users") == 0
    exposition = generate_latest(registry).decode()
    assert "alice" not in exposition  # counts only: no user, no credential
    metrics.track_cache(cache, "users")  # the same cache again is fine
    with pytest.raises(ValueError, match="already tracked"):
        metrics.track_cache(DecisionCache(Lookup(), Permissions()), "users")
