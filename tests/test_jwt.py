"""NATS JWT encoding and decoding (SPEC 3), checked against hand-built tokens.

Tokens that should be refused are built by hand here (header, payload and a
real Ed25519 signature over them), so each one is wrong in exactly one way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

import msgspec
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faststream_callout import KeyPair
from faststream_callout.core.errors import InvalidJWTError
from faststream_callout.protocol import jwt as nats_jwt
from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponse,
    AuthorizationResponseClaims,
    ClientInfo,
    ConnectOptions,
    Permission,
    ResponsePermission,
    ServerId,
    TimeRange,
    User,
    UserClaims,
)

NOW = 1_800_000_000
GO_HEADER_JSON = b'{"typ":"JWT","alg":"ed25519-nkey"}'
GO_HEADER_SEGMENT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ"
STANDARD_CLAIMS = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")

# A user JWT produced by Go (nsc / nats-io/jwt v2), from nats-server's test
# sources: server/configs/one.creds. Its signing key is its `iss`; the test
# below verifies the signature with PyNaCl directly, so the token is authentic.
GO_USER_JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ."
    "eyJqdGkiOiJHRUNQVEpISE1TM01DTUtMVFBHWUdBTzQ1R1E2TjZRUFlXUTRHUExBRUIzM1ZDUkpOUlZRIiwiaWF0"
    "IjoxNjE2MjQ3MjMyLCJpc3MiOiJBQlZSWktKNlo3TklNUElZSlJDSEVZRlJVTzdFTk42TldPS1FERkxGREZWUFNN"
    "MzZVUFgyVUNQUCIsIm5hbWUiOiJvbmUiLCJzdWIiOiJVRENJQkdHR0hDSkJRUE9PNFNDSkpCSFpEUjM3TlFHR0NJ"
    "V01ORzJEREFLSjZXTUtCTUFLWElNTyIsIm5hdHMiOnsicHViIjp7fSwic3ViIjp7fSwic3VicyI6LTEsImRhdGEi"
    "Oi0xLCJwYXlsb2FkIjotMSwidHlwZSI6InVzZXIiLCJ2ZXJzaW9uIjoyfX0."
    "VLhSDtGZEF_jdvgmhgkdISXAt5wFMMZxxwm5w8UrsnlM1hkUvtxBlTe4IP0xJIf4xf8JOR2Bmf73xUGJKUZECQ"
)
GO_USER_ISSUER = "ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP"
GO_USER_SUBJECT = "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO"
GO_USER_JTI = "GECPTJHHMS3MCMKLTPGYGAO45GQ6N6QPYWQ4GPLAEB33VCRJNRVQ"


# --- helpers -----------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(unb64(token.split(".")[1]))


def raw_public(public_key: str) -> bytes:
    return base64.b32decode(public_key)[1:33]


def nacl_verifies(token: str, public_key: str) -> bool:
    header, payload, signature = token.split(".")
    try:
        nacl.signing.VerifyKey(raw_public(public_key)).verify(
            f"{header}.{payload}".encode(), unb64(signature)
        )
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def go_json(value: object) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode()


def expected_jti(payload: dict[str, Any]) -> str:
    """SPEC 3.3, from scratch: only the 8 standard claims, in order, empty ones left out."""
    standard = {k: payload[k] for k in STANDARD_CLAIMS if k != "jti" and payload.get(k)}
    digest = hashlib.new("sha512_256", go_json(standard)).digest()
    return base64.b32encode(digest).decode().rstrip("=")


def hand_token(
    payload: dict[str, Any] | bytes,
    key: KeyPair,
    *,
    header: bytes = GO_HEADER_JSON,
    encode: Any = b64,
) -> str:
    """A token signed for real by ``key`` over whatever header and payload are given."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{encode(header)}.{encode(body)}"
    return f"{signing_input}.{encode(key.sign(signing_input.encode()))}"


