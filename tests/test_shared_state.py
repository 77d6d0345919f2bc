"""The shared stores on one JetStream server: buckets, each store's policy, Dishka, N processes.

Two :class:`SharedState` objects on one server stand for two service instances
(tests/test_shared_cluster.py runs them on a 3-node cluster, with node failures).
The last test runs examples/shared_service.py as two worker processes under
``faststream run --workers 2`` and reaches both through the shared buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from callout_env import ConfigServer, config_server, eventually
from dishka import make_async_container
from nats.aio.client import Client
from nats.js import api
from policies import FixedGrant, Passwords

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    KeyPair,
    PolicyProvider,
    SigningKeys,
)
from faststream_callout.core import env
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.pipeline import CalloutSettings, Outcome
from faststream_callout.core.policy import resolve
from faststream_callout.core.throttle import (
    Attempt,
    AttemptResult,
    Backoff,
    MemoryStore,
    MemoryThrottle,
    NoThrottle,
    Throttle,
    ThrottlePolicy,
    ThrottleRecord,
)
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.sessions import RevocationGuard, Session, SessionRegistry
from faststream_callout.integration.shared import (
    Bucket,
    SharedInvalidations,
    SharedRevocationList,
    SharedSettings,
    SharedState,
    SharedStateProvider,
    SharedThrottleStore,
    StoreUnavailable,
    mirror,
)
from faststream_callout.integration.shared.buckets import key_of, name_of, write
from faststream_callout.integration.shared.throttle import throttle_key
from faststream_callout.testing import FakeServer
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.logins import attempt_login, quiet, wait_closed
from faststream_callout.testing.processes import ServiceProcess, pid_exists

ROOT = Path(__file__).resolve().parents[1]
FASTSTREAM = str(Path(sys.executable).parent / "faststream")
LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


# -- names, buckets, settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["alice", "a.b.c", "with space", "ünïcödé", "x\ny", "_under", "-dash", "*", ">", "a" * 1024],
)
def test_any_name_becomes_a_key_and_back(name: str) -> None:
    key = key_of(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    assert key[0] not in "_-"
    assert name_of(key) == name


def test_what_is_no_name_is_refused() -> None:
    for bad in ("", "a" * 1025, "é" * 513):
        with pytest.raises(ValueError, match="name"):
            key_of(bad)
    for key in ("_all", "-x", "", "not base64!", "YQ="):
        assert name_of(key) is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="bucket name"):
        Bucket(name="no.dots")
    with pytest.raises(ValueError, match="replicas"):
        Bucket(name="x", replicas=7)
    with pytest.raises(ValueError, match="ttl"):
        Bucket(name="x", ttl=0)
    with pytest.raises(ValueError, match="max_staleness"):
        SharedSettings(max_staleness=0.5, probe_interval=1)
    with pytest.raises(ValueError, match="bucket of its own"):
        SharedSettings(sessions=Bucket(name="callout_revocations"))
    with pytest.raises(ValueError, match="positive"):
        SharedSettings(write_timeout=float("nan"))


# -- one JetStream server -----------------------------------------------------------------------


class Server(ConfigServer):
    async def state(self, settings: SharedSettings | None = None) -> SharedState:
        return await SharedState.connect(
            self.url, settings=settings, error_cb=quiet, **self.service_login
        )


@pytest.fixture(scope="module")
def js_server() -> Iterator[Server]:
    with config_server(jetstream=True) as base:
        yield Server(base.server, base.config, base.issuer, base.url)


@pytest.fixture
async def two(js_server: Server) -> AsyncIterator[tuple[SharedState, SharedState]]:
    """Two instances on the default buckets (the second opens what the first created)."""
    first = await js_server.state()
    second = await js_server.state()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_buckets_are_created_when_missing_and_used_as_they_are(
    js_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # A bucket someone made before (other history, no republish) is used as it is.
    nc = (await attempt_login(js_server.url, **js_server.service_login)).client
    assert nc is not None
    try:
        await nc.jetstream().create_key_value(bucket="theirs", history=5)
        settings = SharedSettings(
            revocations=Bucket(name="theirs"),
            sessions=Bucket(name="new_sessions", republish=False),
            invalidations=Bucket(name="new_invalidations", ttl=120),
        )
        with caplog.at_level(logging.WARNING, logger="faststream_callout.shared"):
            state = await js_server.state(settings)
        try:
            js = nc.jetstream()
            theirs = (await js.stream_info("KV_theirs")).config
            assert theirs.max_msgs_per_subject == 5
            assert theirs.republish is None
            made = (await js.stream_info("KV_new_invalidations")).config
            assert made.num_replicas == 1  # one server: R3 is impossible, and said so
            assert made.max_age == 120
            assert made.republish is not None
            assert made.republish.dest == "callout.shared.new_invalidations.>"
            warned = [r.getMessage() for r in caplog.records]
            assert any("not clustered; created with 1 replica, not 3" in m for m in warned)
            # Without the live feed the watch alone keeps the copy current.
            await state.revocations.revoke("ann")
            assert state.revocations.is_revoked("ann")
        finally:
            await state.close()
    finally:
        await nc.close()


async def test_revocations_are_shared_with_the_in_memory_policy(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = two[0].revocations, two[1].revocations
    await a.revoke("for.good")
    await a.revoke("brief", ttl=0.3)
    await a.revoke("until", until=time.time() + 3600)
    await eventually(lambda: {"for.good", "brief", "until"} <= set(b.local._until))
    assert b.is_revoked("for.good")
    assert b.is_revoked("brief")
    assert "until" in b
    await asyncio.sleep(0.35)
    assert not b.is_revoked("brief")  # expired everywhere, by the same policy
    assert await b.restore("for.good")
    await eventually(lambda: not a.is_revoked("for.good"))
    assert not await b.restore("never-revoked")
    with pytest.raises(ValueError, match="until or ttl"):
        await a.revoke("x", until=1, ttl=1)
    await a.restore("until")


async def test_the_guard_denies_revoked_identities_on_the_other_instance(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = two
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.config_mode(keys.callout_account, accounts=["APP"])
    lookup = Passwords()
    pipeline = CalloutPipeline(keys, b.revocations.guard(lookup), FixedGrant(pub=[">"]))
    request = server.request(user="dora", password="dora-pw")
    assert (await pipeline.decide(request.body)).allowed
    await a.revocations.revoke("dora")
    await eventually(lambda: b.revocations.is_revoked("dora"))
    denied = await pipeline.decide(server.request(user="dora", password="dora-pw").body)
    assert denied.outcome is Outcome.DENIED
    assert denied.reason == "access revoked"
    await a.revocations.restore("dora")


async def test_entries_nobody_should_have_written_fail_closed(
    two: tuple[SharedState, SharedState], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two
    kv = await a.nc.jetstream().key_value("callout_revocations")
    with caplog.at_level(logging.WARNING, logger="faststream_callout.shared"):
        await kv.put(key_of("eve"), b"not json")  # unreadable: refused for good
        await kv.put("_all", b"{}")  # no name makes this key: ignored
        await eventually(lambda: b.revocations.local.is_revoked("eve"))
    assert b.revocations.is_revoked("eve")
    assert any("unreadable revocation" in r.getMessage() for r in caplog.records)
    await a.revocations.restore("eve")
    await kv.delete("_all")


async def test_sessions_recorded_anywhere_are_known_everywhere(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = two
    now = int(time.time())
    server_id = KeyPair.create_server().public_key

    def session(cid: int, identity: str, expires_at: int = now + 60) -> Session:
        user = KeyPair.create_user().public_key
        return Session(user, identity, "APP", server_id, "node", cid, now, expires_at, "10.0.0.1")

    a.sessions.add(session(1, "finn"))
    a.sessions.add(session(2, "finn", expires_at=0))  # no expiry: no TTL
    await a.session_store.flush()
    await eventually(lambda: len(b.sessions.sessions(identity="finn")) == 2)
    assert b.sessions.get(server_id, 1) == a.sessions.get(server_id, 1)
    # Written with their lifetime where they have one (the bucket forgets them then).
    js = a.nc.jetstream()
    timed = await js.get_msg("KV_callout_sessions", subject=f"$KV.callout_sessions.{server_id}.1")
    untimed = await js.get_msg("KV_callout_sessions", subject=f"$KV.callout_sessions.{server_id}.2")
    assert timed.headers is not None
    assert 60 <= int(timed.headers["Nats-TTL"]) <= 62
    assert "Nats-TTL" not in (untimed.headers or {})
    # An ended session (kicked, disconnected) leaves every instance.
    b.sessions.forget(server_id, 1)
    await b.session_store.flush()
    await eventually(lambda: a.sessions.get(server_id, 1) is None)
    assert a.sessions.get(server_id, 2) is not None
    # Expiry is each registry's own policy: nothing is written for it.
    written = a.session_store.written
    a.sessions.add(session(3, "gus", expires_at=now - 1))
    assert a.sessions.sessions(identity="gus") == []
    assert a.session_store.pending == 0
    assert a.session_store.written == written


async def test_the_session_queue_is_bounded(js_server: Server) -> None:
    state = await js_server.state(dataclasses.replace(SharedSettings(), max_pending_sessions=2))
    try:
        store = state.session_store
        await store.close()  # no writer: the queue only fills
        now = int(time.time())
        server_id = KeyPair.create_server().public_key
        for cid in (1, 2, 3):
            user = KeyPair.create_user().public_key
            state.sessions.add(Session(user, "hugo", "APP", server_id, "n", cid, now, now + 60))
        assert (store.pending, store.dropped) == (2, 1)
        assert len(state.sessions.sessions(identity="hugo")) == 3  # this instance still knows
    finally:
        await state.close()


async def test_invalidations_reach_every_instances_caches(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = two
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.config_mode(keys.callout_account, accounts=["APP"])
    lookup = Passwords()
    cache = DecisionCache(lookup, FixedGrant(pub=[">"]))
    assert b.invalidations.attach(cache) is cache
    pipeline = CalloutPipeline(keys, cache, cache)
    for user in ("ida", "jon"):
        assert (
            await pipeline.decide(server.request(user=user, password=f"{user}-pw").body)
        ).allowed
    assert len(cache) == 2
    assert await a.invalidations.invalidate("ida") == 0  # nothing cached on A
    await eventually(lambda: len(cache) == 1)
    await a.invalidations.clear()
    await eventually(lambda: len(cache) == 0)
    assert not cache.suspended


async def test_no_jetstream_no_start(js_server: Server) -> None:
    issuer = KeyPair.create_account()
    # JetStream on the server, not in the callout account (what `jetstream` does not add).
    config = CalloutServerConfig(issuer=issuer.public_key)
    settings = SharedSettings(start_timeout=3)
    login = {"user": config.auth_user, "password": config.auth_password, "settings": settings}
    with (
        LocalNatsServer(config.render(), jetstream=True) as server,
        pytest.raises(StoreUnavailable, match="not enabled for the callout account"),
    ):
        await SharedState.connect(server.url, **login)
    with (
        LocalNatsServer(config.render()) as server,  # no JetStream at all
        pytest.raises(StoreUnavailable, match="does not answer"),
    ):
        await SharedState.connect(server.url, **login)
    with pytest.raises(ConfigurationError, match="no login"):
        await SharedState.connect(js_server.url, environ={})


async def test_stores_that_are_off_say_so(js_server: Server) -> None:
    settings = SharedSettings(sessions=None, invalidations=None)
    state = await js_server.state(settings)
    try:
        assert isinstance(state.revocations, SharedRevocationList)
        with pytest.raises(ConfigurationError, match="sessions=None"):
            _ = state.sessions
        with pytest.raises(ConfigurationError, match="invalidations=None"):
            _ = state.invalidations
    finally:
        await state.close()
    with pytest.raises(ConfigurationError, match="not started"):
        _ = SharedState(state.nc).revocations


@pytest.mark.parametrize("brk", LINE_BREAKS, ids=repr)
async def test_names_in_log_lines_stay_one_line(
    two: tuple[SharedState, SharedState], caplog: pytest.LogCaptureFixture, brk: str
) -> None:
    a, _ = two
    forged = f"mallory{brk}CRITICAL revoked 'admin'"
    with caplog.at_level(logging.DEBUG, logger="faststream_callout"):
        await a.revocations.revoke(forged)
        await a.revocations.restore(forged)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("faststream_callout")]
    assert len(messages) >= 2
    assert [m for m in messages if set(LINE_BREAKS) & set(m)] == []


# -- the shared throttle ------------------------------------------------------------------------

ODD_KEYS = [
    "user:alice|src:203.0.113.7/32",
    "user:a.b.*.>|src:2001:db8::/64",
    "user:x\ny\u2028z",
    "user:ünïcödé",
    "user:\udcff",  # a lone surrogate, as a CONNECT name may carry
    "src:" + "a" * 10_000,
    "",
]


def test_any_throttle_key_becomes_a_short_valid_kv_key() -> None:
    kv_keys = [throttle_key(key) for key in ODD_KEYS]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", k) for k in kv_keys)
    assert len(set(kv_keys)) == len(ODD_KEYS)
    assert throttle_key("user:alice") == throttle_key("user:alice")


def shared_throttle(state: SharedState) -> Throttle:
    return state.throttle(ThrottlePolicy(per_pair=Backoff(free_failures=3, base_lockout=60)))


async def test_the_shared_throttle_counts_across_instances_like_one_memory_throttle(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = (shared_throttle(state) for state in two)
    memory = MemoryThrottle(a.policy, clock=time.time)
    guess = Attempt("user:mona|x", "src:198.51.100.1/32")
    verdicts: dict[str, list[bool]] = {"shared": [], "memory": []}
    for turn in range(6):
        instance = (a, b)[turn % 2]  # every other guess through the other instance
        for name, throttle in (("shared", instance), ("memory", memory)):
            admission = await resolve(throttle.check(guess))
            verdicts[name].append(admission.admitted)
            if admission.admitted:
                await resolve(throttle.record(guess, AttemptResult.FAILED))
    # Locked after the 4th failure (3 free), whichever instance counted which.
    assert verdicts["shared"] == verdicts["memory"] == [True] * 4 + [False] * 2
    pair, subject, source = await two[1].throttle_store.load(guess.keys)
    assert pair is not None
    assert subject is not None
    assert source is not None
    assert (pair.failures, subject.failures, source.failures) == (4, 4, 4)
    assert pair.locked_until > time.time() + 50


class _LosesOneCancellation:
    """JetStream requests that fail, the first as a timeout cancels it: Python 3.11's
    ``asyncio.wait_for`` (inside nats-py's requests) then loses the cancellation and only
    the request's error is seen; the next attempts are not cancelled again."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self) -> None:
        self.attempts += 1
        if self.attempts == 1:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
        else:
            await asyncio.sleep(0.05)
        raise nats.errors.NoRespondersError

    watchall = __call__  # as a bucket


async def test_a_write_gives_up_in_time_even_when_a_cancellation_is_lost() -> None:
    # (Seen as a session write retried for as long as JetStream was out of reach.)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"not written within 0.2s \(NoRespondersError\)"):
        await asyncio.wait_for(
            write(_LosesOneCancellation(), what="a record", timeout=0.2), timeout=3
        )
    assert time.monotonic() - started < 1


async def test_a_mirror_start_gives_up_in_time_even_when_a_cancellation_is_lost() -> None:
    kv = _LosesOneCancellation()
    copy = mirror.BucketMirror(
        None,  # type: ignore[arg-type]  # never reached: the watch fails first
        None,  # type: ignore[arg-type]
        kv,  # type: ignore[arg-type]
        Bucket(name="lost", republish=False),
        lambda _: None,
    )
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(copy.start(timeout=0.2), timeout=3)
    assert time.monotonic() - started < 1


async def test_a_conflicting_write_is_retried_with_the_new_record(
    two: tuple[SharedState, SharedState],
) -> None:
    a, b = (state.throttle_store for state in two)
    key = "user:nina|src:198.51.100.2/32"
    await a.update(key, lambda _: ThrottleRecord(failures=1, expires_at=time.time() + 60))
    assert (await b.load([key]))[0] == (await a.load([key]))[0]  # both know revision 1
    await b.update(key, lambda r: dataclasses.replace(r or ThrottleRecord(), failures=10))
    seen: list[int | None] = []

    def count(record: ThrottleRecord | None) -> ThrottleRecord:
        seen.append(record.failures if record else None)
        return dataclasses.replace(
            record or ThrottleRecord(), failures=(record.failures if record else 0) + 1
        )

    conflicts = a.conflicts
    assert (await a.update(key, count)).failures == 11
    assert seen == [1, 10]  # first on A's stale copy, rejected; then on B's write
    assert a.conflicts == conflicts + 1
    assert (await b.load([key]))[0].failures == 11
    # Two instances counting the same key at once lose no count.
    await asyncio.gather(*(store.update(key, count) for store in (a, b) for _ in range(5)))
    assert (await a.load([key]))[0].failures == 21


async def test_records_live_as_long_as_the_policy_keeps_them(
    two: tuple[SharedState, SharedState],
) -> None:
    store = two[0].throttle_store
    assert store.ttl_writes  # created by this library on nats-server 2.11+
    now = time.time()
    await store.update("user:olga", lambda _: ThrottleRecord(failures=1, expires_at=now + 899.2))
    await store.update("user:pia", lambda _: ThrottleRecord(failures=1, expires_at=now - 5))
    js = two[0].nc.jetstream()
    stored = await js.get_msg(
        "KV_callout_throttle", subject=f"$KV.callout_throttle.{throttle_key('user:olga')}"
    )
    assert stored.headers is not None
    assert 900 <= int(stored.headers["Nats-TTL"]) <= 901
    # An odd key's record comes back as written; a dead one is gone after a second.
    for key in ODD_KEYS:
        await store.update(
            key, lambda _, key=key: ThrottleRecord(failures=len(key), expires_at=now + 60)
        )
    assert [r.failures if r else None for r in await store.load(ODD_KEYS)] == [
        len(k) for k in ODD_KEYS
    ]
    deadline = time.monotonic() + 5
    while (await store.load(["user:pia"]))[0] is not None:
        assert time.monotonic() < deadline, "the expired record is still there"
        await asyncio.sleep(0.2)


class StoreDown:
    """A lookup whose store is out of reach (as a stale SharedRevocationList is)."""

    def lookup(self, request: object) -> object:
        raise StoreUnavailable("bucket callout_revocations: copy last confirmed 20s ago")


async def test_a_store_out_of_reach_denies_with_one_line_and_counts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.config_mode(keys.callout_account, accounts=["APP"])
    throttle = MemoryThrottle()
    pipeline = CalloutPipeline(keys, StoreDown(), FixedGrant(pub=[">"]), throttle=throttle)
    with caplog.at_level(logging.INFO, logger="faststream_callout"):
        for _ in range(3):
            decision = await pipeline.decide(server.request(user="quinn", password="x").body)
            assert decision.outcome is Outcome.ERROR
            assert not decision.allowed
    logged = [r for r in caplog.records if r.name == "faststream_callout"]
    assert len(logged) == 3  # one line per login, no traceback
    assert {r.levelno for r in logged} == {logging.ERROR}
    assert [r for r in logged if r.exc_info] == []
    assert "store unavailable" in logged[0].getMessage()
    assert "last confirmed 20s ago" in logged[0].getMessage()
    # The service's outage is not the client's attempt: its source is not counted.
    assert len(throttle) == 0


@dataclass
class Blackhole:
    """Swallows JetStream requests on a server without JetStream: a JetStream that hangs."""

    nc: Client

    async def __aenter__(self) -> None:
        await self.nc.subscribe("$JS.API.>", cb=self._ignore)
        await self.nc.subscribe("$KV.>", cb=self._ignore)
        await self.nc.flush()

    async def __aexit__(self, *_: object) -> None:
        await self.nc.close()

    @staticmethod
    async def _ignore(msg: object) -> None:
        del msg


@pytest.mark.parametrize("jetstream", ["unreachable", "hanging"])
async def test_a_throttle_store_out_of_reach_locks_nobody_out_within_the_deadline(
    caplog: pytest.LogCaptureFixture, jetstream: str
) -> None:
    keys = SigningKeys(KeyPair.create_account())
    config = CalloutServerConfig(issuer=keys.callout_account)
    fake = FakeServer.config_mode(keys.callout_account, accounts=["APP"])
    with LocalNatsServer(config.render()) as server:  # no JetStream at all
        login = {"user": config.auth_user, "password": config.auth_password, "error_cb": quiet}
        nc = (await attempt_login(server.url, **login)).client
        other = (await attempt_login(server.url, **login)).client
        assert nc is not None
        assert other is not None
        hanging = Blackhole(other) if jetstream == "hanging" else contextlib.nullcontext()
        try:
            async with hanging:
                store = SharedThrottleStore(
                    nc.jetstream(), Bucket(name="callout_throttle"), ttl_writes=True
                )
                policy = ThrottlePolicy(per_pair=Backoff(free_failures=2))
                pipeline = CalloutPipeline(
                    keys, Passwords(), FixedGrant(pub=[">"]), throttle=Throttle(store, policy)
                )
                with caplog.at_level(logging.INFO, logger="faststream_callout"):
                    decisions = [
                        await pipeline.decide(fake.request(user="rita", password=pw).body)
                        for pw in ["wrong"] * 6 + ["rita-pw"]
                    ]
        finally:
            await nc.close()
            await other.close()
    # Judged by the lookup, as if there were no throttle: nobody is locked out.
    assert [d.outcome for d in decisions] == [Outcome.DENIED] * 6 + [Outcome.ALLOWED]
    latencies = [d.latency for d in decisions]
    budget = CalloutSettings().max_decision_time
    assert max(latencies) < budget
    # At most one call waits out the store's timeout; then it is down and nobody waits.
    assert sorted(latencies)[-2] < store.timeout
    assert not store.available
    assert store.failures >= 7
    logged = [r for r in caplog.records if r.name.startswith("faststream_callout")]
    assert [r for r in logged if r.exc_info] == []
    # The store says once that it is down; the gate says it per call, in one line.
    store_lines = [r for r in logged if r.name == "faststream_callout.shared"]
    assert len(store_lines) == 1
    assert "decided without the shared counts" in store_lines[0].getMessage()


# -- Dishka --------------------------------------------------------------------------------------


async def test_the_provider_wires_every_store_into_the_pipeline(js_server: Server) -> None:
    keys = SigningKeys(js_server.issuer)
    cache = DecisionCache(Passwords(), FixedGrant(pub=[">"]))
    environ = {
        env.NATS_URL: js_server.url,
        env.CALLOUT_USER: js_server.config.auth_user,
        env.CALLOUT_PASSWORD: js_server.config.auth_password,
    }
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keys, lookup=cache, permissions=cache),
        SharedStateProvider(environ=environ),
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        state = await container.get(SharedState)
        assert isinstance(pipeline.lookup, RevocationGuard)
        assert pipeline.lookup.inner is cache
        assert pipeline.lookup.revocations is await container.get(SharedRevocationList)
        registry = await container.get(SessionRegistry)
        assert registry is state.sessions
        assert registry in pipeline.observers
        invalidations = await container.get(SharedInvalidations)
        assert invalidations.caches == [cache]
        # CalloutProvider's MemoryThrottle, its counts moved to the bucket: same policy.
        assert pipeline.throttle is not None
        assert pipeline.throttle.store is await container.get(SharedThrottleStore)
        assert pipeline.throttle.policy == ThrottlePolicy()

        server = FakeServer.config_mode(keys.callout_account, accounts=["APP"])
        assert (await pipeline.decide(server.request(user="kay", password="kay-pw").body)).allowed
        assert registry.sessions(identity="kay")
        await state.revocations.revoke("kay")
        denied = await pipeline.decide(server.request(user="kay", password="kay-pw").body)
        assert denied.reason == "access revoked"
        await state.revocations.restore("kay")
    finally:
        await container.close()
    assert state.nc.is_closed  # closed with the container


