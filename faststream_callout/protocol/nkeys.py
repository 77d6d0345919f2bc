"""NKeys: NATS Ed25519 key pairs and their string encoding.

The encoding follows nats-io/nkeys ``strkey.go``: base32 (no padding) of a
prefix byte, the 32 raw bytes and a little-endian CRC16/XMODEM. Unlike the
``nkeys`` 0.2 package, decoding here always checks the CRC and the prefix.
"""

from __future__ import annotations

import binascii
import enum
import os
from functools import lru_cache
from typing import Final

import nacl.exceptions
import nacl.signing
from nacl.bindings import crypto_sign, crypto_sign_open

try:
    # PyNaCl's own cffi module. Its Python bindings copy the whole signed message
    # back out and add a few checks per call (~4 us of a 21 us signature); here
    # only the 64 signature bytes are copied. Falls back to the bindings if a
    # PyNaCl release moves it.
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - depends on the PyNaCl release
    _ffi = _lib = None

from faststream_callout.protocol.errors import InvalidKeyError

__all__ = [
    "KeyKind",
    "KeyPair",
    "is_public_key",
    "verify_signature",
]

_PREFIX_SEED = 18 << 3
_PREFIX_PRIVATE = 15 << 3


class KeyKind(enum.Enum):
    """The role of an nkey, named by its first character."""

    OPERATOR = 14 << 3  # O
    ACCOUNT = 0  # A
    USER = 20 << 3  # U
    SERVER = 13 << 3  # N
    CLUSTER = 2 << 3  # C
    CURVE = 23 << 3  # X (xkeys)

    @property
    def letter(self) -> str:
        """The first character of public keys of this kind."""
        return _LETTERS[self]


_LETTERS = {
    KeyKind.OPERATOR: "O",
    KeyKind.ACCOUNT: "A",
    KeyKind.USER: "U",
    KeyKind.SERVER: "N",
    KeyKind.CLUSTER: "C",
    KeyKind.CURVE: "X",
}
_BY_PREFIX = {kind.value: kind for kind in KeyKind}


_B32_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# base64's base32 is pure Python; these run in C where it matters. Decoding maps
# the RFC 4648 alphabet onto int()'s base-32 digits; encoding emits 10-bit pairs.
_TO_INT_DIGITS: Final = bytes.maketrans(_B32_ALPHABET, b"0123456789abcdefghijklmnopqrstuv")
_B32_PAIRS: Final = [chr(_B32_ALPHABET[i >> 5]) + chr(_B32_ALPHABET[i & 31]) for i in range(1024)]