def user_payload(key: KeyPair, **nats: Any) -> dict[str, Any]:
    return {
        "aud": "APP",
        "iat": NOW,
        "iss": key.public_key,
        "name": "alice",
        "sub": KeyPair.create_user().public_key,
        "nats": {"pub": {}, "sub": {}, "type": "user", "version": 2, **nats},
    }


def request_claims() -> AuthorizationRequestClaims:
    server = KeyPair.create_server()
    return AuthorizationRequestClaims(
        aud="nats-authorization-request",
        exp=NOW + 2,
        sub=KeyPair.create_account().public_key,
        nats=AuthorizationRequest(
            server_id=ServerId(name="n1", host="127.0.0.1", id=server.public_key, version="2.15.1"),
            user_nkey=KeyPair.create_user().public_key,
            client_info=ClientInfo(host="127.0.0.1", id=7, user="alice", kind="Client"),
            connect_opts=ConnectOptions(user="alice", password="pw", lang="go", protocol=1),
            type="authorization_request",
            version=2,
        ),
    )


def response_claims() -> AuthorizationResponseClaims:
    return AuthorizationResponseClaims(
        aud=KeyPair.create_server().public_key,
        sub=KeyPair.create_user().public_key,
        exp=NOW + 60,
        nats=AuthorizationResponse(jwt="eyJ.user.jwt", type="authorization_response", version=2),
    )


def user_claims() -> UserClaims:
    return UserClaims(
        aud="APP",
        exp=NOW + 3600,
        name="alice",
        nbf=NOW - 5,
        sub=KeyPair.create_user().public_key,
        nats=User(
            pub=Permission(allow=["chat.>"], deny=["chat.secret"]),
            sub=Permission(allow=["chat.> workers"]),
            resp=ResponsePermission(max=1, ttl=2_000_000_000),
            src=["10.0.0.0/8"],
            times=[TimeRange(start="08:00:00", end="18:00:00")],
            times_location="Europe/Berlin",
            allowed_connection_types=["STANDARD"],
            tags=["t1"],
            type="user",
            version=2,
        ),
    )


CASES = [
    (AuthorizationRequestClaims, request_claims, KeyPair.create_server),
    (AuthorizationResponseClaims, response_claims, KeyPair.create_account),
    (UserClaims, user_claims, KeyPair.create_account),
]
CASE_IDS = ["request", "response", "user"]


# --- encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(("claims_type", "make", "make_key"), CASES, ids=CASE_IDS)
def test_round_trip(claims_type: type, make: Any, make_key: Any) -> None:
    claims, key = make(), make_key()
    token = nats_jwt.encode(claims, key, now=NOW)
    decoded = nats_jwt.decode(token, claims_type)
    payload = payload_of(token)
    expected = msgspec.structs.replace(
        claims, iss=key.public_key, iat=NOW, jti=expected_jti(payload)
    )
    assert decoded == expected
    assert nats_jwt.decode(token.encode(), claims_type) == expected


@pytest.mark.parametrize(("claims_type", "make", "make_key"), CASES, ids=CASE_IDS)
def test_header_segment_is_gos(claims_type: type, make: Any, make_key: Any) -> None:
    token = nats_jwt.encode(make(), make_key(), now=NOW)
    assert token.split(".")[0] == GO_HEADER_SEGMENT
    assert unb64(GO_HEADER_SEGMENT) == GO_HEADER_JSON
    assert token.startswith("eyJ")


@pytest.mark.parametrize(("claims_type", "make", "make_key"), CASES, ids=CASE_IDS)
def test_signature_verifies_independently(claims_type: type, make: Any, make_key: Any) -> None:
    key = make_key()
    token = nats_jwt.encode(make(), key, now=NOW)
    assert nacl_verifies(token, key.public_key)
    assert not nacl_verifies(token, make_key().public_key)


