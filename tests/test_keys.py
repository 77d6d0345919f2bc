"""NKeys and XKeys: string encoding, seeds, signatures, secrecy, xkv1 boxes.

Expectations are computed independently of the package: the nkey encoding with
a CRC16/XMODEM written here, Ed25519 and X25519 with PyNaCl directly, and the
``nkeys`` PyPI package where it can encode.
"""

from __future__ import annotations

import base64
import copy
import os
import pickle

import nacl.public
import nacl.signing
import nkeys
import pytest

from faststream_callout import KeyPair, SigningKeys, XKeyPair
from faststream_callout.core import Keyring
from faststream_callout.core.errors import InvalidKeyError
from faststream_callout.protocol.nkeys import (
    KeyKind,
    decode_public_key,
    decode_seed,
    encode_public_key,
    encode_seed,
    is_public_key,
    verify_signature,
)

# SPEC 6.1: prefix bytes and the first character of public keys.
PREFIXES = {
    KeyKind.OPERATOR: (14 << 3, "O"),
    KeyKind.ACCOUNT: (0, "A"),
    KeyKind.USER: (20 << 3, "U"),
    KeyKind.SERVER: (13 << 3, "N"),
    KeyKind.CLUSTER: (2 << 3, "C"),
    KeyKind.CURVE: (23 << 3, "X"),
}
SIGNING_KINDS = [kind for kind in KeyKind if kind is not KeyKind.CURVE]
NKEYS_PREFIX = {
    KeyKind.OPERATOR: nkeys.PREFIX_BYTE_OPERATOR,
    KeyKind.ACCOUNT: nkeys.PREFIX_BYTE_ACCOUNT,
    KeyKind.USER: nkeys.PREFIX_BYTE_USER,
    KeyKind.SERVER: nkeys.PREFIX_BYTE_SERVER,
    KeyKind.CLUSTER: nkeys.PREFIX_BYTE_CLUSTER,
}

# SPEC 6.1 check vector (from nats-server auth_callout_test.go).
CURVE_SEED = "SXAAXMRAEP6JWWHNB6IKFL554IE6LZVT6EY5MBRICPILTLOPHAG73I3YX4"
CURVE_PUBLIC = "XAB3NANV3M6N7AHSQP2U5FRWKKUT7EG2ZXXABV4XVXYQRJGM4S2CZGHT"

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def reference_public(prefix: int, raw: bytes) -> str:
    body = bytes([prefix]) + raw
    return base64.b32encode(body + crc16_xmodem(body).to_bytes(2, "little")).decode().rstrip("=")


def reference_seed(prefix: int, raw: bytes) -> str:
    body = bytes([0x90 | prefix >> 5, (prefix & 0x1F) << 3]) + raw
    return base64.b32encode(body + crc16_xmodem(body).to_bytes(2, "little")).decode().rstrip("=")


def flip_char(text: str, index: int) -> str:
    """Replace one base32 character by another valid one."""
    current = text[index]
    replacement = B32[(B32.index(current) + 1) % len(B32)]
    return text[:index] + replacement + text[index + 1 :]


# --- encoding ----------------------------------------------------------------------


def test_crc16_reference_is_xmodem() -> None:
    # The standard CRC-16/XMODEM check value, so the reference below is right.
    assert crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize("kind", list(KeyKind))
def test_public_key_round_trip(kind: KeyKind) -> None:
    prefix, letter = PREFIXES[kind]
    raw = os.urandom(32)
    public = encode_public_key(kind, raw)
    assert public == reference_public(prefix, raw)
    assert len(public) == 56
    assert public[0] == letter == kind.letter
    assert decode_public_key(public) == raw
    assert decode_public_key(public, kind) == raw
    assert is_public_key(public)
    assert is_public_key(public, kind)


@pytest.mark.parametrize("kind", list(KeyKind))
def test_seed_round_trip(kind: KeyKind) -> None:
    prefix, letter = PREFIXES[kind]
    raw = os.urandom(32)
    seed = encode_seed(kind, raw)
    assert seed == reference_seed(prefix, raw)
    assert len(seed) == 58
    assert seed[:2] == "S" + letter
    assert decode_seed(seed) == (kind, raw)


