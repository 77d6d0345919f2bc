"""callout_router through FastStream's TestNatsBroker, judged by FakeServer.

TestNatsBroker takes the dispatch production takes: ``direct`` by default, ``framework``
when the broker has middlewares. Tests without a ``dispatch`` parameter cover the
default (direct); those parametrized over ``dispatch`` cover both paths.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from dishka import AsyncContainer, Provider, Scope, make_async_container, provide
from faststream import BaseMiddleware, FastStream, SourceType, StreamMessage
from faststream.nats import NatsBroker, NatsRouter, TestNatsBroker
from faststream.nats.subscriber.usecases import CoreSubscriber
from faststream.specification import AsyncAPI
from policies import FixedGrant, Never, Passwords

import faststream_callout
from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    Drop,
    Identity,
    KeyPair,
    PolicyProvider,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration._faststream import DirectSubscriber
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer, MintedRequest, Verdict

TIMEOUT = 2.0
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
# Both paths a request can take; "auto" is "direct" here (no middlewares).
BOTH_PATHS = pytest.mark.parametrize("dispatch", ["direct", "framework"])


# -- policies ------------------------------------------------------------------


def password_lookup() -> Passwords:
    """alice/bob by password; 'boom' fails unexpectedly; anyone else is denied."""
    return Passwords(PASSWORDS)


def chat_permissions() -> FixedGrant:
    return FixedGrant(pub=["chat.{user}.>"], sub=["chat.>", "_INBOX.>"])


class RecordingPipeline(CalloutPipeline):
    """Records exactly what the router hands to the pipeline."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[bytes, str | None]] = []

    async def __call__(self, body: bytes, server_xkey: str | None = None) -> bytes:
        self.calls.append((body, server_xkey))
        return await super().__call__(body, server_xkey)


def policy() -> PolicyProvider:
    return PolicyProvider(lookup=password_lookup(), permissions=chat_permissions())


def make_container(keys: SigningKeys) -> AsyncContainer:
    return make_async_container(CalloutProvider(), policy(), PolicyProvider(keys=keys))


def only_subscriber(router: NatsRouter):
    subscribers = router.subscribers
    assert len(subscribers) == 1
    return subscribers[0]


async def send(
    test_broker: NatsBroker, server: FakeServer, subject: str = AUTH_CALLOUT_SUBJECT, **connect: str
) -> tuple[MintedRequest, bytes, Verdict]:
    minted = server.request(**connect)
    reply = await test_broker.request(
        minted.body, subject, headers=dict(minted.headers), timeout=TIMEOUT
    )
    return minted, reply.body, server.check(minted, reply.body)


@pytest.fixture
def server(issuer: KeyPair) -> FakeServer:
    return FakeServer.config_mode(issuer.public_key, accounts=["APP"])


@pytest.fixture
def bare_pipeline(signing_keys: SigningKeys) -> CalloutPipeline:
    return CalloutPipeline(signing_keys, password_lookup(), chat_permissions())


# -- allowed and denied logins -----------------------------------------------------


@BOTH_PATHS
async def test_container_router_allows_good_password(signing_keys, issuer, server, dispatch):
    container = make_container(signing_keys)
    broker = NatsBroker()
    broker.include_router(callout_router(container, dispatch=dispatch))
    try:
        async with TestNatsBroker(broker) as test_broker:
            minted, _, verdict = await send(test_broker, server, user="alice", password="alice-pw")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason
    assert not verdict.invalid
    assert verdict.account == "APP"
    assert verdict.user is not None
    assert verdict.user.sub == minted.user_nkey
    assert verdict.user.iss == issuer.public_key
    assert verdict.user.name == "alice"
    assert verdict.user.nats.pub.allow == ["chat.alice.>"]


