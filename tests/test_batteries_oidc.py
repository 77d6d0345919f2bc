"""OIDCLookup and JWKSCache against a JWKS served on 127.0.0.1, with tokens signed here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import json
import ssl
import sys
import time
from typing import Any

import pytest
from batteries_support import JWKSServer, Pki, Signer, claims, jwks_server, make_request
from clocks import ManualClock

from faststream_callout import CalloutPipeline, ConfigurationError, Denied, KeyPair, SigningKeys
from faststream_callout.batteries import (
    EXPIRES_AT,
    NotApplicable,
    PermissionSet,
    RoleBasedPermissions,
)
from faststream_callout.batteries._http import FetchError, check_url, http_get
from faststream_callout.batteries.oidc import JWKSCache, OIDCLookup
from faststream_callout.testing import FakeServer

AUD = "nats"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


@pytest.fixture(scope="module")
def rsa() -> Signer:
    return Signer("RSA", "rsa-1")


@pytest.fixture(scope="module")
def ec() -> Signer:
    return Signer("EC", "ec-1")


@pytest.fixture(scope="module")
def ed() -> Signer:
    return Signer("OKP", "ed-1")


@pytest.fixture
def idp(rsa, ec, ed):
    with jwks_server(keys=[rsa.jwk, ec.jwk, ed.jwk]) as server:
        yield server


def lookup_for(idp: JWKSServer, **options: Any) -> OIDCLookup:
    options.setdefault("jwks_uri", idp.jwks_uri)
    options.setdefault("min_refresh_interval", 0.2)
    return OIDCLookup(issuer=idp.base, audience=AUD, **options)


async def denied(lookup: OIDCLookup, token: str, **request: Any) -> Denied:
    with pytest.raises(Denied) as caught:
        await lookup.lookup(make_request(token=token, **request))
    return caught.value


# -- valid tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["rsa", "ec", "ed"])
async def test_valid_tokens(idp, signer, request):
    key: Signer = request.getfixturevalue(signer)
    lookup = lookup_for(idp)
    body = claims(idp.base, groups=["chat", "ops"], email="alice@example.com")
    identity = await lookup.lookup(make_request(token=key.token(body)))
    assert identity.name == "alice"
    assert identity.groups == {"chat", "ops"}
    assert identity.attributes[EXPIRES_AT] == body["exp"]
    assert identity.attributes["issuer"] == idp.base
    assert identity.attributes["claims"]["email"] == "alice@example.com"


async def test_token_as_password_with_a_fixed_user(idp, rsa):
    lookup = lookup_for(idp, sources=("password",), password_user="bearer")
    token = rsa.token(claims(idp.base))
    identity = await lookup.lookup(make_request(user="bearer", password=token))
    assert identity.name == "alice"
    with pytest.raises(NotApplicable, match="no bearer token"):
        await lookup.lookup(make_request(user="alice", password=token))
    with pytest.raises(NotApplicable, match="no bearer token"):
        await lookup.lookup(make_request(token=token))  # token source not enabled


async def test_claims_mapping(idp, rsa):
    lookup = lookup_for(
        idp,
        name_claim="preferred_username",
        groups_claims=("realm_access.roles", "scope", "https://example.com/roles"),
        attribute_claims={"tenant": "org.id", "email": "email"},
        required_scopes={"nats"},
    )
    token = rsa.token(
        claims(
            idp.base,
            preferred_username="ally",
            realm_access={"roles": ["admin", 7]},
            scope="nats chat",
            org={"id": "acme"},
            **{"https://example.com/roles": ["auditor"]},
        )
    )
    identity = await lookup.lookup(make_request(token=token))
    assert identity.name == "ally"
    assert identity.groups == {"admin", "nats", "chat", "auditor"}
    assert identity.attributes["tenant"] == "acme"
    assert "email" not in identity.attributes
    assert identity.attributes["scopes"] == {"nats", "chat"}
    no_scope = rsa.token(claims(idp.base, preferred_username="ally", scope="chat"))
    assert (await denied(lookup, no_scope)).reason == "token lacks a required scope"
    no_name = rsa.token(claims(idp.base, scope="nats"))
    assert (
        await denied(lookup, no_name)
    ).reason == "token has no usable 'preferred_username' claim"


async def test_check_hook_and_token_types(idp, rsa):
    lookup = lookup_for(
        idp,
        token_types={"at+jwt"},
        check=lambda c: None if c.get("client_id") == "nats-app" else "wrong client",
    )
    good = rsa.token(claims(idp.base, client_id="nats-app"), headers={"typ": "application/at+JWT"})
    assert (await lookup.lookup(make_request(token=good))).name == "alice"
    wrong_client = rsa.token(claims(idp.base, client_id="x"), headers={"typ": "at+jwt"})
    assert (await denied(lookup, wrong_client)).reason == "wrong client"
    id_token = rsa.token(claims(idp.base, client_id="nats-app"), headers={"typ": "JWT"})
    assert (await denied(lookup, id_token)).reason == "token type not accepted"


async def test_audience_lists(idp, rsa):
    lookup = OIDCLookup(issuer=idp.base, audience=["nats", "other"], jwks_uri=idp.jwks_uri)
    token = rsa.token(claims(idp.base, audience="x", aud=["x", "other"]))
    assert (await lookup.lookup(make_request(token=token))).name == "alice"


# -- bad tokens ---------------------------------------------------------------------------


async def test_expired_token(idp, rsa):
    token = rsa.token(claims(idp.base, lifetime=-60))
    assert (await denied(lookup_for(idp), token)).reason == "token expired"


async def test_expiry_leeway(idp, rsa):
    token = rsa.token(claims(idp.base, lifetime=-3))
    assert (await lookup_for(idp, leeway=10).lookup(make_request(token=token))).name == "alice"
    assert (await denied(lookup_for(idp, leeway=0), token)).reason == "token expired"


async def test_wrong_audience(idp, rsa):
    token = rsa.token(claims(idp.base, audience="another-app"))
    assert (await denied(lookup_for(idp), token)).reason == "token audience not accepted"


async def test_wrong_issuer(idp, rsa):
    token = rsa.token(claims("https://evil.example.com"))
    assert (await denied(lookup_for(idp), token)).reason == "token issuer not accepted"


async def test_wrong_key_with_a_known_kid(idp, rsa):
    impostor = Signer("RSA", rsa.kid)  # same kid, another key
    token = impostor.token(claims(idp.base))
    assert (await denied(lookup_for(idp), token)).reason == "token signature invalid"


async def test_unknown_kid(idp):
    token = Signer("RSA", "not-published").token(claims(idp.base))
    assert (await denied(lookup_for(idp), token)).reason == "token signed by an unknown key"


async def test_alg_none(idp, rsa):
    header = {"alg": "none", "kid": rsa.kid, "typ": "JWT"}
    for token in (forged(header, claims(idp.base)), forged({"alg": "none"}, claims(idp.base))):
        assert (await denied(lookup_for(idp), token)).reason == "token algorithm not allowed"
    assert idp.hits == {}  # refused before any key was needed


async def test_hs256_with_the_public_key_as_secret(idp, rsa):
    # The classic key confusion: an HMAC "signed" with the published RSA key.
    from cryptography.hazmat.primitives import serialization

    public_pem = rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": rsa.kid}
    unsigned = forged(header, claims(idp.base)).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    token = f"{unsigned}.{b64(mac)}"
    assert (await denied(lookup_for(idp), token)).reason == "token algorithm not allowed"


async def test_algorithm_must_match_the_key(rsa, ec):
    # A JWK bound to RS256 cannot verify a PS256 token; an EC key no RS256 token.
    with jwks_server(keys=[dict(rsa.jwk, alg="RS256"), ec.jwk]) as idp:
        ps = rsa.token(claims(idp.base), alg="PS256")
        assert (await denied(lookup_for(idp), ps)).reason == "token signed by an unknown key"
        cross = rsa.token(claims(idp.base), kid=ec.kid)
        assert (await denied(lookup_for(idp), cross)).reason == "token signed by an unknown key"
        ok = rsa.token(claims(idp.base))
        assert (await lookup_for(idp).lookup(make_request(token=ok))).name == "alice"
    # Without an alg in the JWK the key type decides: an RSA key may sign PS256.
    with jwks_server(keys=[rsa.jwk]) as idp:
        ps = rsa.token(claims(idp.base), alg="PS256")
        assert (await lookup_for(idp).lookup(make_request(token=ps))).name == "alice"


async def test_algorithm_outside_the_allow_list(idp, ec):
    token = ec.token(claims(idp.base))
    lookup = lookup_for(idp, algorithms=["RS256"])
    assert (await denied(lookup, token)).reason == "token algorithm not allowed"


async def test_missing_exp_and_future_nbf(idp, rsa):
    body = claims(idp.base)
    del body["exp"]
    assert (await denied(lookup_for(idp), rsa.token(body))).reason == "token lacks the 'exp' claim"
    later = rsa.token(claims(idp.base, nbf=int(time.time()) + 600))
    assert (await denied(lookup_for(idp), later)).reason == "token not yet valid"
    no_aud = claims(idp.base)
    del no_aud["aud"]
    assert (
        await denied(lookup_for(idp), rsa.token(no_aud))
    ).reason == "token lacks the 'aud' claim"


async def test_tampered_payload(idp, rsa):
    head, _, sig = rsa.token(claims(idp.base)).split(".")
    body = b64(json.dumps(claims(idp.base, sub="admin")).encode())
    assert (await denied(lookup_for(idp), f"{head}.{body}.{sig}")).reason == (
        "token signature invalid"
    )


async def test_short_rsa_keys_are_refused(rsa):
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
    from jwt.algorithms import RSAAlgorithm

    weak = rsa_keys.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    jwk = json.loads(RSAAlgorithm.to_jwk(weak.public_key())) | {"kid": "weak"}
    with jwks_server(keys=[jwk]) as server:
        import jwt

        with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
            token = jwt.encode(
                claims(server.base), weak, algorithm="RS256", headers={"kid": "weak"}
            )
        reason = (await denied(lookup_for(server), token)).reason
    assert reason == "token signing key not accepted"


async def test_not_a_jwt_is_not_applicable(idp):
    lookup = lookup_for(idp)
    for token in ("plain-token", "a.b", "a.b.c.d", "!!!.???.***", "eyJ.eyJ.x"):
        with pytest.raises(NotApplicable):
            await lookup.lookup(make_request(token=token))
    with pytest.raises(NotApplicable, match="no bearer token"):
        await lookup.lookup(make_request(user="u", password="p"))


async def test_huge_tokens_are_refused_unparsed(idp):
    assert (await denied(lookup_for(idp), "a" * 20_000)).reason == "token too large"


# -- the key cache --------------------------------------------------------------------------


async def test_keys_are_cached_and_refreshed_after_the_ttl(idp, rsa):
    clock = ManualClock()
    cache = JWKSCache(idp.jwks_uri, ttl=60, min_refresh_interval=5, clock=clock)
    lookup = OIDCLookup(issuer=idp.base, audience=AUD, jwks=cache)
    token = rsa.token(claims(idp.base))
    for _ in range(5):
        await lookup.lookup(make_request(token=token))
    assert idp.hits["/jwks.json"] == 1
    clock.now += 61
    await lookup.lookup(make_request(token=token))
    assert idp.hits["/jwks.json"] == 2


async def test_a_rotated_key_is_picked_up(idp, rsa):
    clock = ManualClock()
    cache = JWKSCache(idp.jwks_uri, min_refresh_interval=5, clock=clock)
    lookup = OIDCLookup(issuer=idp.base, audience=AUD, jwks=cache)
    await lookup.lookup(make_request(token=rsa.token(claims(idp.base))))
    rotated = Signer("RSA", "rsa-2")
    idp.keys.append(rotated.jwk)
    clock.now += 6
    assert (
        await lookup.lookup(make_request(token=rotated.token(claims(idp.base))))
    ).name == "alice"
    assert cache.key_ids[-1] == "rsa-2"


async def test_random_kids_cannot_hammer_the_provider(idp, rsa):
    clock = ManualClock()
    cache = JWKSCache(idp.jwks_uri, min_refresh_interval=30, clock=clock)
    lookup = OIDCLookup(issuer=idp.base, audience=AUD, jwks=cache)
    await lookup.lookup(make_request(token=rsa.token(claims(idp.base))))
    flood = [Signer("EC", f"random-{i}") for i in range(3)]
    for i in range(60):
        clock.now += 1
        token = flood[i % 3].token(claims(idp.base), kid=f"random-{i}")
        assert (await denied(lookup, token)).reason == "token signed by an unknown key"
    # 60 seconds of unknown kids: the first fetch plus one refresh per 30 s.
    assert idp.hits["/jwks.json"] == 3


async def test_concurrent_logins_share_one_fetch(rsa):
    with jwks_server(keys=[rsa.jwk], delay=0.15) as server:
        lookup = lookup_for(server)
        tokens = [rsa.token(claims(server.base, sub=f"u{i}")) for i in range(40)]
        identities = await asyncio.gather(*(lookup.lookup(make_request(token=t)) for t in tokens))
        assert [i.name for i in identities] == [f"u{i}" for i in range(40)]
        assert server.hits["/jwks.json"] == 1


async def test_an_abandoned_login_does_not_cancel_the_fetch(rsa):
    with jwks_server(keys=[rsa.jwk], delay=0.15) as server:
        lookup = lookup_for(server)
        token = rsa.token(claims(server.base))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # the pipeline's deadline, say
                await lookup.lookup(make_request(token=token))
        assert (await lookup.lookup(make_request(token=token))).name == "alice"
        assert server.hits["/jwks.json"] == 1


async def test_fail_closed_when_the_jwks_cannot_be_fetched(rsa, caplog):
    token = rsa.token(claims("http://127.0.0.1:9"))
    lookup = OIDCLookup(
        issuer="http://127.0.0.1:9", audience=AUD, jwks_uri="http://127.0.0.1:9/jwks.json"
    )
    with caplog.at_level("WARNING", logger="faststream_callout.batteries"):
        assert (await denied(lookup, token)).reason == "identity provider keys unavailable"
    assert "JWKS fetch from http://127.0.0.1:9/jwks.json failed" in caplog.text
    with jwks_server(keys=[rsa.jwk], status=500) as server:
        token = rsa.token(claims(server.base))
        assert (await denied(lookup_for(server), token)).reason == (
            "identity provider keys unavailable"
        )
    with jwks_server(body=b"<html>not json</html>") as server:
        token = rsa.token(claims(server.base))
        assert (await denied(lookup_for(server), token)).reason == (
            "identity provider keys unavailable"
        )


async def test_a_slow_provider_times_out_and_denies(rsa):
    with jwks_server(keys=[rsa.jwk], delay=1.0) as server:
        lookup = lookup_for(server, timeout=0.1)
        start = time.monotonic()
        reason = (await denied(lookup, rsa.token(claims(server.base)))).reason
        assert reason == "identity provider keys unavailable"
        assert time.monotonic() - start < 0.5


async def test_stale_keys_serve_while_the_provider_is_down_then_not(idp, rsa):
    clock = ManualClock()
    cache = JWKSCache(idp.jwks_uri, ttl=60, stale_if_error=120, min_refresh_interval=1, clock=clock)
    lookup = OIDCLookup(issuer=idp.base, audience=AUD, jwks=cache)
    token = rsa.token(claims(idp.base))
    await lookup.lookup(make_request(token=token))
    idp.status = 503
    clock.now += 100  # stale, provider down: still the old keys
    assert (await lookup.lookup(make_request(token=token))).name == "alice"
    clock.now += 100  # past ttl + stale_if_error: deny
    assert (await denied(lookup, token)).reason == "identity provider keys unavailable"
    idp.status = 200
    clock.now += 2
    assert (await lookup.lookup(make_request(token=token))).name == "alice"


async def test_jwks_hygiene(rsa, ec):
    private = json.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(rsa.private))
    private["kid"] = rsa.kid
    enc = dict(ec.jwk, use="enc")
    verify_only = dict(ec.jwk, key_ops=["encrypt"])
    symmetric = {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"}
    with jwks_server(keys=[private, enc, verify_only, symmetric, {"kty": "RSA", "kid": 5}]) as s:
        cache = JWKSCache(s.jwks_uri)
        assert await cache.refresh()
        assert cache.key_ids == []
        lookup = OIDCLookup(issuer=s.base, audience=AUD, jwks=cache)
        assert (await denied(lookup, rsa.token(claims(s.base)))).reason == (
            "token signed by an unknown key"
        )


async def test_tokens_without_kid_try_the_compatible_keys(rsa):
    other = Signer("RSA", "rsa-other")
    with jwks_server(keys=[other.jwk, rsa.jwk]) as server:
        token = rsa.token(claims(server.base), kid=None)
        assert (await lookup_for(server).lookup(make_request(token=token))).name == "alice"


# -- discovery ------------------------------------------------------------------------------


async def test_discovery(rsa):
    with jwks_server(keys=[rsa.jwk]) as server:
        lookup = OIDCLookup(issuer=server.base, audience=AUD)
        assert lookup.jwks is None
        assert await lookup.prefetch()
        assert lookup.jwks is not None
        assert lookup.jwks.url == server.jwks_uri
        assert (await lookup.lookup(make_request(token=rsa.token(claims(server.base))))).name
        assert server.hits == {"/.well-known/openid-configuration": 1, "/jwks.json": 1}


async def test_discovery_refuses_another_issuer(rsa):
    with jwks_server(keys=[rsa.jwk], issuer="https://evil.example.com") as server:
        lookup = OIDCLookup(issuer=server.base, audience=AUD)
        token = rsa.token(claims(server.base))
        assert (await denied(lookup, token)).reason == "identity provider keys unavailable"
        assert "/jwks.json" not in server.hits


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"algorithms": ["HS256"]},
        {"algorithms": ["none"]},
        {"algorithms": ["RS256", "HS512"]},
        {"algorithms": []},
        {"audience": ""},
        {"audience": []},
        {"issuer": ""},
        {"sources": ["cookie"]},
        {"jwks_uri": "http://idp.example.com/jwks.json"},  # plain http to another host
        {"jwks_uri": "ftp://127.0.0.1/jwks"},
        {"jwks_uri": "https://user:pw@idp.example.com/jwks"},
        {"jwks_uri": "https://idp.example.com/jwks\r\nX: y"},
        {"issuer": "http://idp.example.com", "jwks_uri": None},  # discovery over http
        {"leeway": 3600},
    ],
)
def test_configuration_is_checked(options):
    base: dict[str, Any] = {
        "issuer": "https://idp.example.com",
        "audience": AUD,
        "jwks_uri": "https://idp.example.com/jwks.json",
    }
    base.update(options)
    with pytest.raises(ConfigurationError):
        OIDCLookup(**base)


def test_repr():
    lookup = OIDCLookup(issuer="https://idp.example.com", audience="nats")
    assert repr(lookup) == (
        "OIDCLookup(issuer='https://idp.example.com', audience=['nats'], "
        "algorithms=['RS256', 'PS256', 'ES256', 'EdDSA'], sources=['token'])"
    )


# -- the HTTP client ---------------------------------------------------------------------------


async def test_http_client(rsa):
    with jwks_server(keys=[rsa.jwk], chunked=True) as server:
        body = await http_get(server.jwks_uri, max_bytes=10_000)
        assert json.loads(body)["keys"][0]["kid"] == rsa.kid
        assert json.loads(await http_get(f"{server.base}/moved", max_bytes=10_000))["keys"]
        with pytest.raises(FetchError, match="limit"):
            await http_get(server.jwks_uri, max_bytes=100)
        with pytest.raises(FetchError, match="HTTP status 404"):
            await http_get(f"{server.base}/nothing", max_bytes=100)
    with jwks_server(keys=[rsa.jwk]) as server, pytest.raises(FetchError, match="limit"):
        await http_get(server.jwks_uri, max_bytes=100)
    with pytest.raises(FetchError, match="cannot connect"):
        await http_get("http://127.0.0.1:9/", max_bytes=100)
    # Redirects go where a configured URL could: never to plain http on another host.
    with (
        jwks_server(redirect_to="http://10.0.0.1/jwks.json") as server,
        pytest.raises(FetchError, match="plain http is allowed only to localhost"),
    ):
        await http_get(f"{server.base}/moved", max_bytes=10_000)
    with jwks_server(redirect_to="/moved") as server, pytest.raises(FetchError, match="too many"):
        await http_get(f"{server.base}/moved", max_bytes=10_000)


async def test_http_client_over_tls_never_follows_https_to_http(rsa, tmp_path):
    pki = Pki(tmp_path)
    cert, key, _ = pki.issue("idp", "127.0.0.1", server=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with jwks_server(keys=[rsa.jwk]) as plain:
        with jwks_server(keys=[rsa.jwk], tls=tls, redirect_to=plain.jwks_uri) as server:
            assert server.jwks_uri.startswith("https://")
            trusted = pki.client_context()
            body = await http_get(server.jwks_uri, max_bytes=10_000, ssl_context=trusted)
            assert json.loads(body)["keys"][0]["kid"] == rsa.kid
            with pytest.raises(FetchError, match="redirect from https to http refused"):
                await http_get(f"{server.base}/moved", max_bytes=10_000, ssl_context=trusted)
            # The system's trust store does not know the test CA.
            with pytest.raises(FetchError, match=r"cannot connect .*SSL"):
                await http_get(server.jwks_uri, max_bytes=10_000)
        assert plain.hits.get("/jwks.json", 0) == 0


async def test_a_fetch_is_cancellable(rsa):
    with jwks_server(keys=[rsa.jwk], delay=2.0) as server:
        started = time.monotonic()
        fetch = asyncio.ensure_future(http_get(server.jwks_uri, max_bytes=10_000))
        await asyncio.sleep(0.1)
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetch
        assert time.monotonic() - started < 1.0


def test_the_oidc_extra_is_named_when_httpx_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    for module in ("faststream_callout.batteries._http", "faststream_callout.batteries.oidc"):
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=r"faststream-callout\[oidc\].*") as caught:
        importlib.import_module("faststream_callout.batteries.oidc")
    assert "(httpx is not installed)" in str(caught.value)


def test_url_checks():
    assert check_url("https://idp.example.com/x", what="u")
    assert check_url("http://localhost:8080/x", what="u")
    assert check_url("http://[::1]:8080/x", what="u")
    for bad in ("http://10.0.0.1/x", "file:///etc/passwd", "https:///x", "https://a b/x"):
        with pytest.raises(ValueError):
            check_url(bad, what="u")


# -- through the pipeline --------------------------------------------------------------------


async def test_grant_does_not_outlive_the_token(idp, rsa):
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    pipeline = CalloutPipeline(
        SigningKeys(issuer),
        lookup_for(idp),
        RoleBasedPermissions(
            {"chat": PermissionSet(pub=["chat.{user}.>"], sub=["chat.>"])},
            account="APP",
            default_ttl=3600,
        ),
    )
    body = claims(idp.base, lifetime=120, groups=["chat"])
    minted = server.request(token=rsa.token(body))
    verdict = server.check(minted, await pipeline(minted.body))
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.exp == body["exp"]
    assert verdict.user.nats.pub.allow == ["chat.alice.>"]
    minted = server.request(token=rsa.token(claims(idp.base, audience="x", groups=["chat"])))
    verdict = server.check(minted, await pipeline(minted.body))
    assert not verdict.allowed
    assert verdict.error == "token audience not accepted"