@pytest.mark.parametrize("kind", SIGNING_KINDS)
def test_encoding_matches_nkeys_package(kind: KeyKind) -> None:
    raw = os.urandom(32)
    theirs_seed = nkeys.encode_seed(raw, NKEYS_PREFIX[kind]).decode()
    assert encode_seed(kind, raw) == theirs_seed
    theirs = nkeys.from_seed(bytearray(theirs_seed.encode()))
    ours = KeyPair.from_seed(theirs_seed)
    assert ours.public_key == theirs.public_key.decode()
    assert ours.kind is kind
    # Signatures interoperate both ways.
    data = os.urandom(40)
    assert ours.verify(data, theirs.sign(data))
    assert theirs.verify(data, ours.sign(data))


@pytest.mark.parametrize("kind", list(KeyKind))
@pytest.mark.parametrize("index", [0, 1, 10, 30, 54])
def test_public_key_crc_mismatch_rejected(kind: KeyKind, index: int) -> None:
    public = encode_public_key(kind, os.urandom(32))
    broken = flip_char(public, index)
    assert broken != public
    with pytest.raises(InvalidKeyError):
        decode_public_key(broken)
    assert not is_public_key(broken)


@pytest.mark.parametrize("kind", list(KeyKind))
def test_seed_crc_mismatch_rejected(kind: KeyKind) -> None:
    seed = encode_seed(kind, os.urandom(32))
    for index in (2, 20, 40):
        with pytest.raises(InvalidKeyError):
            decode_seed(flip_char(seed, index))


@pytest.mark.parametrize("kind", list(KeyKind))
def test_decode_public_key_wrong_kind_rejected(kind: KeyKind) -> None:
    public = encode_public_key(kind, os.urandom(32))
    for other in KeyKind:
        if other is kind:
            continue
        with pytest.raises(InvalidKeyError):
            decode_public_key(public, other)
        assert not is_public_key(public, other)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A",
        "not an nkey at all!",
        "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVL",  # one char short
        "abjhlovmpa4ci6r5klngob4gslniy7ioupajc4yfndlqviobyqguwvla",  # lower case
    ],
)
def test_garbage_is_not_a_public_key(value: str) -> None:
    with pytest.raises(InvalidKeyError):
        decode_public_key(value)
    assert not is_public_key(value)


def test_known_public_key_is_valid() -> None:
    # The issuer used throughout nats-server's auth callout tests (SPEC 7.1).
    assert is_public_key(
        "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA", KeyKind.ACCOUNT
    )


def test_seed_is_not_a_public_key_and_vice_versa() -> None:
    kp = KeyPair.create_account()
    with pytest.raises(InvalidKeyError):
        decode_public_key(kp.seed)
    with pytest.raises(InvalidKeyError):
        decode_seed(kp.public_key)


def test_private_key_prefix_is_not_a_public_key() -> None:
    # 'P...' keys (prefix 15 << 3) share the public-key layout but are not public keys.
    private = reference_public(15 << 3, os.urandom(32))
    assert private.startswith("P")
    assert not is_public_key(private)


def test_wrong_length_raw_rejected() -> None:
    with pytest.raises(InvalidKeyError):
        encode_public_key(KeyKind.ACCOUNT, b"\x00" * 31)
    with pytest.raises(InvalidKeyError):
        encode_seed(KeyKind.ACCOUNT, b"\x00" * 33)


# --- KeyPair -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", SIGNING_KINDS)
def test_keypair_from_seed_round_trip(kind: KeyKind) -> None:
    kp = KeyPair.generate(kind)
    assert kp.kind is kind
    assert kp.public_key[0] == PREFIXES[kind][1]
    again = KeyPair.from_seed(kp.seed)
    assert again.public_key == kp.public_key
    assert again == kp
    assert hash(again) == hash(kp)
    assert KeyPair.from_seed(kp.seed.encode()).public_key == kp.public_key
    assert KeyPair.from_seed(f"  {kp.seed}\n").public_key == kp.public_key


@pytest.mark.parametrize("kind", SIGNING_KINDS)
def test_keypair_public_key_is_the_ed25519_key(kind: KeyKind) -> None:
    raw = os.urandom(32)
    kp = KeyPair.from_seed(reference_seed(PREFIXES[kind][0], raw))
    expected = bytes(nacl.signing.SigningKey(raw).verify_key)
    assert kp.public_key == reference_public(PREFIXES[kind][0], expected)


