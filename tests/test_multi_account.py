"""Several callout accounts in one pipeline, and key rotation, without a broker.

``SigningKeys.combine`` answers each request with the keys of the account it was
sent for (the signed request ``sub``); ``next_xkey`` / ``next_signing_key`` and
``rotate()`` change keys without a refused login.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dishka import make_async_container
from faststream.nats import NatsBroker, TestNatsBroker

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    CalloutSettings,
    ConfigurationError,
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
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer, MintedRequest, Verdict

T = 1_800_000_000.25


class Lookup:
    """Any user with password ``<user>-pw``; records the callout account of each request."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gate: asyncio.Event | None = None

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        self.seen.append(request.callout_account)
        if self.gate is not None:
            await self.gate.wait()
        opts = request.connect_opts
        if opts.password == f"{opts.user}-pw":
            return Identity(opts.user)
        raise Denied("bad credentials")


class ByCalloutAccount:
    """Places users by the callout account that asked (``request.callout_account``)."""

    def __init__(self, placement: dict[str, str], *, override: str | None = None) -> None:
        self.placement = placement
        self.override = override  # a buggy policy: always this account

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        account = self.override or self.placement[request.callout_account]
        return Grant(account=account, pub=Permission(allow=[f"{identity.name}.>"]), ttl=60)


class Tenant:
    """One operator-mode callout account with its own signing key, xkey and target account."""

    def __init__(self) -> None:
        self.callout = KeyPair.create_account()
        self.signing_key = KeyPair.create_account()
        self.app = KeyPair.create_account()
        self.xkey = XKeyPair.generate()

    def keys(self) -> SigningKeys:
        return SigningKeys.operator(
            self.callout.public_key,
            signing_key=self.signing_key,
            accounts={self.app.public_key: self.app},
            xkey=self.xkey,
        )

    def server(
        self, *, xkey: str | None = None, signing_keys: list[str] | None = None
    ) -> FakeServer:
        return FakeServer.operator_mode(
            self.callout.public_key,
            accounts={
                self.callout.public_key: signing_keys or [self.signing_key.public_key],
                self.app.public_key: [],
            },
            allowed_accounts=[self.app.public_key],
            xkey=xkey or self.xkey.public_key,
        )


def make(
    keys: SigningKeys,
    builder: Any,
    lookup: Lookup | None = None,
    settings: CalloutSettings | None = None,
) -> CalloutPipeline:
    return CalloutPipeline(keys, lookup or Lookup(), builder, settings, clock=lambda: T)


async def judge(
    pipeline: CalloutPipeline, server: FakeServer, user: str = "alice", **connect: Any
) -> tuple[MintedRequest, Decision, Verdict]:
    minted = server.request(user=user, password=f"{user}-pw", now=T, **connect)
    decision = await pipeline.decide(minted.body, minted.server_xkey)
    return minted, decision, server.check(minted, decision.reply, now=T)


# --- several callout accounts ----------------------------------------------------------


async def test_each_callout_account_is_answered_with_its_own_keys() -> None:
    one, two = Tenant(), Tenant()
    keys = SigningKeys.combine(one.keys(), two.keys())
    lookup = Lookup()
    placement = {
        one.callout.public_key: one.app.public_key,
        two.callout.public_key: two.app.public_key,
    }
    pipeline = make(keys, ByCalloutAccount(placement), lookup)
    for tenant in (one, two, one):
        minted, decision, verdict = await judge(pipeline, tenant.server())
        assert verdict.allowed, verdict.reason
        assert verdict.encrypted  # sealed with this tenant's xkey: the server opened it
        assert verdict.account == tenant.app.public_key
        assert verdict.response is not None
        assert verdict.response.iss == tenant.signing_key.public_key
        assert verdict.response.nats.issuer_account == tenant.callout.public_key
        assert decision.request is not None
        assert decision.request.callout_account == tenant.callout.public_key
        assert minted.claims.nats.callout_account == ""  # not on the wire
    assert lookup.seen == [one.callout.public_key, two.callout.public_key, one.callout.public_key]


async def test_a_tenant_cannot_place_users_into_another_tenants_account() -> None:
    one, two = Tenant(), Tenant()
    keys = SigningKeys.combine(one.keys(), two.keys())
    pipeline = make(keys, ByCalloutAccount({}, override=two.app.public_key))
    _, decision, verdict = await judge(pipeline, one.server())
    assert decision.outcome is Outcome.ERROR
    assert decision.reason == f"no signing key for account {two.app.public_key}"
    assert not verdict.allowed
    assert verdict.response is not None  # a signed denial, by tenant one's key
    assert verdict.response.iss == one.signing_key.public_key


