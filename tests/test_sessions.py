"""Sessions and revocation: the registry on its own, then kicks and revocations on real servers.

Unit tests drive the pipeline with FakeServer requests and a fake clock. The
real-server tests log real nats-py clients in through our callout router and
check what nats-server does: a kicked or revoked client is disconnected (its
``closed_cb`` fires), others are not, and the deny-list keeps a kicked user out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from callout_env import ConfigServer, OperatorWorld, config_server, eventually, nats_server
from callout_env import login as connect
from clocks import ManualClock
from nats.aio.client import Client, RawCredentials
from nats.errors import Error as NatsError
from policies import GrantByName, Passwords

from faststream_callout import CalloutPipeline, Grant, KeyPair, Permission, SigningKeys
from faststream_callout.core.errors import ConfigurationError, InvalidJWTError
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.sessions import (
    KickStatus,
    RevocationList,
    Session,
    SessionRegistry,
    kick,
    push_account_jwt,
    revoke_users,
    with_revocations,
)
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    decode_account_jwt,
)
from faststream_callout.testing import FakeServer, LocalNatsServer, settle

AUTH_VIOLATION = "authorization violation"


def permissions(account: str = "APP") -> GrantByName:
    """Everyone into ``account`` for 60 s; ``forever`` without expiry; ``ghost`` into an
    account the server lacks."""

    def grant(to: str, ttl: float | None = 60) -> Grant:
        return Grant(account=to, pub=Permission(allow=[">"]), sub=Permission(allow=[">"]), ttl=ttl)

    return GrantByName(
        {"ghost": grant("NOWHERE"), "forever": grant(account, ttl=None)}, default=grant(account)
    )


# -- the registry on its own ------------------------------------------------------


@dataclass
class Unit:
    registry: SessionRegistry
    revocations: RevocationList
    pipeline: CalloutPipeline
    server: FakeServer
    clock: ManualClock
    decisions: list[Decision] = field(default_factory=list)

    async def login(self, user: str, **options: Any) -> Decision:
        minted = self.server.request(
            user=user, password=f"{user}-pw", now=self.clock.now, **options
        )
        decision = await self.pipeline.decide(minted.body, minted.server_xkey)
        self.decisions.append(decision)
        return decision


@pytest.fixture
def unit() -> Unit:
    clock = ManualClock(1_800_000_000.0)
    issuer = KeyPair.create_account()
    registry = SessionRegistry(max_entries=50, clock=clock)
    revocations = RevocationList(clock=clock)
    pipeline = CalloutPipeline(
        SigningKeys(issuer),
        revocations.guard(Passwords()),  # <name>-pw; boom: the lookup fails
        permissions(),
        observers=[registry],
        clock=clock,
    )
    return Unit(registry, revocations, pipeline, FakeServer.config_mode(issuer.public_key), clock)


async def test_registry_records_allowed_logins_with_the_issued_jwt_times(unit: Unit) -> None:
    minted = unit.server.request(
        user="alice", password="alice-pw", client_id=42, client_name="app-1", now=unit.clock.now
    )
    decision = await unit.pipeline.decide(minted.body)
    verdict = unit.server.check(minted, decision.reply, now=unit.clock.now)
    assert verdict.allowed
    assert verdict.user is not None
    # The Decision carries the issued JWT's own times.
    assert (decision.issued_at, decision.expires_at) == (verdict.user.iat, verdict.user.exp)
    assert decision.expires_at == int(unit.clock.now) + 60
    [session] = unit.registry.sessions()
    assert session == Session(
        user_nkey=minted.user_nkey,
        identity="alice",
        account="APP",
        server_id=unit.server.key.public_key,
        server_name=unit.server.name,
        client_id=42,
        issued_at=verdict.user.iat,
        expires_at=verdict.user.exp,
        host="127.0.0.1",
        client_name="app-1",
    )
    assert unit.registry.get(unit.server.key.public_key, 42) == session


async def test_registry_ignores_denials_and_errors(unit: Unit) -> None:
    minted = unit.server.request(user="alice", password="wrong", now=unit.clock.now)
    assert (await unit.pipeline.decide(minted.body)).outcome is Outcome.DENIED
    assert (await unit.login("boom")).outcome is Outcome.ERROR
    assert (await unit.login("ghost")).allowed  # our side allows; only a real server refuses
    assert [s.identity for s in unit.registry.sessions()] == ["ghost"]


async def test_sessions_are_dropped_when_their_jwt_expires(unit: Unit) -> None:
    await unit.login("alice")  # expires at now + 60
    await unit.login("forever")  # no expiry
    unit.clock.now += 30
    await unit.login("bob")  # expires at now + 60 = first + 90
    assert len(unit.registry) == 3
    unit.clock.now += 30  # alice's exp: still valid (JWTs expire once now > exp)
    assert {s.identity for s in unit.registry.sessions()} == {"alice", "forever", "bob"}
    unit.clock.now += 1
    assert {s.identity for s in unit.registry.sessions()} == {"forever", "bob"}
    unit.clock.now += 60
    assert [s.identity for s in unit.registry.sessions()] == ["forever"]
    assert unit.registry.sessions(identity="bob") == []
    # An already expired session is not even recorded.
    stale = unit.registry.sessions()[0]
    unit.registry.add(
        Session(
            "U" * 56, "late", "APP", stale.server_id, "", 999, 1, expires_at=int(unit.clock.now) - 1
        )
    )
    assert unit.registry.sessions(identity="late") == []


async def test_registry_is_bounded_and_evicts_the_oldest(unit: Unit) -> None:
    registry = unit.registry
    for index in range(60):
        await unit.login(f"u{index}")
    assert len(registry) == registry.max_entries == 50
    assert registry.evicted == 10
    assert registry.sessions(identity="u0") == []
    assert len(registry.sessions(identity="u59")) == 1
    # Sessions forgotten early leave heap entries; they are compacted, not kept forever.
    for session in registry.sessions():
        registry.forget(*session.key)
    for index in range(500):
        await unit.login(f"churn{index}")
        registry.forget(*registry.sessions(identity=f"churn{index}")[0].key)
    assert len(registry) == 0
    assert len(registry._expiries) <= 2 * len(registry) + 65
    assert registry._by_identity == {}
    assert registry._by_account == {}
    assert registry._by_nkey == {}


async def test_queries_by_identity_account_and_user_nkey(unit: Unit) -> None:
    first = await unit.login("alice")
    await unit.login("alice")
    await unit.login("bob")
    registry = unit.registry
    assert len(registry.sessions(identity="alice")) == 2
    assert len(registry.sessions(account="APP")) == 3
    assert registry.sessions(account="OTHER") == []
    assert first.request is not None
    [by_key] = registry.sessions(user_nkey=first.request.user_nkey)
    assert by_key.client_id == first.request.client_info.id
    assert registry.sessions(identity="bob", user_nkey=first.request.user_nkey) == []
    assert registry.sessions(identity="alice", account="APP", user_nkey=by_key.user_nkey) == [
        by_key
    ]
    assert registry.sessions(identity="nobody") == []


async def test_disconnect_events_forget_the_connection(unit: Unit) -> None:
    decision = await unit.login("alice")
    assert decision.request is not None
    server_id, cid = decision.request.server_id.id, decision.request.client_info.id
    event = {
        "type": "io.nats.server.advisory.v1.client_disconnect",
        "server": {"id": server_id},
        "client": {"id": cid, "acc": "APP"},
        "reason": "Client Closed",
    }
    registry = unit.registry
    assert registry.handle_event(b"not json") is None
    assert (
        registry.handle_event({**event, "type": "io.nats.server.advisory.v1.client_connect"})
        is None
    )
    assert registry.handle_event({**event, "client": {"id": str(cid)}}) is None
    assert registry.handle_event({**event, "server": {"id": "N-other"}}) is None
    assert len(registry) == 1
    forgotten = registry.handle_event(json.dumps(event).encode())
    assert forgotten is not None
    assert forgotten.identity == "alice"
    assert len(registry) == 0


async def test_no_secrets_in_reprs(unit: Unit) -> None:
    await unit.login("alice")
    minted = unit.server.request(token="tok-secret-123", now=unit.clock.now)
    await unit.pipeline.decide(minted.body)
    text = repr(unit.registry) + repr(unit.registry.sessions()) + repr(unit.decisions)
    assert "alice-pw" not in text
    assert "tok-secret-123" not in text
    assert "SessionRegistry(1 sessions" in repr(unit.registry)
    assert "issued" in repr(unit.registry)  # not following disconnects: only issued logins


async def test_revocation_list_refuses_revoked_identities(unit: Unit) -> None:
    revocations = unit.revocations
    revocations.revoke("alice")
    revocations.revoke("bob", ttl=10)
    assert "alice" in revocations
    assert len(revocations) == 2
    denied = await unit.login("alice")
    assert denied.outcome is Outcome.DENIED
    assert denied.reason == "access revoked"
    assert unit.registry.sessions(identity="alice") == []
    assert (await unit.login("bob")).outcome is Outcome.DENIED
    # A wrong password is still a wrong password, not a revocation.
    minted = unit.server.request(user="alice", password="wrong", now=unit.clock.now)
    assert (await unit.pipeline.decide(minted.body)).reason == "bad credentials"
    unit.clock.now += 11  # bob's ban ran out
    assert (await unit.login("bob")).allowed
    assert revocations.restore("alice")
    assert not revocations.restore("alice")
    assert (await unit.login("alice")).allowed
    assert len(revocations) == 0
    with pytest.raises(ValueError):
        revocations.revoke("x", until=1, ttl=1)
    assert repr(revocations) == "RevocationList(0 identities)"


async def test_revocation_guard_fails_closed(unit: Unit) -> None:
    # The wrapped lookup's failure is still a denial (generic reason), never a pass.
    decision = await unit.login("boom")
    assert decision.outcome is Outcome.ERROR
    assert not decision.allowed


def test_with_revocations_keeps_the_account_and_merges() -> None:
    operator = KeyPair.create_operator()
    account = KeyPair.create_account()
    signer = KeyPair.create_account()
    user_a, user_b = KeyPair.create_user().public_key, KeyPair.create_user().public_key
    auth = ExternalAuthorization(auth_users=[user_b], allowed_accounts=["*"])
    original = account_jwt(
        account.public_key,
        operator,
        name="APP",
        signing_keys=[signer.public_key],
        authorization=auth,
        revocations={user_b: 100, user_a: 500},
    )
    updated = with_revocations(original, operator, {user_a: 400, "*": 300}, forget_before=200)
    before, after = decode_account_jwt(original), decode_account_jwt(updated)
    assert (after.sub, after.name, after.iss) == (before.sub, before.name, operator.public_key)
    # user_b's entry (100) is older than forget_before; user_a's is never moved back.
    assert after.nats["revocations"] == {user_a: 500, "*": 300}
    rest = {k: v for k, v in after.nats.items() if k != "revocations"}
    assert rest == {k: v for k, v in before.nats.items() if k != "revocations"}
    assert after.nats["signing_keys"] == [signer.public_key]
    assert after.nats["authorization"]["auth_users"] == [user_b]  # type: ignore[index]
    with pytest.raises(ConfigurationError):
        with_revocations(original, account, {user_a: 1})  # not an operator key
    with pytest.raises(ConfigurationError):
        with_revocations(original, operator, {account.public_key: 1})  # not a user key
    head, payload, signature = original.split(".")
    with pytest.raises(InvalidJWTError):
        with_revocations(f"{head}.{payload}x.{signature}", operator, {user_a: 1})
    forged = account_jwt(account.public_key, KeyPair.create_operator(), name="APP")
    with pytest.raises(InvalidJWTError):  # someone else's signature on our payload
        with_revocations(f"{head}.{payload}.{forged.split('.')[2]}", operator, {user_a: 1})


class NoNetwork:
    async def request(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("must not be sent")


async def test_kick_checks_its_arguments_before_sending() -> None:
    nc: Any = NoNetwork()
    server_id = KeyPair.create_server().public_key
    bad_server = await kick(nc, "$SYS.>", 1)
    assert bad_server.status is KickStatus.ERROR
    assert "server public key" in bad_server.detail
    for cid in (0, -1, True):
        assert (await kick(nc, server_id, cid)).status is KickStatus.ERROR


LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


class AnsweringServer:
    """A system connection whose server says what a test tells it to (kicks, claims)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    async def request(self, subject: str, payload: bytes, **_: object) -> Any:
        data = json.dumps(self.answer).encode()
        return type("Reply", (), {"data": data})()


