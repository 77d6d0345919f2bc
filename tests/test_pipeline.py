"""CalloutPipeline without a broker: requests minted and replies judged by FakeServer."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from faststream_callout import (
    CalloutPipeline,
    CalloutSettings,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    ResponsePermission,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.protocol import jwt as nats_jwt
from faststream_callout.protocol.claims import AuthorizationRequest, TimeRange
from faststream_callout.testing import FakeServer, MintedRequest, Verdict

T = 1_800_000_000.25  # the clock of every pipeline and FakeServer here
NOW = int(T)
LOGGER = "faststream_callout"

PUB = Permission(allow=["chat.alice.>", "news.>"], deny=["chat.secret"])
SUB = Permission(allow=["chat.alice.>", "_INBOX.>", "jobs.> workers"], deny=["news.hidden"])


# --- policies ----------------------------------------------------------------------

LookupFn = Callable[[AuthorizationRequest], Any]
BuildFn = Callable[[Identity, AuthorizationRequest], Any]


def by_user(request: AuthorizationRequest) -> Identity:
    opts = request.connect_opts
    if opts.user == "alice" and opts.password == "alice-pw":
        return Identity("alice", groups=frozenset({"chat"}))
    raise Denied("bad credentials")


def to_app(identity: Identity, request: AuthorizationRequest) -> Grant:
    return Grant(account="APP", pub=PUB, sub=SUB)


class SyncLookup:
    def __init__(self, fn: LookupFn) -> None:
        self.fn = fn
        self.requests: list[AuthorizationRequest] = []

    def lookup(self, request: AuthorizationRequest) -> Any:
        self.requests.append(request)
        return self.fn(request)


class AsyncLookup(SyncLookup):
    async def lookup(self, request: AuthorizationRequest) -> Any:  # type: ignore[override]
        self.requests.append(request)
        return self.fn(request)


class SyncBuilder:
    def __init__(self, fn: BuildFn) -> None:
        self.fn = fn

    def build(self, identity: Identity, request: AuthorizationRequest) -> Any:
        return self.fn(identity, request)


class AsyncBuilder(SyncBuilder):
    async def build(self, identity: Identity, request: AuthorizationRequest) -> Any:  # type: ignore[override]
        return self.fn(identity, request)


def make_pipeline(
    keys: SigningKeys,
    lookup: LookupFn = by_user,
    build: BuildFn = to_app,
    *,
    asynchronous: bool = False,
    settings: CalloutSettings | None = None,
    clock: Callable[[], float] = lambda: T,
) -> CalloutPipeline:
    lookup_port = (AsyncLookup if asynchronous else SyncLookup)(lookup)
    build_port = (AsyncBuilder if asynchronous else SyncBuilder)(build)
    return CalloutPipeline(keys, lookup_port, build_port, settings, clock=clock)


def grant(**fields: Any) -> BuildFn:
    # Without pub, sub or resp the grant says so: the account defaults are meant.
    defaults = not {"pub", "sub", "resp"} & fields.keys()
    return lambda identity, request: Grant(
        **{"account": "APP", "account_defaults": defaults, **fields}
    )


async def login(
    pipeline: CalloutPipeline, server: FakeServer, **connect: Any
) -> tuple[MintedRequest, Decision, Verdict]:
    connect.setdefault("user", "alice")
    connect.setdefault("password", "alice-pw")
    minted = server.request(now=T, **connect)
    decision = await pipeline.decide(minted.body, minted.server_xkey)
    return minted, decision, server.check(minted, decision.reply, now=T)


def reply_text(reply: bytes) -> str:
    """The decoded header and payload of a plaintext reply (and its user JWT), for searching."""
    token = reply.decode()
    parts = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")[:2]]
    payload = json.loads(parts[1])
    inner = payload["nats"].get("jwt", "")
    if inner:
        segment = inner.split(".")[1]
        parts.append(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return "\n".join(part.decode() for part in parts)


def payload_json(token: bytes) -> dict[str, Any]:
    segment = token.split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))


def assert_no_grant(decision: Decision, verdict: Verdict) -> None:
    assert not decision.allowed
    assert not verdict.allowed
    assert verdict.user is None
    if decision.reply:
        assert verdict.response is not None
        assert verdict.response.nats.jwt == ""
        assert verdict.error


@pytest.fixture
def keys(issuer: KeyPair) -> SigningKeys:
    return SigningKeys(issuer)


@pytest.fixture
def server(keys: SigningKeys) -> FakeServer:
    return FakeServer.for_keys(keys)


# --- allowed -----------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_allowed_login(
    issuer: KeyPair, keys: SigningKeys, server: FakeServer, asynchronous: bool
) -> None:
    pipeline = make_pipeline(keys, asynchronous=asynchronous)
    minted, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ALLOWED
    assert decision.allowed
    assert decision.account == "APP"
    assert decision.identity == Identity("alice", groups=frozenset({"chat"}))
    assert decision.request is not None
    assert decision.request.user_nkey == minted.user_nkey
    assert verdict.allowed, verdict.reason
    assert verdict.reason == ""
    assert verdict.account == "APP"
    assert not verdict.encrypted
    assert decision.reply.startswith(b"eyJ")

    user = verdict.user
    assert user is not None
    assert user.sub == minted.user_nkey
    assert user.aud == "APP"
    assert user.iss == issuer.public_key
    assert user.name == "alice"
    assert user.iat == NOW
    assert user.exp == 0
    assert user.nats.pub == PUB
    assert user.nats.sub == SUB
    assert user.nats.issuer_account == ""  # config mode never sets it
    assert user.nats.type == "user"
    assert user.nats.version == 2

    response = verdict.response
    assert response is not None
    assert response.sub == minted.user_nkey
    assert response.aud == server.key.public_key
    assert response.iss == issuer.public_key
    assert response.nats.error == ""
    assert response.nats.issuer_account == ""


async def test_call_returns_the_reply(keys: SigningKeys, server: FakeServer) -> None:
    pipeline = make_pipeline(keys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    verdict = server.check(minted, await pipeline(minted.body), now=T)
    assert verdict.allowed, verdict.reason


async def test_lookup_sees_the_decoded_request(keys: SigningKeys, server: FakeServer) -> None:
    pipeline = make_pipeline(keys)
    minted, _, _ = await login(pipeline, server, client_name="app-1", client_host="10.1.2.3")
    assert isinstance(pipeline.lookup, SyncLookup)
    (request,) = pipeline.lookup.requests
    assert request.user_nkey == minted.user_nkey
    assert request.connect_opts.user == "alice"
    assert request.connect_opts.password == "alice-pw"
    assert request.connect_opts.name == "app-1"
    assert request.client_info.host == "10.1.2.3"
    assert request.server_id.id == server.key.public_key


async def test_grants_are_bound_to_each_request(keys: SigningKeys, server: FakeServer) -> None:
    pipeline = make_pipeline(keys)
    first, decision, _ = await login(pipeline, server)
    second = server.request(user="alice", password="alice-pw", now=T)
    assert first.user_nkey != second.user_nkey
    replayed = server.check(second, decision.reply, now=T)
    assert not replayed.allowed


async def test_full_grant_is_carried_into_the_user_jwt(
    keys: SigningKeys, server: FakeServer
) -> None:
    full = Grant(
        account="OTHER",
        pub=PUB,
        sub=SUB,
        resp=ResponsePermission(max=2, ttl=5_000_000_000),
        name="Alice A.",
        src=("10.0.0.0/8",),
        times=(TimeRange(start="08:00:00", end="18:00:00"),),
        times_location="Europe/Berlin",
        allowed_connection_types=("standard", "WEBSOCKET"),
        subs=10,
        data=2048,
        payload=512,
        tags=("team-a",),
        not_before=NOW - 10,
    )
    pipeline = make_pipeline(keys, build=lambda identity, request: full)
    _, decision, verdict = await login(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert decision.account == verdict.account == "OTHER"
    user = verdict.user
    assert user is not None
    assert user.aud == "OTHER"
    assert user.name == "Alice A."
    assert user.nbf == NOW - 10
    nats = user.nats
    assert nats.resp == ResponsePermission(max=2, ttl=5_000_000_000)
    assert nats.src == ["10.0.0.0/8"]
    assert nats.times == [TimeRange(start="08:00:00", end="18:00:00")]
    assert nats.times_location == "Europe/Berlin"
    assert nats.allowed_connection_types == ["STANDARD", "WEBSOCKET"]
    assert (nats.subs, nats.data, nats.payload) == (10, 2048, 512)
    assert nats.tags == ["team-a"]


@pytest.mark.parametrize(("name", "expected"), [("display", "display"), ("", "")])
async def test_grant_name_overrides_identity_name(
    keys: SigningKeys, server: FakeServer, name: str, expected: str
) -> None:
    pipeline = make_pipeline(keys, build=grant(name=name))
    _, _, verdict = await login(pipeline, server)
    assert verdict.user is not None
    assert verdict.user.name == expected


# --- expiry ------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1, 2.5, 0.001, 59.999, 3600])
async def test_exp_from_ttl(keys: SigningKeys, server: FakeServer, ttl: float) -> None:
    pipeline = make_pipeline(keys, build=grant(ttl=ttl))
    _, _, verdict = await login(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.iat == NOW
    assert verdict.user.exp == math.ceil(T + ttl)  # at least ttl seconds: rounded up
    assert isinstance(verdict.user.exp, int)


@pytest.mark.parametrize("offset", [0.8, 1, 100.9, 86_400.5])
async def test_exp_from_expires_at_rounds_down(
    keys: SigningKeys, server: FakeServer, offset: float
) -> None:
    expires_at = T + offset
    pipeline = make_pipeline(keys, build=grant(expires_at=expires_at))
    _, _, verdict = await login(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.exp == math.floor(expires_at)
    assert verdict.user.exp <= expires_at


@pytest.mark.parametrize(
    ("ttl", "offset"), [(10, 100.5), (100, 10.5), (10, 9.9), (5.5, 5.5), (1, 600)]
)
async def test_earliest_expiry_wins(
    keys: SigningKeys, server: FakeServer, ttl: float, offset: float
) -> None:
    expires_at = T + offset
    pipeline = make_pipeline(keys, build=grant(ttl=ttl, expires_at=expires_at))
    _, _, verdict = await login(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.exp == min(math.ceil(T + ttl), math.floor(expires_at))


@pytest.mark.parametrize("offset", [-3600, -1, -0.1, 0])
async def test_expires_at_in_the_past_is_denied(
    keys: SigningKeys, server: FakeServer, offset: float
) -> None:
    pipeline = make_pipeline(keys, build=grant(expires_at=T + offset, ttl=60))
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.DENIED
    assert_no_grant(decision, verdict)
    assert not verdict.invalid


@pytest.mark.parametrize("ttl", [0, -1, -0.5])
async def test_non_positive_ttl_is_refused(
    keys: SigningKeys, server: FakeServer, ttl: float
) -> None:
    pipeline = make_pipeline(keys, build=grant(ttl=ttl))
    _, decision, verdict = await login(pipeline, server)
    assert_no_grant(decision, verdict)


# --- Denied ------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_denied_by_lookup(
    issuer: KeyPair, keys: SigningKeys, server: FakeServer, asynchronous: bool, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    pipeline = make_pipeline(keys, asynchronous=asynchronous)
    minted, decision, verdict = await login(pipeline, server, password="wrong")
    assert decision.outcome is Outcome.DENIED
    assert decision.reason == "bad credentials"
    assert_no_grant(decision, verdict)
    assert verdict.error == "bad credentials"
    assert verdict.reason == "auth callout service returned an error: bad credentials"
    assert not verdict.invalid
    assert verdict.response is not None
    assert verdict.response.iss == issuer.public_key
    assert verdict.response.sub == minted.user_nkey
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_denied_by_builder(keys: SigningKeys, server: FakeServer, asynchronous: bool) -> None:
    def refuse(identity: Identity, request: AuthorizationRequest) -> Grant:
        raise Denied(f"{identity.name} is suspended")

    pipeline = make_pipeline(keys, build=refuse, asynchronous=asynchronous)
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.DENIED
    assert decision.identity == Identity("alice", groups=frozenset({"chat"}))
    assert_no_grant(decision, verdict)
    assert verdict.error == "alice is suspended"
    assert not verdict.invalid


async def test_denied_without_reason(keys: SigningKeys, server: FakeServer) -> None:
    def refuse(request: AuthorizationRequest) -> Identity:
        raise Denied

    _, decision, verdict = await login(make_pipeline(keys, lookup=refuse), server)
    assert decision.outcome is Outcome.DENIED
    assert verdict.error == "not authorized"


# --- unexpected failures -------------------------------------------------------------

SECRET = "db-password-hunter2"


def failing(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise exc

    return fail


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("where", ["lookup", "build"])
async def test_exception_becomes_generic_denial(
    keys: SigningKeys, server: FakeServer, caplog: Any, asynchronous: bool, where: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    error = RuntimeError(f"cannot connect with {SECRET}")
    settings = CalloutSettings(error_reason="service unavailable, try later")
    pipeline = make_pipeline(
        keys,
        asynchronous=asynchronous,
        settings=settings,
        **{where: failing(error)},  # type: ignore[arg-type]
    )
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert_no_grant(decision, verdict)
    assert verdict.error == "service unavailable, try later"
    assert not verdict.invalid
    assert SECRET.encode() not in decision.reply
    assert SECRET not in reply_text(decision.reply)
    assert SECRET not in decision.reason
    records = [
        r
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.ERROR and r.exc_info is not None
    ]
    assert records, caplog.records
    assert any(r.exc_info[1] is error for r in records)  # type: ignore[index]


# Objects with every attribute of an Identity or a Grant, but of another type.
LOOKS_LIKE_IDENTITY = SimpleNamespace(name="alice", groups=frozenset(), attributes={})
LOOKS_LIKE_GRANT = SimpleNamespace(
    **{f.name: getattr(Grant(account="APP"), f.name) for f in dataclasses.fields(Grant)}
)


async def test_default_error_reason(keys: SigningKeys, server: FakeServer) -> None:
    pipeline = make_pipeline(keys, build=failing(KeyError("x")))
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert verdict.error == CalloutSettings().error_reason
    assert verdict.error


@pytest.mark.parametrize(
    "value",
    [None, "alice", {"name": "alice"}, Grant(account="APP"), LOOKS_LIKE_IDENTITY],
    ids=["none", "str", "dict", "grant", "duck"],
)
async def test_lookup_returning_non_identity(
    keys: SigningKeys, server: FakeServer, caplog: Any, value: object
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    settings = CalloutSettings(error_reason="generic")
    pipeline = make_pipeline(keys, lookup=lambda request: value, settings=settings)
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert_no_grant(decision, verdict)
    assert verdict.error == "generic"
    assert [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]


@pytest.mark.parametrize(
    "value",
    [None, "APP", {"account": "APP"}, Identity("alice"), LOOKS_LIKE_GRANT],
    ids=["none", "str", "dict", "identity", "duck"],
)
async def test_builder_returning_non_grant(
    keys: SigningKeys, server: FakeServer, value: object
) -> None:
    settings = CalloutSettings(error_reason="generic")
    pipeline = make_pipeline(keys, build=lambda identity, request: value, settings=settings)
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert_no_grant(decision, verdict)
    assert verdict.error == "generic"


async def test_failing_clock_still_answers(keys: SigningKeys, server: FakeServer) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock")

    pipeline = make_pipeline(keys, clock=broken_clock)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await pipeline.decide(minted.body)
    assert decision.outcome is Outcome.ERROR
    assert decision.reply == b""


async def test_decision_repr_hides_the_password(keys: SigningKeys, server: FakeServer) -> None:
    pipeline = make_pipeline(keys)
    minted = server.request(user="alice", password="alice-pw", token="tok-secret", now=T)
    decision = await pipeline.decide(minted.body)
    assert decision.request is not None
    assert "alice-pw" not in repr(decision)
    assert "tok-secret" not in repr(decision)


# --- invalid grants ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"pub": Permission(allow=["foo..bar"])},
        {"sub": Permission(deny=[".leading"])},
        {"pub": Permission(allow=["foo queue"])},
        {"allowed_connection_types": ("BOGUS",)},
        {"src": ("not-a-cidr",)},
        {"src": ("10.0.0.0/33",)},
        {"times": (TimeRange(start="25:00:00", end="01:00:00"),)},
        {"times": (TimeRange(start="08:00:00", end="8pm"),)},
        {"times_location": "Mars/Olympus_Mons"},
        {"account": ""},
    ],
    ids=[
        "subject",
        "deny-subject",
        "pub-queue",
        "conn-type",
        "cidr",
        "cidr-prefix",
        "time-start",
        "time-end",
        "zone",
        "empty-account",
    ],
)
async def test_invalid_grant_is_denied(
    keys: SigningKeys, server: FakeServer, fields: dict[str, Any]
) -> None:
    pipeline = make_pipeline(keys, build=grant(**fields))
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert_no_grant(decision, verdict)
    assert not verdict.invalid


async def test_strict_refuses_literal_wildcards(keys: SigningKeys, server: FakeServer) -> None:
    build = grant(pub=Permission(allow=["orders*"]), allowed_connection_types=("STANDARD", "X"))
    _, decision, verdict = await login(make_pipeline(keys, build=build), server)
    assert_no_grant(decision, verdict)
    lenient = make_pipeline(keys, build=build, settings=CalloutSettings(strict=False))
    _, decision, verdict = await login(lenient, server)
    assert decision.allowed
    assert verdict.allowed, verdict.reason


async def test_pipeline_never_reports_allowed_for_a_reply_the_server_refuses(
    keys: SigningKeys, server: FakeServer
) -> None:
    pipeline = make_pipeline(keys, build=grant(not_before=T - 5.5))
    _, decision, verdict = await login(pipeline, server)
    assert decision.allowed == verdict.allowed


# --- request verification ------------------------------------------------------------


def resign(
    server: FakeServer,
    minted: MintedRequest,
    *,
    key: KeyPair | None = None,
    nats: dict[str, Any] | None = None,
    **top: Any,
) -> bytes:
    """The minted request with some claims changed, signed again (by ``key``)."""
    claims = minted.claims
    if nats:
        claims = msgspec.structs.replace(claims, nats=msgspec.structs.replace(claims.nats, **nats))
    claims = msgspec.structs.replace(claims, **top)
    return nats_jwt.encode(claims, key or server.key, now=NOW).encode()


BAD_REQUESTS: dict[str, Callable[[FakeServer, MintedRequest], bytes]] = {
    "wrong-aud": lambda s, m: resign(s, m, aud="nats-authorization-response"),
    "no-aud": lambda s, m: resign(s, m, aud=""),
    "sub-not-our-issuer": lambda s, m: resign(s, m, sub=KeyPair.create_account().public_key),
    "missing-exp": lambda s, m: resign(s, m, exp=0),
    "bad-user-nkey": lambda s, m: resign(s, m, nats={"user_nkey": "UNOTAVALIDKEY"}),
    "account-as-user-nkey": lambda s, m: resign(
        s, m, nats={"user_nkey": KeyPair.create_account().public_key}
    ),
    "empty-user-nkey": lambda s, m: resign(s, m, nats={"user_nkey": ""}),
    "iss-not-server-id": lambda s, m: resign(s, m, key=KeyPair.create_server()),
    "signed-by-account": lambda s, m: resign(s, m, key=KeyPair.create_account()),
    "signed-by-user": lambda s, m: resign(s, m, key=KeyPair.create_user()),
    "not-yet-valid": lambda s, m: resign(s, m, nbf=NOW + 60),
    "tampered": lambda s, m: tamper(m.body),
}


def tamper(body: bytes) -> bytes:
    header, payload, signature = body.decode().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["nats"]["connect_opts"]["user"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}".encode()


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_request_gets_no_grant(keys: SigningKeys, server: FakeServer, case: str) -> None:
    pipeline = make_pipeline(keys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    body = BAD_REQUESTS[case](server, minted)
    decision = await pipeline.decide(body)
    assert decision.outcome is Outcome.REJECTED
    assert_no_grant(decision, server.check(minted, decision.reply, now=T))
    # The lookup never saw it.
    assert isinstance(pipeline.lookup, SyncLookup)
    assert pipeline.lookup.requests == []


async def test_bad_request_control(keys: SigningKeys, server: FakeServer) -> None:
    # Re-signing without changes is accepted: the changes are what is refused above.
    pipeline = make_pipeline(keys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await pipeline.decide(resign(server, minted))
    assert server.check(minted, decision.reply, now=T).allowed


@pytest.mark.parametrize("age", [3, 10, 3600])
async def test_expired_request(keys: SigningKeys, server: FakeServer, age: int) -> None:
    pipeline = make_pipeline(keys)
    minted = server.request(user="alice", password="alice-pw", now=T - age)
    assert minted.claims.exp < NOW
    decision = await pipeline.decide(minted.body)
    assert decision.outcome is Outcome.REJECTED
    assert_no_grant(decision, server.check(minted, decision.reply, now=T))


async def test_request_valid_until_its_exp(keys: SigningKeys, server: FakeServer) -> None:
    minted = server.request(user="alice", password="alice-pw", now=T)
    at_exp = make_pipeline(keys, clock=lambda: float(minted.claims.exp))
    decision = await at_exp.decide(minted.body)
    assert decision.allowed
    after = make_pipeline(keys, clock=lambda: minted.claims.exp + 1.0)
    assert not (await after.decide(minted.body)).allowed


async def test_request_for_another_issuer(keys: SigningKeys) -> None:
    other = FakeServer.config_mode(KeyPair.create_account().public_key)
    pipeline = make_pipeline(keys)
    minted = other.request(user="alice", password="alice-pw", now=T)
    decision = await pipeline.decide(minted.body)
    assert decision.outcome is Outcome.REJECTED
    assert_no_grant(decision, other.check(minted, decision.reply, now=T))


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x00\xff\xfe", b"eyJ", b"a.b.c", b"eyJ" + b"A" * 300_000, b"x" * 2_000_000],
    ids=["empty", "text", "binary", "prefix", "segments", "huge-jwtish", "huge"],
)
async def test_garbage_gets_empty_reply(keys: SigningKeys, body: bytes) -> None:
    decision = await make_pipeline(keys).decide(body)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reply == b""
    assert not decision.allowed


async def test_request_over_the_size_limit(keys: SigningKeys, server: FakeServer) -> None:
    minted = server.request(user="alice", password="alice-pw", now=T)
    small = make_pipeline(keys, settings=CalloutSettings(max_request_size=len(minted.body) - 1))
    decision = await small.decide(minted.body)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reply == b""
    exact = make_pipeline(keys, settings=CalloutSettings(max_request_size=len(minted.body)))
    assert (await exact.decide(minted.body)).allowed


# --- encryption ----------------------------------------------------------------------


@pytest.fixture
def xkeys(issuer: KeyPair) -> SigningKeys:
    return SigningKeys(issuer, xkey=XKeyPair.generate())


async def test_encrypted_request_gets_sealed_reply(xkeys: SigningKeys) -> None:
    server = FakeServer.for_keys(xkeys)
    pipeline = make_pipeline(xkeys)
    minted, decision, verdict = await login(pipeline, server)
    assert minted.server_xkey == server.xkey.public_key
    assert not minted.body.startswith(b"eyJ")
    assert decision.allowed
    assert not decision.reply.startswith(b"eyJ")
    assert decision.reply.startswith(b"xkv1")
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted
    # Independently: the server's xkey opens it, from the service's xkey.
    assert xkeys.xkey is not None
    opened = server.xkey.open(decision.reply, xkeys.xkey.public_key)
    assert opened.startswith(b"eyJ")


async def test_encrypted_denial_is_sealed(xkeys: SigningKeys) -> None:
    server = FakeServer.for_keys(xkeys)
    _, decision, verdict = await login(make_pipeline(xkeys), server, password="wrong")
    assert decision.outcome is Outcome.DENIED
    assert decision.reply.startswith(b"xkv1")
    assert verdict.encrypted
    assert verdict.error == "bad credentials"


async def test_encrypted_request_to_service_without_xkey(
    keys: SigningKeys, xkeys: SigningKeys
) -> None:
    server = FakeServer.for_keys(xkeys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await make_pipeline(keys).decide(minted.body, minted.server_xkey)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reply == b""
    assert_no_grant(decision, server.check(minted, decision.reply, now=T))


async def test_encrypted_request_without_header(xkeys: SigningKeys) -> None:
    server = FakeServer.for_keys(xkeys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await make_pipeline(xkeys).decide(minted.body, None)
    assert decision.outcome is Outcome.REJECTED
    assert_no_grant(decision, server.check(minted, decision.reply, now=T))


async def test_request_sealed_for_another_service(issuer: KeyPair, xkeys: SigningKeys) -> None:
    other = SigningKeys(issuer, xkey=XKeyPair.generate())
    server = FakeServer.for_keys(other)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await make_pipeline(xkeys).decide(minted.body, minted.server_xkey)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reply == b""


async def test_plaintext_request_to_service_with_xkey(
    keys: SigningKeys, xkeys: SigningKeys, server: FakeServer
) -> None:
    pipeline = make_pipeline(xkeys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    decision = await pipeline.decide(minted.body, None)
    assert decision.outcome is Outcome.REJECTED
    verdict = server.check(minted, decision.reply, now=T)
    assert_no_grant(decision, verdict)
    assert decision.reply.startswith(b"eyJ")  # a signed denial, in plaintext
    assert verdict.error
    assert not verdict.invalid


async def test_xkey_header_must_match_signed_server_xkey(xkeys: SigningKeys) -> None:
    server = FakeServer.for_keys(xkeys)
    minted = server.request(user="alice", password="alice-pw", now=T)
    assert xkeys.xkey is not None
    token = xkeys.xkey.open(minted.body, server.xkey.public_key)
    impostor = XKeyPair.generate()
    body = impostor.seal(token, xkeys.xkey.public_key)
    pipeline = make_pipeline(xkeys)
    decision = await pipeline.decide(body, impostor.public_key)
    assert decision.outcome is Outcome.REJECTED
    assert not decision.allowed
    assert isinstance(pipeline.lookup, SyncLookup)
    assert pipeline.lookup.requests == []
    assert not server.check(minted, decision.reply, now=T).allowed
    # Whatever the reply is, it grants nothing (opened with the key it was sealed to).
    if decision.reply:
        opened = impostor.open(decision.reply, xkeys.xkey.public_key)
        assert "jwt" not in payload_json(opened)["nats"]


# --- operator mode -------------------------------------------------------------------


class Operator:
    def __init__(self) -> None:
        self.callout = KeyPair.create_account()
        self.callout_signer = KeyPair.create_account()
        self.team = KeyPair.create_account()
        self.team_signer = KeyPair.create_account()
        self.app = KeyPair.create_account()
        self.stranger = KeyPair.create_account()


@pytest.fixture
def op() -> Operator:
    return Operator()


def operator_keys(op: Operator, **extra: Any) -> SigningKeys:
    return SigningKeys.operator(
        op.callout,
        accounts={op.team.public_key: op.team_signer, op.app.public_key: op.app},
        **extra,
    )


async def test_operator_signing_key_sets_issuer_account(op: Operator) -> None:
    keys = operator_keys(op)
    server = FakeServer.for_keys(keys)
    pipeline = make_pipeline(keys, build=grant(account=op.team.public_key, pub=PUB))
    minted, decision, verdict = await login(pipeline, server)
    assert minted.claims.sub == op.callout.public_key
    assert decision.allowed
    assert verdict.allowed, verdict.reason
    assert verdict.account == op.team.public_key
    user = verdict.user
    assert user is not None
    assert user.iss == op.team_signer.public_key
    assert user.nats.issuer_account == op.team.public_key
    assert user.sub == minted.user_nkey
    assert user.nats.pub == PUB
    response = verdict.response
    assert response is not None
    assert response.iss == op.callout.public_key
    assert response.nats.issuer_account in ("", op.callout.public_key)


async def test_operator_account_key_needs_no_issuer_account(op: Operator) -> None:
    keys = operator_keys(op)
    server = FakeServer.for_keys(keys)
    _, _, verdict = await login(make_pipeline(keys, build=grant(account=op.app.public_key)), server)
    assert verdict.allowed, verdict.reason
    assert verdict.account == op.app.public_key
    assert verdict.user is not None
    assert verdict.user.iss == op.app.public_key
    assert verdict.user.nats.issuer_account == ""


async def test_operator_user_in_the_callout_account_is_refused_when_strict(op: Operator) -> None:
    # There a client could subscribe to $SYS.REQ.USER.AUTH and read every request.
    keys = operator_keys(op)
    server = FakeServer.for_keys(keys)
    _, decision, verdict = await login(
        make_pipeline(keys, build=grant(account=op.callout.public_key)), server
    )
    assert decision.outcome is Outcome.ERROR
    assert "callout account" in decision.reason
    assert not verdict.allowed
    assert not verdict.invalid  # a signed denial, not a broken reply


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("account", ["$SYS", "SYS", "AUTH"])
async def test_grant_into_a_default_system_or_callout_account_is_refused(
    keys: SigningKeys, strict: bool, account: str
) -> None:
    # nats-server's system account, and the system and callout accounts of the
    # configurations the library writes (config, dev, the testing servers).
    server = FakeServer.config_mode(keys.callout_account, accounts=["APP", account])
    pipeline = make_pipeline(
        keys, build=grant(account=account), settings=CalloutSettings(strict=strict)
    )
    _, decision, verdict = await login(pipeline, server)
    assert decision.outcome is Outcome.ERROR
    assert decision.reason == f"grant places the client in protected account {account}"
    assert not verdict.allowed
    assert not verdict.invalid


async def test_protected_accounts_are_configurable(keys: SigningKeys) -> None:
    server = FakeServer.config_mode(keys.callout_account, accounts=["APP", "AUTH", "SYS", "$SYS"])
    settings = CalloutSettings(protected_accounts={"AUTH", "SYS"})
    for account, allowed in (("AUTH", False), ("SYS", False), ("APP", True), ("$SYS", True)):
        pipeline = make_pipeline(keys, build=grant(account=account), settings=settings)
        _, decision, verdict = await login(pipeline, server)
        assert verdict.allowed is allowed, (account, decision.reason)
        if not allowed:
            assert decision.reason == f"grant places the client in protected account {account}"


async def test_operator_user_in_the_callout_account_when_not_strict(op: Operator) -> None:
    keys = operator_keys(op)
    server = FakeServer.for_keys(keys)
    pipeline = make_pipeline(
        keys, build=grant(account=op.callout.public_key), settings=CalloutSettings(strict=False)
    )
    _, _, verdict = await login(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.account == op.callout.public_key
    assert verdict.user is not None
    assert verdict.user.iss == op.callout.public_key


async def test_operator_callout_signing_key_signs_responses(op: Operator) -> None:
    keys = SigningKeys.operator(
        op.callout.public_key,
        signing_key=op.callout_signer,
        accounts={op.team.public_key: op.team_signer},
    )
    server = FakeServer.for_keys(keys)
    _, decision, verdict = await login(
        make_pipeline(keys, build=grant(account=op.team.public_key)), server
    )
    assert decision.allowed
    assert verdict.allowed, verdict.reason
    response = verdict.response
    assert response is not None
    assert response.iss == op.callout_signer.public_key
    assert response.nats.issuer_account == op.callout.public_key
    # Denials are signed the same way, and accepted as such.
    _, decision, verdict = await login(make_pipeline(keys), server, password="wrong")
    assert decision.outcome is Outcome.DENIED
    assert verdict.error == "bad credentials"
    assert not verdict.invalid


@pytest.mark.parametrize("account", ["stranger", "APP", ""])
async def test_operator_grant_for_unknown_account_is_denied(op: Operator, account: str) -> None:
    keys = operator_keys(op)
    server = FakeServer.for_keys(keys)
    target = op.stranger.public_key if account == "stranger" else account
    _, decision, verdict = await login(make_pipeline(keys, build=grant(account=target)), server)
    assert decision.outcome is Outcome.ERROR
    assert_no_grant(decision, verdict)
    assert not verdict.invalid


async def test_operator_allowed_accounts_restrict_placement(op: Operator) -> None:
    keys = operator_keys(op, allowed_accounts=[op.app.public_key])
    server = FakeServer.for_keys(keys)
    _, decision, verdict = await login(
        make_pipeline(keys, build=grant(account=op.team.public_key)), server
    )
    assert_no_grant(decision, verdict)
    _, _, verdict = await login(make_pipeline(keys, build=grant(account=op.app.public_key)), server)
    assert verdict.allowed, verdict.reason


async def test_operator_mode_with_xkey(op: Operator) -> None:
    keys = operator_keys(op, xkey=XKeyPair.generate())
    server = FakeServer.for_keys(keys)
    _, decision, verdict = await login(
        make_pipeline(keys, build=grant(account=op.team.public_key)), server
    )
    assert decision.reply.startswith(b"xkv1")
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted
    assert verdict.account == op.team.public_key


async def test_operator_request_for_another_callout_account(op: Operator) -> None:
    keys = operator_keys(op)
    other = FakeServer.operator_mode(op.stranger.public_key, accounts={op.stranger.public_key: ()})
    minted = other.request(user="alice", password="alice-pw", now=T)
    decision = await make_pipeline(keys).decide(minted.body)
    assert decision.outcome is Outcome.REJECTED
    assert not decision.allowed
