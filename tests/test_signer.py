"""External signers (KMS/HSM style) and the Drop outcome, without a broker.

The pipeline must reply byte for byte the same whether a key is in memory or
behind an async call; a signer that fails, hangs or returns anything but a
valid signature by its own key never gets a reply sent (the reply is empty: an
unsigned denial); ``Drop`` sends nothing at all.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from faststream.exceptions import SkipMessage
from prometheus_client import CollectorRegistry

from faststream_callout import (
    CalloutPipeline,
    CalloutSettings,
    ConfigurationError,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.core.errors import Drop, SignerError
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.core.signing import Signer, external_signature, sign_jwt
from faststream_callout.core.throttle import MemoryThrottle
from faststream_callout.integration.metrics import PrometheusMetrics
from faststream_callout.integration.router import CalloutMessage
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing import FakeServer, MintedRequest, Verdict

T = 1_800_000_000.25
LOGGER = "faststream_callout"
GRANT_PUB = Permission(allow=["chat.alice.>"])


class KmsSigner:
    """A key behind an async call, like a KMS: latency, a call count, and failure modes."""

    def __init__(self, key: KeyPair, *, latency: float = 0.002) -> None:
        self._key = key
        self.latency = latency
        self.calls = 0

    @property
    def public_key(self) -> str:
        return self._key.public_key

    async def sign(self, data: bytes) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.latency)
        return self.output(data)

    def output(self, data: bytes) -> bytes:
        return self._key.sign(data)


class SyncHsm:
    """A signer that answers synchronously but is not a KeyPair: still verified."""

    def __init__(self, key: KeyPair, output: Callable[[bytes], Any] | None = None) -> None:
        self._key = key
        self._output = output or key.sign

    @property
    def public_key(self) -> str:
        return self._key.public_key

    def sign(self, data: bytes) -> Any:
        return self._output(data)


class Broken(KmsSigner):
    """Returns what ``make`` builds instead of the signature."""

    def __init__(self, key: KeyPair, make: Callable[[KeyPair, bytes], Any]) -> None:
        super().__init__(key, latency=0)
        self.make = make

    def output(self, data: bytes) -> bytes:
        result: bytes = self.make(self._key, data)
        return result


class Raising(KmsSigner):
    def __init__(self, key: KeyPair, error: Exception) -> None:
        super().__init__(key, latency=0)
        self.error = error

    async def sign(self, data: bytes) -> bytes:
        self.calls += 1
        raise self.error


class Hanging(KmsSigner):
    async def sign(self, data: bytes) -> bytes:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Lookup:
    """alice/alice-pw; 'drop' raises Drop; anything else is denied."""

    def __init__(self) -> None:
        self.calls = 0

    def lookup(self, request: AuthorizationRequest) -> Identity:
        self.calls += 1
        opts = request.connect_opts
        if opts.user == "drop":
            raise Drop("abusive client")
        if opts.user == "alice" and opts.password == "alice-pw":
            return Identity("alice")
        raise Denied("bad credentials")


class Builder:
    def __init__(self, account: str = "APP") -> None:
        self.account = account

    async def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        if identity.name == "alice" and request.client_info.name == "drop-me":
            raise Drop("another service answers this one")
        return Grant(account=self.account, pub=GRANT_PUB, ttl=60)


def pipeline_for(
    keys: SigningKeys,
    *,
    builder: Builder | None = None,
    settings: CalloutSettings | None = None,
    observers: list[Callable[[Decision], object]] | None = None,
    clock: Callable[[], float] = time.time,
    **extra: Any,
) -> CalloutPipeline:
    return CalloutPipeline(
        keys,
        Lookup(),
        builder or Builder(),
        settings,
        observers=observers or [],
        clock=clock,
        **extra,
    )


async def judge(
    pipeline: CalloutPipeline, server: FakeServer, minted: MintedRequest
) -> tuple[Decision, Verdict]:
    decision = await pipeline.decide(minted.body, minted.server_xkey)
    return decision, server.check(minted, decision.reply, now=minted.claims.iat)


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


# --- replies signed externally are the same replies ---------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("user", ["alice", "mallory"], ids=["allowed", "denied"])
async def test_external_signer_replies_byte_for_byte_like_the_key_in_memory(
    kind: str, user: str
) -> None:
    issuer = KeyPair.create_account()
    signer: Signer = KmsSigner(issuer) if kind == "async" else SyncHsm(issuer)
    in_memory = pipeline_for(SigningKeys(issuer), clock=lambda: T)
    external = pipeline_for(SigningKeys(signer), clock=lambda: T)
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    minted = server.request(user=user, password="alice-pw", now=T)
    expected, expected_verdict = await judge(in_memory, server, minted)
    decision, verdict = await judge(external, server, minted)
    # Ed25519 is deterministic and the clock is fixed: identical bytes, identical verdicts.
    assert decision.reply == expected.reply
    assert decision.outcome is expected.outcome
    assert verdict == expected_verdict
    assert verdict.allowed is (user == "alice")
    assert not verdict.invalid
    if user != "alice":
        assert verdict.error == "bad credentials"
    if isinstance(signer, KmsSigner):
        assert signer.calls == (2 if user == "alice" else 1)  # user JWT + response, or denial


async def test_external_signers_in_operator_mode_with_signing_keys() -> None:
    callout, callout_sk = KeyPair.create_account(), KeyPair.create_account()
    app, app_sk = KeyPair.create_account(), KeyPair.create_account()
    response_kms, user_kms = KmsSigner(callout_sk), KmsSigner(app_sk)
    keys = SigningKeys.operator(
        callout.public_key, signing_key=response_kms, accounts={app.public_key: user_kms}
    )
    assert keys.external
    server = FakeServer.operator_mode(
        callout.public_key,
        accounts={callout.public_key: [callout_sk.public_key], app.public_key: [app_sk.public_key]},
        allowed_accounts=[app.public_key],
    )
    pipeline = pipeline_for(keys, builder=Builder(app.public_key))
    _, verdict = await judge(pipeline, server, server.request(user="alice", password="alice-pw"))
    assert verdict.allowed, verdict.reason
    assert verdict.account == app.public_key
    assert verdict.user is not None
    assert verdict.user.iss == app_sk.public_key
    assert verdict.user.nats.issuer_account == app.public_key
    assert verdict.response is not None
    assert verdict.response.iss == callout_sk.public_key
    assert (response_kms.calls, user_kms.calls) == (1, 1)


async def test_external_signer_with_xkey_seals_the_reply() -> None:
    issuer, xkey = KeyPair.create_account(), XKeyPair.generate()
    keys = SigningKeys(KmsSigner(issuer), xkey=xkey)
    server = FakeServer.for_keys(keys)
    decision, verdict = await judge(
        pipeline_for(keys), server, server.request(user="alice", password="alice-pw")
    )
    assert decision.reply.startswith(b"xkv1")
    assert verdict.allowed, verdict.reason
    assert verdict.encrypted


async def test_the_signer_is_awaited_concurrently() -> None:
    issuer = KeyPair.create_account()
    kms = KmsSigner(issuer, latency=0.2)
    pipeline = pipeline_for(SigningKeys(kms), settings=CalloutSettings(auth_timeout=5))
    server = FakeServer.config_mode(issuer.public_key)
    minted = [server.request(user="alice", password="alice-pw") for _ in range(20)]
    started = time.monotonic()
    decisions = await asyncio.gather(*(pipeline.decide(m.body) for m in minted))
    # 20 logins x 2 signatures x 0.2 s, in about 0.4 s: the event loop was never blocked.
    assert time.monotonic() - started < 2.0
    assert all(server.check(m, d.reply).allowed for m, d in zip(minted, decisions, strict=True))


# --- a signer that misbehaves never gets a reply sent -------------------------------


# Each builds the signer's answer from its key and the data it was asked to sign.
BAD_OUTPUTS: dict[str, Callable[[KeyPair, bytes], Any]] = {
    "short": lambda key, data: key.sign(data)[:63],
    "long": lambda key, data: key.sign(data) + b"\x00",
    "empty": lambda key, data: b"",
    "garbage": lambda key, data: os.urandom(64),
    "flipped bit": lambda key, data: bytes([key.sign(data)[0] ^ 1]) + key.sign(data)[1:],
    "another key": lambda key, data: KeyPair.create_account().sign(data),
    "other data": lambda key, data: key.sign(data + b" "),
    "base64 text": lambda key, data: base64.b64encode(key.sign(data))[:64],
    "str": lambda key, data: key.sign(data).hex(),
    "none": lambda key, data: None,
}


@pytest.mark.parametrize("bad", list(BAD_OUTPUTS))
@pytest.mark.parametrize("user", ["alice", "mallory"], ids=["allowed", "denied"])
async def test_invalid_signature_is_never_sent(
    caplog: pytest.LogCaptureFixture, bad: str, user: str
) -> None:
    issuer = KeyPair.create_account()
    signer = Broken(issuer, BAD_OUTPUTS[bad])
    seen: list[Decision] = []
    pipeline = pipeline_for(SigningKeys(signer), observers=[seen.append])
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    minted = server.request(user=user, password="alice-pw")
    with caplog.at_level(logging.INFO):
        decision, verdict = await judge(pipeline, server, minted)
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert decision.reply == b""  # an empty body: nats-server's unsigned denial
    assert decision.reply is not None  # ... and it is sent, so the client is refused now
    assert not decision.allowed
    assert not verdict.allowed
    assert verdict.reason == 'auth callout violation: "no reason supplied"'
    assert not verdict.invalid
    assert decision.request is not None
    assert decision.request.user_nkey == minted.user_nkey
    assert issuer.public_key in decision.reason
    assert seen == [decision]
    [record] = errors(caplog)
    assert issuer.public_key in record.getMessage()
    assert "unsigned denial" in record.getMessage()
    assert record.exc_info is None
    outcomes = [r.callout["outcome"] for r in caplog.records if hasattr(r, "callout")]
    assert outcomes == ["signer_failed"]


async def test_a_sync_signer_returning_garbage_is_caught_too() -> None:
    issuer = KeyPair.create_account()
    keys = SigningKeys(SyncHsm(issuer, output=lambda data: os.urandom(64)))
    server = FakeServer.config_mode(issuer.public_key)
    decision, verdict = await judge(pipeline_for(keys), server, server.request(user="alice"))
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert decision.reply == b""
    assert not verdict.allowed


async def test_signer_exception_is_logged_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    issuer = KeyPair.create_account()
    secret = "kms-credential-" + os.urandom(8).hex()
    signer = Raising(issuer, PermissionError(f"access denied for {secret} / {issuer.seed}"))
    pipeline = pipeline_for(SigningKeys(signer))
    server = FakeServer.config_mode(issuer.public_key)
    with caplog.at_level(logging.DEBUG):
        decision, verdict = await judge(
            pipeline, server, server.request(user="alice", password="alice-pw")
        )
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert decision.reply == b""
    assert not verdict.allowed
    assert signer.calls == 1  # the user JWT: nothing else was tried
    [record] = errors(caplog)
    assert "PermissionError" in record.getMessage()
    assert issuer.public_key in record.getMessage()
    text = caplog.text + repr(decision) + decision.reason
    assert secret not in text
    assert issuer.seed not in text


async def test_hanging_signer_gives_up_at_the_server_deadline() -> None:
    issuer = KeyPair.create_account()
    signer = Hanging(issuer)
    settings = CalloutSettings(auth_timeout=0.3, max_decision_time=0.2, deadline_margin=0.05)
    pipeline = CalloutPipeline(SigningKeys(signer), Lookup(), Builder(), settings)
    server = FakeServer.config_mode(issuer.public_key)
    minted = server.request(user="alice", password="alice-pw")
    started = time.monotonic()
    decision = await pipeline.decide(minted.body)
    elapsed = time.monotonic() - started
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert "did not answer in time" in decision.reason
    assert decision.reply == b""
    assert 0.25 <= elapsed < 1.0  # the server's deadline (0.3 s after receipt), not an hour


async def test_failing_signer_cannot_sign_a_denial_either() -> None:
    issuer = KeyPair.create_account()
    signer = Raising(issuer, ConnectionError("kms unreachable"))
    pipeline = pipeline_for(SigningKeys(signer))
    server = FakeServer.config_mode(issuer.public_key)
    decision, verdict = await judge(pipeline, server, server.request(user="mallory", password="x"))
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert decision.reply == b""
    assert verdict.reason == 'auth callout violation: "no reason supplied"'


async def test_expired_request_with_external_signer_is_rejected_without_waiting() -> None:
    issuer = KeyPair.create_account()
    kms = KmsSigner(issuer, latency=0.05)
    pipeline = CalloutPipeline(SigningKeys(kms), Lookup(), Builder())
    server = FakeServer.config_mode(issuer.public_key)
    minted = server.request(user="alice", password="alice-pw", now=time.time() - 60)
    started = time.monotonic()
    decision = await pipeline.decide(minted.body)
    # The deadline passed long ago: the signer is not waited for; no usable reply anyway.
    assert time.monotonic() - started < 0.05
    assert decision.outcome is Outcome.SIGNER_FAILED
    assert decision.reply == b""


async def test_external_signature_helper() -> None:
    key = KeyPair.create_account()
    data = b"header.payload"
    assert await external_signature(KmsSigner(key), data) == key.sign(data)
    with pytest.raises(SignerError, match="not a 64-byte"):
        await external_signature(Broken(key, BAD_OUTPUTS["short"]), data)
    with pytest.raises(SignerError, match="does not verify"):
        await external_signature(
            KmsSigner(KeyPair.create_account()), data, public_key=key.public_key
        )
    loop = asyncio.get_running_loop()
    with pytest.raises(SignerError, match="in time"):
        await external_signature(Hanging(key), data, deadline=loop.time() + 0.01)


async def test_sign_jwt_matches_jwt_encode() -> None:
    from faststream_callout.protocol import jwt as nats_jwt
    from faststream_callout.protocol.claims import User, UserClaims

    key = KeyPair.create_account()
    claims = UserClaims(sub=KeyPair.create_user().public_key, nats=User(type="user", version=2))
    expected = nats_jwt.encode(claims, key, now=1_800_000_000)
    assert await sign_jwt(claims, key, now=1_800_000_000) == expected
    assert await sign_jwt(claims, KmsSigner(key), now=1_800_000_000) == expected
    decoded = nats_jwt.decode(expected, UserClaims)
    assert decoded.iss == key.public_key


# --- configuration ----------------------------------------------------------------


def test_signer_keys_are_checked_like_key_pairs() -> None:
    user = KeyPair.create_user()
    with pytest.raises(ConfigurationError, match="account key"):
        SigningKeys(KmsSigner(user))
    with pytest.raises(ConfigurationError, match="KeyPair or a Signer"):
        SigningKeys(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="account key"):
        SigningKeys.operator(KmsSigner(user))
    with pytest.raises(ConfigurationError, match="account key"):
        SigningKeys.operator(
            KeyPair.create_account(),
            accounts={KeyPair.create_account().public_key: KmsSigner(user)},
        )

    class NoKey:
        public_key = "not a key"

        def sign(self, data: bytes) -> bytes:
            return data

    with pytest.raises(ConfigurationError, match="account key"):
        SigningKeys(NoKey())


def test_external_flag_and_repr() -> None:
    issuer = KeyPair.create_account()
    assert not SigningKeys(issuer).external
    keys = SigningKeys(KmsSigner(issuer))
    assert keys.external
    assert issuer.public_key in repr(keys)
    assert issuer.seed not in repr(keys)
    operator = SigningKeys.operator(
        issuer, accounts={KeyPair.create_account().public_key: KmsSigner(KeyPair.create_account())}
    )
    assert operator.external


def test_a_signers_own_repr_is_never_shown() -> None:
    # A KMS client's repr may carry its credentials: the keys show public keys only.
    secret = "kms-credential-" + os.urandom(8).hex()
    issuer, app, app_signer = (KeyPair.create_account() for _ in range(3))

    class Chatty(KmsSigner):
        def __repr__(self) -> str:
            return f"Chatty(token={secret})"

    keys = SigningKeys.operator(Chatty(issuer), accounts={app.public_key: Chatty(app_signer)})
    user_jwt_signer = keys.user_jwt_signer(app.public_key)
    assert user_jwt_signer is not None
    texts = [repr(keys), repr(keys.response_signer), repr(user_jwt_signer)]
    assert issuer.public_key in texts[1]
    assert app_signer.public_key in texts[2]
    assert app.public_key in texts[2]  # the account it signs for (issuer_account)
    assert all(secret not in text for text in texts)


async def test_probe_signs_with_every_external_signer() -> None:
    callout, app, app_sk = (KeyPair.create_account() for _ in range(3))
    good = SigningKeys.operator(KmsSigner(callout), accounts={app.public_key: KmsSigner(app_sk)})
    await good.probe()
    await SigningKeys(callout).probe()  # nothing external: nothing to do

    wrong = SigningKeys.operator(
        callout, accounts={app.public_key: Broken(app_sk, BAD_OUTPUTS["garbage"])}
    )
    with pytest.raises(SignerError, match=app_sk.public_key):
        await wrong.probe()
    hanging = SigningKeys(Hanging(callout))
    with pytest.raises(SignerError, match="in time"):
        await hanging.probe(within=0.05)


# --- Drop: no reply at all ------------------------------------------------------------


@pytest.mark.parametrize("where", ["lookup", "builder"])
async def test_drop_sends_no_reply_and_is_observed(
    caplog: pytest.LogCaptureFixture, where: str
) -> None:
    issuer = KeyPair.create_account()
    seen: list[Decision] = []
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    pipeline = pipeline_for(SigningKeys(issuer), observers=[seen.append, metrics])
    server = FakeServer.config_mode(issuer.public_key)
    if where == "lookup":
        minted = server.request(user="drop", password="x")
    else:
        minted = server.request(user="alice", password="alice-pw", client_name="drop-me")
    with caplog.at_level(logging.INFO):
        decision, verdict = await judge(pipeline, server, minted)
        reply = await pipeline(minted.body)
    assert decision.outcome is Outcome.DROPPED
    assert decision.reply is None  # nothing to send
    assert reply is None
    assert not decision.allowed
    assert decision.reason == (
        "abusive client" if where == "lookup" else "another service answers this one"
    )
    assert decision.request is not None
    assert verdict.reason == "authorization callout response not received in time"
    assert not verdict.allowed
    assert not verdict.invalid
    assert [d.outcome for d in seen] == [Outcome.DROPPED, Outcome.DROPPED]
    records = [r for r in caplog.records if hasattr(r, "callout")]
    assert [r.callout["outcome"] for r in records] == ["dropped", "dropped"]
    assert records[0].callout["reason"] == decision.reason
    assert not errors(caplog)
    value = registry.get_sample_value("faststream_callout_decisions_total", {"outcome": "dropped"})
    assert value == 2


async def test_drop_is_not_counted_as_a_failed_attempt() -> None:
    issuer = KeyPair.create_account()
    pipeline = pipeline_for(SigningKeys(issuer), throttle=MemoryThrottle())
    server = FakeServer.config_mode(issuer.public_key)
    for _ in range(10):
        decision = await pipeline.decide(server.request(user="drop", password="x").body)
        assert decision.outcome is Outcome.DROPPED
    # Denials for "drop" would have locked the name out after 5; drops do not count.
    decision = await pipeline.decide(server.request(user="drop", password="x").body)
    assert decision.outcome is Outcome.DROPPED


async def test_drop_with_an_external_signer_never_calls_it() -> None:
    issuer = KeyPair.create_account()
    kms = KmsSigner(issuer)
    pipeline = pipeline_for(SigningKeys(kms))
    server = FakeServer.config_mode(issuer.public_key)
    decision = await pipeline.decide(server.request(user="drop").body)
    assert decision.outcome is Outcome.DROPPED
    assert kms.calls == 0


async def test_router_skips_the_reply_for_a_drop() -> None:
    issuer = KeyPair.create_account()
    seen: list[Decision] = []
    pipeline = pipeline_for(SigningKeys(KmsSigner(issuer)), observers=[seen.append])
    router = callout_router(pipeline)
    [subscriber] = router.subscribers
    handler = subscriber.calls[0].handler  # our function, as FastStream calls it
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    allowed = server.request(user="alice", password="alice-pw")
    reply = await handler(CalloutMessage(allowed.body, {}))
    assert server.check(allowed, reply).allowed
    # A handler's return value is always sent, even None (as an empty body, a denial):
    # for a drop the handler ends with FastStream's SkipMessage, which sends nothing.
    # (A real server then times the client out: tests/test_real_server_signer.py.)
    with pytest.raises(SkipMessage):
        await handler(CalloutMessage(server.request(user="drop").body, {}))
    assert [d.outcome for d in seen] == [Outcome.ALLOWED, Outcome.DROPPED]
    # An unsigned denial is still a reply: sent, so the client is refused at once.
    failing = callout_router(pipeline_for(SigningKeys(Raising(issuer, OSError("down")))))
    denial = await failing.subscribers[0].calls[0].handler(CalloutMessage(allowed.body, {}))
    assert denial == b""
