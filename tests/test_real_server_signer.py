"""External (KMS-style) signers and Drop against a real nats-server.

The issuer key lives behind an async call with latency; nats-server must accept
what it signs in config and operator mode. A dropped request gets no reply: the
client is refused only when the server's auth timeout runs out. A signer that is
down answers with an empty (unsigned) denial: the client is refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from callout_env import CONFIG, USER_INFO_SUBJECT, CalloutEnv, nats_server, run_in
from callout_env import OperatorWorld as Deployment
from policies import FixedGrant, Passwords

from faststream_callout import CalloutPipeline, KeyPair, SigningKeys
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.testing import LocalCalloutServer
from faststream_callout.testing.logins import attempt_login, user_info


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


def lookup() -> Passwords:
    """``<user>-pw``; the user 'drop' is left for another service (no reply)."""
    return Passwords(dropped=frozenset({"drop"}))


def placement(accounts: dict[str, str]) -> FixedGrant:
    return FixedGrant(accounts, pub=[USER_INFO_SUBJECT], sub=["_INBOX.>"], ttl=60)


@dataclass
class Service:
    server: LocalCalloutServer
    kms: Kms
    decisions: list[Decision] = field(default_factory=list)
    log_start: int = 0  # the server is shared: only what it logged since this test began

    def log(self) -> str:
        return self.server.log()[self.log_start :]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth_timeout(self) -> float:
        """The server's callout deadline: what a dropped client waits."""
        return self.server.auth_timeout

    def outcomes(self) -> list[Outcome]:
        return [d.outcome for d in self.decisions]


@pytest.fixture
async def service(callout_env: CalloutEnv) -> AsyncIterator[Service]:
    """The config-mode environment's issuer behind a KMS (the operator test is below)."""
    kms = Kms(callout_env.keys.response_signer.key)
    running = Service(callout_env.server, kms, log_start=len(callout_env.server.log()))
    async with callout_env.serve(
        lookup(),
        placement({"alice": "APP", "bob": "OTHER"}),
        keys=SigningKeys(kms),
        observers=[running.decisions.append],
    ):
        yield running


@run_in(CONFIG)
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


@run_in(CONFIG)
async def test_denial_signed_by_the_external_signer(service: Service) -> None:
    attempt = await attempt_login(service.url, user="alice", password="wrong")
    assert attempt.refused, attempt.error
    assert attempt.latency < service.auth_timeout  # answered, not timed out
    assert service.outcomes() == [Outcome.DENIED]
    # nats-server read our signed reason: the KMS signature was accepted.
    await _wait_for_log(service, "Auth callout service returned an error: bad credentials")


@run_in(CONFIG)
async def test_drop_leaves_the_client_to_the_server_timeout(service: Service) -> None:
    attempt = await attempt_login(service.url, user="drop", password="x")
    assert attempt.refused, attempt.error
    # No reply: the server gave up after authorization.timeout, then refused.
    assert attempt.latency >= service.auth_timeout - 0.05
    assert attempt.latency < service.auth_timeout + 1.5
    assert service.outcomes() == [Outcome.DROPPED]
    assert service.decisions[0].reason == "left for another service"
    assert service.kms.calls == 0
    new = service.log()
    assert "no reason supplied" not in new
    assert "returned an error" not in new
    # The service is not stuck: the next login is answered at once.
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()


@run_in(CONFIG)
async def test_signer_down_refuses_at_once_with_an_unsigned_denial(service: Service) -> None:
    service.kms.down = True
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.refused, attempt.error
    assert attempt.latency < service.auth_timeout  # not the timeout: an empty reply is a denial
    assert service.outcomes() == [Outcome.SIGNER_FAILED]
    await _wait_for_log(service, 'Auth callout violation: "no reason supplied"')
    service.kms.down = False
    attempt = await attempt_login(service.url, user="alice", password="alice-pw")
    assert attempt.client is not None, attempt.error
    await attempt.client.close()
    assert service.outcomes() == [Outcome.SIGNER_FAILED, Outcome.ALLOWED]


async def _wait_for_log(service: Service, text: str) -> None:
    for _ in range(50):
        if text in service.log():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} not in the server log:\n{service.log()[-2000:]}")


# --- operator mode ---------------------------------------------------------------------


@pytest.mark.parametrize("with_xkey", [False, True], ids=["plain", "xkey"])
async def test_operator_mode_login_with_external_signers(with_xkey: bool) -> None:
    deployment = Deployment.generate(with_xkey=with_xkey)
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
    accounts = {"ann": deployment.app.public_key, "tim": deployment.team.public_key}
    pipeline = CalloutPipeline(keys, lookup(), placement(accounts))
    with nats_server(deployment.server_config()) as server:
        async with deployment.serve(server.url, pipeline):
            for name, account in accounts.items():
                attempt = await attempt_login(server.url, user=name, password=f"{name}-pw")
                assert attempt.client is not None, (attempt.error, server.log()[-2000:])
                try:
                    assert (await user_info(attempt.client))["account"] == account
                finally:
                    await attempt.client.close()
            refused = await attempt_login(server.url, user="ann", password="wrong")
            assert refused.refused, refused.error
    # Every reply was signed by the callout account's KMS, each user by its account's.
    assert (callout_kms.calls, app_kms.calls, team_kms.calls) == (3, 1, 1)
