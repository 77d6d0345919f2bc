"""Tracing through FastStream's OpenTelemetry middleware, and the AsyncAPI schema."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from dishka import make_async_container
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.specification import AsyncAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
    XKeyPair,
    callout_router,
)
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.observers import ObserverProvider
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT
from faststream_callout.integration.tracing import DecisionSpanAttributes, decision_attributes
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer

PASSWORD = "correct-horse-battery-staple"
TOKEN = "tok-0123456789-sensor"
PROCESS_SPAN = f"{AUTH_CALLOUT_SUBJECT} process"


class Lookup:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.auth_token == TOKEN:
            return Identity("sensor")
        if opts.user == "boom":
            raise RuntimeError(f"database is down ({opts.password})")
        if opts.user == "alice" and opts.password == PASSWORD:
            return Identity("alice")
        raise Denied("bad credentials")


class Permissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(account="APP", pub=Permission(allow=["chat.>"]), sub=Permission(deny=[">"]))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def traced_broker(pipeline: CalloutPipeline, provider: TracerProvider) -> NatsBroker:
    broker = NatsBroker(
        logger=None, middlewares=[NatsTelemetryMiddleware(tracer_provider=provider)]
    )
    broker.include_router(callout_router(pipeline))
    return broker


def process_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The auth subscriber's consume spans (TestNatsBroker also "processes" each reply)."""
    return [
        span
        for span in exporter.get_finished_spans()
        if span.name == PROCESS_SPAN and "callout.outcome" in (span.attributes or {})
    ]


def everything_recorded(exporter: InMemorySpanExporter) -> str:
    """Every attribute, event and status of every span, as one text to search."""
    parts: list[str] = []
    for span in exporter.get_finished_spans():
        parts.append(span.name)
        parts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        for link in span.links:
            parts.extend(f"{k}={v}" for k, v in (link.attributes or {}).items())
    return "\n".join(parts)


@pytest.mark.parametrize("with_xkey", [False, True])
async def test_process_span_carries_the_decision_and_no_secret(
    exporter: InMemorySpanExporter, provider: TracerProvider, with_xkey: bool
) -> None:
    issuer = KeyPair.create_account()
    xkey = XKeyPair.generate() if with_xkey else None
    keys = SigningKeys(issuer, xkey=xkey)
    server = FakeServer.for_keys(keys)
    pipeline = CalloutPipeline(keys, Lookup(), Permissions(), observers=[DecisionSpanAttributes()])
    async with TestNatsBroker(traced_broker(pipeline, provider)) as broker:
        assert (await server.login(broker, user="alice", password=PASSWORD)).allowed
        assert not (await server.login(broker, user="alice", password=PASSWORD + "x")).allowed
        assert (await server.login(broker, token=TOKEN)).allowed
        assert not (await server.login(broker, user="boom", password=PASSWORD)).allowed

    spans = process_spans(exporter)
    assert len(spans) == 4  # one per request: the auth subscriber's consume span
    assert all(span.kind is trace.SpanKind.CONSUMER for span in spans)
    allowed, denied, token, failed = (dict(s.attributes or {}) for s in spans)
    assert allowed["messaging.system"] == "nats"
    assert allowed["callout.outcome"] == "allowed"
    assert allowed["callout.user"] == "alice"
    assert allowed["callout.account"] == "APP"
    assert allowed["callout.server"] == server.key.public_key
    assert allowed["callout.client.host"] == "127.0.0.1"
    assert allowed["callout.client.type"] == "nats"
    assert allowed["callout.latency_ms"] >= 0
    assert "callout.reason" not in allowed
    assert denied["callout.outcome"] == "denied"
    assert denied["callout.reason"] == "bad credentials"
    assert denied["callout.user"] == "alice"
    assert "callout.account" not in denied
    assert token["callout.user"] == "sensor"  # the identity, never the token
    assert failed["callout.outcome"] == "error"
    assert failed["callout.reason"] == "authorization service error"
    assert spans[3].status.status_code is trace.StatusCode.ERROR
    assert spans[1].status.status_code is trace.StatusCode.UNSET  # a denial is an answer

    recorded = everything_recorded(exporter)
    for secret in (PASSWORD, TOKEN, issuer.seed, "eyJ"):  # no password, token, seed or JWT
        assert secret not in recorded
    if xkey is not None:
        assert xkey.seed not in recorded


async def test_token_reported_as_user_is_not_recorded() -> None:
    # nats-server before 2.10.28/2.11.2 put the token into client_info.user.
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    minted = server.request(token=TOKEN)
    request = minted.claims.nats
    request = msgspec.structs.replace(
        request, client_info=msgspec.structs.replace(request.client_info, user=TOKEN)
    )
    attributes = decision_attributes(Decision(Outcome.DENIED, b"", "unknown token", request))
    assert TOKEN not in repr(attributes)
    assert "callout.user" not in attributes


async def test_enabled_with_dishka(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keys, lookup=Lookup(), permissions=Permissions()),
        ObserverProvider(DecisionSpanAttributes()),
    )
    broker = NatsBroker(
        logger=None, middlewares=[NatsTelemetryMiddleware(tracer_provider=provider)]
    )
    broker.include_router(callout_router(container))
    try:
        async with TestNatsBroker(broker) as test_broker:
            assert (await server.login(test_broker, user="alice", password=PASSWORD)).allowed
    finally:
        await container.close()
    (span,) = process_spans(exporter)
    assert (span.attributes or {})["callout.outcome"] == "allowed"


def test_no_recording_span_is_a_no_op() -> None:
    observe = DecisionSpanAttributes()
    assert not trace.get_current_span().is_recording()
    observe(Decision(Outcome.ALLOWED, b"", account="APP"))  # nothing to do, no error


def test_missing_opentelemetry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match="opentelemetry"):
        DecisionSpanAttributes()


# -- AsyncAPI ------------------------------------------------------------------------------


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_asyncapi_shows_the_auth_subscriber() -> None:
    keys = SigningKeys(KeyPair.create_account())
    broker = NatsBroker()
    broker.include_router(callout_router(CalloutPipeline(keys, Lookup(), Permissions())))
    schema = AsyncAPI(broker).to_specification().to_jsonable()

    channel = schema["channels"]["auth-callout"]
    assert channel["address"] == AUTH_CALLOUT_SUBJECT
    assert "authorization requests" in channel["description"]
    assert channel["bindings"]["nats"]["queue"] == "faststream-callout"
    assert schema["operations"]["auth-callout"]["action"] == "receive"

    (message,) = channel["messages"].values()
    message = resolve(schema, message)
    payload = resolve(schema, message["payload"])
    # The wire payload is a JWT string, not the decoded wrapper's body/headers fields.
    assert payload["type"] == "string"
    assert "properties" not in payload
    assert "authorization request" in payload["description"].lower()
    assert "Nats-Server-Xkey" in payload["description"]