async def test_request_for_an_account_without_keys_gets_an_empty_denial() -> None:
    one, two, stranger = Tenant(), Tenant(), Tenant()
    keys = SigningKeys.combine(one.keys(), two.keys())
    stranger_keys = stranger.keys()
    keys_without_xkey = SigningKeys.combine(
        SigningKeys.operator(one.callout, accounts={one.app.public_key: one.app}),
        SigningKeys.operator(two.callout, accounts={two.app.public_key: two.app}),
    )
    server = FakeServer.for_keys(SigningKeys.operator(stranger.callout, xkey=None))
    pipeline = make(keys_without_xkey, ByCalloutAccount({}))
    _, decision, verdict = await judge(pipeline, server)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reply == b""
    assert one.callout.public_key in decision.reason
    assert two.callout.public_key in decision.reason
    assert not verdict.allowed
    # Encrypted for an xkey we do not hold: cannot even be opened.
    _, decision, _ = await judge(make(keys, ByCalloutAccount({})), stranger.server())
    assert decision.outcome is Outcome.REJECTED
    assert "cannot decrypt" in decision.reason
    assert stranger_keys.xkey is not None
    assert stranger_keys.xkey.public_key not in decision.reason


async def test_request_encrypted_for_another_accounts_xkey_is_refused() -> None:
    one, two = Tenant(), Tenant()
    keys = SigningKeys.combine(one.keys(), two.keys())
    pipeline = make(keys, ByCalloutAccount({two.callout.public_key: two.app.public_key}))
    # A server asking for tenant two but encrypting for tenant one's xkey: misconfigured.
    server = two.server(xkey=one.xkey.public_key)
    _, decision, verdict = await judge(pipeline, server)
    assert decision.outcome is Outcome.REJECTED
    assert "of another callout account" in decision.reason
    assert not verdict.allowed


async def test_config_mode_issuer_change_during_a_rolling_restart() -> None:
    old, new = KeyPair.create_account(), KeyPair.create_account()
    keys = SigningKeys.combine(SigningKeys(old), SigningKeys(new))
    pipeline = make(keys, ByCalloutAccount({}, override="APP"))
    for issuer in (old, new):  # servers still on the old issuer, and already on the new one
        server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
        _, _, verdict = await judge(pipeline, server)
        assert verdict.allowed, verdict.reason
        assert verdict.user is not None
        assert verdict.user.iss == issuer.public_key


def test_combine_and_select() -> None:
    one, two = Tenant(), Tenant()
    a, b = one.keys(), two.keys()
    keys = SigningKeys.combine(a, b)
    assert keys.members == (a, b)
    assert keys.select(one.callout.public_key) is a
    assert keys.select(two.callout.public_key) is b
    assert keys.select(KeyPair.create_account().public_key) is None
    assert a.select(one.callout.public_key) is a
    assert a.select(two.callout.public_key) is None
    assert a.members == (a,)
    assert set(keys.xkeys) == {one.xkey, two.xkey}
    assert keys.callout_account == one.callout.public_key  # the first keys describe it
    assert SigningKeys.combine(a) is a
    assert SigningKeys.combine(keys, SigningKeys(KeyPair.create_account())).members[:2] == (a, b)
    text = repr(keys)
    assert one.callout.public_key in text
    assert two.callout.public_key in text
    assert one.signing_key.seed not in text
    with pytest.raises(ConfigurationError, match="two SigningKeys"):
        SigningKeys.combine(a, one.keys())
    with pytest.raises(ConfigurationError, match="at least one"):
        SigningKeys.combine()
    with pytest.raises(ConfigurationError, match="combine SigningKeys"):
        SigningKeys.combine(a, KeyPair.create_account())  # type: ignore[arg-type]


async def test_one_container_serves_several_brokers() -> None:
    one, two = Tenant(), Tenant()
    placement = {
        one.callout.public_key: one.app.public_key,
        two.callout.public_key: two.app.public_key,
    }
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(
            keys=SigningKeys.combine(one.keys(), two.keys()),
            lookup=Lookup(),
            permissions=ByCalloutAccount(placement),
        ),
    )
    brokers = [NatsBroker(), NatsBroker()]  # in production: one per callout account's login
    for broker in brokers:
        broker.include_router(callout_router(container))
    async with TestNatsBroker(brokers[0]) as first, TestNatsBroker(brokers[1]) as second:
        for tenant, broker in ((one, first), (two, second)):
            verdict = await tenant.server().login(broker, user="ann", password="ann-pw")
            assert verdict.allowed, verdict.reason
            assert verdict.account == tenant.app.public_key
    assert await container.get(CalloutPipeline) is await container.get(CalloutPipeline)
    await container.close()


# --- xkey rotation --------------------------------------------------------------------


async def test_requests_for_either_xkey_are_opened_and_sealed_with_that_key() -> None:
    issuer, current, following = KeyPair.create_account(), XKeyPair.generate(), XKeyPair.generate()
    keys = SigningKeys(issuer, xkey=current, next_xkey=following)
    assert keys.xkeys == (current, following)
    pipeline = make(keys, ByCalloutAccount({}, override="APP"))
    for xkey in (current, following, current):
        server = FakeServer.config_mode(issuer.public_key, xkey=xkey.public_key)
        _, decision, verdict = await judge(pipeline, server)
        # The server opens the reply with the key it encrypted for: a reply sealed
        # with the other key would be refused ("could not decrypt input").
        assert verdict.allowed, verdict.reason
        assert verdict.encrypted
        assert decision.reply.startswith(b"xkv1")