def b32encode_nopad(data: bytes) -> str:
    """RFC 4648 base32 without padding, as nkeys and ``jti`` use it."""
    bits = len(data) * 8
    chars = -(-bits // 5)
    value = int.from_bytes(data, "big") << (chars * 5 - bits)
    odd = chars % 2
    if odd:
        value <<= 5
    text = "".join(
        [_B32_PAIRS[(value >> shift) & 1023] for shift in range((chars + odd) * 5 - 10, -1, -10)]
    )
    return text[:-1] if odd else text


def _unb32(text: str) -> bytes:
    data = text.encode("ascii", "replace")
    if not data or data.translate(None, _B32_ALPHABET):
        raise InvalidKeyError("not a valid base32 nkey")
    bits = len(data) * 5
    size = bits // 8
    return (int(data.translate(_TO_INT_DIGITS), 32) >> (bits - size * 8)).to_bytes(size, "big")


def _crc(data: bytes) -> bytes:
    # CRC-16/XMODEM, the nkeys checksum; binascii.crc_hqx is the same CRC in C.
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def _with_crc(data: bytes) -> bytes:
    return data + _crc(data)


def _check_crc(raw: bytes) -> bytes:
    if len(raw) < 3 or _crc(raw[:-2]) != raw[-2:]:
        raise InvalidKeyError("nkey checksum does not match")
    return raw[:-2]


def encode_public_key(kind: KeyKind, raw: bytes) -> str:
    """Encode 32 raw public key bytes as an nkey string (``A...``, ``U...``)."""
    if len(raw) != 32:
        raise InvalidKeyError("a public key has 32 bytes")
    return b32encode_nopad(_with_crc(bytes([kind.value]) + raw))


def encode_seed(kind: KeyKind, raw: bytes) -> str:
    """Encode 32 raw seed bytes as an nkey seed string (``SA...``, ``SU...``)."""
    if len(raw) != 32:
        raise InvalidKeyError("a seed has 32 bytes")
    header = bytes([_PREFIX_SEED | kind.value >> 5, (kind.value & 31) << 3])
    return b32encode_nopad(_with_crc(header + raw))


def _decode_public_key(public_key: str, kind: KeyKind | None = None) -> bytes:
    raw = _check_crc(_unb32(public_key))
    if len(raw) != 33 or raw[0] not in _BY_PREFIX:
        raise InvalidKeyError("not a valid public nkey")
    if kind is not None and raw[0] != kind.value:
        raise InvalidKeyError(f"not a public {kind.name.lower()} nkey")
    return raw[1:]


@lru_cache(maxsize=4096)
def decode_public_key(public_key: str, kind: KeyKind | None = None) -> bytes:
    """Return the 32 raw bytes of an nkey public key, checking CRC and kind.

    Results are cached: the same server and account keys come back all the time.

    Raises:
        InvalidKeyError: the string is not a valid public key (of ``kind``, if given).

    """
    return _decode_public_key(public_key, kind)


def decode_seed(seed: str) -> tuple[KeyKind, bytes]:
    """Return the kind and the 32 raw bytes of an nkey seed.

    Raises:
        InvalidKeyError: the string is not a valid seed. The message never contains it.

    """
    raw = _check_crc(_unb32(seed))
    if len(raw) != 34 or raw[0] & 0xF8 != _PREFIX_SEED:
        raise InvalidKeyError("not a valid nkey seed")
    prefix = ((raw[0] & 7) << 5) | ((raw[1] & 0xF8) >> 3)
    if prefix not in _BY_PREFIX:
        raise InvalidKeyError("not a valid nkey seed")
    return _BY_PREFIX[prefix], raw[2:]


def is_public_key(value: str, kind: KeyKind | None = None, *, cached: bool = True) -> bool:
    """Whether ``value`` is a valid public nkey (of ``kind``, if given).

    Pass ``cached=False`` for keys seen once (a client's ``user_nkey``), so that
    they do not push the keys that recur out of the cache.
    """
    try:
        (decode_public_key if cached else _decode_public_key)(value, kind)
    except InvalidKeyError:
        return False
    return True


def _sign_detached(data: bytes, secret: bytes) -> bytes:
    if _lib is None:  # pragma: no cover - depends on the PyNaCl release
        return crypto_sign(data, secret)[:64]
    signed = _ffi.new("unsigned char[]", len(data) + 64)
    if _lib.crypto_sign(signed, _ffi.NULL, data, len(data), secret) != 0:
        raise nacl.exceptions.CryptoError("signing failed")
    signature: bytes = _ffi.buffer(signed, 64)[:]
    return signature


def _open_signed(signed: bytes, raw_public_key: bytes) -> bool:
    if _lib is None:  # pragma: no cover - depends on the PyNaCl release
        try:
            crypto_sign_open(signed, raw_public_key)
        except nacl.exceptions.BadSignatureError:
            return False
        return True
    message = _ffi.new("unsigned char[]", len(signed))
    size = _ffi.new("unsigned long long *")
    result: int = _lib.crypto_sign_open(message, size, signed, len(signed), raw_public_key)
    return result == 0


def verify_signature(public_key: str, data: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature by the nkey ``public_key``.

    Decoded public keys are cached: servers sign many requests with one key.
    """
    if len(signature) != 64:
        return False
    try:
        raw = decode_public_key(public_key)
    except InvalidKeyError:
        return False
    return _open_signed(signature + data, raw)


class KeyPair:
    """An Ed25519 nkey pair (operator, account, user or server) that can sign.

    The seed is kept private: ``repr`` and ``str`` show only the kind and the
    public key, and ``seed`` must be asked for by name.
    """

    __slots__ = ("_kind", "_public_key", "_secret", "_signing_key")

    def __init__(self, kind: KeyKind, raw_seed: bytes) -> None:
        if kind is KeyKind.CURVE:
            raise InvalidKeyError("curve keys are xkeys; use XKeyPair")
        self._kind = kind
        self._signing_key = nacl.signing.SigningKey(raw_seed)
        self._secret = self._signing_key._signing_key  # noqa: SLF001 - libsodium's 64-byte key
        self._public_key = encode_public_key(kind, bytes(self._signing_key.verify_key))

    @classmethod
    def from_seed(cls, seed: str | bytes) -> KeyPair:
        """Load a key pair from an nkey seed (``SA...``, ``SU...``, ``SO...``, ``SN...``)."""
        text = seed.decode("ascii", "replace") if isinstance(seed, bytes) else seed
        kind, raw = decode_seed(text.strip())
        return cls(kind, raw)

    @classmethod
    def generate(cls, kind: KeyKind) -> KeyPair:
        """Create a fresh random key pair of ``kind``."""
        return cls(kind, os.urandom(32))

    @classmethod
    def create_account(cls) -> KeyPair:
        """Create a fresh account key pair (``A...``)."""
        return cls.generate(KeyKind.ACCOUNT)

    @classmethod
    def create_user(cls) -> KeyPair:
        """Create a fresh user key pair (``U...``)."""
        return cls.generate(KeyKind.USER)

    @classmethod
    def create_server(cls) -> KeyPair:
        """Create a fresh server key pair (``N...``)."""
        return cls.generate(KeyKind.SERVER)

    @classmethod
    def create_operator(cls) -> KeyPair:
        """Create a fresh operator key pair (``O...``)."""
        return cls.generate(KeyKind.OPERATOR)

    @property
    def kind(self) -> KeyKind:
        """The role of this key."""
        return self._kind

    @property
    def public_key(self) -> str:
        """The public nkey string, e.g. ``ABJH...``."""
        return self._public_key

    @property
    def seed(self) -> str:
        """The seed string (``S...``). Secret: never log it."""
        return encode_seed(self._kind, bytes(self._signing_key))

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; returns the 64-byte Ed25519 signature."""
        return _sign_detached(data, self._secret)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Check a signature made by this key."""
        return verify_signature(self._public_key, data, signature)

    def __repr__(self) -> str:
        return f"KeyPair({self._kind.name.lower()}, {self._public_key})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyPair) and other._public_key == self._public_key

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would write the seed somewhere we do not control.
        raise TypeError("KeyPair cannot be pickled; store its seed deliberately")
