"""FakeServer.check must refuse what nats-server refuses (SPEC 4), with its reasons.

Every reply here is built by hand with jwt.encode and the claim structs, so each
one is wrong in exactly one way; a correct reply built the same way is the control.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from faststream_callout import KeyPair, XKeyPair
from faststream_callout.core.signing import CalloutMode
from faststream_callout.protocol import jwt as nats_jwt
from faststream_callout.protocol.claims import (
    AuthorizationResponse,
    AuthorizationResponseClaims,
    Permission,
    User,
    UserClaims,
)
from faststream_callout.testing import FakeServer, MintedRequest


def user_jwt(
    minted: MintedRequest,
    signer: KeyPair,
    *,
    aud: str = "APP",
    sub: str | None = None,
    exp: int = 0,
    nbf: int = 0,
    **nats: Any,
) -> str:
    claims = UserClaims(
        aud=aud,
        exp=exp,
        nbf=nbf,
        name="alice",
        sub=minted.user_nkey if sub is None else sub,
        nats=User(pub=Permission(allow=["chat.>"]), type="user", version=2, **nats),
    )
    return nats_jwt.encode(claims, signer)


def response(
    minted: MintedRequest,
    signer: KeyPair,
    *,
    jwt: str = "",
    error: str = "",
    sub: str | None = None,
    aud: str | None = None,
    exp: int = 0,
    nbf: int = 0,
    issuer_account: str = "",
) -> bytes:
    claims = AuthorizationResponseClaims(
        aud=minted.claims.nats.server_id.id if aud is None else aud,
        exp=exp,
        nbf=nbf,
        sub=minted.user_nkey if sub is None else sub,
        nats=AuthorizationResponse(
            jwt=jwt,
            error=error,
            issuer_account=issuer_account,
            type="authorization_response",
            version=2,
        ),
    )
    return nats_jwt.encode(claims, signer).encode()


# --- config mode -------------------------------------------------------------------


@pytest.fixture
def issuer() -> KeyPair:
    return KeyPair.create_account()


@pytest.fixture
def server(issuer: KeyPair) -> FakeServer:
    return FakeServer.config_mode(issuer.public_key)


@pytest.fixture
def minted(server: FakeServer) -> MintedRequest:
    return server.request(user="alice", password="pw")


def test_minted_request_is_what_nats_server_sends(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    claims = nats_jwt.decode(minted.body, type(minted.claims))
    assert claims == minted.claims
    assert claims.iss == server.key.public_key == claims.nats.server_id.id
    assert claims.aud == "nats-authorization-request"
    assert claims.sub == issuer.public_key
    assert claims.exp == claims.iat + 2
    assert claims.nats.type == "authorization_request"
    assert claims.nats.version == 2
    assert claims.nats.user_nkey.startswith("U")
    assert claims.nats.connect_opts.user == "alice"
    assert claims.nats.connect_opts.password == "pw"
    assert claims.nats.client_info.user == "alice"
    assert minted.headers == {}
    assert minted.server_xkey is None
    assert server.mode is CalloutMode.CONFIG
    assert server.request().user_nkey != minted.user_nkey


def test_token_login_reports_redacted_user(server: FakeServer) -> None:
    minted = server.request(token="tok-123")
    assert minted.claims.nats.connect_opts.auth_token == "tok-123"
    assert minted.claims.nats.client_info.user == "[REDACTED]"


def test_correct_reply_is_allowed(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer))
    verdict = server.check(minted, reply)
    assert verdict.allowed, verdict.reason
    assert verdict.reason == ""
    assert verdict.account == "APP"
    assert not verdict.invalid
    assert not verdict.encrypted
    assert verdict.user is not None
    assert verdict.user.sub == minted.user_nkey
    assert verdict.response is not None
    assert verdict.error == ""


def test_empty_reply(server: FakeServer, minted: MintedRequest) -> None:
    verdict = server.check(minted, b"")
    assert not verdict.allowed
    assert "no reason supplied" in verdict.reason
    assert not verdict.invalid
    assert verdict.response is None


def test_error_reply(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    verdict = server.check(minted, response(minted, issuer, error="BAD AUTH"))
    assert not verdict.allowed
    assert verdict.reason == "auth callout service returned an error: BAD AUTH"
    assert verdict.error == "BAD AUTH"
    assert not verdict.invalid


def test_response_signed_by_foreign_key(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    foreign = KeyPair.create_account()
    verdict = server.check(minted, response(minted, foreign, jwt=user_jwt(minted, issuer)))
    assert not verdict.allowed
    assert "signing key is unknown" in verdict.reason
    assert verdict.invalid


def test_foreign_key_with_issuer_account_set_to_issuer(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    # SPEC 4.3: refused by 2.15.1 in config mode.
    foreign = KeyPair.create_account()
    reply = response(
        minted, foreign, jwt=user_jwt(minted, issuer), issuer_account=issuer.public_key
    )
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "signing key is unknown" in verdict.reason


def test_error_reply_signed_by_foreign_key(server: FakeServer, minted: MintedRequest) -> None:
    # SPEC 4.3: the signer is checked before the error field.
    verdict = server.check(minted, response(minted, KeyPair.create_account(), error="nope"))
    assert not verdict.allowed
    assert "signing key is unknown" in verdict.reason
    assert "nope" not in verdict.reason


def test_issuer_account_on_response_ignored_in_config_mode(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    reply = response(
        minted,
        issuer,
        jwt=user_jwt(minted, issuer),
        issuer_account=KeyPair.create_account().public_key,
    )
    verdict = server.check(minted, reply)
    assert verdict.allowed, verdict.reason


def test_response_not_for_expected_user(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    other_user = KeyPair.create_user().public_key
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), sub=other_user)
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "not for expected user" in verdict.reason
    assert verdict.invalid


def test_response_sub_not_a_user_key(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    reply = response(minted, issuer, error="x", sub=KeyPair.create_account().public_key)
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "Subject must be a user public key" in verdict.reason


def test_response_not_for_server(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    other_server = KeyPair.create_server().public_key
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), aud=other_server)
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "not for server" in verdict.reason
    assert verdict.invalid


@pytest.mark.parametrize("aud", ["", "APP", "nats-authorization-request"])
def test_response_aud_not_a_server_key(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest, aud: str
) -> None:
    verdict = server.check(minted, response(minted, issuer, error="x", aud=aud))
    assert not verdict.allowed
    assert "Audience must be a server public key" in verdict.reason


def test_both_jwt_and_error(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), error="also no")
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "Only Error or Jwt can be set" in verdict.reason
    assert verdict.invalid


def test_neither_jwt_nor_error(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    verdict = server.check(minted, response(minted, issuer))
    assert not verdict.allowed
    assert "Error or Jwt is required" in verdict.reason
    assert verdict.invalid


def test_expired_response(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    expired = int(time.time()) - 10
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), exp=expired)
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "authorization response had validation errors" in verdict.reason
    assert "claim is expired" in verdict.reason
    # At its exp it is still valid.
    assert server.check(minted, reply, now=expired).allowed


def test_response_not_yet_valid(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), nbf=int(time.time()) + 60)
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "claim is not yet valid" in verdict.reason


def test_response_with_bad_issuer_account(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer), issuer_account="nope")
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "issuer_account is not an account public key" in verdict.reason


@pytest.mark.parametrize(
    "reply",
    [b"garbage", b"a.b.c", b"eyJhbGciOiJub25lIn0.e30.", b"xkv1" + b"\x00" * 60],
    ids=["text", "segments", "alg-none", "sealed-without-xkey"],
)
def test_undecodable_reply(server: FakeServer, minted: MintedRequest, reply: bytes) -> None:
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert verdict.invalid
    assert verdict.reason


def test_response_signed_by_user_key(server: FakeServer, minted: MintedRequest) -> None:
    verdict = server.check(minted, response(minted, KeyPair.create_user(), error="x"))
    assert not verdict.allowed
    assert "issuer" in verdict.reason


def test_user_jwt_for_wrong_user(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    other_user = KeyPair.create_user().public_key
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer, sub=other_user))
    verdict = server.check(minted, reply)
    assert not verdict.allowed
    assert "expected authorized user" in verdict.reason
    assert minted.user_nkey in verdict.reason
    assert other_user in verdict.reason


def test_user_jwt_signed_by_other_key(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    other = KeyPair.create_account()
    verdict = server.check(minted, response(minted, issuer, jwt=user_jwt(minted, other)))
    assert not verdict.allowed
    assert "wrong issuer" in verdict.reason
    assert other.public_key in verdict.reason


def test_config_mode_user_jwt_with_issuer_account(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    token = user_jwt(minted, issuer, issuer_account=issuer.public_key)
    verdict = server.check(minted, response(minted, issuer, jwt=token))
    assert not verdict.allowed
    assert "attempted to use issuer_account" in verdict.reason


def test_user_jwt_without_aud(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    verdict = server.check(minted, response(minted, issuer, jwt=user_jwt(minted, issuer, aud="")))
    assert not verdict.allowed
    assert "no valid account ''" in verdict.reason


def test_user_jwt_aud_naming_unknown_account(issuer: KeyPair) -> None:
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP", "OTHER"])
    minted = server.request(user="alice")
    unknown = server.check(
        minted, response(minted, issuer, jwt=user_jwt(minted, issuer, aud="NOPE"))
    )
    assert not unknown.allowed
    assert "no valid account 'NOPE'" in unknown.reason
    for account in ("APP", "OTHER", "$G"):
        reply = response(minted, issuer, jwt=user_jwt(minted, issuer, aud=account))
        verdict = server.check(minted, reply)
        assert verdict.allowed, verdict.reason
        assert verdict.account == account


def test_proxy_required(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    token = user_jwt(minted, issuer, proxy_required=True)
    verdict = server.check(minted, response(minted, issuer, jwt=token))
    assert not verdict.allowed
    assert verdict.reason == "proxy connection required"


def test_expired_user_jwt(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    expired = int(time.time()) - 5
    token = user_jwt(minted, issuer, exp=expired)
    verdict = server.check(minted, response(minted, issuer, jwt=token))
    assert not verdict.allowed
    assert verdict.reason == "error validating user JWT: claim is expired"
    assert verdict.user is not None  # decoded, then refused


def test_user_jwt_not_yet_valid(issuer: KeyPair, server: FakeServer, minted: MintedRequest) -> None:
    token = user_jwt(minted, issuer, nbf=int(time.time()) + 60)
    verdict = server.check(minted, response(minted, issuer, jwt=token))
    assert not verdict.allowed
    assert verdict.reason == "error validating user JWT: claim is not yet valid"


@pytest.mark.parametrize(
    ("nats", "fragment"),
    [
        ({"pub": Permission(allow=["a..b"])}, "consecutive"),
        ({"src": ["nonsense"]}, "invalid cidr"),
        ({"times_location": "Mars/Base"}, "iana time zone"),
        ({"allowed_connection_types": ["BOGUS"]}, "connection types"),
    ],
)
def test_invalid_user_jwt_content(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest, nats: dict, fragment: str
) -> None:
    claims = UserClaims(aud="APP", sub=minted.user_nkey, nats=User(type="user", version=2, **nats))
    verdict = server.check(minted, response(minted, issuer, jwt=nats_jwt.encode(claims, issuer)))
    assert not verdict.allowed
    assert verdict.reason.startswith("error validating user JWT: ")
    assert fragment in verdict.reason


def test_server_is_lenient_where_nats_server_is(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    # Literal wildcards and a partly unknown connection type list pass nats-server.
    claims = UserClaims(
        aud="APP",
        sub=minted.user_nkey,
        nats=User(
            pub=Permission(allow=["orders*"]),
            allowed_connection_types=["STANDARD", "BOGUS"],
            type="user",
            version=2,
        ),
    )
    reply = response(minted, issuer, jwt=nats_jwt.encode(claims, issuer))
    verdict = server.check(minted, reply)
    assert verdict.allowed, verdict.reason


def test_user_jwt_that_is_not_a_jwt(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    verdict = server.check(minted, response(minted, issuer, jwt="not-a-jwt"))
    assert not verdict.allowed
    assert verdict.invalid
    assert verdict.user is None


def test_user_jwt_signed_by_user_key(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    token = user_jwt(minted, KeyPair.create_user())
    verdict = server.check(minted, response(minted, issuer, jwt=token))
    assert not verdict.allowed
    assert "issuer" in verdict.reason


# --- encrypted replies -------------------------------------------------------------


@pytest.fixture
def service_xkey() -> XKeyPair:
    return XKeyPair.generate()


@pytest.fixture
def xserver(issuer: KeyPair, service_xkey: XKeyPair) -> FakeServer:
    return FakeServer.config_mode(issuer.public_key, xkey=service_xkey.public_key)


def test_encrypted_request(xserver: FakeServer, service_xkey: XKeyPair) -> None:
    minted = xserver.request(user="alice")
    assert minted.server_xkey == xserver.xkey.public_key
    assert minted.claims.nats.server_id.xkey == xserver.xkey.public_key
    opened = service_xkey.open(minted.body, xserver.xkey.public_key)
    assert nats_jwt.decode(opened, type(minted.claims)) == minted.claims


def test_encrypted_reply_allowed(
    issuer: KeyPair, xserver: FakeServer, service_xkey: XKeyPair
) -> None:
    minted = xserver.request(user="alice")
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer))
    sealed = service_xkey.seal(reply, xserver.xkey.public_key)
    verdict = xserver.check(minted, sealed)
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted


def test_plaintext_reply_accepted_with_xkey(issuer: KeyPair, xserver: FakeServer) -> None:
    minted = xserver.request(user="alice")
    verdict = xserver.check(minted, response(minted, issuer, jwt=user_jwt(minted, issuer)))
    assert verdict.allowed, verdict.reason
    assert not verdict.encrypted


@pytest.mark.parametrize(
    "garbage",
    [b"garbage-that-is-long-enough-to-be-a-box-xxxxxxxxxxxxxxx", b"short", b"xkv1" + b"\x01" * 60],
    ids=["no-version", "short", "bad-box"],
)
def test_encrypted_garbage(xserver: FakeServer, garbage: bytes) -> None:
    minted = xserver.request(user="alice")
    verdict = xserver.check(minted, garbage)
    assert not verdict.allowed
    assert verdict.reason.startswith("error decrypting auth callout response")
    assert verdict.invalid


def test_reply_sealed_by_the_wrong_service_key(issuer: KeyPair, xserver: FakeServer) -> None:
    minted = xserver.request(user="alice")
    reply = response(minted, issuer, jwt=user_jwt(minted, issuer))
    sealed = XKeyPair.generate().seal(reply, xserver.xkey.public_key)
    verdict = xserver.check(minted, sealed)
    assert not verdict.allowed
    assert "error decrypting" in verdict.reason


def test_encrypted_reply_signed_by_foreign_key_is_accepted(
    issuer: KeyPair, xserver: FakeServer, service_xkey: XKeyPair
) -> None:
    # SPEC 4.3 / 6.3: the box authenticates the sender; the signer check is skipped.
    minted = xserver.request(user="alice")
    reply = response(minted, KeyPair.create_account(), jwt=user_jwt(minted, issuer))
    assert not xserver.check(minted, reply).allowed  # plaintext: refused
    verdict = xserver.check(minted, service_xkey.seal(reply, xserver.xkey.public_key))
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted


def test_encrypted_reply_user_jwt_still_checked(
    issuer: KeyPair, xserver: FakeServer, service_xkey: XKeyPair
) -> None:
    minted = xserver.request(user="alice")
    reply = response(minted, issuer, jwt=user_jwt(minted, KeyPair.create_account()))
    verdict = xserver.check(minted, service_xkey.seal(reply, xserver.xkey.public_key))
    assert not verdict.allowed
    assert "wrong issuer" in verdict.reason
    assert verdict.encrypted


def test_encrypted_reply_envelope_still_checked(
    issuer: KeyPair, xserver: FakeServer, service_xkey: XKeyPair
) -> None:
    minted = xserver.request(user="alice")
    reply = response(
        minted, issuer, jwt=user_jwt(minted, issuer), aud=KeyPair.create_server().public_key
    )
    verdict = xserver.check(minted, service_xkey.seal(reply, xserver.xkey.public_key))
    assert not verdict.allowed
    assert "not for server" in verdict.reason


# --- operator mode -----------------------------------------------------------------


class Accounts:
    def __init__(self) -> None:
        self.callout = KeyPair.create_account()
        self.callout_signer = KeyPair.create_account()
        self.app = KeyPair.create_account()
        self.app_signer = KeyPair.create_account()
        self.other = KeyPair.create_account()


@pytest.fixture
def acc() -> Accounts:
    return Accounts()


@pytest.fixture
def op_server(acc: Accounts) -> FakeServer:
    return FakeServer.operator_mode(
        acc.callout.public_key,
        accounts={
            acc.callout.public_key: [acc.callout_signer.public_key],
            acc.app.public_key: [acc.app_signer.public_key],
            acc.other.public_key: [],
        },
        allowed_accounts=[acc.app.public_key],
    )


def op_user(minted: MintedRequest, signer: KeyPair, issuer_account: str = "") -> str:
    return user_jwt(minted, signer, aud="", issuer_account=issuer_account)


def test_operator_request(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    assert op_server.mode is CalloutMode.OPERATOR
    assert minted.claims.sub == acc.callout.public_key


@pytest.mark.parametrize(
    ("response_signer", "response_issuer_account"),
    [("callout", ""), ("callout_signer", ""), ("callout_signer", "callout")],
)
def test_operator_correct_replies(
    acc: Accounts, op_server: FakeServer, response_signer: str, response_issuer_account: str
) -> None:
    minted = op_server.request(user="alice")
    token = op_user(minted, acc.app_signer, acc.app.public_key)
    issuer_account = (
        getattr(acc, response_issuer_account).public_key if response_issuer_account else ""
    )
    reply = response(
        minted, getattr(acc, response_signer), jwt=token, issuer_account=issuer_account
    )
    verdict = op_server.check(minted, reply)
    assert verdict.allowed, verdict.reason
    assert verdict.account == acc.app.public_key


def test_operator_user_signed_by_account_key(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    reply = response(minted, acc.callout, jwt=op_user(minted, acc.app))
    verdict = op_server.check(minted, reply)
    assert verdict.allowed, verdict.reason
    assert verdict.account == acc.app.public_key


def test_operator_user_in_callout_account(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    reply = response(minted, acc.callout, jwt=op_user(minted, acc.callout))
    verdict = op_server.check(minted, reply)
    assert verdict.allowed, verdict.reason
    assert verdict.account == acc.callout.public_key


def test_operator_response_issuer_account_not_callout(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    token = op_user(minted, acc.app_signer, acc.app.public_key)
    reply = response(minted, acc.callout, jwt=token, issuer_account=acc.app.public_key)
    verdict = op_server.check(minted, reply)
    assert not verdict.allowed
    assert "is not the callout account" in verdict.reason
    assert acc.app.public_key in verdict.reason


@pytest.mark.parametrize("signer", ["app", "app_signer", "stranger"])
def test_operator_response_signed_by_unknown_key(
    acc: Accounts, op_server: FakeServer, signer: str
) -> None:
    minted = op_server.request(user="alice")
    key = KeyPair.create_account() if signer == "stranger" else getattr(acc, signer)
    token = op_user(minted, acc.app_signer, acc.app.public_key)
    verdict = op_server.check(minted, response(minted, key, jwt=token))
    assert not verdict.allowed
    assert "signing key is unknown" in verdict.reason


def test_operator_foreign_signer_claiming_callout_account(
    acc: Accounts, op_server: FakeServer
) -> None:
    # SPEC 4.3: 2.15.1 rejects a foreign signer even with issuer_account = callout account.
    minted = op_server.request(user="alice")
    token = op_user(minted, acc.app_signer, acc.app.public_key)
    reply = response(
        minted, KeyPair.create_account(), jwt=token, issuer_account=acc.callout.public_key
    )
    verdict = op_server.check(minted, reply)
    assert not verdict.allowed
    assert "signing key is unknown" in verdict.reason


def test_operator_signer_not_in_allowed_accounts(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    reply = response(minted, acc.callout, jwt=op_user(minted, acc.other))
    verdict = op_server.check(minted, reply)
    assert not verdict.allowed
    assert "not permitted as valid account option" in verdict.reason


def test_operator_any_account(acc: Accounts) -> None:
    server = FakeServer.operator_mode(
        acc.callout.public_key,
        accounts={acc.callout.public_key: [], acc.other.public_key: []},
        allowed_accounts=["*"],
    )
    minted = server.request(user="alice")
    verdict = server.check(minted, response(minted, acc.callout, jwt=op_user(minted, acc.other)))
    assert verdict.allowed, verdict.reason
    assert verdict.account == acc.other.public_key


def test_operator_account_unknown_to_server(acc: Accounts) -> None:
    server = FakeServer.operator_mode(
        acc.callout.public_key, accounts={acc.callout.public_key: []}, allowed_accounts=["*"]
    )
    minted = server.request(user="alice")
    stranger = KeyPair.create_account()
    verdict = server.check(minted, response(minted, acc.callout, jwt=op_user(minted, stranger)))
    assert not verdict.allowed
    assert "no valid account" in verdict.reason


def test_operator_unknown_user_signing_key(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    unknown_signer = KeyPair.create_account()
    token = op_user(minted, unknown_signer, acc.app.public_key)
    verdict = op_server.check(minted, response(minted, acc.callout, jwt=token))
    assert not verdict.allowed
    assert "is not known" in verdict.reason
    assert unknown_signer.public_key in verdict.reason


def test_operator_signing_key_of_another_account(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    # The callout account's signing key claiming to issue for APP.
    token = op_user(minted, acc.callout_signer, acc.app.public_key)
    verdict = op_server.check(minted, response(minted, acc.callout, jwt=token))
    assert not verdict.allowed
    assert "is not known" in verdict.reason


def test_operator_aud_is_irrelevant(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    token = user_jwt(minted, acc.app, aud="WHATEVER")
    verdict = op_server.check(minted, response(minted, acc.callout, jwt=token))
    assert verdict.allowed, verdict.reason
    assert verdict.account == acc.app.public_key


def test_operator_error_reply(acc: Accounts, op_server: FakeServer) -> None:
    minted = op_server.request(user="alice")
    verdict = op_server.check(minted, response(minted, acc.callout_signer, error="no such user"))
    assert not verdict.allowed
    assert verdict.error == "no such user"
    assert not verdict.invalid


# -- JSON null, as Go reads it --------------------------------------------------------


def sign_raw(payload: dict[str, Any], key: KeyPair) -> str:
    """A JWT over exactly this JSON payload (nulls included), signed by ``key``."""
    import base64
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + b"." + b64(json.dumps(payload).encode())
    )
    return (signing_input + b"." + b64(key.sign(signing_input))).decode()


def test_nulls_leave_fields_at_their_defaults_as_in_go(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    # nats-callout 0.1.1 writes "exp": null and nulls for unset permissions; Go's
    # encoding/json leaves such fields alone, so nats-server accepts the reply.
    now = int(time.time())
    user = sign_raw(
        {
            "aud": "APP",
            "exp": now + 60,
            "iat": now,
            "iss": issuer.public_key,
            "sub": minted.user_nkey,
            "nats": {
                "pub": {"allow": ["a.>"], "deny": None},
                "sub": None,
                "resp": None,
                "times_location": None,
                "type": "user",
                "version": 2,
            },
        },
        issuer,
    )
    reply = sign_raw(
        {
            "aud": minted.claims.nats.server_id.id,
            "exp": None,
            "iat": now,
            "iss": issuer.public_key,
            "sub": minted.user_nkey,
            "nats": {
                "jwt": user,
                "error": None,
                "issuer_account": None,
                "type": "authorization_response",
                "version": 2,
            },
        },
        issuer,
    )
    verdict = server.check(minted, reply.encode())
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.nats.pub.allow == ["a.>"]
    assert verdict.user.nats.pub.deny == []
    assert verdict.user.nats.sub.allow == []


def test_null_where_go_cannot_take_it_is_still_refused(
    issuer: KeyPair, server: FakeServer, minted: MintedRequest
) -> None:
    now = int(time.time())
    reply = sign_raw(
        {
            "aud": minted.claims.nats.server_id.id,
            "iat": now,
            "iss": issuer.public_key,
            "sub": minted.user_nkey,
            "nats": {
                "jwt": None,
                "error": "nope",
                "type": "authorization_response",
                "version": "2",
            },
        },
        issuer,
    )
    verdict = server.check(minted, reply.encode())
    assert not verdict.allowed
    assert verdict.invalid  # a string where Go wants an int: the server cannot decode it