async def test_container_router_denies_bad_password(signing_keys, issuer, server):
    container = make_container(signing_keys)
    broker = NatsBroker()
    broker.include_router(callout_router(container))
    try:
        async with TestNatsBroker(broker) as test_broker:
            verdict = await server.login(
                test_broker, user="alice", password="wrong", timeout=TIMEOUT
            )
    finally:
        await container.close()
    assert not verdict.allowed
    assert not verdict.invalid, verdict.reason  # a deliberate, well-formed denial
    assert verdict.error == "bad credentials"
    assert verdict.response is not None
    assert verdict.response.iss == issuer.public_key  # signed, not an empty reply
    assert verdict.user is None


@BOTH_PATHS
async def test_bare_pipeline_router_allows_and_denies(bare_pipeline, server, dispatch):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline, dispatch=dispatch))
    async with TestNatsBroker(broker) as test_broker:
        allowed = await server.login(test_broker, user="bob", password="bob-pw", timeout=TIMEOUT)
        denied = await server.login(test_broker, user="mallory", password="x", timeout=TIMEOUT)
    assert allowed.allowed, allowed.reason
    assert allowed.account == "APP"
    assert allowed.user is not None
    assert allowed.user.nats.pub.allow == ["chat.bob.>"]
    assert not denied.allowed
    assert not denied.invalid
    assert denied.error == "bad credentials"


# -- which path TestNatsBroker takes ---------------------------------------------------


class Dropping:
    """Drops every request (a test policy of this file: tests/policies.py has none)."""

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        raise Drop("maintenance")


class CountingMiddleware(BaseMiddleware):
    """Counts the requests subscribers consumed (not the replies requesters read)."""

    seen = 0

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        if msg.source_type is SourceType.CONSUME:
            CountingMiddleware.seen += 1
        return await super().consume_scope(call_next, msg)


async def test_test_broker_takes_the_direct_path_like_production(bare_pipeline, server):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline))
    (subscriber,) = broker.subscribers
    assert isinstance(subscriber, DirectSubscriber)
    async with TestNatsBroker(broker) as test_broker:
        handler = subscriber.calls[0].handler
        verdict = await server.login(
            test_broker, user="alice", password="alice-pw", timeout=TIMEOUT
        )
        assert subscriber.direct
        handler.mock.assert_not_called()  # FastStream's handler is the framework path
    assert verdict.allowed, verdict.reason


async def test_test_broker_takes_the_framework_path_with_middlewares(bare_pipeline, server):
    before = CountingMiddleware.seen
    broker = NatsBroker(middlewares=(CountingMiddleware,))
    broker.include_router(callout_router(bare_pipeline))
    (subscriber,) = broker.subscribers
    async with TestNatsBroker(broker) as test_broker:
        handler = subscriber.calls[0].handler
        verdict = await server.login(
            test_broker, user="alice", password="alice-pw", timeout=TIMEOUT
        )
        assert not subscriber.direct
        handler.mock.assert_called_once()
    assert verdict.allowed, verdict.reason
    assert CountingMiddleware.seen == before + 1


@BOTH_PATHS
async def test_a_dropped_request_gets_an_empty_body_under_test_broker(
    signing_keys, server, dispatch
):
    # A real server gets no reply at all (tests/test_real_server_signer.py);
    # TestNatsBroker always returns something: the empty body, on both paths.
    decisions: list[Decision] = []
    pipeline = CalloutPipeline(
        signing_keys, Dropping(), chat_permissions(), observers=[decisions.append]
    )
    broker = NatsBroker()
    broker.include_router(callout_router(pipeline, dispatch=dispatch))
    async with TestNatsBroker(broker) as test_broker:
        _, reply, verdict = await send(test_broker, server, user="alice", password="alice-pw")
    assert reply == b""
    assert not verdict.allowed
    assert [d.outcome for d in decisions] == [Outcome.DROPPED]


# FastStream modules the package may import anywhere (documented, public API).
PUBLIC_FASTSTREAM = {
    "faststream",
    "faststream.asgi",
    "faststream.exceptions",
    "faststream.message",
    "faststream.security",
    "faststream.nats",
    "faststream.nats.security",
    "faststream.nats.opentelemetry",
    "faststream.nats.prometheus",
}


