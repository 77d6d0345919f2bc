"""DecisionCache: keyed by an HMAC of the credential, bounded by every expiry, single flight.

Unit tests call the cache as the pipeline does (``lookup`` then ``build`` in one
task), with an injectable clock; the pipeline tests run it inside the real
``CalloutPipeline`` with requests minted and replies judged by ``FakeServer``;
the last test storms a real nats-server with identical logins.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Awaitable
from typing import Any

import pytest
from callout_env import CONFIG, CalloutEnv, run_in
from nats.aio.client import Client

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    NotApplicable,
    Permission,
    SigningKeys,
)
from faststream_callout.core.pipeline import Outcome
from faststream_callout.core.policy import resolve
from faststream_callout.core.throttle import MemoryThrottle
from faststream_callout.integration.cache import (
    CREDENTIAL_FIELDS,
    DEFAULT_KEY_FIELDS,
    DecisionCache,
)
from faststream_callout.protocol.claims import AuthorizationRequest, ClientTLS
from faststream_callout.testing import FakeServer

PASSWORD = "pw-" + secrets.token_urlsafe(12)  # made at run time, searched for in reprs
OTHER_PASSWORD = "pw-" + secrets.token_urlsafe(12)
T0 = 1_800_000_000.0
USER_INFO = "$SYS.REQ.USER.INFO"


class Clock:
    """Unix time and a monotonic timer that advance together."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def time(self) -> float:
        return T0 + self.elapsed

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


class Lookup:
    """Counts lookups; may wait on a gate (a slow store) or fail like one."""

    def __init__(self, *, delay: float = 0.0, passwords: dict[str, str] | None = None) -> None:
        self.calls = 0
        self.cancelled = 0
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.passwords = passwords if passwords is not None else {"alice": PASSWORD}
        self.attributes: dict[str, object] = {}

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        self.calls += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        opts = request.connect_opts
        if opts.auth_token == "tok-" + PASSWORD:
            return Identity("tokenuser")
        if opts.nkey:
            return Identity("nkeyuser")
        if opts.jwt or (request.client_tls and request.client_tls.certs):
            return Identity("bearer", attributes=dict(self.attributes))
        if opts.password and self.passwords.get(opts.user) == opts.password:
            return Identity(opts.user, attributes=dict(self.attributes))
        raise Denied("bad credentials")


class Permissions:
    def __init__(self) -> None:
        self.calls = 0
        self.ttl: float | None = None
        self.expires_at: float | None = None
        self.deny: str | None = None

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        self.calls += 1
        if self.deny == identity.name:
            raise Denied("not at this hour")
        return Grant(
            account="APP",
            pub=Permission(allow=[f"chat.{identity.name}.>", USER_INFO]),
            sub=Permission(allow=["_INBOX.>"]),
            ttl=self.ttl,
            expires_at=self.expires_at,
        )


@pytest.fixture(scope="module")
def server_keys() -> SigningKeys:
    return SigningKeys(KeyPair.create_account())


@pytest.fixture(scope="module")
def fake(server_keys: SigningKeys) -> FakeServer:
    return FakeServer.config_mode(server_keys.callout_account, accounts=["APP"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(
    lookup: Lookup, permissions: Permissions, clock: Clock, **options: Any
) -> DecisionCache:
    return DecisionCache(lookup, permissions, clock=clock.time, timer=clock.monotonic, **options)


async def decide(cache: DecisionCache, request: AuthorizationRequest) -> tuple[Identity, Grant]:
    """Call the cache as the pipeline does: lookup, then build, in this task."""
    identity = await resolve(cache.lookup(request))
    grant = await resolve(cache.build(identity, request))
    return identity, grant


def req(fake: FakeServer, **connect: Any) -> AuthorizationRequest:
    connect.setdefault("user", "alice")
    connect.setdefault("password", PASSWORD)
    return fake.request(**connect).claims.nats


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}.c2ln"


# --- hit, miss, what is in the key ------------------------------------------------


async def test_second_identical_login_is_a_hit(fake, clock):
    lookup, permissions = Lookup(), Permissions()
    cache = make_cache(lookup, permissions, clock)
    first, second = req(fake), req(fake)
    assert first.user_nkey != second.user_nkey  # every attempt has its own key

    identity1, grant1 = await decide(cache, first)
    identity2, grant2 = await decide(cache, second)

    assert (lookup.calls, permissions.calls) == (1, 1)
    assert identity2 is identity1
    assert grant2 is grant1
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.coalesced, stats.entries) == (1, 1, 0, 1)