def test_keypair_constructors_make_the_right_kinds() -> None:
    assert KeyPair.create_account().public_key.startswith("A")
    assert KeyPair.create_user().public_key.startswith("U")
    assert KeyPair.create_server().public_key.startswith("N")
    assert KeyPair.create_operator().public_key.startswith("O")
    assert KeyPair.create_account() != KeyPair.create_account()


def test_keypair_rejects_curve_seed() -> None:
    with pytest.raises(InvalidKeyError):
        KeyPair.from_seed(CURVE_SEED)
    with pytest.raises(InvalidKeyError):
        KeyPair.generate(KeyKind.CURVE)


def test_keypair_rejects_garbage_seed() -> None:
    seed = KeyPair.create_user().seed
    for bad in ("", "SUXXX", flip_char(seed, 12), seed[:-1], "\u00e9" * 58):
        with pytest.raises(InvalidKeyError):
            KeyPair.from_seed(bad)


def test_invalid_seed_error_does_not_quote_the_seed() -> None:
    seed = KeyPair.create_account().seed
    broken = flip_char(seed, 25)
    with pytest.raises(InvalidKeyError) as info:
        KeyPair.from_seed(broken)
    assert broken not in str(info.value)
    assert broken[2:20] not in str(info.value)


def test_xkeypair_rejects_account_seed() -> None:
    with pytest.raises(InvalidKeyError):
        XKeyPair.from_seed(KeyPair.create_account().seed)
    with pytest.raises(InvalidKeyError):
        XKeyPair.from_seed(KeyPair.create_user().seed)


# --- secrecy -----------------------------------------------------------------------


def test_keypair_repr_and_str_hide_the_seed() -> None:
    kp = KeyPair.create_account()
    for text in (repr(kp), str(kp), f"{kp}", f"{kp!r}"):
        assert kp.public_key in text
        assert kp.seed not in text
        assert kp.seed[2:30] not in text


def test_xkeypair_repr_and_str_hide_the_seed() -> None:
    xkp = XKeyPair.generate()
    for text in (repr(xkp), str(xkp), f"{xkp}"):
        assert xkp.public_key in text
        assert xkp.seed not in text
        assert xkp.seed[2:30] not in text


def test_signing_keys_repr_hides_every_seed() -> None:
    issuer = KeyPair.create_account()
    xkey = XKeyPair.generate()
    config = SigningKeys(issuer, xkey=xkey)
    target, target_signer = KeyPair.create_account(), KeyPair.create_account()
    callout_signer = KeyPair.create_account()
    operator = SigningKeys.operator(
        issuer.public_key,
        signing_key=callout_signer,
        accounts={target.public_key: target_signer},
        xkey=xkey,
    )
    next_xkey = XKeyPair.generate()
    keyring = Keyring(config, next_keys=[SigningKeys(issuer, xkey=next_xkey)])
    signer_reprs = [
        repr(operator.response_signer),
        repr(operator.user_jwt_signer(target.public_key)),
    ]
    seeds = [issuer.seed, xkey.seed, target_signer.seed, callout_signer.seed, next_xkey.seed]
    assert next_xkey.public_key in repr(keyring)
    assert callout_signer.public_key in signer_reprs[0]
    assert target_signer.public_key in signer_reprs[1]
    for keys in (config, operator, keyring):
        for text in (repr(keys), str(keys)):
            assert issuer.public_key in text
            assert xkey.public_key in text
        for text in (repr(keys), str(keys), *signer_reprs):
            for seed in seeds:
                assert seed not in text
                assert seed[2:30] not in text


class _RemoteSigner:
    # Picklable on its own, like a KMS client's key reference: the keys must still refuse.
    public_key = KeyPair.create_account().public_key

    def sign(self, data: bytes) -> bytes:
        raise NotImplementedError


@pytest.mark.parametrize(
    "make",
    [
        KeyPair.create_account,
        XKeyPair.generate,
        lambda: SigningKeys(KeyPair.create_account()),
        lambda: SigningKeys(_RemoteSigner()),
        lambda: Keyring(SigningKeys(_RemoteSigner())),
    ],
    ids=["KeyPair", "XKeyPair", "SigningKeys", "SigningKeys of a remote signer", "Keyring"],
)
def test_pickling_refused(make: object) -> None:
    secret_holder = make()  # type: ignore[operator]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret_holder, protocol=protocol)