def test_only_one_module_imports_faststream_internals():
    package = Path(faststream_callout.__file__).parent
    internal: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "faststream" and name not in PUBLIC_FASTSTREAM:
                    internal.setdefault(path.relative_to(package).as_posix(), set()).add(name)
    assert internal == {
        "integration/_faststream.py": {"faststream.nats.subscriber.usecases.core_subscriber"}
    }


# -- the subscriber -------------------------------------------------------------------


def test_default_subscriber_subject_queue_and_workers(bare_pipeline):
    router = callout_router(bare_pipeline)
    assert isinstance(router, NatsRouter)
    sub = only_subscriber(router)
    assert isinstance(sub, CoreSubscriber)  # core NATS, not JetStream
    assert sub.subject.template == AUTH_CALLOUT_SUBJECT == "$SYS.REQ.USER.AUTH"
    assert sub.subject.broker_address == "$SYS.REQ.USER.AUTH"  # no wildcard, no prefix
    assert sub.queue == "faststream-callout"
    assert sub.max_workers == 32


def test_subscriber_address_unchanged_after_include(bare_pipeline):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline))
    (sub,) = broker.subscribers
    assert sub.subject.broker_address == AUTH_CALLOUT_SUBJECT
    assert sub.queue == "faststream-callout"


def test_custom_subject_queue_and_workers(bare_pipeline):
    sub = only_subscriber(
        callout_router(bare_pipeline, subject="test.auth.callout", queue="auth-q", max_workers=5)
    )
    assert sub.subject.broker_address == "test.auth.callout"
    assert sub.queue == "auth-q"
    assert sub.max_workers == 5


def test_single_worker_is_still_a_core_subscriber(bare_pipeline):
    sub = only_subscriber(callout_router(bare_pipeline, max_workers=1))
    assert isinstance(sub, CoreSubscriber)
    assert sub.max_workers == 1
    assert sub.queue == "faststream-callout"


async def test_custom_subject_serves_logins(bare_pipeline, server):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline, subject="test.auth.callout"))
    async with TestNatsBroker(broker) as test_broker:
        verdict = await server.login(
            test_broker,
            subject="test.auth.callout",
            user="alice",
            password="alice-pw",
            timeout=TIMEOUT,
        )
    assert verdict.allowed, verdict.reason


@pytest.mark.parametrize("include", [True, False])
def test_include_in_schema(bare_pipeline, include):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline, include_in_schema=include))
    channels = AsyncAPI(broker).to_specification().to_jsonable().get("channels", {})
    assert bool(channels) is include


# -- fresh routers, several brokers, other subscribers ---------------------------------------


def test_each_call_returns_a_fresh_router(bare_pipeline):
    first = callout_router(bare_pipeline)
    second = callout_router(bare_pipeline)
    assert first is not second
    assert only_subscriber(first) is not only_subscriber(second)
    broker = NatsBroker()
    broker.include_router(first)
    assert first.parent is broker
    assert callout_router(bare_pipeline).parent is None


async def test_two_routers_in_two_brokers(issuer, server):
    other_issuer = KeyPair.create_account()
    other_server = FakeServer.config_mode(other_issuer.public_key, accounts=["APP"])
    first = NatsBroker()
    second = NatsBroker()
    first.include_router(
        callout_router(CalloutPipeline(SigningKeys(issuer), password_lookup(), chat_permissions()))
    )
    second.include_router(
        callout_router(
            CalloutPipeline(SigningKeys(other_issuer), password_lookup(), chat_permissions())
        )
    )
    assert len(first.subscribers) == 1
    assert len(second.subscribers) == 1
    async with TestNatsBroker(first) as test_first, TestNatsBroker(second) as test_second:
        one = await server.login(test_first, user="alice", password="alice-pw", timeout=TIMEOUT)
        two = await other_server.login(
            test_second, user="alice", password="alice-pw", timeout=TIMEOUT
        )
    assert one.allowed, one.reason
    assert two.allowed, two.reason
    assert one.user is not None
    assert two.user is not None
    assert one.user.iss == issuer.public_key
    assert two.user.iss == other_issuer.public_key