async def test_different_passwords_never_share_an_entry(fake, clock):
    lookup, permissions = Lookup(), Permissions()
    cache = make_cache(lookup, permissions, clock)
    await decide(cache, req(fake))
    with pytest.raises(Denied):
        await decide(cache, req(fake, password=OTHER_PASSWORD))
    with pytest.raises(Denied):  # a prefix of the right one
        await decide(cache, req(fake, password=PASSWORD[:-1]))
    assert lookup.calls == 3
    # Field boundaries are part of the key: "ab" + "c" is not "a" + "bc".
    lookup.passwords = {"ab": "c", "a": "bc"}
    assert (await decide(cache, req(fake, user="ab", password="c")))[0].name == "ab"
    assert (await decide(cache, req(fake, user="a", password="bc")))[0].name == "a"
    # The same secret as a token is another credential.
    with pytest.raises(Denied):
        await decide(cache, req(fake, user="", password="", token=PASSWORD))
    assert lookup.calls == 6


async def test_connection_context_is_in_the_key_by_default(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock)
    await decide(cache, req(fake, client_host="10.0.0.1"))
    await decide(cache, req(fake, client_host="10.0.0.2"))
    await decide(cache, req(fake, client_host="10.0.0.1", client_type="websocket"))
    assert lookup.calls == 3
    # Descriptive fields that differ per instance are not (see OPTIONAL_KEY_FIELDS) ...
    await decide(cache, req(fake, client_host="10.0.0.1", client_name="instance-2"))
    assert lookup.calls == 3
    # ... unless the policy declares it reads them.
    named = make_cache(
        lookup, Permissions(), clock, key_fields=[*DEFAULT_KEY_FIELDS, "connect_opts.name"]
    )
    await decide(named, req(fake, client_name="instance-1"))
    await decide(named, req(fake, client_name="instance-2"))
    assert lookup.calls == 5
    # A narrower key, knowingly: a fleet behind many addresses.
    fleet = make_cache(lookup, Permissions(), clock, key_fields=["client_info.type"])
    await decide(fleet, req(fake, client_host="10.0.0.1"))
    await decide(fleet, req(fake, client_host="10.0.0.2"))
    assert lookup.calls == 6


async def test_tls_certificates_are_credentials(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock)
    cert_a = ClientTLS(version="1.3", certs=["-----BEGIN CERTIFICATE-----\nA\n"])
    cert_b = ClientTLS(version="1.3", certs=["-----BEGIN CERTIFICATE-----\nB\n"])
    for tls in (cert_a, cert_a, cert_b):
        await decide(cache, req(fake, user="", password="", tls=tls))
    assert lookup.calls == 2
    assert "client_tls" in CREDENTIAL_FIELDS


def test_key_fields_are_checked(clock):
    for bad in (
        ["user_nkey"],
        ["client_info.id"],
        ["client_info.nonce"],
        ["connect_opts.sig"],
        ["hostname"],
    ):
        with pytest.raises(ValueError, match="unknown or per-attempt"):
            DecisionCache(Lookup(), Permissions(), key_fields=bad)
    with pytest.raises(TypeError):
        DecisionCache(Lookup, Permissions())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DecisionCache(Permissions(), Lookup())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DecisionCache(Lookup(), Permissions(), max_ttl=0)
    with pytest.raises(ValueError):
        DecisionCache(Lookup(), Permissions(), max_entries=0)


async def test_extra_key_adds_input_or_opts_out(fake, clock):
    lookup = Lookup()
    tenant = {"value": "acme"}
    cache = make_cache(
        lookup,
        Permissions(),
        clock,
        extra_key=lambda request: None if request.connect_opts.user == "root" else tenant["value"],
    )
    await decide(cache, req(fake))
    tenant["value"] = "globex"
    await decide(cache, req(fake))
    assert lookup.calls == 2
    lookup.passwords["root"] = PASSWORD
    await decide(cache, req(fake, user="root"))
    await decide(cache, req(fake, user="root"))
    assert lookup.calls == 4
    assert cache.stats.bypassed == 2
    # bytes are not the str of their base64.
    raw = make_cache(lookup, Permissions(), clock, extra_key=lambda _: b"abc")
    text = make_cache(lookup, Permissions(), clock, extra_key=lambda _: "YWJj")
    text._secret = raw._secret
    request = req(fake)
    assert raw._key(request) != text._key(request)