async def test_the_provider_with_stores_off(js_server: Server) -> None:
    keys = SigningKeys(js_server.issuer)
    lookup = Passwords()
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keys, lookup=lookup, permissions=FixedGrant(pub=[">"])),
        SharedStateProvider(
            SharedSettings(revocations=None, invalidations=None, throttle=None),
            url=js_server.url,
            **js_server.service_login,
        ),
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        assert pipeline.lookup is lookup
        assert (await container.get(SessionRegistry)) in pipeline.observers
        assert isinstance(pipeline.throttle, MemoryThrottle)
    finally:
        await container.close()


@pytest.mark.parametrize("kept", [NoThrottle(), Throttle(MemoryStore()), "own store"])
async def test_the_provider_moves_memory_counts_and_keeps_other_throttles(
    js_server: Server, kept: Throttle | str
) -> None:
    keys = SigningKeys(js_server.issuer)
    shared = await js_server.state(
        SharedSettings(revocations=None, sessions=None, invalidations=None)
    )
    try:
        throttle = Throttle(shared.throttle_store) if kept == "own store" else kept
        assert isinstance(throttle, Throttle)
        permissions = FixedGrant(pub=[">"])
        policy = PolicyProvider(
            keys=keys, lookup=Passwords(), permissions=permissions, throttle=throttle
        )
        container = make_async_container(
            CalloutProvider(),
            policy,
            SharedStateProvider(url=js_server.url, **js_server.service_login),
        )
        try:
            pipeline = await container.get(CalloutPipeline)
            if isinstance(throttle.store, MemoryStore) and not isinstance(throttle, NoThrottle):
                # A plain Throttle over a MemoryStore is moved, keeping its policy.
                assert pipeline.throttle is not throttle
                assert pipeline.throttle is not None
                assert isinstance(pipeline.throttle.store, SharedThrottleStore)
            else:
                assert pipeline.throttle is throttle
        finally:
            await container.close()
    finally:
        await shared.close()