def test_encode_sets_iss_and_iat() -> None:
    key = KeyPair.create_account()
    stale = msgspec.structs.replace(
        user_claims(), iss=KeyPair.create_account().public_key, iat=12345, jti="STALE"
    )
    payload = payload_of(nats_jwt.encode(stale, key, now=NOW))
    assert payload["iss"] == key.public_key
    assert payload["iat"] == NOW
    assert payload["jti"] == expected_jti(payload)
    assert payload["jti"] != "STALE"


def test_encode_defaults_iat_to_current_time() -> None:
    before = int(time.time())
    payload = payload_of(nats_jwt.encode(user_claims(), KeyPair.create_account()))
    after = int(time.time())
    assert isinstance(payload["iat"], int)
    assert before <= payload["iat"] <= after


def test_encode_truncates_float_now_to_integer_seconds() -> None:
    payload = payload_of(nats_jwt.encode(user_claims(), KeyPair.create_account(), now=NOW + 0.9))
    assert payload["iat"] == NOW
    assert isinstance(payload["iat"], int)


@pytest.mark.parametrize(("claims_type", "make", "make_key"), CASES, ids=CASE_IDS)
def test_jti_is_sha512_256_of_standard_claims(claims_type: type, make: Any, make_key: Any) -> None:
    payload = payload_of(nats_jwt.encode(make(), make_key(), now=NOW))
    jti = payload["jti"]
    assert jti == expected_jti(payload)
    assert len(jti) == 52
    assert re.fullmatch(r"[A-Z2-7]{52}", jti)


def test_jti_ignores_nats_and_depends_on_standard_claims() -> None:
    key = KeyPair.create_account()
    base = user_claims()
    other_nats = msgspec.structs.replace(base, nats=User(type="user", version=2))
    first = payload_of(nats_jwt.encode(base, key, now=NOW))["jti"]
    assert payload_of(nats_jwt.encode(other_nats, key, now=NOW))["jti"] == first
    renamed = msgspec.structs.replace(base, name="bob")
    assert payload_of(nats_jwt.encode(renamed, key, now=NOW))["jti"] != first
    later = payload_of(nats_jwt.encode(base, key, now=NOW + 1))["jti"]
    assert later != first


def test_jti_uses_all_standard_claims_in_go_order() -> None:
    payload = payload_of(nats_jwt.encode(user_claims(), KeyPair.create_account(), now=NOW))
    # All 8 are set here, so a wrong order or a missing key changes the hash.
    assert {"aud", "exp", "iat", "iss", "name", "nbf", "sub"} <= payload.keys()
    shuffled = {k: payload[k] for k in ("sub", "iss", "aud", "exp", "iat", "name", "nbf")}
    wrong = (
        base64.b32encode(hashlib.new("sha512_256", go_json(shuffled)).digest()).decode().rstrip("=")
    )
    assert payload["jti"] != wrong
    assert payload["jti"] == expected_jti(payload)


def test_standard_claims_come_first_in_go_order() -> None:
    token = nats_jwt.encode(user_claims(), KeyPair.create_account(), now=NOW)
    keys = list(payload_of(token))
    assert keys == ["aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub", "nats"]


def test_jti_matches_go_for_html_characters() -> None:
    claims = msgspec.structs.replace(user_claims(), name="a<b>&c")
    payload = payload_of(nats_jwt.encode(claims, KeyPair.create_account(), now=NOW))
    assert payload["jti"] == expected_jti(payload)


def test_no_padding_and_url_safe_alphabet() -> None:
    key = KeyPair.create_account()
    # Names chosen so that the standard alphabet would need '+' and '/'.
    for name in ("\u00ff\u00fe?>>>~~~", "subjects>>>???", "a" * 7, "a" * 8):
        claims = msgspec.structs.replace(user_claims(), name=name)
        token = nats_jwt.encode(claims, key, now=NOW)
        segments = token.split(".")
        assert len(segments) == 3
        for segment in segments:
            assert URL_SAFE.match(segment), segment
        assert payload_of(token)["name"] == name