async def test_nkey_signatures_and_anonymous_requests_bypass(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock)
    user_key = KeyPair.create_user()
    for _ in range(2):
        await decide(
            cache,
            req(fake, user="", password="", nkey=user_key.public_key, sig="c2ln", nonce="bm9uY2U"),
        )
    for _ in range(2):
        with pytest.raises(Denied):
            await decide(cache, req(fake, user="", password=""))
    # A user JWT signed over the nonce is no bearer token either.
    bearer = unsigned_jwt({"sub": user_key.public_key, "exp": T0 + 600})
    for _ in range(2):
        await decide(
            cache, req(fake, user="", password="", jwt_token=bearer, sig="c2ln", nonce="bm9uY2U")
        )
    assert lookup.calls == 6
    assert cache.stats.bypassed == 6
    assert len(cache) == 0


# --- lifetimes --------------------------------------------------------------------


async def expect_lookups(
    cache: DecisionCache, request_factory, lookup: Lookup, *, alive: float, clock: Clock
) -> None:
    """Entries made now answer until ``alive`` seconds from now, and not after."""
    start = lookup.calls
    await decide(cache, request_factory())
    clock.advance(alive - 0.01)
    await decide(cache, request_factory())
    assert lookup.calls == start + 1, "entry died early"
    clock.advance(0.02)
    await decide(cache, request_factory())
    assert lookup.calls == start + 2, "entry outlived its bound"


async def test_max_ttl_bounds_every_entry(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock, max_ttl=5)
    await expect_lookups(cache, lambda: req(fake), lookup, alive=5, clock=clock)


async def test_grant_ttl_and_expiry_bound_the_entry(fake, clock):
    lookup, permissions = Lookup(), Permissions()
    cache = make_cache(lookup, permissions, clock, max_ttl=60)
    permissions.ttl = 3
    await expect_lookups(cache, lambda: req(fake), lookup, alive=3, clock=clock)
    permissions.ttl = None
    cache.clear()
    permissions.expires_at = clock.time() + 7
    await expect_lookups(cache, lambda: req(fake), lookup, alive=7, clock=clock)


async def test_credential_expiry_bounds_the_entry(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock, max_ttl=60)
    # The identity attribute the batteries set (token exp, certificate notAfter).
    lookup.attributes = {"expires_at": clock.time() + 4}
    await expect_lookups(cache, lambda: req(fake), lookup, alive=4, clock=clock)
    # An expiry that cannot be read: not cached at all.
    lookup.attributes = {"expires_at": "tomorrow"}
    await decide(cache, req(fake, password=PASSWORD))
    await decide(cache, req(fake, password=PASSWORD))
    assert len(cache) == 0
    lookup.attributes = {}
    # The exp of a JWT the client sent, read unverified (only ever shortening).
    bearer = unsigned_jwt({"sub": "x", "exp": clock.time() + 9})
    await expect_lookups(
        cache,
        lambda: req(fake, user="", password="", jwt_token=bearer),
        lookup,
        alive=9,
        clock=clock,
    )
    as_password = unsigned_jwt({"sub": "x", "exp": clock.time() + 2})
    lookup.passwords["oidc"] = as_password
    await expect_lookups(
        cache, lambda: req(fake, user="oidc", password=as_password), lookup, alive=2, clock=clock
    )


async def test_expired_or_unreadable_jwts_are_not_cached(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock)
    expired = unsigned_jwt({"sub": "x", "exp": clock.time() - 1})
    garbled = "eyJhbGciOiJub25lIn0.!!!.c2ln"
    for token in (expired, expired, garbled, garbled):
        await decide(cache, req(fake, user="", password="", jwt_token=token))
    assert lookup.calls == 4
    assert len(cache) == 0


async def test_lru_bound(fake, clock):
    lookup = Lookup(passwords={f"u{i}": PASSWORD for i in range(3)})
    cache = make_cache(lookup, Permissions(), clock, max_entries=2)
    await decide(cache, req(fake, user="u0"))
    await decide(cache, req(fake, user="u1"))
    await decide(cache, req(fake, user="u0"))  # u0 now most recently used
    await decide(cache, req(fake, user="u2"))  # evicts u1
    assert (len(cache), cache.stats.evictions, lookup.calls) == (2, 1, 3)
    await decide(cache, req(fake, user="u0"))
    await decide(cache, req(fake, user="u2"))
    assert lookup.calls == 3
    await decide(cache, req(fake, user="u1"))
    assert lookup.calls == 4


# --- denials and failures -----------------------------------------------------------