def test_signing_keys_are_immutable() -> None:
    keys = SigningKeys(KeyPair.create_account(), xkey=XKeyPair.generate())
    for name in ("xkey", "callout_account", "response_signer", "mode", "external"):
        with pytest.raises(AttributeError):
            setattr(keys, name, None)
    with pytest.raises(AttributeError):
        keys.response_signer.key = KeyPair.create_account()  # type: ignore[misc]


def test_deepcopy_refused_for_key_pairs() -> None:
    # copy goes through the same reduce protocol as pickle.
    with pytest.raises(TypeError):
        copy.deepcopy(KeyPair.create_user())
    with pytest.raises(TypeError):
        copy.deepcopy(XKeyPair.generate())


# --- signatures --------------------------------------------------------------------


@pytest.mark.parametrize("kind", SIGNING_KINDS)
def test_sign_and_verify(kind: KeyKind) -> None:
    kp = KeyPair.generate(kind)
    data = os.urandom(100)
    signature = kp.sign(data)
    assert len(signature) == 64
    assert kp.verify(data, signature)
    assert verify_signature(kp.public_key, data, signature)
    # Independently: PyNaCl with the raw key from the public nkey string.
    raw = base64.b32decode(kp.public_key)[1:33]
    nacl.signing.VerifyKey(raw).verify(data, signature)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 1000, 70_000])
def test_signature_is_the_one_pynacl_makes(size: int) -> None:
    # Ed25519 is deterministic: the direct libsodium call must give the same bytes.
    kp = KeyPair.create_account()
    data = os.urandom(size)
    reference = nacl.signing.SigningKey(decode_seed(kp.seed)[1]).sign(data).signature
    assert kp.sign(data) == reference
    assert verify_signature(kp.public_key, data, reference)
    assert not verify_signature(kp.public_key, data + b"x", reference)


def test_verify_signature_rejects_tampered_data() -> None:
    kp = KeyPair.create_account()
    data = b"the signed input"
    signature = kp.sign(data)
    assert not verify_signature(kp.public_key, data + b"!", signature)
    assert not verify_signature(kp.public_key, b"The signed input", signature)
    assert not verify_signature(kp.public_key, b"", signature)


def test_verify_signature_rejects_wrong_key() -> None:
    kp, other = KeyPair.create_account(), KeyPair.create_account()
    data = b"payload"
    assert not verify_signature(other.public_key, data, kp.sign(data))
    assert not other.verify(data, kp.sign(data))


@pytest.mark.parametrize(
    "signature",
    [b"", b"short", b"\x00" * 64, os.urandom(64), os.urandom(63), os.urandom(65)],
    ids=["empty", "short", "zeros", "random64", "random63", "random65"],
)
def test_verify_signature_rejects_garbage_signatures(signature: bytes) -> None:
    kp = KeyPair.create_user()
    assert not verify_signature(kp.public_key, b"data", signature)


def test_verify_signature_with_invalid_public_key_is_false() -> None:
    kp = KeyPair.create_user()
    data = b"data"
    signature = kp.sign(data)
    assert not verify_signature("not-a-key", data, signature)
    assert not verify_signature(flip_char(kp.public_key, 10), data, signature)


def test_signature_flipped_bit_rejected() -> None:
    kp = KeyPair.create_server()
    data = b"data"
    signature = bytearray(kp.sign(data))
    signature[10] ^= 0x01
    assert not verify_signature(kp.public_key, data, bytes(signature))


# --- xkeys -------------------------------------------------------------------------


def test_xkey_spec_check_vector() -> None:
    xkp = XKeyPair.from_seed(CURVE_SEED)
    assert xkp.public_key == CURVE_PUBLIC
    assert xkp.seed == CURVE_SEED
    # And independently of the package: X25519(seed, basepoint) with PyNaCl.
    kind, raw = decode_seed(CURVE_SEED)
    assert kind is KeyKind.CURVE
    public = bytes(nacl.public.PrivateKey(raw).public_key)
    assert reference_public(23 << 3, public) == CURVE_PUBLIC


def test_xkey_seed_round_trip() -> None:
    xkp = XKeyPair.generate()
    assert xkp.public_key.startswith("X")
    assert xkp.seed.startswith("SX")
    assert XKeyPair.from_seed(xkp.seed).public_key == xkp.public_key
    assert XKeyPair.from_seed(xkp.seed.encode()).public_key == xkp.public_key


