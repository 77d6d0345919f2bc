"""callout_router through FastStream's TestNatsBroker, judged by FakeServer."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from dishka import AsyncContainer, Provider, Scope, make_async_container, provide
from faststream import FastStream
from faststream.nats import NatsBroker, NatsRouter, TestNatsBroker
from faststream.nats.subscriber.usecases import CoreSubscriber
from faststream.specification import AsyncAPI

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    Denied,
    Grant,
    Identity,
    IdentityLookup,
    KeyPair,
    Permission,
    PermissionBuilder,
    PolicyProvider,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer, MintedRequest, Verdict

TIMEOUT = 2.0
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


# -- policies ------------------------------------------------------------------


class PasswordLookup:
    """alice/bob by password; 'boom' fails unexpectedly; anyone else is denied."""

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "boom":
            raise RuntimeError("database is down")
        if opts.password and PASSWORDS.get(opts.user) == opts.password:
            return Identity(opts.user)
        raise Denied("bad credentials")


class SlowLookup:
    """Users u<N> with password p<N>; sleeps like a database call; tracks concurrency."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        opts = request.connect_opts
        if opts.user.startswith("u") and opts.password == "p" + opts.user[1:]:
            return Identity(opts.user)
        raise Denied("bad credentials")


class ChatPermissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(
            account="APP",
            pub=Permission(allow=[f"chat.{identity.name}.>"]),
            sub=Permission(allow=["chat.>", "_INBOX.>"]),
        )


class RecordingPipeline(CalloutPipeline):
    """Records exactly what the router hands to the pipeline."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[bytes, str | None]] = []

    async def __call__(self, body: bytes, server_xkey: str | None = None) -> bytes:
        self.calls.append((body, server_xkey))
        return await super().__call__(body, server_xkey)


class Policy(Provider):
    scope = Scope.APP
    lookup = provide(PasswordLookup, provides=IdentityLookup)
    permissions = provide(ChatPermissions, provides=PermissionBuilder)


def make_container(keys: SigningKeys) -> AsyncContainer:
    return make_async_container(CalloutProvider(), Policy(), PolicyProvider(keys=keys))


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
    return CalloutPipeline(signing_keys, PasswordLookup(), ChatPermissions())


# -- allowed and denied logins -----------------------------------------------------


async def test_container_router_allows_good_password(signing_keys, issuer, server):
    container = make_container(signing_keys)
    broker = NatsBroker()
    broker.include_router(callout_router(container))
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


async def test_bare_pipeline_router_allows_and_denies(bare_pipeline, server):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline))
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
        callout_router(CalloutPipeline(SigningKeys(issuer), PasswordLookup(), ChatPermissions()))
    )
    second.include_router(
        callout_router(
            CalloutPipeline(SigningKeys(other_issuer), PasswordLookup(), ChatPermissions())
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

    container = make_async_container(CalloutProvider(), Policy(), CountingKeys())
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
async def test_decoder_passes_exact_body_bytes(signing_keys, body):
    pipeline = RecordingPipeline(signing_keys, PasswordLookup(), ChatPermissions())
    broker = NatsBroker()
    broker.include_router(callout_router(pipeline))
    async with TestNatsBroker(broker) as test_broker:
        reply = await test_broker.request(body, AUTH_CALLOUT_SUBJECT, timeout=TIMEOUT)
    assert pipeline.calls == [(body, None)]
    assert type(pipeline.calls[0][0]) is bytes
    assert reply.body == b""  # garbage is rejected with an empty body


async def test_decoder_passes_minted_request_and_xkey_header(issuer):
    keys = SigningKeys(issuer, xkey=XKeyPair.generate())
    pipeline = RecordingPipeline(keys, PasswordLookup(), ChatPermissions())
    server = FakeServer.for_keys(keys)
    broker = NatsBroker()
    broker.include_router(callout_router(pipeline))
    async with TestNatsBroker(broker) as test_broker:
        minted, _, verdict = await send(test_broker, server, user="alice", password="alice-pw")
    assert minted.server_xkey == server.xkey.public_key
    assert pipeline.calls == [(minted.body, minted.server_xkey)]
    assert verdict.allowed, verdict.reason


# -- xkey: encrypted requests and sealed replies -----------------------------------------------


async def test_encrypted_login_is_sealed_both_ways(issuer):
    keys = SigningKeys(issuer, xkey=XKeyPair.generate())
    server = FakeServer.for_keys(keys)
    broker = NatsBroker()
    broker.include_router(
        callout_router(CalloutPipeline(keys, PasswordLookup(), ChatPermissions()))
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


async def test_pipeline_resolution_failure_denies_with_empty_body_and_logs(server, caplog):
    broken = BrokenKeys()
    container = make_async_container(CalloutProvider(), Policy(), broken)  # the graph is valid
    broker = NatsBroker()
    broker.include_router(callout_router(container))
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


async def test_failing_lookup_gives_signed_generic_denial(bare_pipeline, issuer, server, caplog):
    broker = NatsBroker()
    broker.include_router(callout_router(bare_pipeline))
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


async def test_fifty_concurrent_logins_get_their_own_verdicts(signing_keys, server):
    delay = 0.05
    lookup = SlowLookup(delay)
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, lookup=lookup, permissions=ChatPermissions()),
    )
    broker = NatsBroker()
    broker.include_router(callout_router(container))

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

    container = make_async_container(CalloutProvider(), Policy(), SlowKeys())
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
    pipeline = CalloutPipeline(SigningKeys(KeyPair.create_account()), _NeverLookup(), _NeverBuild())
    with pytest.raises(ValueError, match="max_workers"):
        callout_router(pipeline, max_workers=workers)


class _NeverLookup:
    def lookup(self, request):
        raise AssertionError


class _NeverBuild:
    def build(self, identity, request):
        raise AssertionError
