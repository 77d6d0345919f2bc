"""FirstMatch and ByCredential: composing lookups; NKeyLookup: nonce signatures."""

from __future__ import annotations

import base64
import secrets

import pytest
from batteries_support import make_request
from policies import FixedLookup

from faststream_callout import (
    CalloutPipeline,
    ConfigurationError,
    Denied,
    Identity,
    KeyPair,
    PolicyProvider,
    SigningKeys,
)
from faststream_callout.batteries import (
    ByCredential,
    FirstMatch,
    NKeyLookup,
    NotApplicable,
    PermissionSet,
    RoleBasedPermissions,
    presented_credentials,
)
from faststream_callout.batteries.nkey import decode_signature
from faststream_callout.protocol.claims import ClientTLS
from faststream_callout.testing import FakeServer

# -- FirstMatch -------------------------------------------------------------------------


async def test_first_match_passes_on_not_applicable():
    first = FixedLookup(NotApplicable("not mine"))
    second = FixedLookup(Identity("bob"), sync=True)
    third = FixedLookup(Identity("never"))
    identity = await FirstMatch(first, second, third).lookup(make_request(user="bob"))
    assert identity.name == "bob"
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


async def test_first_match_stops_at_a_definite_denial():
    later = FixedLookup(Identity("x"))
    with pytest.raises(Denied) as caught:
        await FirstMatch(FixedLookup(Denied("wrong password")), later).lookup(make_request())
    assert caught.value.reason == "wrong password"
    assert not isinstance(caught.value, NotApplicable)
    assert later.calls == 0


async def test_first_match_propagates_failures():
    later = FixedLookup(Identity("x"))
    with pytest.raises(RuntimeError):
        await FirstMatch(FixedLookup(RuntimeError("db down")), later).lookup(make_request())
    assert later.calls == 0


async def test_first_match_all_pass_is_not_applicable_and_nests():
    inner = FirstMatch(FixedLookup(NotApplicable("a")), FixedLookup(NotApplicable("b")))
    with pytest.raises(NotApplicable) as caught:
        await inner.lookup(make_request())
    assert caught.value.reason == "no lookup accepted the credentials: a; b"
    outer = FirstMatch(inner, FixedLookup(Identity("c")))
    assert (await outer.lookup(make_request())).name == "c"


def test_first_match_checks_its_arguments():
    with pytest.raises(ValueError, match="at least one"):
        FirstMatch()
    with pytest.raises(TypeError):
        FirstMatch(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FirstMatch(FixedLookup)  # type: ignore[arg-type]


def test_composites_are_identity_lookups_for_dishka():
    lookup = FirstMatch(FixedLookup(Identity("a")))
    PolicyProvider(lookup=lookup)
    PolicyProvider(lookup=ByCredential(password=lookup))
    assert "FirstMatch(FixedLookup(" in repr(lookup)


# -- ByCredential -----------------------------------------------------------------------


def tls_state() -> ClientTLS:
    return ClientTLS(version="1.3", verified_chains=[["-----BEGIN CERTIFICATE-----"]])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"user": "a", "password": "b"}, ["password"]),
        ({"token": "t"}, ["token"]),
        ({"nkey": "U", "sig": "s"}, ["nkey"]),
        ({"jwt": "e.y.j"}, ["jwt"]),
        ({"password": "b"}, ["password"]),
        ({"tls": tls_state(), "user": "a"}, ["password", "tls"]),
        ({"tls": ClientTLS(version="1.3")}, []),
        ({}, []),
    ],
)
def test_presented_credentials(options, expected):
    assert presented_credentials(make_request(**options)) == expected


async def test_by_credential_chooses_by_what_was_sent():
    table, oidc, nkeys, certs = (FixedLookup(Identity(n)) for n in ("table", "oidc", "nkey", "tls"))
    chooser = ByCredential(password=table, token=oidc, nkey=nkeys, tls=certs)
    assert (await chooser.lookup(make_request(user="a", password="b"))).name == "table"
    assert (await chooser.lookup(make_request(token="t"))).name == "oidc"
    assert (await chooser.lookup(make_request(nkey="U", sig="s"))).name == "nkey"
    assert (await chooser.lookup(make_request(tls=tls_state()))).name == "tls"
    # A TLS client that also sent a password: explicit credentials come first ...
    assert (await chooser.lookup(make_request(tls=tls_state(), user="a"))).name == "table"
    # ... unless the order says otherwise.
    tls_first = ByCredential(password=table, tls=certs, order=("tls", "password"))
    assert (await tls_first.lookup(make_request(tls=tls_state(), user="a"))).name == "tls"