@pytest.mark.parametrize("brk", LINE_BREAKS, ids=repr)
async def test_kick_and_revocation_log_lines_stay_one_line(
    caplog: pytest.LogCaptureFixture, brk: str
) -> None:
    """Issue 14 item 6: identity, server name and the server's words are escaped."""
    server_id = KeyPair.create_server().public_key
    forged = f"mallory{brk}CRITICAL allowed user='admin'"
    registry = SessionRegistry()
    user = KeyPair.create_user().public_key
    registry.add(Session(user, forged, "APP", server_id, f"node{brk}x", 5, 1))
    nc: Any = AnsweringServer({"error": {"description": f"no such client{brk}FORGED"}})
    with caplog.at_level(logging.DEBUG, logger="faststream_callout"):
        [result] = await registry.kick_user(nc, forged)
        operator, account = KeyPair.create_operator(), KeyPair.create_account()
        token = account_jwt(account.public_key, operator, name="APP")
        claims: Any = AnsweringServer(
            {"data": {"account": account.public_key, "code": 200, "message": f"jwt{brk}updated"}}
        )
        await revoke_users(claims, token, operator, [user])
    assert result.status is KickStatus.NOT_FOUND
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("faststream_callout")]
    assert len(messages) == 2
    assert [m for m in messages if set(LINE_BREAKS) & set(m)] == []
    assert "mallory" in messages[0]


