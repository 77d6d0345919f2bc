"""Hostile input: the pipeline denies or stays silent; it never raises and never grants.

Every case goes through ``CalloutPipeline.decide`` and is counted in ``CASES``; the
last test prints the totals (``pytest -s tests/test_fuzz.py``). Keys are fixed and
Hypothesis is derandomized, so every run tries the same cases. Each test ends with
a valid login through the same pipeline: the service keeps serving.

Replies are judged by FakeServer against the request the mutation started from.
Mutated requests keep the server's signature unless a test says it re-signs them
(to reach the checks behind the signature).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import nacl.public
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faststream_callout import (
    CalloutPipeline,
    CalloutSettings,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.core.errors import InvalidJWTError
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.core.throttle import Backoff, MemoryThrottle, ThrottlePolicy
from faststream_callout.integration.router import XKEY_HEADER
from faststream_callout.protocol import jwt as nats_jwt
from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    AuthorizationRequestClaims,
    ClientTLS,
)
from faststream_callout.protocol.nkeys import KeyKind, decode_public_key, encode_public_key
from faststream_callout.testing import FakeServer, MintedRequest

T = 1_800_000_000.25
NOW = int(T)
CASES: Counter[str] = Counter()
SERVED: set[str] = set()  # the fuzz tests that ran to their end

# Fixed keys: the same bytes on every run.
ISSUER = KeyPair(KeyKind.ACCOUNT, bytes(range(32)))
SERVER_KEY = KeyPair(KeyKind.SERVER, bytes(range(1, 33)))
SERVICE_XKEY_SEED = bytes(range(2, 34))
SERVER_XKEY_SEED = bytes(range(3, 35))
SERVICE_XKEY = XKeyPair(SERVICE_XKEY_SEED)
SERVER_XKEY = XKeyPair(SERVER_XKEY_SEED)
USER_NKEY = KeyPair(KeyKind.USER, bytes(range(4, 36))).public_key
LOW_ORDER_XKEY = encode_public_key(KeyKind.CURVE, bytes(32))
OTHER_XKEY = XKeyPair(bytes(range(5, 37)))

PLAIN_KEYS = SigningKeys(ISSUER)
SEALED_KEYS = SigningKeys(ISSUER, xkey=SERVICE_XKEY)
PLAIN_SERVER = FakeServer.config_mode(ISSUER.public_key)
PLAIN_SERVER.key = SERVER_KEY
SEALED_SERVER = FakeServer.config_mode(ISSUER.public_key, xkey=SERVICE_XKEY.public_key)
SEALED_SERVER.key = SERVER_KEY
SEALED_SERVER.xkey = SERVER_XKEY

PASSWORD: Final = "alice-pw"
# What the lookup reads: a huge value there is a wrong credential.
CREDENTIALS: Final = (("nats", "connect_opts", "user"), ("nats", "connect_opts", "pass"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
        print_blob=False,
    )


# --- the service under attack ----------------------------------------------------------


class Lookup:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "alice" and opts.password == PASSWORD:
            return Identity("alice")
        raise Denied("bad credentials")


class Builder:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(account="APP", pub=Permission(allow=["chat.>"]))


def service(keys: SigningKeys, *, max_request_size: int = 256 * 1024) -> CalloutPipeline:
    lenient = Backoff(free_failures=10**9)
    return CalloutPipeline(
        keys,
        Lookup(),
        Builder(),
        CalloutSettings(max_request_size=max_request_size),
        throttle=MemoryThrottle(
            ThrottlePolicy(per_pair=lenient, per_subject=lenient, per_source=lenient)
        ),
        clock=lambda: T,
    )


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    # Its own loop, not the session's: these tests are synchronous for Hypothesis.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as loop_runner:
        yield loop_runner


@pytest.fixture
def plain() -> CalloutPipeline:
    return service(PLAIN_KEYS)


@pytest.fixture
def sealed() -> CalloutPipeline:
    return service(SEALED_KEYS)


# --- requests ----------------------------------------------------------------------------


def seal(token: bytes, *, sender: bytes = SERVER_XKEY_SEED) -> bytes:
    """An xkv1 box with a nonce derived from the content: deterministic."""
    nonce = hashlib.sha256(token).digest()[:24]
    peer = nacl.public.PublicKey(decode_public_key(SERVICE_XKEY.public_key, KeyKind.CURVE))
    box = nacl.public.Box(nacl.public.PrivateKey(sender), peer)
    return b"xkv1" + nonce + box.encrypt(token, nonce).ciphertext


def sign(claims: AuthorizationRequestClaims, key: KeyPair = SERVER_KEY) -> bytes:
    return nats_jwt.encode(claims, key, now=NOW).encode()


def mint(server: FakeServer = PLAIN_SERVER, **connect: Any) -> MintedRequest:
    """A request as ``server`` sends it, with a fixed user nkey and client id."""
    connect.setdefault("user", "alice")
    connect.setdefault("password", PASSWORD)
    minted = server.request(now=T, client_id=7, **connect)
    claims = msgspec.structs.replace(
        minted.claims, nats=msgspec.structs.replace(minted.claims.nats, user_nkey=USER_NKEY)
    )
    token = sign(claims)
    decoded = nats_jwt.decode(token, AuthorizationRequestClaims)
    if server.service_xkey is None:
        return MintedRequest(token, {}, decoded)
    return MintedRequest(seal(token), {XKEY_HEADER: SERVER_XKEY.public_key}, decoded)


def full_request() -> MintedRequest:
    """A request with every field set, so that mutations reach every field."""
    minted = mint(
        client_name="app",
        nonce="nonce",
        token="t",
        jwt_token="j.w.t",
        nkey="N",
        sig="sig",
        tls=ClientTLS(version="1.3", cipher="TLS_AES_128_GCM_SHA256", certs=["c"]),
    )
    request = minted.claims.nats
    request = msgspec.structs.replace(
        request,
        server_id=msgspec.structs.replace(request.server_id, cluster="c1", tags=["a"]),
        client_info=msgspec.structs.replace(
            request.client_info, tags=["b"], name_tag="nt", mqtt_id="m"
        ),
        client_tls=msgspec.structs.replace(request.client_tls, verified_chains=[["p"]]),  # type: ignore[arg-type]
        tags=["t"],
        request_nonce="rn",
    )
    claims = msgspec.structs.replace(minted.claims, nats=request, name="n", nbf=NOW - 10)
    token = sign(claims)
    return MintedRequest(token, {}, nats_jwt.decode(token, AuthorizationRequestClaims))


BASE = mint()  # alice, the right password: allowed as it is
FULL = full_request()
BASE_SEALED = mint(SEALED_SERVER)
OTHERS = [mint(user=f"user{n}-{'x' * n}", password=f"p{n}?>~") for n in range(12)]


def segments(token: bytes) -> list[bytes]:
    return token.split(b".")


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def payload_of(token: bytes) -> Any:
    segment = segments(token)[1]
    return json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))


def with_payload(token: bytes, payload: bytes, *, key: KeyPair | None = None) -> bytes:
    """``token`` with another payload: keeping its signature, or signed by ``key``."""
    header, _, signature = segments(token)
    signing_input = header + b"." + b64(payload)
    if key is not None:
        signature = b64(key.sign(signing_input))
    return signing_input + b"." + signature


def with_header(token: bytes, header: bytes, *, key: KeyPair | None = None) -> bytes:
    _, payload, signature = segments(token)
    signing_input = b64(header) + b"." + payload
    if key is not None:
        signature = b64(key.sign(signing_input))
    return signing_input + b"." + signature


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- judging a case ------------------------------------------------------------------------


def decide(
    runner: asyncio.Runner, pipeline: CalloutPipeline, body: bytes, xkey: str | None = None
) -> Decision:
    return runner.run(pipeline.decide(body, xkey))  # raising here fails the test


def no_grant(
    category: str,
    decision: Decision,
    *,
    minted: MintedRequest | None = None,
    server: FakeServer = PLAIN_SERVER,
    empty: bool = False,
) -> None:
    """The case ended in a denial or in silence, and nothing needed the last line of defence."""
    CASES[category] += 1
    assert decision.outcome is not Outcome.ALLOWED, category
    assert decision.outcome is not Outcome.ERROR, (category, decision.reason)
    if empty or minted is None:
        assert decision.reply == b"", (category, decision.reason)
        return
    verdict = server.check(minted, decision.reply, now=T)
    assert not verdict.allowed
    assert verdict.user is None
    if decision.reply:
        assert not verdict.invalid, verdict.reason  # a proper, signed denial
        assert verdict.error


def still_serving(runner: asyncio.Runner, pipeline: CalloutPipeline) -> None:
    SERVED.add(inspect.stack()[1].function)
    encrypted = pipeline.keys.xkey is not None
    server = SEALED_SERVER if encrypted else PLAIN_SERVER
    minted = mint(server)
    decision = decide(runner, pipeline, minted.body, minted.server_xkey)
    assert decision.allowed, decision.reason
    assert server.check(minted, decision.reply, now=T).allowed


def test_the_unmutated_requests_are_allowed(runner: asyncio.Runner) -> None:
    # The control: every mutation below starts from a request that gets in.
    for minted in (BASE, FULL):
        decision = decide(runner, service(PLAIN_KEYS), minted.body)
        assert decision.allowed, decision.reason
    decision = decide(runner, service(SEALED_KEYS), BASE_SEALED.body, BASE_SEALED.server_xkey)
    assert decision.allowed, decision.reason


# --- random bytes -------------------------------------------------------------------------

B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
b64_text = st.text(alphabet=B64_ALPHABET, max_size=400).map(str.encode)
garbage = st.one_of(
    st.binary(max_size=4096),
    st.binary(max_size=600).map(lambda b: b"eyJ" + b),
    st.tuples(b64_text, b64_text, b64_text).map(b".".join),
    st.lists(b64_text, max_size=6).map(b".".join),
    st.binary(max_size=300).map(lambda b: segments(BASE.body)[0] + b"." + b64(b) + b"."),
)


def test_random_bytes(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    @fuzz(1200)
    @given(body=garbage, header=st.sampled_from([None, None, SERVER_XKEY.public_key, "X"]))
    def case(body: bytes, header: str | None) -> None:
        no_grant("random bytes", decide(runner, plain, body, header), empty=True)

    case()
    still_serving(runner, plain)


# --- truncated, flipped, rearranged, re-encoded ----------------------------------------------


def test_truncated_at_every_cut(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    body = BASE.body
    for cut in range(len(body)):
        no_grant("truncated", decide(runner, plain, body[:cut]), minted=BASE, empty=True)
        no_grant("truncated", decide(runner, plain, body[cut + 1 :]), minted=BASE, empty=True)
    still_serving(runner, plain)


def same_token(body: bytes, original: bytes) -> bool:
    """Whether ``body`` is ``original`` with another spelling of the same signature.

    Base64's last character carries unused bits that decoders (Go's too) ignore.
    """
    parts, want = segments(body), segments(original)
    if len(parts) != 3 or parts[:2] != want[:2]:
        return False
    try:
        return nats_jwt._b64decode(parts[2]) == nats_jwt._b64decode(want[2])
    except InvalidJWTError:
        return False


def test_flipped_bytes(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    body = BASE.body

    @fuzz(1000)
    @given(
        flips=st.lists(
            st.tuples(st.integers(0, len(body) - 1), st.integers(1, 255)), min_size=1, max_size=3
        )
    )
    def case(flips: list[tuple[int, int]]) -> None:
        mutated = bytearray(body)
        for position, mask in flips:
            mutated[position] ^= mask
        if bytes(mutated) == body:
            return
        decision = decide(runner, plain, bytes(mutated))
        if same_token(bytes(mutated), body):
            # The very request the server signed: allowed, as nats-server would.
            CASES["flipped: same signature, other spelling"] += 1
            assert decision.allowed
            return
        no_grant("flipped bytes", decision, minted=BASE)

    case()
    still_serving(runner, plain)


def test_segments_swapped_dropped_duplicated(
    runner: asyncio.Runner, plain: CalloutPipeline
) -> None:
    header, payload, signature = segments(BASE.body)
    other = segments(OTHERS[3].body)
    pool = {"h": header, "p": payload, "s": signature, "e": b""}
    for length in range(6):
        for names in itertools.product("hpse", repeat=length):
            if names == ("h", "p", "s"):
                continue
            body = b".".join(pool[n] for n in names)
            no_grant("segments rearranged", decide(runner, plain, body), minted=BASE)
    # Segments of two genuine requests mixed: each is signed, no mix is.
    for picks in itertools.product((0, 1), repeat=3):
        body = b".".join((segments(BASE.body), other)[pick][n] for n, pick in enumerate(picks))
        if body in (BASE.body, OTHERS[3].body):
            continue  # (their headers are the same)
        no_grant("segments of two requests", decide(runner, plain, body), minted=BASE)
    still_serving(runner, plain)


def reencodings(segment: bytes) -> Iterator[bytes]:
    raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    yield base64.urlsafe_b64encode(raw)  # padded
    yield base64.b64encode(raw).rstrip(b"=")  # standard alphabet
    yield base64.b64encode(raw)  # standard, padded
    yield segment + b"=="
    yield segment + b"\n"
    yield b" " + segment
    yield segment[:10] + b"\r\n" + segment[10:]
    yield segment + b"A"  # a base64 length no encoder produces
    yield segment.swapcase()


def test_reencoded_segments(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    for minted in (BASE, *OTHERS):
        parts = segments(minted.body)
        for index in range(3):
            for variant in reencodings(parts[index]):
                body = b".".join(variant if n == index else p for n, p in enumerate(parts))
                if body == minted.body:
                    continue
                no_grant("re-encoded", decide(runner, plain, body), minted=minted)
        everything = b".".join(base64.b64encode(unb) for unb in map(unb64, parts))
        no_grant("re-encoded", decide(runner, plain, everything), minted=minted)
    still_serving(runner, plain)


def unb64(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


# --- headers ------------------------------------------------------------------------------

ALGORITHMS = [
    "none",
    "None",
    "",
    "HS256",
    "HS512",
    "RS256",
    "ES256",
    "EdDSA",
    "ED25519",
    "ED25519-NKEY",
    "Ed25519-Nkey",
    "ed25519",
    "ed25519-nkey",
    "ed25519 ",
    "ed25519-nkey\u0000",
    "ed25519-nkeyx",
]
TYPES = ["JWT", "jwt", "JWS", "", "at+jwt"]


def header_is_accepted(header: Any) -> bool:
    """nats-io/jwt's rule: typ JWT (any case), alg ed25519 or ed25519-nkey (any case)."""
    if not isinstance(header, dict):
        return False
    typ, alg = header.get("typ", ""), header.get("alg", "")
    if not isinstance(typ, str) or not isinstance(alg, str):
        return False
    return typ.upper() == "JWT" and alg.lower() in ("ed25519", "ed25519-nkey")