# -- every core of a host: faststream run --workers -------------------------------------------


SERVING = "`Authorize` waiting for messages"  # FastStream's line, once per worker
DECIDED = re.compile(r"pid=(\d+) faststream_callout\.decisions: (\w+) user='(\w+)'")


def decisions(service: ServiceProcess) -> list[tuple[int, str, str]]:
    """(worker pid, outcome, user) of every decision the workers logged."""
    return [(int(p), o, u) for p, o, u in DECIDED.findall(service.output())]


async def test_two_worker_processes_share_one_memory(js_server: Server, tmp_path: Path) -> None:
    """``faststream run examples.shared_service:app --workers 2``: one queue group, one memory."""
    service = ServiceProcess(
        [FASTSTREAM, "run", "examples.shared_service:app", "--workers", "2"],
        name="workers",
        workdir=tmp_path,
        cwd=ROOT,
        env={
            env.NATS_URL: js_server.url,
            env.CALLOUT_USER: js_server.config.auth_user,
            env.CALLOUT_PASSWORD: js_server.config.auth_password,
            env.CALLOUT_ISSUER_SEED: js_server.issuer.seed,
        },
    ).spawn()
    admin = await js_server.state()  # an admin script, or a third instance
    clients = []
    try:
        await eventually(
            lambda: service.output().count(SERVING) == 2 or not service.is_running(), 60
        )
        assert service.is_running(), service.output()[-3000:]
        for _ in range(12):
            attempt = await attempt_login(
                js_server.url, user="alice", password="alice-secret", error_cb=quiet
            )
            assert attempt.client is not None, attempt.error
            clients.append(attempt.client)
        await eventually(lambda: len(decisions(service)) == 12)
        workers = {pid for pid, _, _ in decisions(service)}
        assert len(workers) == 2, "both workers answer logins"

        # Sessions granted by either worker are known here: kick them all.
        await eventually(lambda: len(admin.sessions.sessions(identity="alice")) == 12)
        system = await attempt_login(
            js_server.url, user="admin", password=js_server.config.system_password
        )
        assert system.client is not None
        try:
            results = await admin.sessions.kick_user(system.client, "alice")
        finally:
            await system.client.close()
        assert [r.kicked for r in results] == [True] * 12
        for client in clients:
            assert await wait_closed(client, 5)

        # Revoked here: refused by both workers.
        await admin.revocations.revoke("alice")
        before = len(decisions(service))
        for _ in range(16):
            attempt = await attempt_login(
                js_server.url, user="alice", password="alice-secret", error_cb=quiet
            )
            assert attempt.refused, attempt.error
        await eventually(lambda: len(decisions(service)) == before + 16)
        refusals = decisions(service)[before:]
        # (Denials count in the shared throttle: past 5, refusals are throttled.)
        assert {outcome for _, outcome, _ in refusals} <= {"denied", "throttled"}
        assert {pid for pid, _, _ in refusals} == workers
        await admin.revocations.restore("alice")
    finally:
        for client in clients:
            await client.close()
        await admin.close()
        service.stop(timeout=15)
    assert not [pid for pid in workers if pid_exists(pid)]