# -- config mode, real nats-server ------------------------------------------------


@dataclass
class Watched:
    """A nats-py client whose disconnection we can wait for."""

    nc: Client
    closed: asyncio.Event

    async def wait_closed(self, within: float = 3) -> None:
        await asyncio.wait_for(self.closed.wait(), within)


async def login(url: str, user: str) -> Watched:
    """Log ``user`` in with the password ``<user>-pw``."""
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await connect(url, user=user, password=f"{user}-pw", closed_cb=on_closed)
    return Watched(nc, closed)


def server_id_of(client: Watched) -> str:
    return str(client.nc._server_info["server_id"])


@dataclass
class ConfigDeployment:
    server: ConfigServer
    registry: SessionRegistry
    revocations: RevocationList
    system: Client
    decisions: list[Decision]


@pytest.fixture(scope="module")
async def config_mode() -> AsyncIterator[ConfigDeployment]:
    # A config of its own: the system account's admin (in auth_users, so it bypasses
    # the callout) follows connections and kicks them.
    with config_server(accounts={"APP": {}}, timeout=1) as server:
        registry = SessionRegistry()
        revocations = RevocationList()
        decisions: list[Decision] = []
        pipeline = CalloutPipeline(
            server.keys,
            revocations.guard(Passwords()),
            permissions(),
            observers=[registry, decisions.append],
        )
        async with server.serve(pipeline):
            system = await connect(server.url, **server.system_login)
            try:
                await registry.follow(system)
                yield ConfigDeployment(server, registry, revocations, system, decisions)
            finally:
                await system.close()