async def test_two_routers_share_the_containers_pipeline(issuer, server):
    builds = 0

    class CountingKeys(Provider):
        scope = Scope.APP

        @provide
        def keys(self) -> SigningKeys:
            nonlocal builds
            builds += 1
            return SigningKeys(issuer)

    container = make_async_container(CalloutProvider(), policy(), CountingKeys())
    first = NatsBroker()
    second = NatsBroker()
    first.include_router(callout_router(container))
    second.include_router(callout_router(container))
    try:
        async with TestNatsBroker(first) as test_first, TestNatsBroker(second) as test_second:
            for test_broker in (test_first, test_second, test_first):
                verdict = await server.login(
                    test_broker, user="bob", password="bob-pw", timeout=TIMEOUT
                )
                assert verdict.allowed, verdict.reason
    finally:
        await container.close()
    assert builds == 1


async def test_other_subscribers_are_undisturbed(bare_pipeline, server):
    broker = NatsBroker()
    orders: list[object] = []

    @broker.subscriber("orders.created")
    async def on_order(body: dict) -> None:
        orders.append(body)

    @broker.subscriber("echo")
    async def echo(body: str) -> str:
        return body.upper()

    other = NatsRouter(prefix="inventory.")

    @other.subscriber("count")
    async def count(body: dict) -> int:
        return len(body)

    broker.include_router(other)
    broker.include_router(callout_router(bare_pipeline))
    app = FastStream(broker)
    assert len(broker.subscribers) == 4

    async with TestNatsBroker(app.broker) as test_broker:
        await test_broker.publish({"id": 7}, "orders.created")
        echoed = await test_broker.request("hi", "echo", timeout=TIMEOUT)
        counted = await test_broker.request({"a": 1, "b": 2}, "inventory.count", timeout=TIMEOUT)
        verdict = await server.login(
            test_broker, user="alice", password="alice-pw", timeout=TIMEOUT
        )
        # json bodies are still json-decoded for the other subscribers
        on_order.mock.assert_called_once_with({"id": 7})

    assert orders == [{"id": 7}]
    assert await echoed.decode() == "HI"
    assert await counted.decode() == 2
    assert verdict.allowed, verdict.reason


# -- the decoder: exact bytes and headers ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'"x"', b'{"user": "alice"}', b"123", b"\x00\xff binary", b""],
    ids=["json-string", "json-object", "json-number", "binary", "empty"],
)
@BOTH_PATHS
async def test_decoder_passes_exact_body_bytes(signing_keys, body, dispatch):
    pipeline = RecordingPipeline(signing_keys, password_lookup(), chat_permissions())
    broker = NatsBroker()
    broker.include_router(callout_router(pipeline, dispatch=dispatch))
    async with TestNatsBroker(broker) as test_broker:
        reply = await test_broker.request(body, AUTH_CALLOUT_SUBJECT, timeout=TIMEOUT)
    assert pipeline.calls == [(body, None)]
    assert type(pipeline.calls[0][0]) is bytes
    assert reply.body == b""  # garbage is rejected with an empty body


@BOTH_PATHS
async def test_decoder_passes_minted_request_and_xkey_header(issuer, dispatch):
    keys = SigningKeys(issuer, xkey=XKeyPair.generate())
    pipeline = RecordingPipeline(keys, password_lookup(), chat_permissions())
    server = FakeServer.for_keys(keys)
    broker = NatsBroker()
    broker.include_router(callout_router(pipeline, dispatch=dispatch))
    async with TestNatsBroker(broker) as test_broker:
        minted, _, verdict = await send(test_broker, server, user="alice", password="alice-pw")
    assert minted.server_xkey == server.xkey.public_key
    assert pipeline.calls == [(minted.body, minted.server_xkey)]
    assert verdict.allowed, verdict.reason


