"""Claim structs: wire names, Go omitempty semantics, tolerant decoding, secrecy."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from faststream_callout import KeyPair
from faststream_callout.core.errors import InvalidJWTError
from faststream_callout.protocol import jwt as nats_jwt
from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponse,
    AuthorizationResponseClaims,
    ClientInfo,
    ClientTLS,
    ConnectOptions,
    Permission,
    ResponsePermission,
    ServerId,
    TimeRange,
    User,
    UserClaims,
)


def as_json(value: object) -> dict[str, Any]:
    return json.loads(msgspec.json.encode(value))


def user(**fields: Any) -> User:
    return User(type="user", version=2, **fields)


# The observed request of SPEC 1.3 (config mode, nats-server 2.15.1, nats-py 2.16.0).
# The SPEC elides the middle of the server and user keys; full-length stand-ins here.
SERVER_ID = "ND7XPZQB" + "A" * 43 + "NV3HD"
USER_NKEY = "UAMYBVCB" + "A" * 44 + "LNS4"
SPEC_REQUEST = f"""
{{"aud":"nats-authorization-request","exp":1795895816,
 "jti":"ILLAAU3PZ5IUIQQA67K7LKOJ3X2WTBKFL6HCX2WHD7F5EKZKX3PQ","iat":1795895814,
 "iss":"{SERVER_ID}","sub":"ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA",
 "nats":{{"server_id":{{"name":"cfgtest","host":"127.0.0.1","id":"{SERVER_ID}",
   "version":"2.15.1"}},
  "user_nkey":"{USER_NKEY}","client_info":{{"host":"127.0.0.1","id":9,"user":"ok",
   "kind":"Client","type":"nats"}},
  "connect_opts":{{"user":"ok","pass":"pw","lang":"python3","version":"2.16.0","protocol":1}},
  "type":"authorization_request","version":2}}}}