async def test_login_is_recorded_with_the_servers_ids(config_mode: ConfigDeployment) -> None:
    alice = await login(config_mode.server.url, "alice")
    try:
        [session] = config_mode.registry.sessions(identity="alice")
        assert session.server_id == server_id_of(alice)
        assert session.client_id == alice.nc.client_id
        assert session.account == "APP"
        # ttl 60 from a fractional now, rounded up.
        assert session.issued_at + 60 <= session.expires_at <= session.issued_at + 61
        assert config_mode.registry.following
    finally:
        await alice.nc.close()
    # The disconnect advisory (system account) removes it.
    await eventually(lambda: not config_mode.registry.sessions(identity="alice"))


async def test_kick_user_disconnects_every_connection_of_that_user_only(
    config_mode: ConfigDeployment,
) -> None:
    url = config_mode.server.url
    first, second, bob = (
        await login(url, "alice"),
        await login(url, "alice"),
        await login(url, "bob"),
    )
    try:
        cids = sorted([first.nc.client_id or 0, second.nc.client_id or 0])  # None once closed
        results = await config_mode.registry.kick_user(config_mode.system, "alice")
        assert sorted(r.client_id for r in results) == cids
        assert all(r.status is KickStatus.KICKED and r.kicked for r in results), results
        assert all(r.session is not None and r.session.identity == "alice" for r in results)
        await first.wait_closed()
        await second.wait_closed()
        assert config_mode.registry.sessions(identity="alice") == []
        # bob is untouched: still connected, the server still answers him.
        await settle(bob.nc)
        assert bob.nc.is_connected
        assert not bob.closed.is_set()
        assert len(config_mode.registry.sessions(identity="bob")) == 1
    finally:
        await bob.nc.close()
    # Nothing left to kick: nothing is claimed.
    assert await config_mode.registry.kick_user(config_mode.system, "alice") == []