def test_payload_with_plus_and_slash_in_standard_alphabet_round_trips() -> None:
    key = KeyPair.create_account()
    claims = msgspec.structs.replace(user_claims(), name="\u00ff\u00fe\u00fd>>>???")
    token = nats_jwt.encode(claims, key, now=NOW)
    payload_bytes = unb64(token.split(".")[1])
    standard = base64.b64encode(payload_bytes)
    assert b"+" in standard or b"/" in standard  # the test is meaningful
    assert "+" not in token
    assert "/" not in token
    assert "=" not in token
    assert nats_jwt.decode(token, UserClaims).name == claims.name


# --- decoding: what is refused -----------------------------------------------------


def test_flipped_payload_fails_signature() -> None:
    key = KeyPair.create_account()
    token = nats_jwt.encode(user_claims(), key, now=NOW)
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims["name"] = "mallory"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(InvalidJWTError, match="signature"):
        nats_jwt.decode(forged, UserClaims)


def test_flipped_signature_byte_fails() -> None:
    key = KeyPair.create_account()
    header, payload, signature = nats_jwt.encode(user_claims(), key, now=NOW).split(".")
    raw = bytearray(unb64(signature))
    raw[5] ^= 0x40
    with pytest.raises(InvalidJWTError, match="signature"):
        nats_jwt.decode(f"{header}.{payload}.{b64(bytes(raw))}", UserClaims)


def test_signature_from_another_key_fails() -> None:
    key, other = KeyPair.create_account(), KeyPair.create_account()
    header, payload, _ = nats_jwt.encode(user_claims(), key, now=NOW).split(".")
    stolen = b64(other.sign(f"{header}.{payload}".encode()))
    with pytest.raises(InvalidJWTError, match="signature"):
        nats_jwt.decode(f"{header}.{payload}.{stolen}", UserClaims)


def test_iss_swapped_to_another_account_fails() -> None:
    key, other = KeyPair.create_account(), KeyPair.create_account()
    payload = user_payload(key)
    token = hand_token(payload, key)
    header, _, signature = token.split(".")
    payload["iss"] = other.public_key
    with pytest.raises(InvalidJWTError, match="signature"):
        nats_jwt.decode(f"{header}.{b64(json.dumps(payload).encode())}.{signature}", UserClaims)


def test_user_key_cannot_sign_a_response() -> None:
    token = nats_jwt.encode(response_claims(), KeyPair.create_user(), now=NOW)
    assert nacl_verifies(token, payload_of(token)["iss"])  # signature itself is fine
    with pytest.raises(InvalidJWTError, match="issuer"):
        nats_jwt.decode(token, AuthorizationResponseClaims)


@pytest.mark.parametrize(
    "make_key",
    [KeyPair.create_account, KeyPair.create_user, KeyPair.create_operator],
    ids=["account", "user", "operator"],
)
def test_only_a_server_key_can_sign_a_request(make_key: Any) -> None:
    token = nats_jwt.encode(request_claims(), make_key(), now=NOW)
    with pytest.raises(InvalidJWTError, match="issuer"):
        nats_jwt.decode(token, AuthorizationRequestClaims)


@pytest.mark.parametrize(
    "make_key",
    [KeyPair.create_server, KeyPair.create_user, KeyPair.create_operator],
    ids=["server", "user", "operator"],
)
def test_only_an_account_key_can_sign_a_user_jwt(make_key: Any) -> None:
    token = nats_jwt.encode(user_claims(), make_key(), now=NOW)
    with pytest.raises(InvalidJWTError, match="issuer"):
        nats_jwt.decode(token, UserClaims)


def test_iss_that_is_not_a_key_is_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    payload["iss"] = "AGARBAGE"
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