async def test_denials_are_not_cached_by_default(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock)
    for _ in range(3):
        with pytest.raises(Denied, match="bad credentials"):
            await decide(cache, req(fake, password=OTHER_PASSWORD))
    assert lookup.calls == 3
    assert cache.stats.denials == 0


async def test_negative_ttl_caches_denials_briefly_and_apart(fake, clock):
    lookup = Lookup()
    cache = make_cache(
        lookup, Permissions(), clock, negative_ttl=2, max_entries=1, max_negative_entries=2
    )
    await decide(cache, req(fake))
    for _ in range(2):
        with pytest.raises(Denied, match="bad credentials") as caught:
            await decide(cache, req(fake, password=OTHER_PASSWORD))
        assert type(caught.value) is Denied
    assert (lookup.calls, cache.stats.negative_hits) == (2, 1)
    # Guessers fill only the denial table: the grant stays.
    for n in range(5):
        with pytest.raises(Denied):
            await decide(cache, req(fake, password=f"guess-{n}"))
    await decide(cache, req(fake))
    assert (lookup.calls, len(cache), cache.stats.denials) == (7, 1, 2)
    clock.advance(2.01)
    with pytest.raises(Denied):
        await decide(cache, req(fake, password="guess-4"))
    assert lookup.calls == 8
    # NotApplicable stays NotApplicable (FirstMatch tells it from Denied).
    lookup.error = NotApplicable("not mine")
    for _ in range(2):
        with pytest.raises(NotApplicable):
            await decide(cache, req(fake, user="bob"))
    assert lookup.calls == 9


async def test_permission_denial_passes_through_unchanged(fake, clock):
    lookup, permissions = Lookup(), Permissions()
    permissions.deny = "alice"
    cache = make_cache(lookup, permissions, clock)
    for _ in range(2):
        identity = await resolve(cache.lookup(req(fake)))
        assert identity.name == "alice"  # the lookup succeeded: no throttle failure
    with pytest.raises(Denied, match="not at this hour"):
        await decide(cache, req(fake))
    assert (lookup.calls, len(cache)) == (3, 0)


async def test_build_falls_back_for_identities_from_elsewhere(fake, clock):
    permissions = Permissions()
    cache = make_cache(Lookup(), permissions, clock)
    request = req(fake)
    await resolve(cache.lookup(request))
    other = Identity("alice")  # e.g. from another lookup of a FirstMatch
    grant = await resolve(cache.build(other, request))
    assert grant.pub.allow == ["chat.alice.>", USER_INFO]
    assert permissions.calls == 2


# --- single flight ----------------------------------------------------------------


async def test_a_storm_of_identical_logins_costs_one_lookup(fake, clock):
    lookup, permissions = Lookup(delay=0.05), Permissions()
    cache = make_cache(lookup, permissions, clock)
    requests = [req(fake) for _ in range(100)]
    results = await asyncio.gather(*(decide(cache, r) for r in requests))
    assert (lookup.calls, permissions.calls) == (1, 1)
    assert {id(grant) for _, grant in results} == {id(results[0][1])}
    stats = cache.stats
    assert (stats.misses, stats.coalesced, stats.hits, stats.in_flight) == (1, 99, 0, 0)


@pytest.mark.parametrize("error", [Denied("bad credentials"), RuntimeError("database is down")])
async def test_a_failed_flight_fails_every_waiter_and_is_not_cached(fake, clock, error):
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    lookup.error = error
    cache = make_cache(lookup, Permissions(), clock, negative_ttl=0)
    waiters = [asyncio.create_task(decide(cache, req(fake))) for _ in range(20)]
    await asyncio.sleep(0.01)
    lookup.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert lookup.calls == 1
    assert all(r is error for r in results)
    lookup.error, lookup.gate = None, None
    await decide(cache, req(fake))
    assert lookup.calls == 2
    assert cache.stats.in_flight == 0


async def test_cancelling_the_first_waiter_strands_no_one(fake, clock):
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    cache = make_cache(lookup, Permissions(), clock)
    first = asyncio.create_task(decide(cache, req(fake)))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(decide(cache, req(fake))) for _ in range(10)]
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    assert lookup.cancelled == 0  # others still wait on it
    lookup.gate.set()
    results = await asyncio.gather(*others)
    assert first.cancelled()
    assert {identity.name for identity, _ in results} == {"alice"}
    assert (lookup.calls, len(cache)) == (1, 1)