async def test_by_credential_skips_kinds_without_a_lookup_and_denies_the_rest():
    chooser = ByCredential(token=FixedLookup(Identity("t")))
    assert (await chooser.lookup(make_request(token="x", user="u"))).name == "t"
    with pytest.raises(NotApplicable, match=r"no credentials of a supported kind \(token\)"):
        await chooser.lookup(make_request(user="u", password="p"))


async def test_by_credential_answer_is_final():
    with pytest.raises(NotApplicable, match="unknown user"):
        await ByCredential(password=FixedLookup(NotApplicable("unknown user"))).lookup(
            make_request(user="u")
        )


def test_by_credential_checks_its_arguments():
    with pytest.raises(ValueError, match="at least one"):
        ByCredential()
    with pytest.raises(ValueError, match="distinct"):
        ByCredential(token=FixedLookup(Identity("a")), order=("token", "token"))
    with pytest.raises(ValueError, match="not in order"):
        ByCredential(token=FixedLookup(Identity("a")), order=("password",))
    with pytest.raises(TypeError):
        ByCredential(token="nope")  # type: ignore[arg-type]
    assert repr(ByCredential(token=FixedLookup(Identity("a")))).startswith("ByCredential(token=")


# -- NKeyLookup -------------------------------------------------------------------------


def nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode().rstrip("=")


def signed(key: KeyPair, value: str, *, style: str = "std") -> str:
    signature = key.sign(value.encode())
    if style == "std":  # nats-py
        return base64.b64encode(signature).decode()
    return base64.urlsafe_b64encode(signature).decode().rstrip("=")  # Go clients


@pytest.fixture(scope="module")
def sensor() -> KeyPair:
    return KeyPair.create_user()


@pytest.fixture(scope="module")
def nkeys(sensor) -> NKeyLookup:
    return NKeyLookup({sensor.public_key: Identity("sensor-1", frozenset({"telemetry"}))})


@pytest.mark.parametrize("style", ["std", "url"])
async def test_nkey_signature_over_the_nonce(nkeys, sensor, style):
    n = nonce()
    request = make_request(nkey=sensor.public_key, sig=signed(sensor, n, style=style), nonce=n)
    identity = await nkeys.lookup(request)
    assert identity.name == "sensor-1"
    assert identity.groups == {"telemetry"}
    assert identity.attributes["nkey"] == sensor.public_key


async def test_nkey_signature_of_another_nonce_is_denied(nkeys, sensor):
    # A signature captured on one connection does not open another.
    request = make_request(nkey=sensor.public_key, sig=signed(sensor, nonce()), nonce=nonce())
    with pytest.raises(Denied, match="does not verify"):
        await nkeys.lookup(request)


async def test_nkey_signature_by_another_key_is_denied(nkeys, sensor):
    n = nonce()
    request = make_request(nkey=sensor.public_key, sig=signed(KeyPair.create_user(), n), nonce=n)
    with pytest.raises(Denied, match="does not verify"):
        await nkeys.lookup(request)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, "no nkey presented"),
        ({"nkey": "UABC", "sig": "x", "nonce": "n"}, "not a public user key"),
        ({"sig": "", "nonce": "n"}, "missing or malformed"),
        ({"sig": "!!!!", "nonce": "n"}, "missing or malformed"),
        ({"sig": base64.b64encode(b"x" * 63).decode(), "nonce": "n"}, "missing or malformed"),
        ({"sig": "a-b+" * 22, "nonce": "n"}, "missing or malformed"),
        ({"sig": "x", "nonce": ""}, "no server nonce"),
    ],
)
async def test_nkey_malformed(nkeys, sensor, options, reason):
    options.setdefault("nkey", sensor.public_key)
    if reason == "no nkey presented":
        options.pop("nkey")
    with pytest.raises(Denied, match=reason):
        await nkeys.lookup(make_request(**options))


async def test_unknown_verified_nkey_is_not_applicable(nkeys):
    stranger = KeyPair.create_user()
    n = nonce()
    request = make_request(nkey=stranger.public_key, sig=signed(stranger, n), nonce=n)
    with pytest.raises(NotApplicable, match="unknown nkey"):
        await nkeys.lookup(request)