@pytest.mark.parametrize(
    ("claims_type", "wrong_type"),
    [
        (UserClaims, "authorization_response"),
        (UserClaims, "account"),
        (AuthorizationResponseClaims, "user"),
        (AuthorizationResponseClaims, "authorization_request"),
    ],
)
def test_wrong_nats_type_refused(claims_type: type, wrong_type: str) -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    payload["aud"] = KeyPair.create_server().public_key
    payload["nats"] = {"jwt": "x", "pub": {}, "type": wrong_type, "version": 2}
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), claims_type)
    # The same token with the right type decodes, so the type is what is refused.
    payload["nats"]["type"] = "user" if claims_type is UserClaims else "authorization_response"
    assert nats_jwt.decode(hand_token(payload, key), claims_type).iss == key.public_key


def test_decoding_as_the_other_claim_type_refused() -> None:
    key = KeyPair.create_account()
    user_token = nats_jwt.encode(user_claims(), key, now=NOW)
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(user_token, AuthorizationResponseClaims)
    response_token = nats_jwt.encode(response_claims(), key, now=NOW)
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(response_token, UserClaims)


@pytest.mark.parametrize("version", [None, 0, 1, 3, 10])
def test_version_other_than_2_refused(version: int | None) -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    if version is None:
        del payload["nats"]["version"]
    else:
        payload["nats"]["version"] = version
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


def test_version_3_says_newer() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key, version=3)
    with pytest.raises(InvalidJWTError, match="newer"):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


def test_hand_built_valid_token_is_accepted() -> None:
    # The control for the hand-built refusals: the same construction, nothing wrong.
    key = KeyPair.create_account()
    payload = user_payload(key)
    claims = nats_jwt.decode(hand_token(payload, key), UserClaims)
    assert claims.iss == key.public_key
    assert claims.sub == payload["sub"]


def test_missing_nats_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    del payload["nats"]
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


def test_top_level_type_key_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    payload["type"] = "user"
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_wrong_number_of_segments(count: int) -> None:
    token = nats_jwt.encode(user_claims(), KeyPair.create_account(), now=NOW)
    parts = token.split(".")
    mangled = ".".join((parts * 2)[:count])
    with pytest.raises(InvalidJWTError, match="3"):
        nats_jwt.decode(mangled, UserClaims)


def padded_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def test_padded_base64_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    body = json.dumps(payload).encode()
    while len(body) % 3 == 0:  # make sure padding is really there
        payload["name"] += "x"
        body = json.dumps(payload).encode()
    token = hand_token(payload, key, encode=padded_b64)
    assert "=" in token.split(".")[1]
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(token, UserClaims)


def test_padded_signature_refused() -> None:
    key = KeyPair.create_account()
    header, payload, signature = hand_token(user_payload(key), key).split(".")
    assert len(unb64(signature)) % 3 != 0  # 64 bytes: padding "=="
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(f"{header}.{payload}.{padded_b64(unb64(signature))}", UserClaims)


def std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_standard_alphabet_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    payload["name"] = "\u00ff\u00fe\u00fd>>>???"
    token = hand_token(payload, key, encode=std_b64)
    assert "+" in token or "/" in token  # the test is meaningful
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(token, UserClaims)


def test_oversize_token_refused() -> None:
    key = KeyPair.create_account()
    claims = msgspec.structs.replace(user_claims(), name="x" * nats_jwt.MAX_TOKEN_SIZE)
    token = nats_jwt.encode(claims, key, now=NOW)
    assert len(token) > 1024 * 1024
    assert nacl_verifies(token, key.public_key)  # valid apart from its size
    with pytest.raises(InvalidJWTError, match="exceeds"):
        nats_jwt.decode(token, UserClaims)


def test_size_limit_is_one_mebibyte() -> None:
    assert nats_jwt.MAX_TOKEN_SIZE == 1024 * 1024
    with pytest.raises(InvalidJWTError, match="exceeds"):
        nats_jwt.decode("a" * (1024 * 1024 + 1), UserClaims)
    with pytest.raises(InvalidJWTError) as info:
        nats_jwt.decode("a" * (1024 * 1024), UserClaims)
    assert "exceeds" not in str(info.value)