async def test_rotate_then_retire_the_old_xkey() -> None:
    issuer, old, new = KeyPair.create_account(), XKeyPair.generate(), XKeyPair.generate()
    keys = SigningKeys(issuer, xkey=old, next_xkey=new)
    pipeline = make(keys, ByCalloutAccount({}, override="APP"))
    old_server = FakeServer.config_mode(issuer.public_key, xkey=old.public_key)
    new_server = FakeServer.config_mode(issuer.public_key, xkey=new.public_key)
    keys.rotate()
    assert (keys.xkey, keys.next_xkey) == (new, old)
    for server in (old_server, new_server):  # a server that has not seen the update yet
        _, _, verdict = await judge(pipeline, server)
        assert verdict.allowed, verdict.reason
    assert FakeServer.for_keys(keys).service_xkey == new.public_key
    keys.retire()
    assert keys.xkeys == (new,)
    _, decision, verdict = await judge(pipeline, old_server)
    assert decision.outcome is Outcome.REJECTED
    assert not verdict.allowed
    _, _, verdict = await judge(pipeline, new_server)
    assert verdict.allowed, verdict.reason


# --- signing key rotation ----------------------------------------------------------------


async def test_rotate_the_callout_accounts_signing_key() -> None:
    tenant = Tenant()
    following = KeyPair.create_account()
    keys = SigningKeys.operator(
        tenant.callout.public_key,
        signing_key=tenant.signing_key,
        next_signing_key=following,
        accounts={tenant.app.public_key: tenant.app},
    )
    assert keys.next_signing_key is following
    # Users placed into the callout account itself (strict mode refuses that) are
    # signed by its signing key too.
    pipeline = make(
        keys,
        ByCalloutAccount({}, override=tenant.callout.public_key),
        settings=CalloutSettings(strict=False),
    )
    both = [tenant.signing_key.public_key, following.public_key]
    server = FakeServer.operator_mode(
        tenant.callout.public_key,
        accounts={tenant.callout.public_key: both, tenant.app.public_key: []},
        allowed_accounts=[tenant.app.public_key],
    )
    _, _, verdict = await judge(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.response is not None
    assert verdict.response.iss == tenant.signing_key.public_key

    keys.rotate()
    _, _, verdict = await judge(pipeline, server)
    assert verdict.allowed, verdict.reason
    assert verdict.response is not None
    assert verdict.user is not None
    assert verdict.response.iss == verdict.user.iss == following.public_key
    assert verdict.user.nats.issuer_account == tenant.callout.public_key
    assert keys.response_signer.key is following
    assert keys.user_signer(tenant.callout.public_key) == keys.response_signer

    # The old key is gone from the account JWT: a service still signing with it is refused.
    only_new = FakeServer.operator_mode(
        tenant.callout.public_key,
        accounts={tenant.callout.public_key: [following.public_key], tenant.app.public_key: []},
        allowed_accounts=[tenant.app.public_key],
    )
    keys.rotate()  # back to the old key
    _, _, verdict = await judge(pipeline, only_new)
    assert not verdict.allowed
    assert verdict.reason == "auth callout signing key is unknown"
    keys.rotate()
    keys.retire()
    assert keys.next_signing_key is None
    keys.rotate()  # nothing to rotate to: no change
    _, _, verdict = await judge(pipeline, only_new)
    assert verdict.allowed, verdict.reason


async def test_a_request_in_flight_keeps_the_keys_it_started_with() -> None:
    tenant = Tenant()
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    keys = tenant.keys()
    pipeline = make(
        keys, ByCalloutAccount({tenant.callout.public_key: tenant.app.public_key}), lookup
    )
    server = tenant.server()
    minted = server.request(user="alice", password="alice-pw", now=T)
    pending = asyncio.ensure_future(pipeline.decide(minted.body, minted.server_xkey))
    await asyncio.sleep(0.01)
    # Replaced while the lookup waits: the request was opened with the old xkey, so
    # it must be answered with it (and signed with the old keys) or the server fails.
    pipeline.keys = SigningKeys.operator(
        tenant.callout.public_key, signing_key=KeyPair.create_account(), xkey=XKeyPair.generate()
    )
    lookup.gate.set()
    decision = await pending
    verdict = server.check(minted, decision.reply, now=T)
    assert verdict.allowed, verdict.reason
    assert verdict.response is not None
    assert verdict.response.iss == tenant.signing_key.public_key


def test_rotation_repr_and_external_flag() -> None:
    tenant = Tenant()

    class Kms:
        public_key = KeyPair.create_account().public_key

        async def sign(self, data: bytes) -> bytes:
            raise NotImplementedError

    keys = SigningKeys.operator(
        tenant.callout.public_key,
        signing_key=tenant.signing_key,
        next_signing_key=Kms(),
        xkey=tenant.xkey,
        next_xkey=XKeyPair.generate(),
    )
    assert keys.external  # the next key counts: it may sign after rotate()
    assert "rotating" in repr(keys)
    assert "xkeys=[" in repr(keys)
    keys.retire()
    assert not keys.external
    assert "rotating" not in repr(keys)