async def test_when_every_waiter_gives_up_the_lookup_is_cancelled(fake, clock):
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    cache = make_cache(lookup, Permissions(), clock)
    waiters = [asyncio.create_task(decide(cache, req(fake))) for _ in range(5)]
    await asyncio.sleep(0.01)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert (lookup.cancelled, cache.stats.in_flight, len(cache)) == (1, 0, 0)
    lookup.gate = None
    await decide(cache, req(fake))  # a new flight, not the dead one
    assert lookup.calls == 2


async def test_a_hung_lookup_fails_its_waiters_after_max_flight_time(fake, clock):
    lookup = Lookup()
    lookup.gate = asyncio.Event()  # never set
    cache = make_cache(lookup, Permissions(), clock, max_flight_time=0.05)
    results = await asyncio.gather(
        *(decide(cache, req(fake)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, TimeoutError) for r in results)
    assert (lookup.calls, lookup.cancelled, cache.stats.in_flight) == (1, 1, 0)


async def test_invalidate_and_clear(fake, clock):
    lookup = Lookup(passwords={"alice": PASSWORD, "bob": PASSWORD})
    cache = make_cache(lookup, Permissions(), clock)
    await decide(cache, req(fake))
    await decide(cache, req(fake, user="bob"))
    assert cache.invalidate("alice") == 1
    await decide(cache, req(fake, user="bob"))
    assert lookup.calls == 2
    await decide(cache, req(fake))
    assert lookup.calls == 3
    cache.clear()
    await decide(cache, req(fake, user="bob"))
    assert (lookup.calls, len(cache)) == (4, 1)


async def test_a_lookup_running_across_invalidate_is_not_stored(fake, clock):
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    cache = make_cache(lookup, Permissions(), clock)
    running = asyncio.create_task(decide(cache, req(fake)))
    await asyncio.sleep(0.01)
    cache.invalidate("alice")  # the password changed while the old one was being checked
    lookup.gate.set()
    identity, _ = await running  # that login is answered ...
    assert identity.name == "alice"
    assert len(cache) == 0  # ... but its decision is not kept


# --- secrets ------------------------------------------------------------------------


async def test_no_credential_in_repr_stats_or_keys(fake, clock):
    lookup = Lookup()
    cache = make_cache(lookup, Permissions(), clock, negative_ttl=5)
    await decide(cache, req(fake))
    with pytest.raises(Denied):
        await decide(cache, req(fake, password=OTHER_PASSWORD))
    shown = repr(cache) + str(cache.stats)
    for secret in (PASSWORD, OTHER_PASSWORD, "alice"):
        assert secret not in shown
    keys = [*cache._entries, *cache._denials]
    assert len(keys) == 2
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)
    assert not any(PASSWORD.encode() in k or OTHER_PASSWORD.encode() in k for k in keys)
    # Keyed per cache: the same request hashes differently elsewhere.
    other = make_cache(lookup, Permissions(), clock)
    request = req(fake)
    assert cache._key(request) != other._key(request)
    assert cache._key(request) in cache._entries


# --- through the real pipeline ------------------------------------------------------


async def test_through_the_pipeline_each_login_gets_its_own_jwt(fake, server_keys):
    lookup = Lookup(delay=0.02)
    cache = DecisionCache(lookup, Permissions())
    pipeline = CalloutPipeline(server_keys, cache, cache)
    minted = [fake.request(user="alice", password=PASSWORD) for _ in range(30)]
    replies = await asyncio.gather(*(pipeline(m.body, m.server_xkey) for m in minted))
    verdicts = [fake.check(m, reply) for m, reply in zip(minted, replies, strict=True)]
    assert all(v.allowed and v.account == "APP" for v in verdicts), verdicts[0]
    # Fresh user JWTs: each for its own user_nkey, each with its own jti.
    assert [v.user.sub for v in verdicts if v.user] == [m.user_nkey for m in minted]
    assert len({v.user.jti for v in verdicts if v.user}) == 30
    assert lookup.calls == 1
    # A wrong password still reaches the lookup and is denied, and the grant stays.
    bad = fake.request(user="alice", password=OTHER_PASSWORD)
    decision = await pipeline.decide(bad.body)
    assert decision.outcome is Outcome.DENIED
    assert lookup.calls == 2
    good = fake.request(user="alice", password=PASSWORD)
    assert fake.check(good, await pipeline(good.body)).allowed
    assert lookup.calls == 2


