"""External (KMS-style) signers and Drop against a real nats-server.

The issuer key lives behind an async call with latency; nats-server must accept
what it signs in config and operator mode. A dropped request gets no reply: the
client is refused only when the server's auth timeout runs out. A signer that is
down answers with an empty (unsigned) denial: the client is refused at once.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from callout_env import OperatorWorld as Deployment
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials
from faststream.security import SASLPlaintext

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    callout_router,
)
from faststream_callout.core.errors import Drop
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.logins import attempt_login, user_info
from faststream_callout.testing.probes import settle

AUTH_TIMEOUT = 1.0  # the server's authorization.timeout: what a dropped client waits


class Kms:
    """An issuer key behind an async call with latency; ``down`` makes it fail."""

    def __init__(self, key: KeyPair, latency: float = 0.05) -> None:
        self._key = key
        self.latency = latency
        self.calls = 0
        self.down = False

    @property
    def public_key(self) -> str:
        return self._key.public_key

    async def sign(self, data: bytes) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.latency)
        if self.down:
            raise ConnectionError("kms unreachable")
        return self._key.sign(data)


class Lookup:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "drop":
            raise Drop("left for another service")
        if opts.password == f"{opts.user}-pw":
            return Identity(opts.user)
        raise Denied("bad credentials")


class Placement:
    def __init__(self, accounts: dict[str, str]) -> None:
        self.accounts = accounts

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(
            account=self.accounts[identity.name],
            pub=Permission(allow=["$SYS.REQ.USER.INFO"]),
            sub=Permission(allow=["_INBOX.>"]),
            ttl=60,
        )


@dataclass
class Service:
    config: CalloutServerConfig
    server: LocalNatsServer
    kms: Kms
    decisions: list[Decision] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def outcomes(self) -> list[Outcome]:
        return [d.outcome for d in self.decisions]


@pytest.fixture(scope="module")
def config_mode() -> Iterator[tuple[CalloutServerConfig, LocalNatsServer, Kms]]:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(
        issuer=issuer.public_key,
        accounts={"APP": {}, "OTHER": {}},
        timeout=AUTH_TIMEOUT,
        server_name="callout-kms",
    )
    server = LocalNatsServer.from_config(config).start()
    try:
        yield config, server, Kms(issuer)
    finally:
        server.close()


@pytest.fixture
async def service(
    config_mode: tuple[CalloutServerConfig, LocalNatsServer, Kms],
) -> AsyncIterator[Service]:
    config, server, kms = config_mode
    kms.down, kms.calls = False, 0
    running = Service(config, server, kms)
    pipeline = CalloutPipeline(
        SigningKeys(kms),
        Lookup(),
        Placement({"alice": "APP", "bob": "OTHER"}),
        observers=[running.decisions.append],
    )
    broker = NatsBroker(
        server.url,
        security=SASLPlaintext(username=config.auth_user, password=config.auth_password),
        logger=None,
    )
    broker.include_router(callout_router(pipeline))
    await broker.start()
    await settle(broker.connection)
    try:
        yield running
    finally:
        await broker.stop()
        assert server.is_running(), server.log()[-2000:]


async def test_login_signed_by_an_async_external_signer(service: Service) -> None:
    for name, account in (("alice", "APP"), ("bob", "OTHER")):
        attempt = await attempt_login(service.url, user=name, password=f"{name}-pw")
        assert attempt.client is not None, attempt.error
        try:
            info = await user_info(attempt.client)
            assert (info["user"], info["account"]) == (name, account)
        finally:
            await attempt.client.close()
    assert service.kms.calls == 4  # a user JWT and a response per login
    assert service.outcomes() == [Outcome.ALLOWED, Outcome.ALLOWED]


async def test_denial_signed_by_the_external_signer(service: Service) -> None:
    attempt = await attempt_login(service.url, user="alice", password="wrong")
    assert attempt.refused, attempt.error
    assert attempt.latency < AUTH_TIMEOUT  # answered, not timed out
    assert service.outcomes() == [Outcome.DENIED]
    # nats-server read our signed reason: the KMS signature was accepted.
    await _wait_for_log(service.server, "Auth callout service returned an error: bad credentials")


async def test_drop_leaves_the_client_to_the_server_timeout(service: Service) -> None:
    before = service.server.log()
    attempt = await attempt_login(service.url, user="drop", password="x")
    assert attempt.refused, attempt.error
    # No reply: the server gave up after authorization.timeout, then refused.
    assert attempt.latency >= AUTH_TIMEOUT - 0.05
    assert attempt.latency < AUTH_TIMEOUT + 1.5
    assert service.outcomes() == [Outcome.DROPPED]
    assert service.decisions[0].reason == "left for another service"
    assert service.kms.calls == 0
    new = service.server.log()[len(before) :]
    assert "no reason supplied" not in new
    assert "returned an error" not in new
    # The service is not stuck: the next login is answered at once.
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()


async def test_signer_down_refuses_at_once_with_an_unsigned_denial(service: Service) -> None:
    service.kms.down = True
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.refused, attempt.error
    assert attempt.latency < AUTH_TIMEOUT  # not the timeout: an empty reply is a denial
    assert service.outcomes() == [Outcome.SIGNER_FAILED]
    await _wait_for_log(service.server, 'Auth callout violation: "no reason supplied"')
    service.kms.down = False
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()
    assert service.outcomes() == [Outcome.SIGNER_FAILED, Outcome.ALLOWED]


async def _wait_for_log(server: LocalNatsServer, text: str) -> None:
    for _ in range(50):
        if text in server.log():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log()[-2000:]}")


# --- operator mode ---------------------------------------------------------------------


@pytest.mark.parametrize("with_xkey", [False, True], ids=["plain", "xkey"])
async def test_operator_mode_login_with_external_signers(with_xkey: bool) -> None:
    deployment = Deployment.generate(with_xkey=with_xkey)
    config = deployment.server_config()
    server = LocalNatsServer(config.render(), port=config.port).start()
    callout_kms, team_kms, app_kms = (
        Kms(deployment.callout),
        Kms(deployment.team_signer),
        Kms(deployment.app),
    )
    keys = SigningKeys.operator(
        callout_kms,
        accounts={deployment.app.public_key: app_kms, deployment.team.public_key: team_kms},
        xkey=deployment.xkey,
    )
    placement = Placement({"ann": deployment.app.public_key, "tim": deployment.team.public_key})
    pipeline = CalloutPipeline(keys, Lookup(), placement)
    try:
        with tempfile.TemporaryDirectory() as creds_dir:
            creds_path = Path(creds_dir) / "service.creds"
            creds_path.touch(mode=0o600)
            creds_path.write_text(deployment.service_creds())
            broker = NatsBroker(
                server.url, security=NatsCredentials(credentials=str(creds_path)), logger=None
            )
            broker.include_router(callout_router(pipeline))
            await broker.start()
            await settle(broker.connection)
            try:
                for name, account in placement.accounts.items():
                    attempt = await attempt_login(server.url, user=name, password=f"{name}-pw")
                    assert attempt.client is not None, (attempt.error, server.log()[-2000:])
                    try:
                        assert (await user_info(attempt.client))["account"] == account
                    finally:
                        await attempt.client.close()
                refused = await attempt_login(server.url, user="ann", password="wrong")
                assert refused.refused, refused.error
            finally:
                await broker.stop()
        # Every reply was signed by the callout account's KMS, each user by its account's.
        assert (callout_kms.calls, app_kms.calls, team_kms.calls) == (3, 1, 1)
    finally:
        server.close()