async def test_nkey_resolver_is_called_only_after_verification(sensor):
    asked: list[str] = []

    async def resolve(key: str) -> Identity | None:
        asked.append(key)
        return Identity("dynamic") if key == sensor.public_key else None

    lookup = NKeyLookup(resolve)
    with pytest.raises(Denied):
        await lookup.lookup(
            make_request(nkey=sensor.public_key, sig=signed(sensor, "a"), nonce="b")
        )
    assert asked == []
    n = nonce()
    identity = await lookup.lookup(
        make_request(nkey=sensor.public_key, sig=signed(sensor, n), nonce=n)
    )
    assert identity.name == "dynamic"
    assert asked == [sensor.public_key]


def test_decode_signature():
    raw = secrets.token_bytes(64)
    assert decode_signature(base64.b64encode(raw).decode()) == raw
    assert decode_signature(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert decode_signature(base64.urlsafe_b64encode(raw).decode()) == raw
    assert decode_signature("") is None
    assert decode_signature("A" * 1000) is None


def test_nkey_file(tmp_path, sensor):
    path = tmp_path / "nkeys.toml"
    path.write_text(
        f'[users.sensor-1]\nnkey = "{sensor.public_key}"\ngroups = ["telemetry"]\n'
        'attributes = { site = "berlin" }\n'
    )
    lookup = NKeyLookup.from_file(path)
    assert repr(lookup) == "NKeyLookup(1 keys)"
    path.write_text('[users.x]\nnkey = "SUAXYZ"\n')
    with pytest.raises(ConfigurationError, match=r"users\.x: nkey must be a public user nkey"):
        NKeyLookup.from_file(path)
    account = KeyPair.create_account().public_key
    with pytest.raises(ConfigurationError):
        NKeyLookup({account: Identity("a")})
    path.write_text(
        f'[users.a]\nnkey = "{sensor.public_key}"\n[users.b]\nnkey = "{sensor.public_key}"\n'
    )
    with pytest.raises(ConfigurationError, match="already used"):
        NKeyLookup.from_file(path)


# -- through the pipeline ---------------------------------------------------------------


async def test_nkey_login_through_the_pipeline(nkeys, sensor):
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    pipeline = CalloutPipeline(
        SigningKeys(issuer),
        FirstMatch(nkeys),
        RoleBasedPermissions({"telemetry": PermissionSet(pub=["telemetry.{user}"])}, account="APP"),
    )
    n = nonce()
    minted = server.request(nkey=sensor.public_key, sig=signed(sensor, n), nonce=n)
    verdict = server.check(minted, await pipeline(minted.body))
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.nats.pub.allow == ["telemetry.sensor-1"]
    minted = server.request(nkey=sensor.public_key, sig=signed(sensor, "other"), nonce=n)
    verdict = server.check(minted, await pipeline(minted.body))
    assert not verdict.allowed
    assert verdict.error == "nkey signature does not verify"


# -- Dishka: one line per battery --------------------------------------------------------


async def test_batteries_plug_into_dishka_in_one_line(tmp_path):
    from dishka import STRICT_VALIDATION, make_async_container
    from faststream.nats import NatsBroker, TestNatsBroker

    from faststream_callout import CalloutProvider, callout_router
    from faststream_callout.batteries import StaticTable
    from faststream_callout.core.throttle import NoThrottle

    users = tmp_path / "users.toml"
    users.write_text(
        '[users.alice]\npassword = "'
        + __import__("argon2").PasswordHasher(time_cost=1, memory_cost=1024).hash("pw")
        + '"\ngroups = ["chat"]\n'
    )
    roles = tmp_path / "roles.toml"
    roles.write_text('account = "APP"\n[roles.chat]\npub = ["chat.{user}.>"]\nsub = ["chat.>"]\n')
    issuer = KeyPair.create_account()
    table = StaticTable.from_file(users)
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(
            keys=SigningKeys(issuer),
            lookup=table,
            permissions=RoleBasedPermissions.from_file(roles),
        ),
        PolicyProvider(throttle=NoThrottle(), override=True),
        validation_settings=STRICT_VALIDATION,
    )
    broker = NatsBroker()
    broker.include_router(callout_router(container))
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    try:
        async with TestNatsBroker(broker) as test_broker:
            allowed = await server.login(test_broker, user="alice", password="pw", timeout=5)
            refused = await server.login(test_broker, user="alice", password="no", timeout=5)
    finally:
        await container.close()
        table.close()
    assert allowed.allowed, allowed.reason
    assert allowed.user is not None
    assert allowed.user.nats.pub.allow == ["chat.alice.>"]
    assert allowed.user.exp > 0  # the default TTL
    assert not refused.allowed
    assert refused.error == "wrong password"