async def test_kick_reports_what_the_server_said(config_mode: ConfigDeployment) -> None:
    url, system = config_mode.server.url, config_mode.system
    alice = await login(url, "alice")
    try:
        server_id = server_id_of(alice)
        unknown = await kick(system, server_id, 10**9)
        assert unknown.status is KickStatus.NOT_FOUND
        assert "no such client" in unknown.detail
        # A server that does not exist (or is gone): no answer, so no claim.
        gone = await kick(system, KeyPair.create_server().public_key, alice.nc.client_id or 0)
        assert gone.status is KickStatus.ERROR
        assert "no server answered" in gone.detail
        # Outside the system account the kick service is unreachable.
        bob = await login(url, "bob")
        try:
            from_app = await kick(bob.nc, server_id, alice.nc.client_id or 0)
            assert from_app.status is KickStatus.ERROR
        finally:
            await bob.nc.close()
        await settle(alice.nc)
        assert alice.nc.is_connected
        assert not alice.closed.is_set()
    finally:
        await alice.nc.close()


async def test_logins_the_server_refused_are_forgotten(config_mode: ConfigDeployment) -> None:
    # We allow ghost into an account the server does not have: the server refuses, and
    # its auth-error advisory (system account) removes the session we recorded.
    with pytest.raises(NatsError, match="(?i)" + AUTH_VIOLATION):
        await login(config_mode.server.url, "ghost")
    assert any(
        d.identity and d.identity.name == "ghost" and d.allowed for d in config_mode.decisions
    )
    await eventually(lambda: not config_mode.registry.sessions(identity="ghost"))


async def test_deny_list_keeps_a_kicked_user_out(config_mode: ConfigDeployment) -> None:
    url = config_mode.server.url
    carol = await login(url, "carol")
    config_mode.revocations.revoke("carol")
    try:
        # The deny-list does not touch live connections: the kick does.
        await settle(carol.nc)
        assert carol.nc.is_connected
        [result] = await config_mode.registry.kick_user(config_mode.system, "carol")
        assert result.kicked
        await carol.wait_closed()
        with pytest.raises(NatsError, match="(?i)" + AUTH_VIOLATION):
            await login(url, "carol")
        assert config_mode.decisions[-1].reason == "access revoked"
    finally:
        config_mode.revocations.restore("carol")
    again = await login(url, "carol")
    await again.nc.close()


# -- operator mode, real nats-server ----------------------------------------------


@dataclass
class OperatorDeployment:
    server: LocalNatsServer
    operator: KeyPair
    app: KeyPair
    account_jwts: dict[str, str]
    registry: SessionRegistry
    revocations: RevocationList
    system: Client
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def operator_mode() -> AsyncIterator[OperatorDeployment]:
    world = OperatorWorld.generate(with_xkey=False)
    config = world.server_config()
    app = world.app
    registry, revocations = SessionRegistry(), RevocationList()
    pipeline = CalloutPipeline(
        world.signing_keys(),
        revocations.guard(Passwords()),
        permissions(account=app.public_key),
        observers=[registry],
    )
    events: list[dict[str, Any]] = []

    async def on_disconnect(msg: Any) -> None:
        events.append(json.loads(msg.data))

    with nats_server(config) as server:
        async with world.serve(server.url, pipeline):
            system = await connect(
                server.url, user_credentials=RawCredentials(world.system_creds())
            )
            try:
                await registry.follow(system)
                await system.subscribe(
                    f"$SYS.ACCOUNT.{app.public_key}.DISCONNECT", cb=on_disconnect
                )
                await settle(system)
                yield OperatorDeployment(
                    server,
                    world.operator,
                    app,
                    dict(config.account_jwts),
                    registry,
                    revocations,
                    system,
                    events,
                )
            finally:
                await system.close()