def check_header(
    runner: asyncio.Runner, pipeline: CalloutPipeline, header: bytes, category: str
) -> None:
    try:
        accepted = header_is_accepted(json.loads(header))
    except (ValueError, RecursionError):
        accepted = False
    # With the original signature: the signing input changed, so never.
    kept = with_header(BASE.body, header)
    if kept != BASE.body:
        no_grant(category, decide(runner, pipeline, kept), minted=BASE)
    # Re-signed by the server: exactly the headers nats-io/jwt accepts.
    decision = decide(runner, pipeline, with_header(BASE.body, header, key=SERVER_KEY))
    if accepted:
        CASES[category + " (re-signed, accepted as Go does)"] += 1
        assert decision.allowed, (header, decision.reason)
    else:
        no_grant(category + " (re-signed)", decision, minted=BASE)


def test_header_algorithms(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    headers = [dumps({"typ": typ, "alg": alg}) for typ in TYPES for alg in ALGORITHMS]
    headers += [
        dumps({"alg": "ed25519-nkey"}),
        dumps({"typ": "JWT"}),
        dumps({"typ": "JWT", "alg": None}),
        dumps({"typ": None, "alg": "ed25519-nkey"}),
        dumps({"typ": "JWT", "alg": ["ed25519-nkey"]}),
        dumps({"typ": "JWT", "alg": 1}),
        dumps({"TYP": "JWT", "ALG": "ed25519-nkey"}),
        dumps({"typ": "JWT", "alg": "ed25519-nkey", "kid": "x", "crit": ["exp"]}),
        b'{"typ":"JWT","alg":"none","alg":"ed25519-nkey"}',
        b'{"typ":"JWT","alg":"ed25519-nkey","alg":"none"}',
        b"[]",
        b"null",
        b'"JWT"',
        b"1",
        b"",
        b"{",
        b'{"typ":"JWT","alg":"ed25519-nkey"',
        b'{"typ":"JWT","alg":"ed25519-nkey","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe{}",
    ]
    for header in headers:
        check_header(runner, plain, header, "header alg/typ")
    still_serving(runner, plain)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def test_random_headers(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    header_dicts = st.fixed_dictionaries(
        {},
        optional={
            "typ": st.sampled_from(TYPES) | json_values,
            "alg": st.sampled_from(ALGORITHMS) | json_values,
        },
    ).flatmap(
        lambda fixed: st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(
            lambda extra: extra | fixed
        )
    )

    @fuzz(400)
    @given(header=header_dicts)
    def case(header: dict[str, Any]) -> None:
        check_header(runner, plain, dumps(header), "random header")

    case()
    still_serving(runner, plain)


# --- payloads: wrong types, unknown fields, huge strings, deep nesting ----------------------


def paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every field of the claims JSON with its kind: str, int, object or list."""
    if isinstance(value, dict):
        if prefix:
            yield prefix, "object"
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        yield prefix, "list"
    elif isinstance(value, bool):
        yield prefix, "bool"
    elif isinstance(value, int):
        yield prefix, "int"
    else:
        yield prefix, "str"


FULL_PAYLOAD = payload_of(FULL.body)
FIELDS = sorted(paths(FULL_PAYLOAD))
OBJECTS = [(), *(path for path, kind in FIELDS if kind == "object")]
STRING_FIELDS = [path for path, kind in FIELDS if kind == "str"]
OPTIONAL: Final = {("nats", "client_tls")}  # null is its right type
assert len(FIELDS) >= 48, FIELDS

numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
small_lists = st.lists(json_scalars, min_size=1, max_size=3)
small_dicts = st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.one_of(numbers, st.booleans(), st.none(), small_lists, small_dicts),
    "int": st.one_of(
        st.integers().map(str),  # numbers as strings
        st.floats(allow_nan=False, allow_infinity=False),  # floats, integral ones too
        st.integers(-(2**40), 2**40).map(float),
        st.booleans(),
        st.none(),
        small_lists,
        small_dicts,
    ),
    "object": st.one_of(small_lists, st.text(max_size=5), numbers, st.booleans(), st.none()),
    "list": st.one_of(
        small_dicts,
        st.text(max_size=5),
        numbers,
        st.booleans(),
        st.none(),
        st.lists(st.integers(), min_size=1, max_size=3),  # lists of the wrong items
    ),
}


def put(payload: Any, path: tuple[str, ...], value: Any) -> Any:
    """A deep copy of ``payload`` with ``value`` at ``path``."""
    copied = json.loads(json.dumps(payload))
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


def test_wrong_json_types(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    @fuzz(1200)
    @given(data=st.data(), field=st.sampled_from(FIELDS))
    def case(data: st.DataObject, field: tuple[tuple[str, ...], str]) -> None:
        path, kind = field
        wrong = WRONG[kind]
        if path in OPTIONAL:
            wrong = wrong.filter(lambda value: value is not None)
        value = data.draw(wrong, label="value")
        payload = dumps(put(FULL_PAYLOAD, path, value))
        # Re-signed by the server, so only the types stand in the way.
        decision = decide(runner, plain, with_payload(FULL.body, payload, key=SERVER_KEY))
        no_grant("wrong JSON type (re-signed)", decision, empty=True)
        assert decision.outcome is Outcome.REJECTED
        assert decision.reason.startswith("JWT claims are invalid"), decision.reason

    case()
    still_serving(runner, plain)


def nested(depth: int, *, as_list: bool) -> str:
    if as_list:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def test_unknown_fields_everywhere(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    @fuzz(500)
    @given(
        where=st.sampled_from(OBJECTS),
        name=st.text(max_size=10).map(lambda text: "x_" + text),
        value=json_values,
    )
    def case(where: tuple[str, ...], name: str, value: Any) -> None:
        payload = dumps(put(FULL_PAYLOAD, (*where, name), value))
        # Still signed by the server for the original payload: refused.
        decision = decide(runner, plain, with_payload(FULL.body, payload))
        no_grant("unknown field", decision, minted=FULL, empty=True)
        # Re-signed (a newer server adding fields): decoded and decided as before.
        decision = decide(runner, plain, with_payload(FULL.body, payload, key=SERVER_KEY))
        CASES["unknown field (re-signed, still allowed)"] += 1
        assert decision.allowed, decision.reason

    case()
    still_serving(runner, plain)


def test_deep_nesting(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    big = service(PLAIN_KEYS, max_request_size=2 * 1024 * 1024)
    for depth in (10, 100, 500, 900, 1000, 2000, 10_000, 100_000):
        for as_list in (True, False):
            deep = nested(depth, as_list=as_list)
            for where in ((), ("nats",), ("nats", "connect_opts"), ("nats", "client_tls")):
                raw = dumps(put(FULL_PAYLOAD, (*where, "x_deep"), "DEEP"))
                payload = raw.replace(b'"DEEP"', deep.encode())
                for key in (None, SERVER_KEY):
                    body = with_payload(FULL.body, payload, key=key)
                    decision = decide(runner, big, body)
                    if key is not None and decision.allowed:
                        # Shallow enough to skip; Go allows up to 10000 levels.
                        CASES["deep nesting (re-signed, allowed)"] += 1
                        continue
                    no_grant("deep nesting", decision, minted=FULL, empty=True)
            # In a known field too: the wrong type, however deep.
            payload = dumps(put(FULL_PAYLOAD, ("nats", "connect_opts", "user"), "DEEP"))
            payload = payload.replace(b'"DEEP"', deep.encode())
            body = with_payload(FULL.body, payload, key=SERVER_KEY)
            no_grant("deep nesting", decide(runner, big, body), empty=True)
    still_serving(runner, big)
    still_serving(runner, plain)


fill = st.sampled_from(["a", "\u00e9", "\u2028", '"', "\\", "<", "\x00", "\U0001f600", "=", "."])


def test_huge_strings(runner: asyncio.Runner, plain: CalloutPipeline) -> None:
    big = service(PLAIN_KEYS, max_request_size=2 * 1024 * 1024)

    @fuzz(150)
    @given(field=st.sampled_from(STRING_FIELDS), size=st.integers(1_000, 400_000), char=fill)
    def case(field: tuple[str, ...], size: int, char: str) -> None:
        payload = dumps(put(FULL_PAYLOAD, field, char * size))
        for pipeline in (plain, big):
            # Keeping the original signature: parsed (by ``big``), then refused.
            decision = decide(runner, pipeline, with_payload(FULL.body, payload))
            no_grant("huge string", decision, minted=FULL, empty=True)
        if field in CREDENTIALS:
            # Re-signed: a huge credential is just a wrong one.
            decision = decide(runner, big, with_payload(FULL.body, payload, key=SERVER_KEY))
            no_grant("huge credential (re-signed)", decision, minted=FULL)

    case()
    still_serving(runner, big)
    still_serving(runner, plain)


# --- signed, but not by a server ---------------------------------------------------------


def test_signed_by_a_key_that_is_not_a_server(
    runner: asyncio.Runner, plain: CalloutPipeline
) -> None:
    kinds = st.sampled_from([KeyKind.ACCOUNT, KeyKind.USER, KeyKind.OPERATOR, KeyKind.CLUSTER])

    @fuzz(300)
    @given(kind=kinds, seed=st.binary(min_size=32, max_size=32), claim_server=st.booleans())
    def case(kind: KeyKind, seed: bytes, claim_server: bool) -> None:
        key = KeyPair(kind, seed)
        claims = BASE.claims
        if not claim_server:
            # Consistent with itself: server_id.id names the signer.
            server_id = msgspec.structs.replace(claims.nats.server_id, id=key.public_key)
            claims = msgspec.structs.replace(
                claims, nats=msgspec.structs.replace(claims.nats, server_id=server_id)
            )
        body = sign(claims, key)
        no_grant("signed by a non-server key", decide(runner, plain, body), empty=True)
        # The payload claiming our server as issuer, signed by the other key.
        forged = with_payload(BASE.body, unb64(segments(BASE.body)[1]), key=key)
        no_grant("signed by a non-server key", decide(runner, plain, forged), empty=True)

    case()
    still_serving(runner, plain)


# --- an xkey service ----------------------------------------------------------------------

XKEY_HEADERS = [
    SERVER_XKEY.public_key,
    OTHER_XKEY.public_key,
    LOW_ORDER_XKEY,
    ISSUER.public_key,  # a valid nkey, not a curve key
    SERVER_XKEY.public_key[:-1],
    SERVER_XKEY.public_key.lower(),
    "",
    "X" * 56,
    "\u00e9" * 56,
]


def test_encrypted_garbage(runner: asyncio.Runner, sealed: CalloutPipeline) -> None:
    boxes = st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=600).map(lambda b: b"xkv1" + b),
        st.tuples(st.binary(min_size=24, max_size=24), st.binary(max_size=1200)).map(
            lambda parts: b"xkv1" + parts[0] + parts[1]
        ),
    )

    @fuzz(1000)
    @given(body=boxes, header=st.sampled_from([*XKEY_HEADERS, None]))
    def case(body: bytes, header: str | None) -> None:
        decision = decide(runner, sealed, body, header)
        no_grant("encrypted garbage", decision, empty=True)
        assert decision.outcome is Outcome.REJECTED

    case()
    # The genuine box with every header that is not the sender's.
    for header in XKEY_HEADERS[1:]:
        decision = decide(runner, sealed, BASE_SEALED.body, header)
        no_grant("genuine box, wrong header", decision, empty=True)
    still_serving(runner, sealed)


def test_mangled_boxes(runner: asyncio.Runner, sealed: CalloutPipeline) -> None:
    body, header = BASE_SEALED.body, BASE_SEALED.server_xkey
    for cut in range(len(body)):
        no_grant("box truncated", decide(runner, sealed, body[:cut], header), empty=True)
    no_grant("box extended", decide(runner, sealed, body + b"\x00", header), empty=True)

    @fuzz(600)
    @given(
        flips=st.lists(
            st.tuples(st.integers(0, len(body) - 1), st.integers(1, 255)), min_size=1, max_size=3
        )
    )
    def case(flips: list[tuple[int, int]]) -> None:
        mutated = bytearray(body)
        for position, mask in flips:
            mutated[position] ^= mask
        if bytes(mutated) != body:
            no_grant("box flipped", decide(runner, sealed, bytes(mutated), header), empty=True)

    case()
    still_serving(runner, sealed)


def test_well_sealed_bad_requests(runner: asyncio.Runner, sealed: CalloutPipeline) -> None:
    token = nats_jwt.encode(BASE_SEALED.claims, SERVER_KEY, now=NOW).encode()
    header = SERVER_XKEY.public_key
    inner = st.one_of(
        st.binary(max_size=1500),
        st.integers(0, len(token) - 1).map(lambda cut: token[:cut]),
        st.tuples(st.integers(0, len(token) - 1), st.integers(1, 255)).map(
            lambda flip: token[: flip[0]] + bytes([token[flip[0]] ^ flip[1]]) + token[flip[0] + 1 :]
        ),
    )

    @fuzz(600)
    @given(plaintext=inner)
    def case(plaintext: bytes) -> None:
        if same_token(plaintext, token):
            return
        decision = decide(runner, sealed, seal(plaintext), header)
        no_grant("well-sealed garbage", decision, minted=BASE_SEALED, server=SEALED_SERVER)

    case()
    # A genuine request sealed by another sender that claims to be the server.
    decision = decide(runner, sealed, seal(token, sender=bytes(range(9, 41))), header)
    no_grant("sealed by another sender", decision, empty=True)
    # A genuine request whose signed server_id.xkey is not the header: a signed denial.
    other = msgspec.structs.replace(BASE_SEALED.claims.nats.server_id, xkey=OTHER_XKEY.public_key)
    claims = msgspec.structs.replace(
        BASE_SEALED.claims, nats=msgspec.structs.replace(BASE_SEALED.claims.nats, server_id=other)
    )
    decision = decide(runner, sealed, seal(sign(claims)), header)
    no_grant("server_id.xkey is not the header", decision, minted=BASE_SEALED, server=SEALED_SERVER)
    assert decision.reply
    # Plaintext to an xkey service: a signed denial, never a grant.
    decision = decide(runner, sealed, token, None)
    no_grant("plaintext to an xkey service", decision, minted=BASE_SEALED, server=SEALED_SERVER)
    still_serving(runner, sealed)


def test_encrypted_request_to_a_plain_service(
    runner: asyncio.Runner, plain: CalloutPipeline
) -> None:
    for header in XKEY_HEADERS:
        decision = decide(runner, plain, BASE_SEALED.body, header)
        no_grant("encrypted to a plain service", decision, empty=True)
    still_serving(runner, plain)


# --- the count ----------------------------------------------------------------------------

FUZZ_TESTS: Final = {
    name
    for name, function in list(globals().items())
    if name.startswith("test_") and "still_serving" in inspect.getsource(function)
}


def test_zz_report_case_count(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many cases ran (``pytest -s``); keep this test last in the module."""
    total = sum(CASES.values())
    lines = [f"{count:7d}  {name}" for name, count in sorted(CASES.items())]
    report = "\n".join(["", f"fuzz cases ({len(SERVED)} tests):", *lines, f"{total:7d}  total"])
    with capsys.disabled():
        print(report)
    if SERVED == FUZZ_TESTS:  # the whole module ran
        assert total >= 5000, report
