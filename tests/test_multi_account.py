"""Several callout accounts in one pipeline, and key rotation, without a broker.

A ``Keyring`` answers each request with the keys of the account it was sent for
(the signed request ``sub``); its ``next_keys``, ``rotate()`` and ``retire()``
change keys without a refused login.
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
from faststream_callout.core import Keyring, keyring_from_env, signing_keys_from_env
from faststream_callout.core.errors import SignerError
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

    def keys(self, signing_key: KeyPair | None = None, xkey: XKeyPair | None = None) -> SigningKeys:
        """Its keys; with ``signing_key`` or ``xkey`` given, the keys to rotate to."""
        return SigningKeys.operator(
            self.callout.public_key,
            signing_key=signing_key or self.signing_key,
            accounts={self.app.public_key: self.app},
            xkey=xkey or self.xkey,
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
    keys: SigningKeys | Keyring,
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
    keys = Keyring(one.keys(), two.keys())
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
    keys = Keyring(one.keys(), two.keys())
    pipeline = make(keys, ByCalloutAccount({}, override=two.app.public_key))
    _, decision, verdict = await judge(pipeline, one.server())
    assert decision.outcome is Outcome.ERROR
    assert decision.reason == f"no signing key for account {two.app.public_key}"
    assert not verdict.allowed
    assert verdict.response is not None  # a signed denial, by tenant one's key
    assert verdict.response.iss == one.signing_key.public_key


async def test_request_for_an_account_without_keys_gets_an_empty_denial() -> None:
    one, two, stranger = Tenant(), Tenant(), Tenant()
    keys = Keyring(one.keys(), two.keys())
    stranger_keys = stranger.keys()
    keys_without_xkey = Keyring(
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
    keys = Keyring(one.keys(), two.keys())
    pipeline = make(keys, ByCalloutAccount({two.callout.public_key: two.app.public_key}))
    # A server asking for tenant two but encrypting for tenant one's xkey: misconfigured.
    server = two.server(xkey=one.xkey.public_key)
    _, decision, verdict = await judge(pipeline, server)
    assert decision.outcome is Outcome.REJECTED
    assert "of another callout account" in decision.reason
    assert not verdict.allowed


async def test_request_encrypted_for_another_accounts_next_xkey_is_refused() -> None:
    one, two = Tenant(), Tenant()
    following = XKeyPair.generate()
    keys = Keyring(one.keys(), two.keys(), next_keys=[one.keys(xkey=following)])
    placement = {
        one.callout.public_key: one.app.public_key,
        two.callout.public_key: two.app.public_key,
    }
    pipeline = make(keys, ByCalloutAccount(placement))
    _, decision, _ = await judge(pipeline, two.server(xkey=following.public_key))
    assert decision.outcome is Outcome.REJECTED
    assert "of another callout account" in decision.reason
    # Its own account's server, already on the next xkey: opened and sealed with it.
    _, _, verdict = await judge(pipeline, one.server(xkey=following.public_key))
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted


async def test_config_mode_issuer_change_during_a_rolling_restart() -> None:
    old, new = KeyPair.create_account(), KeyPair.create_account()
    keys = Keyring(SigningKeys(old), SigningKeys(new))
    pipeline = make(keys, ByCalloutAccount({}, override="APP"))
    for issuer in (old, new):  # servers still on the old issuer, and already on the new one
        server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
        _, _, verdict = await judge(pipeline, server)
        assert verdict.allowed, verdict.reason
        assert verdict.user is not None
        assert verdict.user.iss == issuer.public_key


def test_keyring_select_and_the_keys_of_one_account() -> None:
    one, two = Tenant(), Tenant()
    a, b = one.keys(), two.keys()
    keys = Keyring(a, b)
    assert keys.current == (a, b)
    assert keys.next_keys == ()
    assert keys.callout_accounts == (one.callout.public_key, two.callout.public_key)
    selected = keys.select(one.callout.public_key)
    assert selected is not None
    assert selected.signing is a
    assert selected.xkeys == (one.xkey,)
    assert keys.select(two.callout.public_key) == (b, (two.xkey,))
    assert keys.select(KeyPair.create_account().public_key) is None
    # SigningKeys alone answer like a keyring of their one account.
    assert a.select(one.callout.public_key) == (a, (one.xkey,))
    assert a.select(two.callout.public_key) is None
    assert a.callout_accounts == (one.callout.public_key,)
    assert a.xkeys == (one.xkey,)
    assert keys.xkeys == (one.xkey, two.xkey)
    assert Keyring(a).current == (a,)
    assert Keyring(*keys.current, SigningKeys(KeyPair.create_account())).current[:2] == (a, b)
    text = repr(keys)
    assert one.callout.public_key in text
    assert two.callout.public_key in text
    assert one.signing_key.seed not in text


def test_keyring_refuses_what_it_could_not_serve() -> None:
    one, two = Tenant(), Tenant()
    a = one.keys()
    with pytest.raises(ConfigurationError, match=r"two SigningKeys .* next_keys"):
        Keyring(a, one.keys())
    with pytest.raises(ConfigurationError, match="at least one"):
        Keyring()
    with pytest.raises(ConfigurationError, match="holds SigningKeys, not KeyPair"):
        Keyring(a, KeyPair.create_account())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no current keys"):
        Keyring(a, next_keys=[two.keys()])
    with pytest.raises(ConfigurationError, match="two next SigningKeys"):
        Keyring(a, next_keys=[one.keys(xkey=XKeyPair.generate()), one.keys()])
    issuer = KeyPair.create_account()
    with pytest.raises(ConfigurationError, match="operator mode, the current ones for config"):
        Keyring(SigningKeys(issuer), next_keys=[SigningKeys.operator(issuer)])
    keys = Keyring(a)
    stranger = KeyPair.create_account().public_key
    for change in (keys.rotate, keys.retire):
        with pytest.raises(ConfigurationError, match=f"no keys for callout account {stranger}"):
            change(stranger)


async def test_one_container_serves_several_brokers() -> None:
    one, two = Tenant(), Tenant()
    placement = {
        one.callout.public_key: one.app.public_key,
        two.callout.public_key: two.app.public_key,
    }
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(
            keys=Keyring(one.keys(), two.keys()),
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


def rotating_xkeys(
    issuer: KeyPair, current: XKeyPair, following: XKeyPair
) -> tuple[Keyring, SigningKeys, SigningKeys]:
    now, then = SigningKeys(issuer, xkey=current), SigningKeys(issuer, xkey=following)
    return Keyring(now, next_keys=[then]), now, then


async def test_requests_for_either_xkey_are_opened_and_sealed_with_that_key() -> None:
    issuer, current, following = KeyPair.create_account(), XKeyPair.generate(), XKeyPair.generate()
    keys, _, _ = rotating_xkeys(issuer, current, following)
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
    keys, old_keys, new_keys = rotating_xkeys(issuer, old, new)
    pipeline = make(keys, ByCalloutAccount({}, override="APP"))
    old_server = FakeServer.config_mode(issuer.public_key, xkey=old.public_key)
    new_server = FakeServer.config_mode(issuer.public_key, xkey=new.public_key)
    keys.rotate()
    assert (keys.current, keys.next_keys) == ((new_keys,), (old_keys,))
    assert keys.xkeys == (new, old)
    for server in (old_server, new_server):  # a server that has not seen the update yet
        _, _, verdict = await judge(pipeline, server)
        assert verdict.allowed, verdict.reason
    assert FakeServer.for_keys(keys.current[0]).service_xkey == new.public_key
    keys.retire()
    assert keys.xkeys == (new,)
    assert keys.next_keys == ()
    _, decision, verdict = await judge(pipeline, old_server)
    assert decision.outcome is Outcome.REJECTED
    assert not verdict.allowed
    _, _, verdict = await judge(pipeline, new_server)
    assert verdict.allowed, verdict.reason


async def test_rotate_one_account_of_several() -> None:
    one, two = Tenant(), Tenant()
    one_next, two_next = XKeyPair.generate(), XKeyPair.generate()
    keys = Keyring(
        one.keys(), two.keys(), next_keys=[one.keys(xkey=one_next), two.keys(xkey=two_next)]
    )
    assert keys.xkeys == (one.xkey, one_next, two.xkey, two_next)
    keys.rotate(one.callout.public_key)
    assert [k.xkey for k in keys.current] == [one_next, two.xkey]
    keys.retire(two.callout.public_key)
    assert keys.xkeys == (one_next, one.xkey, two.xkey)
    assert [k.xkey for k in keys.next_keys] == [one.xkey]


async def test_next_keys_that_keep_the_xkey_try_it_once() -> None:
    tenant = Tenant()
    opened: list[str] = []

    class Counting(XKeyPair):
        def open(self, sealed: bytes, sender: str) -> bytes:
            opened.append(self.public_key)
            return super().open(sealed, sender)

    xkey = Counting.generate()
    stranger = XKeyPair.generate()
    keys = Keyring(
        tenant.keys(xkey=xkey),
        next_keys=[tenant.keys(signing_key=KeyPair.create_account(), xkey=xkey)],
    )
    assert keys.xkeys == (xkey,)
    pipeline = make(keys, ByCalloutAccount({tenant.callout.public_key: tenant.app.public_key}))
    _, decision, _ = await judge(pipeline, tenant.server(xkey=stranger.public_key))
    assert decision.outcome is Outcome.REJECTED
    assert opened == [xkey.public_key]  # tried once, not once per keys holding it


# --- signing key rotation ----------------------------------------------------------------


async def test_rotate_the_callout_accounts_signing_key() -> None:
    tenant = Tenant()
    following = KeyPair.create_account()
    keys = Keyring(
        SigningKeys.operator(
            tenant.callout.public_key,
            signing_key=tenant.signing_key,
            accounts={tenant.app.public_key: tenant.app},
        ),
        next_keys=[
            SigningKeys.operator(
                tenant.callout.public_key,
                signing_key=following,
                accounts={tenant.app.public_key: tenant.app},
            )
        ],
    )
    [upcoming] = keys.next_keys
    assert upcoming.response_signer.key is following
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
    [current] = keys.current
    assert current.response_signer.key is following
    assert current.user_jwt_signer(tenant.callout.public_key) == current.response_signer

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
    assert keys.next_keys == ()
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


async def test_a_request_in_flight_during_rotate_and_retire_keeps_its_keys() -> None:
    tenant = Tenant()
    following = tenant.keys(signing_key=KeyPair.create_account(), xkey=XKeyPair.generate())
    keys = Keyring(tenant.keys(), next_keys=[following])
    lookup = Lookup()
    lookup.gate = asyncio.Event()
    pipeline = make(
        keys, ByCalloutAccount({tenant.callout.public_key: tenant.app.public_key}), lookup
    )
    server = tenant.server()  # knows only the old signing key and xkey
    minted = server.request(user="alice", password="alice-pw", now=T)
    pending = asyncio.ensure_future(pipeline.decide(minted.body, minted.server_xkey))
    await asyncio.sleep(0.01)
    keys.rotate()  # while the lookup waits: the old keys must still sign this reply
    keys.retire()
    lookup.gate.set()
    decision = await pending
    verdict = server.check(minted, decision.reply, now=T)
    assert verdict.allowed, verdict.reason
    assert verdict.response is not None
    assert verdict.response.iss == tenant.signing_key.public_key
    assert keys.current == (following,)


async def test_rotation_repr_external_flag_and_probe() -> None:
    tenant = Tenant()

    class Kms:
        public_key = KeyPair.create_account().public_key

        async def sign(self, data: bytes) -> bytes:
            raise ConnectionError("kms unreachable")

    next_xkey = XKeyPair.generate()
    keys = Keyring(
        tenant.keys(),
        next_keys=[
            SigningKeys.operator(tenant.callout.public_key, signing_key=Kms(), xkey=next_xkey)
        ],
    )
    text = repr(keys)
    assert "next_keys=[SigningKeys(operator" in text
    assert tenant.xkey.public_key in text
    assert next_xkey.public_key in text
    assert Kms.public_key in repr(keys.next_keys[0].response_signer)
    # Only the keys that sign now decide whether the pipeline waits for a signer.
    selected = keys.select(tenant.callout.public_key)
    assert selected is not None
    assert not selected.signing.external
    assert keys.next_keys[0].external
    # The next keys are probed too: they sign after rotate().
    with pytest.raises(SignerError, match=Kms.public_key):
        await keys.probe()
    keys.rotate()
    selected = keys.select(tenant.callout.public_key)
    assert selected is not None
    assert selected.signing.external
    keys.rotate()
    keys.retire()
    assert "next_keys" not in repr(keys)
    await keys.probe()


# --- rotation from the environment -----------------------------------------------------


def test_keyring_from_env_without_rotation_variables() -> None:
    issuer, xkey = KeyPair.create_account(), XKeyPair.generate()
    keys = keyring_from_env({"CALLOUT_ISSUER_SEED": issuer.seed, "CALLOUT_XKEY_SEED": xkey.seed})
    assert keys.callout_accounts == (issuer.public_key,)
    assert [k.xkey.public_key for k in keys.current if k.xkey] == [xkey.public_key]
    assert keys.next_keys == ()


def test_keyring_from_env_rotation_variables_are_next_keys() -> None:
    old, new = KeyPair.create_account(), KeyPair.create_account()
    old_xkey, new_xkey = XKeyPair.generate(), XKeyPair.generate()
    keys = keyring_from_env(
        {
            "CALLOUT_ISSUER_SEED": old.seed,
            "CALLOUT_NEXT_ISSUER_SEED": new.seed,
            "CALLOUT_XKEY_SEED": old_xkey.seed,
            "CALLOUT_NEXT_XKEY_SEED": new_xkey.seed,
        }
    )
    assert keys.callout_accounts == (old.public_key, new.public_key)
    assert [k.xkey.public_key for k in keys.current if k.xkey] == [old_xkey.public_key] * 2
    assert [k.xkey.public_key for k in keys.next_keys if k.xkey] == [new_xkey.public_key] * 2
    assert [x.public_key for x in keys.xkeys] == [old_xkey.public_key, new_xkey.public_key]


@pytest.mark.parametrize("variable", ["CALLOUT_NEXT_ISSUER_SEED", "CALLOUT_NEXT_XKEY_SEED"])
def test_signing_keys_from_env_refuses_rotation_variables(variable: str) -> None:
    # Ignoring them would refuse every login of the servers already on the next keys.
    seed = (KeyPair.create_account() if "ISSUER" in variable else XKeyPair.generate()).seed
    environ = {
        "CALLOUT_ISSUER_SEED": KeyPair.create_account().seed,
        "CALLOUT_XKEY_SEED": XKeyPair.generate().seed,
        variable: seed,
    }
    with pytest.raises(ConfigurationError, match=f"{variable} is set: .* keyring_from_env") as info:
        signing_keys_from_env(environ)
    assert seed not in str(info.value)
    assert keyring_from_env(environ).callout_accounts