async def test_revoke_user_makes_the_server_drop_the_connection(
    operator_mode: OperatorDeployment,
) -> None:
    deployment = operator_mode
    url, app = deployment.server.url, deployment.app.public_key
    ann, bob = await login(url, "ann"), await login(url, "bob")
    try:
        [session] = deployment.registry.sessions(identity="ann")
        assert session.account == app
        [revocation] = await deployment.registry.revoke_user(
            deployment.system,
            "ann",
            account_jwts=deployment.account_jwts,
            signer=deployment.operator,
        )
        assert revocation.applied, revocation.update
        assert revocation.update.detail == "jwt updated"
        assert revocation.revoked == (session.user_nkey,)
        assert revocation.at >= session.issued_at
        deployment.account_jwts[app] = revocation.account_jwt  # the account's JWT from now on
        revoked = decode_account_jwt(revocation.account_jwt).nats["revocations"]
        assert revoked == {session.user_nkey: revocation.at}
        await ann.wait_closed()
        # The server says why: the credentials were revoked (not kicked, not expired).
        await eventually(
            lambda: any(e["client"]["id"] == session.client_id for e in deployment.events)
        )
        [event] = [e for e in deployment.events if e["client"]["id"] == session.client_id]
        assert event["reason"] == "Credentials Revoked"
        assert deployment.registry.sessions(identity="ann") == []
        await settle(bob.nc)
        assert bob.nc.is_connected
        assert not bob.closed.is_set()
    finally:
        await bob.nc.close()


async def test_relogin_after_revocation_needs_the_deny_list(
    operator_mode: OperatorDeployment,
) -> None:
    deployment = operator_mode
    url = deployment.server.url
    # The callout issues a fresh JWT for a fresh user_nkey: the revocation does not apply.
    ann = await login(url, "ann")
    [session] = deployment.registry.sessions(identity="ann")
    deployment.revocations.revoke("ann")
    try:
        [revocation] = await deployment.registry.revoke_user(
            deployment.system,
            "ann",
            account_jwts=deployment.account_jwts,
            signer=deployment.operator,
        )
        assert revocation.applied
        deployment.account_jwts[deployment.app.public_key] = revocation.account_jwt
        await ann.wait_closed()
        # Both revocations are in the account JWT now.
        revoked = decode_account_jwt(revocation.account_jwt).nats["revocations"]
        assert isinstance(revoked, dict)
        assert session.user_nkey in revoked
        assert len(revoked) == 2
        with pytest.raises(NatsError, match="(?i)" + AUTH_VIOLATION):
            await login(url, "ann")
    finally:
        deployment.revocations.restore("ann")


async def test_push_reports_the_servers_refusal(operator_mode: OperatorDeployment) -> None:
    deployment = operator_mode
    app = deployment.app.public_key
    stranger = KeyPair.create_operator()
    refused = await push_account_jwt(deployment.system, account_jwt(app, stranger, name="APP"))
    assert not refused.updated
    assert "account validation failed" in refused.detail
    # revoke_users with the wrong operator: the server keeps the old account, ann stays.
    ann = await login(deployment.server.url, "ann")
    try:
        [session] = deployment.registry.sessions(identity="ann")
        revocation = await revoke_users(
            deployment.system, deployment.account_jwts[app], stranger, [session.user_nkey]
        )
        assert not revocation.applied
        await settle(ann.nc)
        assert ann.nc.is_connected
        garbage = await push_account_jwt(deployment.system, "not.a.jwt")
        assert not garbage.updated
        assert "not an account JWT" in garbage.detail
    finally:
        await ann.nc.close()