def test_large_token_below_the_limit_is_accepted() -> None:
    key = KeyPair.create_account()
    claims = msgspec.structs.replace(user_claims(), name="x" * 700_000)
    token = nats_jwt.encode(claims, key, now=NOW)
    assert 900_000 < len(token) < 1024 * 1024
    assert nats_jwt.decode(token, UserClaims).name == claims.name


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b"[1,2,3]", b'"a string"', b"{", b"\xff\xfe"],
    ids=["text", "empty", "array", "string", "truncated", "binary"],
)
def test_non_json_payload_refused(body: bytes) -> None:
    key = KeyPair.create_account()
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(body, key), UserClaims)


@pytest.mark.parametrize(
    "header",
    [
        b'{"typ":"JWT","alg":"none"}',
        b'{"typ":"JWT","alg":"HS256"}',
        b'{"typ":"JWT","alg":"EdDSA"}',
        b'{"typ":"JWT"}',
        b'{"typ":"JWS","alg":"ed25519-nkey"}',
        b'{"alg":"ed25519-nkey"}',
        b"not json",
        b"[]",
    ],
)
def test_bad_header_refused(header: bytes) -> None:
    key = KeyPair.create_account()
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(user_payload(key), key, header=header), UserClaims)


@pytest.mark.parametrize(
    "header",
    [
        b'{"typ":"jwt","alg":"ED25519"}',
        b'{"typ":"JWT","alg":"ed25519"}',
        b'{"alg":"ED25519-NKEY","typ":"Jwt"}',
        b'{ "typ" : "JWT", "alg" : "ed25519-nkey" }',
    ],
)
def test_header_variants_accepted_as_nats_io_jwt_does(header: bytes) -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    claims = nats_jwt.decode(hand_token(payload, key, header=header), UserClaims)
    assert claims.sub == payload["sub"]


def test_float_time_in_token_refused() -> None:
    key = KeyPair.create_account()
    payload = user_payload(key)
    payload["exp"] = NOW + 60.5
    with pytest.raises(InvalidJWTError):
        nats_jwt.decode(hand_token(payload, key), UserClaims)


def test_garbage_tokens_refused() -> None:
    for garbage in ("", "...", "a.b.c", "\u00e9.\u00e9.\u00e9", "eyJ.eyJ.!!!", b"\x00\x01.\x02."):
        with pytest.raises(InvalidJWTError):
            nats_jwt.decode(garbage, UserClaims)


# --- times -------------------------------------------------------------------------


def timed(exp: int = 0, nbf: int = 0) -> UserClaims:
    return UserClaims(exp=exp, nbf=nbf, nats=User(type="user", version=2))


def test_exp_equal_to_now_is_valid() -> None:
    nats_jwt.validate_times(timed(exp=NOW), now=NOW)
    nats_jwt.validate_times(timed(exp=NOW), now=NOW + 0.99)  # Unix() truncates


def test_after_exp_is_expired() -> None:
    with pytest.raises(InvalidJWTError, match="claim is expired"):
        nats_jwt.validate_times(timed(exp=NOW), now=NOW + 1)


def test_nbf_in_the_future() -> None:
    with pytest.raises(InvalidJWTError, match="claim is not yet valid"):
        nats_jwt.validate_times(timed(nbf=NOW + 1), now=NOW)
    nats_jwt.validate_times(timed(nbf=NOW), now=NOW)
    nats_jwt.validate_times(timed(nbf=NOW - 100), now=NOW)


def test_zero_times_mean_unset() -> None:
    nats_jwt.validate_times(timed(), now=NOW)
    nats_jwt.validate_times(timed(), now=0)


def test_negative_exp_means_unset_as_in_go() -> None:
    nats_jwt.validate_times(timed(exp=-1), now=NOW)