async def test_through_the_pipeline_the_throttle_comes_first(fake, server_keys):
    lookup = Lookup()
    cache = DecisionCache(lookup, Permissions())
    pipeline = CalloutPipeline(server_keys, cache, cache, throttle=MemoryThrottle())
    good = fake.request(user="alice", password=PASSWORD)
    assert (await pipeline.decide(good.body)).outcome is Outcome.ALLOWED
    outcomes = []
    for _ in range(8):
        bad = fake.request(user="alice", password=OTHER_PASSWORD)
        outcomes.append((await pipeline.decide(bad.body)).outcome)
    assert Outcome.THROTTLED in outcomes  # every guess counted: none came from the cache
    # Locked out: the cached grant does not open the door.
    again = fake.request(user="alice", password=PASSWORD)
    assert (await pipeline.decide(again.body)).outcome is Outcome.THROTTLED


async def test_through_the_pipeline_a_timed_out_leader_does_not_fail_the_rest(fake, server_keys):
    from faststream_callout import CalloutSettings

    lookup = Lookup(delay=0.3)
    cache = DecisionCache(lookup, Permissions())
    impatient = CalloutPipeline(server_keys, cache, cache, CalloutSettings(max_decision_time=0.1))
    patient = CalloutPipeline(server_keys, cache, cache)
    first = fake.request(user="alice", password=PASSWORD)
    rest = [fake.request(user="alice", password=PASSWORD) for _ in range(5)]
    leader = asyncio.create_task(impatient.decide(first.body))
    await asyncio.sleep(0.01)
    decisions = await asyncio.gather(leader, *(patient.decide(m.body) for m in rest))
    assert decisions[0].outcome is Outcome.TIMEOUT
    assert all(d.outcome is Outcome.ALLOWED for d in decisions[1:])
    assert lookup.calls == 1


async def test_with_policy_provider_and_no_pipeline_changes(fake, server_keys):
    from dishka import make_async_container

    from faststream_callout import CalloutProvider, PolicyProvider

    lookup = Lookup()
    cache = DecisionCache(lookup, Permissions())
    container = make_async_container(
        CalloutProvider(), PolicyProvider(keys=server_keys, lookup=cache, permissions=cache)
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        assert pipeline.lookup is cache
        assert pipeline.permissions is cache
        for _ in range(3):
            minted = fake.request(user="alice", password=PASSWORD)
            assert fake.check(minted, await pipeline(minted.body)).allowed
        assert lookup.calls == 1
    finally:
        await container.close()


# --- a real nats-server -------------------------------------------------------------

STORM = 60


@run_in(CONFIG)
async def test_real_server_storm_of_identical_logins(callout_env: CalloutEnv) -> None:
    lookup = Lookup(delay=0.2)  # a slow user store: the storm arrives while it looks
    permissions = Permissions()
    cache = DecisionCache(lookup, permissions)

    async with callout_env.serve(cache, cache) as callout:

        def connect(n: int) -> Awaitable[Client]:
            return callout.connect(
                user="alice", password=PASSWORD, name=f"device-{n}", connect_timeout=5
            )

        clients = await asyncio.gather(*(connect(n) for n in range(STORM)))
        try:
            assert all(c.is_connected for c in clients)
            # Each got a grant nats-server enforces: may publish only under chat.alice.
            info = json.loads((await clients[0].request(USER_INFO, b"", timeout=2)).data)
            assert info["data"]["user"] == "alice", info
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        # A second wave (the reconnect after a restart) is answered from the cache.
        second = await asyncio.gather(*(connect(n) for n in range(STORM)))
        await asyncio.gather(*(c.close() for c in second))
        await callout.expect_denied(user="alice", password=OTHER_PASSWORD)
    print(f"\n{2 * STORM} logins, {lookup.calls} lookups; {cache.stats}")
    assert (
        lookup.calls <= 5 + 1
    )  # the storm coalesced (a few may straddle), plus the wrong password
    stats = cache.stats
    assert stats.hits >= STORM
    assert stats.hits + stats.coalesced + stats.misses == 2 * STORM + 1


async def test_nan_expiries_are_not_cached(fake, clock):
    lookup, permissions = Lookup(), Permissions()
    cache = make_cache(lookup, permissions, clock)
    lookup.attributes = {"expires_at": float("nan")}
    await decide(cache, req(fake))
    lookup.attributes = {}
    permissions.expires_at = float("nan")
    await decide(cache, req(fake))
    permissions.expires_at, permissions.ttl = None, float("nan")
    await decide(cache, req(fake))
    assert (lookup.calls, len(cache)) == (3, 0)
