"""Dishka providers: graph validation, PolicyProvider, overrides, settings, scopes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from dishka import (
    STRICT_VALIDATION,
    AsyncContainer,
    Provider,
    Scope,
    make_async_container,
    provide,
)
from dishka.exceptions import (
    GraphMissingFactoryError,
    ImplicitOverrideDetectedError,
    NothingOverriddenError,
)
from policies import FixedGrant, FixedLookup

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    CalloutSettings,
    Denied,
    Grant,
    Identity,
    IdentityLookup,
    KeyPair,
    Permission,
    PermissionBuilder,
    PolicyProvider,
    SigningKeys,
)
from faststream_callout.core import Keyring
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer, Verdict

# -- ports ------------------------------------------------------------------------


class ProductionLookup:
    """Only 'alice' with the right password."""

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "alice" and opts.password == "alice-pw":
            return Identity("alice")
        raise Denied("production says no")


class FakeLookup:
    """Tests: anyone is who they say they are."""

    def lookup(self, request: AuthorizationRequest) -> Identity:
        return Identity(request.connect_opts.user, attributes={"source": "fake"})


class SyncLookup:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        if request.connect_opts.password != "pw":
            raise Denied("sync says no")
        return Identity(request.connect_opts.user, groups=frozenset({"sync"}))


class AsyncLookup:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        await asyncio.sleep(0)
        if request.connect_opts.password != "pw":
            raise Denied("async says no")
        return Identity(request.connect_opts.user, groups=frozenset({"async"}))


class SyncPermissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        group = next(iter(identity.groups), "none")
        return Grant(account="APP", pub=Permission(allow=[f"sync.{group}.{identity.name}"]))


class AsyncPermissions:
    async def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        await asyncio.sleep(0)
        group = next(iter(identity.groups), "none")
        return Grant(account="APP", pub=Permission(allow=[f"async.{group}.{identity.name}"]))


# A grant nats-server accepts but strict mode refuses (wildcard inside a token).
SLOPPY = FixedGrant(pub=["orders*"])


class ProductionPolicy(Provider):
    scope = Scope.APP
    lookup = provide(ProductionLookup, provides=IdentityLookup)
    permissions = provide(SyncPermissions, provides=PermissionBuilder)


class TestPolicy(Provider):
    __test__ = False  # not a pytest class
    scope = Scope.APP
    lookup = provide(FakeLookup, provides=IdentityLookup, override=True)


def keys_provider(keys: SigningKeys) -> Provider:
    provider = Provider(scope=Scope.APP)
    provider.provide(lambda: keys, provides=SigningKeys)
    return provider


async def login(container: AsyncContainer, server: FakeServer, **connect: str) -> Verdict:
    pipeline = await container.get(CalloutPipeline)
    minted = server.request(**connect)
    return server.check(minted, await pipeline(minted.body, minted.server_xkey))


@pytest.fixture
def server(issuer: KeyPair) -> FakeServer:
    return FakeServer.config_mode(issuer.public_key, accounts=["APP"])


# -- a missing port fails at build time -------------------------------------------------


PORT_NAMES = {
    SigningKeys: "SigningKeys",
    IdentityLookup: "IdentityLookup",
    PermissionBuilder: "PermissionBuilder",
}


@pytest.mark.parametrize("missing", list(PORT_NAMES), ids=list(PORT_NAMES.values()))
def test_missing_port_fails_when_the_container_is_built(signing_keys, missing):
    given = {
        SigningKeys: ("keys", signing_keys),
        IdentityLookup: ("lookup", FakeLookup()),
        PermissionBuilder: ("permissions", SyncPermissions()),
    }
    kwargs = dict(value for port, value in given.items() if port is not missing)
    with pytest.raises(GraphMissingFactoryError) as caught:
        make_async_container(CalloutProvider(), PolicyProvider(**kwargs))
    message = str(caught.value)
    assert f"Cannot find factory for ({PORT_NAMES[missing]}," in message
    # The dependent is named too: the pipeline, or the default keyring of the keys.
    assert ("CalloutProvider.keyring" if missing is SigningKeys else "CalloutPipeline") in message
    for port, name in PORT_NAMES.items():
        if port is not missing:
            assert f"({name}," not in message


def test_missing_keys_with_a_provider_class_fails_at_build():
    with pytest.raises(GraphMissingFactoryError, match="SigningKeys"):
        make_async_container(CalloutProvider(), ProductionPolicy())


def test_missing_keys_fails_at_build_under_strict_validation():
    with pytest.raises(GraphMissingFactoryError, match="SigningKeys"):
        make_async_container(
            CalloutProvider(), ProductionPolicy(), validation_settings=STRICT_VALIDATION
        )


def test_request_scoped_port_fails_at_build(signing_keys):
    # Ports are APP singletons (the pipeline is APP-scoped): a REQUEST-scoped lookup
    # cannot feed it, and that is found when the container is built.
    class PerRequest(Provider):
        lookup = provide(FakeLookup, provides=IdentityLookup, scope=Scope.REQUEST)

    with pytest.raises(GraphMissingFactoryError, match="IdentityLookup"):
        make_async_container(
            CalloutProvider(),
            PerRequest(),
            PolicyProvider(keys=signing_keys, permissions=SyncPermissions()),
        )


def test_callout_provider_alone_names_a_missing_port():
    with pytest.raises(GraphMissingFactoryError) as caught:
        make_async_container(CalloutProvider())
    assert any(name in str(caught.value) for name in PORT_NAMES.values())


# -- PolicyProvider -------------------------------------------------------------------


async def test_policy_provider_supplies_everything(signing_keys, server):
    lookup, permissions = SyncLookup(), SyncPermissions()
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, lookup=lookup, permissions=permissions),
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        assert isinstance(pipeline.keys, Keyring)  # the default: a keyring of these keys
        assert pipeline.keys.current == (signing_keys,)
        assert pipeline.lookup is lookup
        assert pipeline.permissions is permissions
        assert pipeline.settings == CalloutSettings()
        assert await container.get(IdentityLookup) is lookup
        allowed = await login(container, server, user="carol", password="pw")
        denied = await login(container, server, user="carol", password="no")
    finally:
        await container.close()
    assert allowed.allowed, allowed.reason
    assert allowed.user is not None
    assert allowed.user.nats.pub.allow == ["sync.sync.carol"]
    assert not denied.allowed
    assert not denied.invalid
    assert denied.error == "sync says no"


async def test_policy_provider_works_under_strict_validation(signing_keys, server):
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, lookup=SyncLookup(), permissions=SyncPermissions()),
        validation_settings=STRICT_VALIDATION,
    )
    try:
        verdict = await login(container, server, user="dave", password="pw")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason


async def test_policy_provider_split_across_providers(signing_keys, server):
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys),
        PolicyProvider(lookup=SyncLookup()),
        PolicyProvider(permissions=SyncPermissions()),
        validation_settings=STRICT_VALIDATION,
    )
    try:
        verdict = await login(container, server, user="erin", password="pw")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason


# -- a keyring: several callout accounts, rotation -----------------------------------------


async def test_policy_provider_takes_a_keyring(signing_keys, issuer):
    other = KeyPair.create_account()
    keyring = Keyring(signing_keys, SigningKeys(other))
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keyring, lookup=SyncLookup(), permissions=SyncPermissions()),
    )
    try:
        assert (await container.get(CalloutPipeline)).keys is keyring
        for key in (issuer, other):  # each issuer's servers are answered with its own key
            server = FakeServer.config_mode(key.public_key, accounts=["APP"])
            verdict = await login(container, server, user="fay", password="pw")
            assert verdict.allowed, verdict.reason
            assert verdict.response is not None
            assert verdict.response.iss == key.public_key
    finally:
        await container.close()


@pytest.mark.parametrize("as_provider", [False, True], ids=["PolicyProvider", "Provider"])
async def test_a_keyring_replaces_the_default_under_strict_validation(
    signing_keys, server, as_provider
):
    keyring = Keyring(signing_keys)
    if as_provider:
        keys = Provider(scope=Scope.APP)
        keys.provide(lambda: keyring, provides=Keyring, override=True)
    else:
        keys = PolicyProvider(keys=keyring, override=True)
    container = make_async_container(
        CalloutProvider(),
        keys,
        PolicyProvider(lookup=SyncLookup(), permissions=SyncPermissions()),
        validation_settings=STRICT_VALIDATION,
    )
    try:
        assert (await container.get(CalloutPipeline)).keys is keyring
        verdict = await login(container, server, user="gus", password="pw")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason
    with pytest.raises(ImplicitOverrideDetectedError, match="Keyring"):
        make_async_container(
            CalloutProvider(),
            PolicyProvider(keys=keyring, lookup=SyncLookup(), permissions=SyncPermissions()),
            validation_settings=STRICT_VALIDATION,
        )


# -- overrides per environment ---------------------------------------------------------------


@pytest.mark.parametrize("validation", [None, STRICT_VALIDATION], ids=["default", "strict"])
async def test_test_provider_overrides_production_lookup(signing_keys, server, validation):
    extra = {} if validation is None else {"validation_settings": validation}
    container = make_async_container(
        CalloutProvider(),
        ProductionPolicy(),
        keys_provider(signing_keys),
        TestPolicy(),
        **extra,
    )
    try:
        pipeline = await container.get(CalloutPipeline)
        assert isinstance(pipeline.lookup, FakeLookup)
        assert isinstance(pipeline.permissions, SyncPermissions)  # not overridden: kept
        verdict = await login(container, server, user="zed", password="anything")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason  # production would have said no
    assert verdict.user is not None
    assert verdict.user.name == "zed"


@pytest.mark.parametrize("validation", [None, STRICT_VALIDATION], ids=["default", "strict"])
async def test_policy_provider_override_replaces_lookup(signing_keys, server, validation):
    fake = FakeLookup()
    extra = {} if validation is None else {"validation_settings": validation}
    container = make_async_container(
        CalloutProvider(),
        ProductionPolicy(),
        PolicyProvider(keys=signing_keys),
        PolicyProvider(lookup=fake, override=True),
        **extra,
    )
    try:
        assert (await container.get(CalloutPipeline)).lookup is fake
        verdict = await login(container, server, user="zed", password="anything")
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason


def test_strict_validation_refuses_an_override_without_flag(signing_keys):
    with pytest.raises(ImplicitOverrideDetectedError, match="IdentityLookup"):
        make_async_container(
            CalloutProvider(),
            ProductionPolicy(),
            PolicyProvider(keys=signing_keys),
            PolicyProvider(lookup=FakeLookup()),
            validation_settings=STRICT_VALIDATION,
        )


def test_strict_validation_refuses_a_settings_override_without_flag(signing_keys):
    with pytest.raises(ImplicitOverrideDetectedError, match="CalloutSettings"):
        make_async_container(
            CalloutProvider(),
            ProductionPolicy(),
            PolicyProvider(keys=signing_keys, settings=CalloutSettings(strict=False)),
            validation_settings=STRICT_VALIDATION,
        )


def test_policy_provider_override_flag_is_passed_on(signing_keys):
    # STRICT_VALIDATION also refuses override=True where there is nothing to override:
    # proves PolicyProvider really marks its factories.
    with pytest.raises(NothingOverriddenError, match="SigningKeys"):
        make_async_container(
            CalloutProvider(),
            ProductionPolicy(),
            PolicyProvider(keys=signing_keys, override=True),
            validation_settings=STRICT_VALIDATION,
        )


# -- settings reach the pipeline --------------------------------------------------------------


@pytest.mark.parametrize("validation", [None, STRICT_VALIDATION], ids=["default", "strict"])
async def test_strict_false_settings_reach_the_pipeline(signing_keys, server, validation):
    extra = {} if validation is None else {"validation_settings": validation}
    base = (
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, lookup=FakeLookup(), permissions=SLOPPY),
    )
    strict = make_async_container(*base)
    lenient = make_async_container(
        *base, PolicyProvider(settings=CalloutSettings(strict=False), override=True), **extra
    )
    try:
        refused = await login(strict, server, user="u", password="p")
        allowed = await login(lenient, server, user="u", password="p")
        assert (await lenient.get(CalloutPipeline)).settings.strict is False
        assert (await lenient.get(CalloutSettings)).strict is False
    finally:
        await strict.close()
        await lenient.close()
    assert not refused.allowed
    assert not refused.invalid
    assert refused.error.startswith("invalid grant")
    assert allowed.allowed, allowed.reason
    assert allowed.user is not None
    assert allowed.user.nats.pub.allow == ["orders*"]


async def test_custom_error_reason_reaches_the_pipeline(signing_keys, server):
    class Settings(Provider):
        scope = Scope.APP

        @provide(override=True)
        def settings(self) -> CalloutSettings:
            return CalloutSettings(error_reason="try again later")

    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(
            keys=signing_keys,
            lookup=FixedLookup(RuntimeError("ldap timeout")),
            permissions=SyncPermissions(),
        ),
        Settings(),
        validation_settings=STRICT_VALIDATION,
    )
    try:
        verdict = await login(container, server, user="u", password="p")
    finally:
        await container.close()
    assert not verdict.allowed
    assert not verdict.invalid
    assert verdict.error == "try again later"


async def test_default_settings_without_override(signing_keys, server):
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(
            keys=signing_keys,
            lookup=FixedLookup(RuntimeError("ldap timeout")),
            permissions=SyncPermissions(),
        ),
    )
    try:
        assert await container.get(CalloutSettings) == CalloutSettings()
        verdict = await login(container, server, user="u", password="p")
    finally:
        await container.close()
    assert verdict.error == CalloutSettings().error_reason == "authorization service error"


# -- sync and async ports through the container ---------------------------------------------


@pytest.mark.parametrize("lookup_cls", [SyncLookup, AsyncLookup])
@pytest.mark.parametrize("permissions_cls", [SyncPermissions, AsyncPermissions])
async def test_sync_and_async_ports(signing_keys, server, lookup_cls, permissions_cls):
    class Ports(Provider):
        scope = Scope.APP
        lookup = provide(lookup_cls, provides=IdentityLookup)
        permissions = provide(permissions_cls, provides=PermissionBuilder)

    container = make_async_container(CalloutProvider(), Ports(), keys_provider(signing_keys))
    try:
        allowed = await login(container, server, user="frank", password="pw")
        denied = await login(container, server, user="frank", password="bad")
    finally:
        await container.close()
    group = "sync" if lookup_cls is SyncLookup else "async"
    prefix = "sync" if permissions_cls is SyncPermissions else "async"
    assert allowed.allowed, allowed.reason
    assert allowed.user is not None
    assert allowed.user.nats.pub.allow == [f"{prefix}.{group}.frank"]
    assert not denied.allowed
    assert not denied.invalid
    assert denied.error == f"{group} says no"


async def test_async_factories_and_finalizers(issuer, server):
    events: list[str] = []

    class Resources(Provider):
        scope = Scope.APP

        @provide
        async def keys(self) -> SigningKeys:
            await asyncio.sleep(0)  # e.g. read from a secret store
            events.append("keys")
            return SigningKeys(issuer)

        @provide
        async def lookup(self) -> AsyncIterator[IdentityLookup]:
            events.append("pool opened")
            yield AsyncLookup()
            events.append("pool closed")

        permissions = provide(AsyncPermissions, provides=PermissionBuilder)

    container = make_async_container(CalloutProvider(), Resources())
    try:
        verdict = await login(container, server, user="gina", password="pw")
        assert sorted(events) == ["keys", "pool opened"]
    finally:
        await container.close()
    assert verdict.allowed, verdict.reason
    assert events[-1] == "pool closed"


# -- scope -------------------------------------------------------------------------------


async def test_pipeline_is_app_scoped(signing_keys):
    builds = 0

    class CountingLookup(Provider):
        scope = Scope.APP

        @provide
        def lookup(self) -> IdentityLookup:
            nonlocal builds
            builds += 1
            return FakeLookup()

    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=signing_keys, permissions=SyncPermissions()),
        CountingLookup(),
    )
    try:
        first = await container.get(CalloutPipeline)
        second = await container.get(CalloutPipeline)
        async with container() as request_scope:
            third = await request_scope.get(CalloutPipeline)
        fourth = await container.get(CalloutPipeline)
    finally:
        await container.close()
    assert first is second is third is fourth
    assert builds == 1


async def test_separate_containers_get_separate_pipelines(signing_keys):
    def build() -> AsyncContainer:
        return make_async_container(
            CalloutProvider(),
            PolicyProvider(keys=signing_keys, lookup=FakeLookup(), permissions=SyncPermissions()),
        )

    one, two = build(), build()
    try:
        assert await one.get(CalloutPipeline) is not await two.get(CalloutPipeline)
    finally:
        await one.close()
        await two.close()


def test_policy_provider_rejects_swapped_or_uninstantiated_arguments():
    class Lookup:
        def lookup(self, request):
            raise AssertionError

    class Builder:
        def build(self, identity, request):
            raise AssertionError

    with pytest.raises(TypeError, match=r"lookup=.*IdentityLookup"):
        PolicyProvider(lookup=Builder())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"permissions=.*PermissionBuilder"):
        PolicyProvider(permissions=Lookup())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lookup=.*IdentityLookup"):
        PolicyProvider(lookup=Lookup)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"keys=.*SigningKeys"):
        PolicyProvider(keys=KeyPair.create_account())  # type: ignore[arg-type]