def test_seal_open_round_trip() -> None:
    alice, bob = XKeyPair.generate(), XKeyPair.generate()
    message = b"eyJhbGciOi... a request JWT" * 3
    sealed = alice.seal(message, bob.public_key)
    assert bob.open(sealed, alice.public_key) == message
    # Reply the other way round.
    assert alice.open(bob.seal(b"reply", alice.public_key), bob.public_key) == b"reply"


def test_seal_open_with_spec_vector_key() -> None:
    service = XKeyPair.from_seed(CURVE_SEED)
    server = XKeyPair.generate()
    sealed = server.seal(b"hello", CURVE_PUBLIC)
    assert service.open(sealed, server.public_key) == b"hello"


@pytest.mark.parametrize("size", [0, 1, 100, 5000])
def test_sealed_layout(size: int) -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    message = os.urandom(size)
    sealed = sender.seal(message, recipient.public_key)
    assert sealed[:4] == b"xkv1"
    assert len(sealed) == 4 + 24 + 16 + size
    # Open it with PyNaCl directly: nonce at [4:28], tag + ciphertext after.
    recipient_private = nacl.public.PrivateKey(decode_seed(recipient.seed)[1])
    sender_public = nacl.public.PublicKey(decode_public_key(sender.public_key, KeyKind.CURVE))
    box = nacl.public.Box(recipient_private, sender_public)
    assert box.decrypt(sealed[28:], sealed[4:28]) == message


def test_opens_a_box_made_by_pynacl() -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    sender_private = nacl.public.PrivateKey(decode_seed(sender.seed)[1])
    recipient_public = nacl.public.PublicKey(decode_public_key(recipient.public_key, KeyKind.CURVE))
    nonce = os.urandom(24)
    box = nacl.public.Box(sender_private, recipient_public).encrypt(b"from go", nonce)
    assert recipient.open(b"xkv1" + nonce + box.ciphertext, sender.public_key) == b"from go"


def test_seal_uses_a_fresh_nonce() -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    first = sender.seal(b"same", recipient.public_key)
    second = sender.seal(b"same", recipient.public_key)
    assert first[4:28] != second[4:28]
    assert first != second


@pytest.mark.parametrize("length", [0, 4, 27, 28])
def test_open_too_short(length: int) -> None:
    recipient, sender = XKeyPair.generate(), XKeyPair.generate()
    with pytest.raises(InvalidKeyError, match="not valid"):
        recipient.open((b"xkv1" + os.urandom(24))[:length], sender.public_key)


def test_open_wrong_version() -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    sealed = sender.seal(b"message", recipient.public_key)
    with pytest.raises(InvalidKeyError, match="version"):
        recipient.open(b"xkv2" + sealed[4:], sender.public_key)


def test_open_wrong_sender() -> None:
    sender, recipient, stranger = XKeyPair.generate(), XKeyPair.generate(), XKeyPair.generate()
    sealed = sender.seal(b"message", recipient.public_key)
    with pytest.raises(InvalidKeyError, match="decrypt"):
        recipient.open(sealed, stranger.public_key)


def test_open_by_wrong_recipient() -> None:
    sender, recipient, stranger = XKeyPair.generate(), XKeyPair.generate(), XKeyPair.generate()
    sealed = sender.seal(b"message", recipient.public_key)
    with pytest.raises(InvalidKeyError, match="decrypt"):
        stranger.open(sealed, sender.public_key)


@pytest.mark.parametrize("index", [4, 20, 28, 40, -1])
def test_open_tampered_byte(index: int) -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    sealed = bytearray(sender.seal(b"a message of some length", recipient.public_key))
    sealed[index] ^= 0x01
    with pytest.raises(InvalidKeyError, match="decrypt"):
        recipient.open(bytes(sealed), sender.public_key)


def test_open_sender_must_be_a_curve_key() -> None:
    sender, recipient = XKeyPair.generate(), XKeyPair.generate()
    sealed = sender.seal(b"message", recipient.public_key)
    with pytest.raises(InvalidKeyError):
        recipient.open(sealed, KeyPair.create_account().public_key)
    with pytest.raises(InvalidKeyError):
        recipient.open(sealed, "garbage")


def test_seal_recipient_must_be_a_curve_key() -> None:
    with pytest.raises(InvalidKeyError):
        XKeyPair.generate().seal(b"message", KeyPair.create_user().public_key)