# -- xkey: encrypted requests and sealed replies -----------------------------------------------


@BOTH_PATHS
async def test_encrypted_login_is_sealed_both_ways(issuer, dispatch):
    keys = SigningKeys(issuer, xkey=XKeyPair.generate())
    server = FakeServer.for_keys(keys)
    broker = NatsBroker()
    broker.include_router(
        callout_router(
            CalloutPipeline(keys, password_lookup(), chat_permissions()), dispatch=dispatch
        )
    )
    async with TestNatsBroker(broker) as test_broker:
        minted, reply, verdict = await send(test_broker, server, user="alice", password="alice-pw")
        _, denied_reply, denied = await send(test_broker, server, user="alice", password="nope")

    assert dict(minted.headers) == {XKEY_HEADER: server.xkey.public_key}
    assert not minted.body.startswith(b"eyJ")  # the request really is encrypted
    for sealed in (reply, denied_reply):
        assert sealed
        assert not sealed.startswith(b"eyJ")  # not a plain JWT (nats-server would accept it)
        opened = server.xkey.open(sealed, keys.xkey.public_key)
        assert opened.startswith(b"eyJ")
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted
    assert verdict.user is not None
    assert verdict.user.sub == minted.user_nkey
    assert not denied.allowed
    assert denied.encrypted
    assert not denied.invalid
    assert denied.error == "bad credentials"


async def test_encrypted_login_through_container(issuer):
    keys = SigningKeys(issuer, xkey=XKeyPair.generate())
    server = FakeServer.for_keys(keys)
    container = make_container(keys)
    broker = NatsBroker()
    broker.include_router(callout_router(container))
    try:
        async with TestNatsBroker(broker) as test_broker:
            verdict = await server.login(
                test_broker, user="bob", password="bob-pw", timeout=TIMEOUT
            )
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted


# -- failures never raise into FastStream ------------------------------------------------------


class BrokenKeys(Provider):
    scope = Scope.APP

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    @provide
    def keys(self) -> SigningKeys:
        self.attempts += 1
        raise RuntimeError("vault unreachable")


@BOTH_PATHS
async def test_pipeline_resolution_failure_denies_with_empty_body_and_logs(
    server, caplog, dispatch
):
    broken = BrokenKeys()
    container = make_async_container(CalloutProvider(), policy(), broken)  # the graph is valid
    broker = NatsBroker()
    broker.include_router(callout_router(container, dispatch=dispatch))
    caplog.set_level(logging.ERROR, logger="faststream_callout")
    try:
        async with TestNatsBroker(broker) as test_broker:
            # TestNatsBroker re-raises handler exceptions: getting replies proves none escaped
            _, first_reply, first = await send(
                test_broker, server, user="alice", password="alice-pw"
            )
            _, second_reply, second = await send(
                test_broker, server, user="alice", password="alice-pw"
            )
    finally:
        await container.close()
    assert first_reply == b""
    assert second_reply == b""
    for verdict in (first, second):
        assert not verdict.allowed
        assert not verdict.invalid
        assert verdict.reason == 'auth callout violation: "no reason supplied"'
    errors = [
        r for r in caplog.records if r.name == "faststream_callout" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 2
    assert all(r.exc_info is not None for r in errors)  # the traceback is logged
    assert "vault unreachable" in caplog.text
    assert broken.attempts == 2  # a failed resolution is retried, not cached


@BOTH_PATHS
async def test_failing_lookup_gives_signed_generic_denial(
    bare_pipeline, issuer, server, caplog, dispatch
):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline, dispatch=dispatch))
    caplog.set_level(logging.ERROR, logger="faststream_callout")
    async with TestNatsBroker(broker) as test_broker:
        # if the handler raised, TestNatsBroker would re-raise here and the test would error
        minted, reply, verdict = await send(test_broker, server, user="boom", password="x")
    assert reply.startswith(b"eyJ")
    assert not verdict.allowed
    assert not verdict.invalid, verdict.reason
    assert verdict.error == "authorization service error"
    assert verdict.response is not None
    assert verdict.response.iss == issuer.public_key
    assert verdict.response.sub == minted.user_nkey
    assert "database is down" not in reply.decode()  # the exception is logged, not sent
    assert "database is down" in caplog.text