def test_negative_nbf_is_not_in_the_future() -> None:
    nats_jwt.validate_times(timed(nbf=-1), now=NOW)


def test_validate_times_defaults_to_the_clock() -> None:
    nats_jwt.validate_times(timed(exp=int(time.time()) + 60))
    with pytest.raises(InvalidJWTError):
        nats_jwt.validate_times(timed(exp=int(time.time()) - 60))


# --- a real Go-produced token ------------------------------------------------------


def test_go_token_is_authentic() -> None:
    # Checked without the package: Ed25519 over header.payload with the iss key.
    assert payload_of(GO_USER_JWT)["iss"] == GO_USER_ISSUER
    assert nacl_verifies(GO_USER_JWT, GO_USER_ISSUER)
    assert GO_USER_JWT.split(".", maxsplit=1)[0] == GO_HEADER_SEGMENT


def test_decode_verifies_go_token() -> None:
    claims = nats_jwt.decode(GO_USER_JWT, UserClaims)
    assert claims.iss == GO_USER_ISSUER
    assert claims.sub == GO_USER_SUBJECT
    assert claims.name == "one"
    assert claims.iat == 1616247232
    assert claims.jti == GO_USER_JTI
    assert claims.nats.subs == claims.nats.data == claims.nats.payload == -1
    assert claims.nats.type == "user"
    assert claims.nats.version == 2


def test_our_jti_matches_go_jti() -> None:
    claims = nats_jwt.decode(GO_USER_JWT, UserClaims)
    assert expected_jti(payload_of(GO_USER_JWT)) == GO_USER_JTI
    assert nats_jwt._jti(claims) == GO_USER_JTI


def test_go_token_payload_re_encodes_byte_identically() -> None:
    claims = nats_jwt.decode(GO_USER_JWT, UserClaims)
    assert msgspec.json.encode(claims) == unb64(GO_USER_JWT.split(".")[1])


def test_tampered_go_token_refused() -> None:
    header, payload, signature = GO_USER_JWT.split(".")
    claims = json.loads(unb64(payload))
    claims["nats"]["pub"] = {"allow": [">"]}
    with pytest.raises(InvalidJWTError, match="signature"):
        nats_jwt.decode(f"{header}.{b64(json.dumps(claims).encode())}.{signature}", UserClaims)


# -- the one-pass jti (encode derives the hash input from the payload itself) --------


def reference_payload(claims: Any, key: KeyPair, now: int) -> bytes:
    """The payload built the slow, obvious way: hash the standard claims, then encode."""
    signed = msgspec.structs.replace(claims, iss=key.public_key, iat=now, jti="")
    signed = msgspec.structs.replace(signed, jti=nats_jwt._jti(signed))
    return nats_jwt._go_json(msgspec.json.encode(signed))


def raw_payload(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


TRICKY_TEXT = st.lists(
    st.sampled_from(
        [
            *('"', "\\", ",", ":", "{", "}", "<", ">", "&", "\u2028", "a", "é"),
            *(',"nats":', '"iat":', '","nats":{', '"iat":1,'),
        ]
    ),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    aud=TRICKY_TEXT,
    name=TRICKY_TEXT,
    tag=TRICKY_TEXT,
    now=st.sampled_from([0, 1, NOW]),
    exp=st.sampled_from([0, NOW + 60]),
)
def test_one_pass_payload_equals_the_two_pass_reference(aud, name, tag, now, exp) -> None:
    key = KeyPair.create_account()
    claims = msgspec.structs.replace(
        user_claims(),
        aud=aud,
        name=name,
        exp=exp,
        nats=User(tags=[tag], type="user", version=2),
    )
    token = nats_jwt.encode(claims, key, now=now)
    assert raw_payload(token) == reference_payload(claims, key, now)
    assert nats_jwt.decode(token, UserClaims).name == name