# -- what confirms a copy -----------------------------------------------------------------------


def _peer(name: str, active: int | None, *, offline: bool = False) -> api.PeerInfo:
    return api.PeerInfo(name=name, current=True, offline=offline, active=active, lag=0)


SECOND_NS = 1_000_000_000


@pytest.mark.parametrize(
    ("leader", "actives", "confirms"),
    [
        ("n1", [SECOND_NS // 10, SECOND_NS // 10], True),  # a leader hearing both peers
        ("n1", [SECOND_NS // 10, 10 * SECOND_NS], True),  # one of two: still a quorum
        ("n1", [10 * SECOND_NS, 10 * SECOND_NS], False),  # cut off from both
        # Leaderless (the survivor of a quorum loss answered): a follower's zeroed
        # "last seen" is reported as active 0, which is not hearing anyone.
        ("", [0, 0], False),
        (None, [0, 0], False),
        ("n1", [0, 0], False),  # never heard since it became leader
    ],
)
def test_only_a_leader_with_a_quorum_confirms_a_copy(
    leader: str | None, actives: list[int], confirms: bool
) -> None:
    cluster = api.ClusterInfo(
        leader=leader, name="C", replicas=[_peer(f"p{i}", a) for i, a in enumerate(actives)]
    )
    assert mirror._with_quorum(cluster) is confirms
