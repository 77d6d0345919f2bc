"""XKeys: curve keys (``X...``/``SX...``) and nkeys' ``xkv1`` sealed boxes.

``xkv1`` is ``b"xkv1" || nonce(24) || crypto_box(plaintext)``: NaCl's
Curve25519-XSalsa20-Poly1305, which is PyNaCl's ``Box``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Final

import nacl.exceptions
import nacl.public

from faststream_callout.protocol.errors import InvalidKeyError
from faststream_callout.protocol.nkeys import (
    KeyKind,
    decode_public_key,
    decode_seed,
    encode_public_key,
    encode_seed,
)

__all__ = ["XKeyPair"]

_VERSION: Final = b"xkv1"
_NONCE_SIZE: Final = 24
_HEADER_SIZE: Final = len(_VERSION) + _NONCE_SIZE


class XKeyPair:
    """A curve key pair that seals and opens ``xkv1`` messages.

    ``repr`` and ``str`` show only the public key; ``seed`` must be asked for by name.
    Boxes (the X25519 key agreement) are cached per peer key, because a server
    keeps its xkey until it restarts.
    """

    __slots__ = ("__weakref__", "_boxes", "_private", "_public_key")

    def __init__(self, raw_seed: bytes) -> None:
        self._private = nacl.public.PrivateKey(raw_seed)
        self._public_key = encode_public_key(KeyKind.CURVE, bytes(self._private.public_key))
        self._boxes = lru_cache(maxsize=64)(self._make_box)

    @classmethod
    def from_seed(cls, seed: str | bytes) -> XKeyPair:
        """Load a curve key pair from its seed (``SX...``)."""
        text = seed.decode("ascii", "replace") if isinstance(seed, bytes) else seed
        kind, raw = decode_seed(text.strip())
        if kind is not KeyKind.CURVE:
            raise InvalidKeyError("not a curve (xkey) seed")
        return cls(raw)

    @classmethod
    def generate(cls) -> XKeyPair:
        """Create a fresh random curve key pair."""
        return cls(os.urandom(32))

    @property
    def public_key(self) -> str:
        """The public xkey, ``X...``."""
        return self._public_key

    @property
    def seed(self) -> str:
        """The seed string (``SX...``). Secret: never log it."""
        return encode_seed(KeyKind.CURVE, bytes(self._private))

    def _make_box(self, peer_public_key: str) -> nacl.public.Box:
        peer = nacl.public.PublicKey(decode_public_key(peer_public_key, KeyKind.CURVE))
        return nacl.public.Box(self._private, peer)

    def seal(self, plaintext: bytes, recipient: str) -> bytes:
        """Encrypt ``plaintext`` for the holder of the xkey ``recipient``."""
        nonce = os.urandom(_NONCE_SIZE)
        return _VERSION + nonce + self._boxes(recipient).encrypt(plaintext, nonce).ciphertext

    def open(self, sealed: bytes, sender: str) -> bytes:
        """Decrypt an ``xkv1`` message from the holder of the xkey ``sender``.

        Raises:
            InvalidKeyError: the sender key is invalid, or the message is not a
                valid ``xkv1`` box from that sender to us.

        """
        if len(sealed) <= _HEADER_SIZE:
            raise InvalidKeyError("encrypted input is not valid")
        if sealed[:4] != _VERSION:
            raise InvalidKeyError("encrypted input wrong version")
        box = self._boxes(sender)
        try:
            return box.decrypt(sealed[_HEADER_SIZE:], sealed[4:_HEADER_SIZE])
        except nacl.exceptions.CryptoError:
            raise InvalidKeyError("could not decrypt input") from None

    def __repr__(self) -> str:
        return f"XKeyPair({self._public_key})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("XKeyPair cannot be pickled; store its seed deliberately")