async def test_failing_lookup_through_container(signing_keys, server):
    container = make_container(signing_keys)
    broker = NatsBroker()
    broker.include_router(callout_router(container))
    try:
        async with TestNatsBroker(broker) as test_broker:
            verdict = await server.login(test_broker, user="boom", password="x", timeout=TIMEOUT)
    finally:
        await container.close()
    assert not verdict.allowed
    assert not verdict.invalid
    assert verdict.error == "authorization service error"


# -- concurrency ----------------------------------------------------------------------------


@BOTH_PATHS
async def test_fifty_concurrent_logins_get_their_own_verdicts(signing_keys, server, dispatch):
    delay = 0.05
    lookup = Passwords({f"u{i}": f"p{i}" for i in range(50)}, delay=delay)
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, lookup=lookup, permissions=chat_permissions()),
    )
    broker = NatsBroker()
    broker.include_router(callout_router(container, dispatch=dispatch))

    async def login(i: int) -> tuple[int, MintedRequest, Verdict]:
        password = f"p{i}" if i % 3 else "wrong"
        minted, _, verdict = await send(test_broker, server, user=f"u{i}", password=password)
        return i, minted, verdict

    try:
        async with TestNatsBroker(broker) as test_broker:
            started = time.perf_counter()
            results = await asyncio.gather(*(login(i) for i in range(50)))
            elapsed = time.perf_counter() - started
    finally:
        await container.close()

    assert lookup.calls == 50
    assert lookup.peak > 1  # lookups overlapped: nothing serialises requests
    assert elapsed < 50 * delay / 2
    for i, minted, verdict in results:
        assert not verdict.invalid, (i, verdict.reason)
        assert verdict.response is not None
        assert verdict.response.sub == minted.user_nkey
        if i % 3:
            assert verdict.allowed, (i, verdict.reason)
            assert verdict.user is not None
            assert verdict.user.sub == minted.user_nkey
            assert verdict.user.name == f"u{i}"
            assert verdict.user.nats.pub.allow == [f"chat.u{i}.>"]
        else:
            assert not verdict.allowed
            assert verdict.error == "bad credentials"


async def test_concurrent_first_logins_build_the_pipeline_once(issuer, server):
    builds = 0

    class SlowKeys(Provider):
        scope = Scope.APP

        @provide
        async def keys(self) -> SigningKeys:
            nonlocal builds
            builds += 1
            await asyncio.sleep(0.02)  # e.g. fetched from a secret store
            return SigningKeys(issuer)

    container = make_async_container(CalloutProvider(), policy(), SlowKeys())
    broker = NatsBroker()
    broker.include_router(callout_router(container))
    try:
        async with TestNatsBroker(broker) as test_broker:
            verdicts = await asyncio.gather(
                *(
                    server.login(test_broker, user="alice", password="alice-pw", timeout=TIMEOUT)
                    for _ in range(20)
                )
            )
    finally:
        await container.close()
    assert all(v.allowed for v in verdicts), [v.reason for v in verdicts if not v.allowed]
    assert builds == 1


def test_router_refuses_a_source_it_cannot_use():
    from dishka import make_container

    from faststream_callout import CalloutProvider

    with pytest.raises(TypeError, match="AsyncContainer or a CalloutPipeline"):
        callout_router(make_container(CalloutProvider(), skip_validation=True))
    with pytest.raises(TypeError, match="AsyncContainer or a CalloutPipeline"):
        callout_router(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, -3])
def test_router_refuses_non_positive_max_workers(workers):
    pipeline = CalloutPipeline(SigningKeys(KeyPair.create_account()), Never(), Never())
    with pytest.raises(ValueError, match="max_workers"):
        callout_router(pipeline, max_workers=workers)
