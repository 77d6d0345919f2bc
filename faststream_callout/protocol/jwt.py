"""Encode, sign, decode and verify NATS JWTs (``ed25519-nkey``), as nats-io/jwt v2 does."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from typing import Final, TypeVar

import msgspec

from faststream_callout.protocol.claims import (
    AUTH_REQUEST_TYPE,
    AUTH_RESPONSE_TYPE,
    CLAIMS_VERSION,
    USER_CLAIM_TYPE,
    AuthorizationRequestClaims,
    AuthorizationResponseClaims,
    StandardClaims,
    UserClaims,
    _Claims,
)
from faststream_callout.protocol.errors import InvalidJWTError, InvalidKeyError
from faststream_callout.protocol.nkeys import (
    KeyKind,
    KeyPair,
    b32encode_nopad,
    decode_public_key,
    verify_signature,
)

__all__ = [
    "MAX_TOKEN_SIZE",
    "compact",
    "decode",
    "encode",
    "encode_bytes",
    "signing_input",
    "validate_times",
]

ClaimsT = TypeVar("ClaimsT", bound=_Claims)

MAX_TOKEN_SIZE: Final = 1024 * 1024  # nats-io/jwt v2.8.1 MaxTokenSize
# The exact header bytes Go writes; its base64 starts with "eyJ", which is how
# nats-server tells a plaintext response from an xkey-sealed one.
_HEADER_JSON: Final = b'{"typ":"JWT","alg":"ed25519-nkey"}'
_HEADER_B64: Final = base64.urlsafe_b64encode(_HEADER_JSON).rstrip(b"=")
_ALGORITHMS: Final = frozenset({"ed25519", "ed25519-nkey"})

_ENCODER: Final = msgspec.json.Encoder()


class _Header(msgspec.Struct):
    typ: str = ""
    alg: str = ""


_HEADER_DECODER: Final = msgspec.json.Decoder(_Header)
_DECODERS: Final[dict[type[_Claims], msgspec.json.Decoder[_Claims]]] = {}


class _Expectation(msgspec.Struct, frozen=True):
    claim_type: str
    issuer_kind: KeyKind


_EXPECTED: Final[dict[type[_Claims], _Expectation]] = {
    AuthorizationRequestClaims: _Expectation(AUTH_REQUEST_TYPE, KeyKind.SERVER),
    AuthorizationResponseClaims: _Expectation(AUTH_RESPONSE_TYPE, KeyKind.ACCOUNT),
    UserClaims: _Expectation(USER_CLAIM_TYPE, KeyKind.ACCOUNT),
}


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=")


def _b64decode(segment: bytes) -> bytes:
    # Go's RawURLEncoding: URL alphabet, no padding; anything else is an error.
    if b"=" in segment or b"+" in segment or b"/" in segment:
        raise InvalidJWTError("JWT is not unpadded base64url")
    padded = segment.translate(_TO_STD) + b"=" * (-len(segment) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise InvalidJWTError("JWT is not unpadded base64url") from None


_TO_STD: Final = bytes.maketrans(b"-_", b"+/")
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")


def _go_json(data: bytes) -> bytes:
    # Go's encoding/json escapes these (HTML safety); doing the same keeps our
    # payloads and jti byte-identical to nats-io/jwt. They occur only inside strings.
    if b">" in data or b"<" in data or b"&" in data or b"\xe2\x80" in data:
        for raw, escaped in _GO_ESCAPES:
            data = data.replace(raw, escaped)
    return data


_GO_ESCAPES: Final = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _jti(claims: _Claims) -> str:
    standard = StandardClaims(
        aud=claims.aud,
        exp=claims.exp,
        iat=claims.iat,
        iss=claims.iss,
        name=claims.name,
        nbf=claims.nbf,
        sub=claims.sub,
    )
    return b32encode_nopad(hashlib.new("sha512_256", _go_json(_ENCODER.encode(standard))).digest())


def encode(claims: ClaimsT, key: KeyPair, *, now: int | None = None) -> str:
    """Sign ``claims`` with ``key`` and return the compact JWT.

    As the Go encoder does, ``iss`` is set to the key's public key, ``iat`` to
    ``now`` (integer Unix seconds) and ``jti`` to the SHA-512/256 hash of the
    standard claims.
    """
    return encode_bytes(claims, key, now=now).decode("ascii")


def encode_bytes(claims: ClaimsT, key: KeyPair, *, now: int | None = None) -> bytes:
    """Like :func:`encode`, as ASCII bytes (what goes on the wire)."""
    data = signing_input(claims, key.public_key, now=now)
    return data + b"." + _b64encode(key.sign(data))


def signing_input(claims: ClaimsT, issuer: str, *, now: int | None = None) -> bytes:
    """The bytes an issuer signs: ``header.payload`` of ``claims`` issued by ``issuer`` at ``now``.

    For signers that cannot be called in line (a KMS): sign these bytes, then
    :func:`compact` them with the signature.
    """
    issued_at = int(time.time()) if now is None else int(now)
    signed = msgspec.structs.replace(claims, iss=issuer, iat=issued_at, jti="")
    return _HEADER_B64 + b"." + _b64encode(_with_jti(_go_json(_ENCODER.encode(signed)), signed))


def compact(data: bytes, signature: bytes) -> str:
    """The compact JWT of a :func:`signing_input` and its Ed25519 signature."""
    return (data + b"." + _b64encode(signature)).decode("ascii")


def _with_jti(payload: bytes, claims: _Claims) -> bytes:
    # One JSON encoding serves both the hash and the payload: the standard claims
    # come first and "nats" last, so their JSON (jti empty, hence omitted) is the
    # payload up to ',"nats":' closed by '}', and jti goes in before "iat", where
    # Go writes it. A quote inside a string is escaped, so neither marker can
    # occur in a value. Anything unusual (no iat, a v1 type) takes the long road.
    end = payload.find(b',"nats":')
    at = payload.find(b'"iat":')
    if end < 0 or not 0 < at < end or claims.v1_type:
        with_jti = msgspec.structs.replace(claims, jti=_jti(claims))
        return _go_json(_ENCODER.encode(with_jti))
    digest = hashlib.new("sha512_256", payload[:end] + b"}").digest()
    jti = b32encode_nopad(digest).encode("ascii")
    return payload[:at] + b'"jti":"' + jti + b'",' + payload[at:]


def _decoder(claims_type: type[ClaimsT]) -> msgspec.json.Decoder[ClaimsT]:
    decoder = _DECODERS.get(claims_type)
    if decoder is None:
        decoder = _DECODERS[claims_type] = msgspec.json.Decoder(claims_type)
    return decoder  # type: ignore[return-value]


def decode(token: str | bytes, claims_type: type[ClaimsT], *, go_nulls: bool = False) -> ClaimsT:
    """Decode ``token`` and verify it the way nats-io/jwt does.

    Checks the size, the three segments, the header (``typ`` JWT, ``alg``
    ed25519), the JSON, ``nats.version`` 2 and ``nats.type``, the signature by
    the key in ``iss`` and that this key is of the kind the claim type needs
    (server for requests, account for responses and user JWTs). Times are not
    checked here; see :func:`validate_times`.

    With ``go_nulls``, a JSON ``null`` in an object leaves the field at its
    default, as Go's encoding/json does (other libraries write ``"exp": null``
    and nats-server accepts it); off on the hot path, where nats-server writes
    the tokens.

    Raises:
        InvalidJWTError: with a reason that never quotes the token.

    """
    data = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    if len(data) > MAX_TOKEN_SIZE:
        raise InvalidJWTError(f"token size {len(data)} exceeds maximum of {MAX_TOKEN_SIZE} bytes")
    parts = data.split(b".")
    if len(parts) != 3:
        raise InvalidJWTError("expected 3 chunks")
    header_b64, payload_b64, sig_b64 = parts
    if header_b64 != _HEADER_B64:
        _check_header(_b64decode(header_b64))
    expected = _EXPECTED[claims_type]
    try:
        payload = _b64decode(payload_b64)
        if go_nulls:
            claims = msgspec.convert(_without_nulls(msgspec.json.decode(payload)), claims_type)
        else:
            claims = _decoder(claims_type).decode(payload)
    except msgspec.ValidationError as exc:
        raise InvalidJWTError(f"JWT claims are invalid: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 inside a string
        raise InvalidJWTError("JWT payload is not JSON") from None
    except RecursionError:  # msgspec's depth guard, even for skipped unknown fields
        raise InvalidJWTError("JWT payload is nested too deeply") from None
    if claims.v1_type:
        raise InvalidJWTError("claim failed V1 signature verification (top-level type)")
    version = claims.nats.version  # type: ignore[attr-defined]
    if version > CLAIMS_VERSION:
        raise InvalidJWTError("JWT was generated by a newer version")
    if version < CLAIMS_VERSION:
        raise InvalidJWTError(f"JWT version {version} is not supported, expected 2")
    if claims.nats.type != expected.claim_type:  # type: ignore[attr-defined]
        raise InvalidJWTError(f"not a {expected.claim_type} claim")
    try:
        decode_public_key(claims.iss, expected.issuer_kind)
    except InvalidKeyError:
        raise InvalidJWTError(
            f"JWT issuer is not a {expected.issuer_kind.name.lower()} public key"
        ) from None
    signing_input = data[: len(data) - len(sig_b64) - 1]
    if not verify_signature(claims.iss, signing_input, _b64decode(sig_b64)):
        raise InvalidJWTError("claim failed V2 signature verification")
    return claims


def _without_nulls(value: object) -> object:
    # Only object members: Go leaves a field alone on null, whatever its type.
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _check_header(raw: bytes) -> None:
    try:
        header = _HEADER_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidJWTError("JWT header is not valid JSON") from None
    if header.typ.upper() != "JWT":
        raise InvalidJWTError("not a JWT header")
    if header.alg.lower() not in _ALGORITHMS:
        raise InvalidJWTError("unexpected JWT algorithm")


def validate_times(claims: _Claims, *, now: float | None = None) -> None:
    """Check ``exp`` and ``nbf`` as nats-io/jwt does: no clock skew allowance.

    ``exp == now`` is still valid; expired means ``now > exp``.

    Raises:
        InvalidJWTError: ``claim is expired`` or ``claim is not yet valid``.

    """
    current = int(time.time() if now is None else now)
    if claims.exp > 0 and current > claims.exp:
        raise InvalidJWTError("claim is expired")
    if claims.nbf > 0 and current < claims.nbf:
        raise InvalidJWTError("claim is not yet valid")
