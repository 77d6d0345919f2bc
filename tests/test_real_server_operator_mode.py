"""Operator mode (decentralized JWT) against a real nats-server, with and without xkey.

Every key and JWT is generated here: an operator, a system account, the callout
account (AUTH) whose JWT turns auth callout on, and target accounts APP (users
signed by the account key), TEAM (users signed by a signing key, with
issuer_account) and OUTSIDE (not in allowed_accounts).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials
from nats.errors import Error as NatsError
from nats_versions import running_version

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.core.pipeline import Outcome
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)
from faststream_callout.testing import FakeServer
from faststream_callout.testing.local_server import LocalNatsServer, OperatorServerConfig
from faststream_callout.testing.probes import settle

# The clients log in with user/password, which reaches an operator-mode callout only
# through default_sentinel; tests/test_version_matrix.py covers 2.10 with sentinel creds.
pytestmark = pytest.mark.skipif(
    running_version() < (2, 11, 2), reason="default_sentinel needs nats-server 2.11.2+"
)

DENY_ALL = Permission(deny=[">"])


@dataclass
class Deployment:
    """Keys and JWTs of one operator-mode deployment."""

    operator: KeyPair
    system: KeyPair
    callout: KeyPair
    app: KeyPair
    team: KeyPair
    team_signer: KeyPair
    outside: KeyPair
    service_user: KeyPair
    xkey: XKeyPair | None

    @classmethod
    def generate(cls, *, with_xkey: bool) -> Deployment:
        return cls(
            operator=KeyPair.create_operator(),
            system=KeyPair.create_account(),
            callout=KeyPair.create_account(),
            app=KeyPair.create_account(),
            team=KeyPair.create_account(),
            team_signer=KeyPair.create_account(),
            outside=KeyPair.create_account(),
            service_user=KeyPair.create_user(),
            xkey=XKeyPair.generate() if with_xkey else None,
        )

    def server_config(self) -> OperatorServerConfig:
        op = self.operator
        auth = ExternalAuthorization(
            auth_users=[self.service_user.public_key],
            allowed_accounts=[self.app.public_key, self.team.public_key],
            xkey=self.xkey.public_key if self.xkey else "",
        )
        accounts = {
            self.system.public_key: account_jwt(self.system.public_key, op, name="SYS"),
            self.callout.public_key: account_jwt(
                self.callout.public_key, op, name="AUTH", authorization=auth
            ),
            self.app.public_key: account_jwt(self.app.public_key, op, name="APP"),
            self.team.public_key: account_jwt(
                self.team.public_key,
                op,
                name="TEAM",
                signing_keys=[self.team_signer.public_key],
            ),
            self.outside.public_key: account_jwt(self.outside.public_key, op, name="OUTSIDE"),
        }
        sentinel = user_jwt(
            KeyPair.create_user().public_key,
            self.callout,
            name="sentinel",
            bearer_token=True,
            pub=DENY_ALL,
            sub=DENY_ALL,
        )
        return OperatorServerConfig(
            operator_jwt=operator_jwt(op, system_account=self.system.public_key),
            system_account=self.system.public_key,
            account_jwts=accounts,
            default_sentinel=sentinel,
        )

    def service_creds(self) -> str:
        token = user_jwt(self.service_user.public_key, self.callout, name="auth-service")
        return creds(token, self.service_user)

    def signing_keys(self, *, allowed: list[str] | None = None) -> SigningKeys:
        return SigningKeys.operator(
            self.callout,
            accounts={
                self.app.public_key: self.app,
                self.team.public_key: self.team_signer,
                self.outside.public_key: self.outside,
            },
            allowed_accounts=allowed,
            xkey=self.xkey,
        )


class Lookup:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.password == f"{opts.user}-pw":
            return Identity(opts.user)
        raise Denied("bad credentials")


class Placement:
    """ann -> APP, tim -> TEAM (signing key), otto -> OUTSIDE (not allowed)."""

    def __init__(self, deployment: Deployment) -> None:
        self.accounts = {
            "ann": deployment.app.public_key,
            "tim": deployment.team.public_key,
            "otto": deployment.outside.public_key,
        }

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(
            account=self.accounts[identity.name],
            pub=Permission(allow=["shared.>", f"own.{identity.name}.>", "$SYS.REQ.USER.INFO"]),
            sub=Permission(allow=["shared.>", "_INBOX.>"]),
            ttl=60,
        )


@dataclass
class Running:
    deployment: Deployment
    server: LocalNatsServer
    pipeline: CalloutPipeline


def _start(deployment: Deployment) -> LocalNatsServer:
    config = deployment.server_config()
    server = LocalNatsServer(config.render(), port=config.port).start()
    assert server.is_running()
    return server


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "xkey"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return Deployment.generate(with_xkey=request.param)


@pytest.fixture(scope="module")
def operator_server(deployment: Deployment) -> Iterator[LocalNatsServer]:
    server = _start(deployment)
    try:
        yield server
    finally:
        server.close()
        assert not server.is_running()


async def _service(
    server: LocalNatsServer, deployment: Deployment, pipeline: CalloutPipeline, creds_dir: Path
) -> NatsBroker:
    creds_path = creds_dir / "service.creds"
    creds_path.touch(mode=0o600)
    creds_path.write_text(deployment.service_creds())
    broker = NatsBroker(
        server.url, security=NatsCredentials(credentials=str(creds_path)), logger=None
    )
    broker.include_router(callout_router(pipeline))
    await broker.start()
    return broker


@pytest.fixture(scope="module")
async def running(
    operator_server: LocalNatsServer, deployment: Deployment
) -> AsyncIterator[Running]:
    # Our keys claim OUTSIDE is allowed, so the grant reaches nats-server, which refuses it.
    keys = deployment.signing_keys(allowed=["*"])
    pipeline = CalloutPipeline(keys, Lookup(), Placement(deployment))
    with tempfile.TemporaryDirectory() as creds_dir:
        broker = await _service(operator_server, deployment, pipeline, Path(creds_dir))
        try:
            yield Running(deployment, operator_server, pipeline)
        finally:
            await broker.stop()


async def _ignore(_: Exception) -> None:
    return None


async def _connect(url: str, user: str, password: str) -> nats.NATS:
    return await nats.connect(
        url, user=user, password=password, allow_reconnect=False, error_cb=_ignore
    )


async def _account_of(client: nats.NATS) -> str:
    reply = await client.request("$SYS.REQ.USER.INFO", b"", timeout=2)
    data = json.loads(reply.data)["data"]
    return str(data["account"])


async def test_user_placed_in_account_signed_by_account_key(running: Running) -> None:
    client = await _connect(running.server.url, "ann", "ann-pw")
    try:
        assert await _account_of(client) == running.deployment.app.public_key
    finally:
        await client.close()


async def test_user_placed_through_signing_key_with_issuer_account(running: Running) -> None:
    client = await _connect(running.server.url, "tim", "tim-pw")
    try:
        assert await _account_of(client) == running.deployment.team.public_key
    finally:
        await client.close()


async def test_permissions_enforced_and_accounts_isolated(running: Running) -> None:
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    url = running.server.url
    ann = await nats.connect(url, user="ann", password="ann-pw", error_cb=collect)
    tim = await _connect(url, "tim", "tim-pw")
    try:
        ann_sub = await ann.subscribe("shared.news")
        tim_sub = await tim.subscribe("shared.news")
        await settle(ann)
        await settle(tim)
        await tim.publish("shared.news", b"from TEAM")  # another account: never reaches ann
        await settle(tim)
        await ann.publish("shared.news", b"from APP")
        await ann.publish("forbidden.subject", b"denied")
        await settle(ann)
        # Each side got its own message first and nothing from the other account.
        assert (await ann_sub.next_msg(timeout=2)).data == b"from APP"
        assert (await tim_sub.next_msg(timeout=2)).data == b"from TEAM"
        await settle(ann)
        await settle(tim)
        with pytest.raises(nats.errors.TimeoutError):
            await ann_sub.next_msg(timeout=0.2)
        with pytest.raises(nats.errors.TimeoutError):
            await tim_sub.next_msg(timeout=0.2)
        for _ in range(20):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await ann.close()
        await tim.close()


async def test_wrong_password_denied(running: Running) -> None:
    with pytest.raises(NatsError, match="Authorization Violation"):
        await _connect(running.server.url, "ann", "wrong")


async def test_account_not_allowed_is_refused_by_the_server(running: Running) -> None:
    with pytest.raises(NatsError, match="Authorization Violation"):
        await _connect(running.server.url, "otto", "otto-pw")
    # nats-server explains why in its log.
    for _ in range(20):
        if "not permitted as valid account option" in running.server.log():
            break
        await asyncio.sleep(0.05)
    assert "not permitted as valid account option" in running.server.log()


async def test_our_validation_refuses_the_account_first(running: Running) -> None:
    deployment = running.deployment
    keys = deployment.signing_keys(allowed=[deployment.app.public_key, deployment.team.public_key])
    pipeline = CalloutPipeline(keys, Lookup(), Placement(deployment))
    server = FakeServer.for_keys(keys)
    minted = server.request(user="otto", password="otto-pw")
    decision = await pipeline.decide(minted.body, minted.server_xkey)
    assert decision.outcome is Outcome.ERROR
    assert "allowed_accounts" in decision.reason
    verdict = server.check(minted, decision.reply)
    assert not verdict.allowed
    assert "allowed_accounts" in verdict.error


async def test_service_with_wrong_xkey_gets_no_client_in(deployment: Deployment) -> None:
    if deployment.xkey is None:
        pytest.skip("only meaningful with encryption")
    server = _start(deployment)
    wrong = Deployment(**{**deployment.__dict__, "xkey": XKeyPair.generate()})
    pipeline = CalloutPipeline(wrong.signing_keys(), Lookup(), Placement(deployment))
    with tempfile.TemporaryDirectory() as creds_dir:
        broker = await _service(server, deployment, pipeline, Path(creds_dir))
        try:
            with pytest.raises(NatsError, match="Authorization Violation"):
                await _connect(server.url, "ann", "ann-pw")
        finally:
            await broker.stop()
            server.close()