"""


# --- wire names --------------------------------------------------------------------


def test_password_is_pass_on_the_wire() -> None:
    encoded = as_json(ConnectOptions(user="u", password="secret-pw"))
    assert encoded["pass"] == "secret-pw"
    assert "password" not in encoded
    decoded = msgspec.json.decode(b'{"user":"u","pass":"pw2"}', type=ConnectOptions)
    assert decoded.password == "pw2"
    # "password" is not the wire name: it is an unknown field, ignored.
    ignored = msgspec.json.decode(b'{"password":"pw3"}', type=ConnectOptions)
    assert ignored.password == ""


def test_connect_options_wire_names() -> None:
    encoded = as_json(
        ConnectOptions(
            jwt="j",
            nkey="n",
            sig="s",
            auth_token="t",
            user="u",
            password="p",
            name="c",
            lang="go",
            version="1.0",
            protocol=1,
        )
    )
    assert encoded == {
        "jwt": "j",
        "nkey": "n",
        "sig": "s",
        "auth_token": "t",
        "user": "u",
        "pass": "p",
        "name": "c",
        "lang": "go",
        "version": "1.0",
        "protocol": 1,
    }


def test_request_wire_names() -> None:
    request = AuthorizationRequest(
        server_id=ServerId(name="n", host="h", id="N1", xkey="X1", cluster="c", tags=["a"]),
        user_nkey="U1",
        client_info=ClientInfo(host="h", id=3, user="u", name_tag="nt", mqtt_id="m", nonce="x"),
        connect_opts=ConnectOptions(user="u"),
        client_tls=ClientTLS(version="1.3", cipher="TLS_AES", verified_chains=[["pem1", "pem2"]]),
        request_nonce="rn",
        type="authorization_request",
        version=2,
    )
    encoded = as_json(request)
    assert list(encoded) == [
        "server_id",
        "user_nkey",
        "client_info",
        "connect_opts",
        "client_tls",
        "request_nonce",
        "type",
        "version",
    ]
    assert encoded["server_id"] == {
        "name": "n",
        "host": "h",
        "id": "N1",
        "cluster": "c",
        "tags": ["a"],
        "xkey": "X1",
    }
    assert encoded["client_info"]["name_tag"] == "nt"
    assert encoded["client_info"]["mqtt_id"] == "m"
    assert encoded["client_tls"] == {
        "version": "1.3",
        "cipher": "TLS_AES",
        "verified_chains": [["pem1", "pem2"]],
    }


def test_user_wire_names_and_order() -> None:
    encoded = as_json(
        user(
            pub=Permission(allow=["a"]),
            sub=Permission(deny=["b"]),
            resp=ResponsePermission(max=1, ttl=5),
            src=["10.0.0.0/8"],
            times=[TimeRange(start="01:00:00", end="02:00:00")],
            times_location="UTC",
            subs=1,
            data=2,
            payload=3,
            bearer_token=True,
            proxy_required=True,
            allowed_connection_types=["STANDARD"],
            issuer_account="A1",
            tags=["t"],
        )
    )
    # SPEC 2.5: the key order of the Go struct.
    assert list(encoded) == [
        "pub",
        "sub",
        "resp",
        "src",
        "times",
        "times_location",
        "subs",
        "data",
        "payload",
        "bearer_token",
        "proxy_required",
        "allowed_connection_types",
        "issuer_account",
        "tags",
        "type",
        "version",
    ]
    assert encoded["times"] == [{"start": "01:00:00", "end": "02:00:00"}]


def test_response_wire_names() -> None:
    encoded = as_json(
        AuthorizationResponse(
            jwt="j", issuer_account="A1", tags=["t"], type="authorization_response", version=2
        )
    )
    assert encoded == {
        "jwt": "j",
        "issuer_account": "A1",
        "tags": ["t"],
        "type": "authorization_response",
        "version": 2,
    }
    assert as_json(AuthorizationResponse(error="no", type="authorization_response", version=2)) == {
        "error": "no",
        "type": "authorization_response",
        "version": 2,
    }


@pytest.mark.parametrize(
    ("perm", "expected"),
    [
        (ResponsePermission(), {"max": 0, "ttl": 0}),
        (ResponsePermission(max=1), {"max": 1, "ttl": 0}),
        (ResponsePermission(ttl=2_000_000_000), {"max": 0, "ttl": 2_000_000_000}),
    ],
)
def test_resp_max_and_ttl_always_present(perm: ResponsePermission, expected: dict) -> None:
    assert as_json(user(resp=perm))["resp"] == expected


def test_time_range_fields_always_present() -> None:
    assert as_json(TimeRange(start="", end="")) == {"start": "", "end": ""}


# --- the observed request ----------------------------------------------------------


def test_decode_observed_request() -> None:
    claims = msgspec.json.decode(SPEC_REQUEST.encode(), type=AuthorizationRequestClaims)
    assert claims.aud == "nats-authorization-request"
    assert claims.exp == 1795895816
    assert claims.iat == 1795895814
    assert claims.jti == "ILLAAU3PZ5IUIQQA67K7LKOJ3X2WTBKFL6HCX2WHD7F5EKZKX3PQ"
    assert claims.iss == SERVER_ID
    assert claims.sub == "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA"
    request = claims.nats
    assert request.server_id == ServerId(
        name="cfgtest", host="127.0.0.1", id=SERVER_ID, version="2.15.1"
    )
    assert request.server_id.xkey == ""
    assert request.user_nkey == USER_NKEY
    assert request.client_info.host == "127.0.0.1"
    assert request.client_info.id == 9
    assert request.client_info.user == "ok"
    assert request.client_info.kind == "Client"
    assert request.client_info.type == "nats"
    assert request.connect_opts.user == "ok"
    assert request.connect_opts.password == "pw"
    assert request.connect_opts.lang == "python3"
    assert request.connect_opts.version == "2.16.0"
    assert request.connect_opts.protocol == 1
    assert request.client_tls is None
    assert request.type == "authorization_request"
    assert request.version == 2


def test_decode_request_with_tls() -> None:
    raw = json.loads(SPEC_REQUEST)
    raw["nats"]["client_tls"] = {
        "version": "1.3",
        "cipher": "TLS_AES_128_GCM_SHA256",
        "verified_chains": [["-----BEGIN CERTIFICATE-----leaf", "ca"]],
    }
    claims = msgspec.json.decode(json.dumps(raw).encode(), type=AuthorizationRequestClaims)
    tls = claims.nats.client_tls
    assert tls is not None
    assert tls.version == "1.3"
    assert tls.certs == []
    assert tls.verified_chains == [["-----BEGIN CERTIFICATE-----leaf", "ca"]]


def test_unknown_fields_ignored_at_every_level() -> None:
    raw = json.loads(SPEC_REQUEST)
    raw["future_top"] = {"x": 1}
    raw["nats"]["future_nats"] = [1, 2]
    raw["nats"]["server_id"]["future_server"] = "s"
    raw["nats"]["client_info"]["future_client"] = True
    raw["nats"]["connect_opts"]["future_opts"] = None
    raw["nats"]["connect_opts"]["headers"] = True
    raw["nats"]["client_tls"] = {"version": "1.2", "future_tls": {"deep": [1]}}
    claims = msgspec.json.decode(json.dumps(raw).encode(), type=AuthorizationRequestClaims)
    assert claims.nats.server_id.name == "cfgtest"
    assert claims.nats.client_info.id == 9
    assert claims.nats.connect_opts.password == "pw"
    assert claims.nats.client_tls is not None
    assert claims.nats.client_tls.version == "1.2"


def test_unknown_fields_ignored_in_user_and_response() -> None:
    user_json = {
        "sub": "U1",
        "future": 1,
        "nats": {
            "pub": {"allow": ["a"], "future": 1},
            "resp": {"max": 1, "ttl": 2, "future": 3},
            "times": [{"start": "01:00:00", "end": "02:00:00", "future": 4}],
            "future": {"x": []},
            "type": "user",
            "version": 2,
        },
    }
    decoded = msgspec.json.decode(json.dumps(user_json).encode(), type=UserClaims)
    assert decoded.nats.pub.allow == ["a"]
    assert decoded.nats.resp == ResponsePermission(max=1, ttl=2)
    assert decoded.nats.times == [TimeRange(start="01:00:00", end="02:00:00")]
    response_json = {
        "nats": {"jwt": "j", "future": 1, "type": "authorization_response", "version": 2},
        "x": 2,
    }
    response = msgspec.json.decode(
        json.dumps(response_json).encode(), type=AuthorizationResponseClaims
    )
    assert response.nats.jwt == "j"


def test_unknown_fields_survive_signed_decode() -> None:
    key = KeyPair.create_account()
    claims = UserClaims(sub=KeyPair.create_user().public_key, nats=user())
    token = nats_jwt.encode(claims, key, now=1_800_000_000)
    # Re-sign a payload with extra fields, as a newer server or library would send.
    header, payload, _ = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["newer_claim"] = {"a": 1}
    data["nats"]["newer_field"] = [1]
    body = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    signature = base64.urlsafe_b64encode(key.sign(f"{header}.{body}".encode()))
    resigned = f"{header}.{body}.{signature.decode().rstrip('=')}"
    assert nats_jwt.decode(resigned, UserClaims).sub == claims.sub


# --- omitempty ---------------------------------------------------------------------


def test_defaults_omitted_on_encode() -> None:
    encoded = as_json(UserClaims(sub="U1", nats=user(pub=Permission(), sub=Permission())))
    assert encoded == {"sub": "U1", "nats": {"pub": {}, "sub": {}, "type": "user", "version": 2}}
    for absent in ("aud", "exp", "jti", "iat", "iss", "name", "nbf"):
        assert absent not in encoded
    nats = encoded["nats"]
    for absent in (
        "resp",
        "src",
        "times",
        "times_location",
        "subs",
        "data",
        "payload",
        "bearer_token",
        "proxy_required",
        "allowed_connection_types",
        "issuer_account",
        "tags",
    ):
        assert absent not in nats


def test_empty_lists_and_zero_values_omitted() -> None:
    encoded = as_json(
        user(src=[], times=[], tags=[], subs=0, bearer_token=False, pub=Permission(allow=[]))
    )
    # Go writes struct-typed fields even when empty: pub and sub are always there.
    assert encoded == {"pub": {}, "sub": {}, "type": "user", "version": 2}


def test_negative_limits_are_written() -> None:
    # -1 is "unlimited" in Go and is not the zero value: it must be written.
    encoded = as_json(user(subs=-1, data=-1, payload=-1))
    assert (encoded["subs"], encoded["data"], encoded["payload"]) == (-1, -1, -1)


def test_explicit_struct_fields_are_written_even_when_empty() -> None:
    request = AuthorizationRequest(
        server_id=ServerId(),
        user_nkey="",
        client_info=ClientInfo(),
        connect_opts=ConnectOptions(),
        type="authorization_request",
        version=2,
    )
    encoded = as_json(request)
    assert encoded["server_id"] == {}
    assert encoded["client_info"] == {}
    assert encoded["connect_opts"] == {"protocol": 0}  # Go has no omitempty on protocol
    assert encoded["user_nkey"] == ""  # not omitempty in Go


def test_struct_fields_always_written_with_defaults() -> None:
    encoded_user = as_json(user())
    assert encoded_user["pub"] == {}
    assert encoded_user["sub"] == {}
    request = AuthorizationRequest(user_nkey="U1", type="authorization_request", version=2)
    encoded_request = as_json(request)
    assert "server_id" in encoded_request
    assert "client_info" in encoded_request
    assert "connect_opts" in encoded_request


def test_type_and_version_always_written() -> None:
    assert as_json(user())["type"] == "user"
    assert as_json(user())["version"] == 2
    response = as_json(AuthorizationResponse(type="authorization_response", version=2))
    assert response == {"type": "authorization_response", "version": 2}


def test_type_and_version_are_required() -> None:
    with pytest.raises(TypeError):
        User()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        AuthorizationResponse(jwt="j")  # type: ignore[call-arg]
    for missing in ('{"version":2}', '{"type":"user"}'):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(missing.encode(), type=User)


def test_request_requires_user_nkey() -> None:
    raw = json.loads(SPEC_REQUEST)
    del raw["nats"]["user_nkey"]
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(raw).encode(), type=AuthorizationRequestClaims)


# --- integers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("exp",), 1795895816.5),
        (("exp",), 1795895816.0),
        (("iat",), 1.5),
        (("nats", "client_info", "id"), 9.0),
        (("nats", "connect_opts", "protocol"), 1.0),
        (("nats", "version"), 2.0),
    ],
)
def test_float_in_int_field_rejected(path: tuple[str, ...], value: float) -> None:
    raw = json.loads(SPEC_REQUEST)
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(raw).encode(), type=AuthorizationRequestClaims)


@pytest.mark.parametrize("field", ["subs", "data", "payload"])
def test_float_limit_in_user_rejected(field: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            json.dumps({field: 1.5, "type": "user", "version": 2}).encode(), type=User
        )


def test_float_resp_ttl_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"resp":{"max":1,"ttl":1.5},"type":"user","version":2}', type=User)


def test_float_in_signed_token_rejected_by_decode() -> None:
    key = KeyPair.create_account()
    payload = {"exp": 1795895816.0, "iss": key.public_key, "nats": {"type": "user", "version": 2}}
    header = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ"
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    signature = base64.urlsafe_b64encode(key.sign(f"{header}.{body}".encode())).decode()
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(f"{header}.{body}.{signature.rstrip('=')}", UserClaims)


# --- secrecy -----------------------------------------------------------------------

SECRETS = {
    "password": "hunter2-password",
    "auth_token": "tok-secret-123",
    "jwt": "eyJsecret.jwt.value",
    "sig": "c2lnbmF0dXJlLXNlY3JldA",
}


def test_connect_options_repr_hides_credentials() -> None:
    options = ConnectOptions(user="alice", nkey="UPUBLIC", name="client", lang="go", **SECRETS)
    for text in (repr(options), str(options), f"{options}", f"{options!r}"):
        for secret in SECRETS.values():
            assert secret not in text
        assert "alice" in text
        assert "UPUBLIC" in text
    # It says which credentials were present, without their values.
    for name in ("password", "auth_token", "jwt", "sig"):
        assert name in repr(options)


@pytest.mark.parametrize("name", list(SECRETS))
def test_each_credential_hidden_on_its_own(name: str) -> None:
    options = ConnectOptions(user="bob", **{name: SECRETS[name]})
    assert SECRETS[name] not in repr(options)
    assert "bob" in repr(options)


def test_nested_reprs_hide_credentials() -> None:
    claims = msgspec.json.decode(SPEC_REQUEST.encode(), type=AuthorizationRequestClaims)
    options = msgspec.structs.replace(claims.nats.connect_opts, **SECRETS)
    request = msgspec.structs.replace(claims.nats, connect_opts=options)
    full = msgspec.structs.replace(claims, nats=request)
    for text in (repr(request), repr(full), str(full), repr([full])):
        for secret in SECRETS.values():
            assert secret not in text
        assert USER_NKEY in text  # the rest is still shown
