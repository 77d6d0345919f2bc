"""Operator mode only: users issued by an account's signing key, accounts outside allowed_accounts.

What operator mode shares with config mode (placement by the account key,
permissions, isolation, denials, expiry, xkey) is in test_real_server.py. The
deployment here is built from scratch (callout_env.OperatorWorld): besides APP
it has TEAM, whose users a signing key issues (``issuer_account``), and
OUTSIDE, a valid account the callout account may not place users in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from callout_env import OperatorWorld, login, nats_server, refused, user_info
from nats_versions import running_version
from policies import FixedGrant, Passwords

from faststream_callout import CalloutPipeline
from faststream_callout.core.pipeline import Outcome
from faststream_callout.testing import FakeServer, LocalNatsServer

# The clients log in with user/password, which reaches an operator-mode callout only
# through default_sentinel; tests/test_version_matrix.py covers 2.10 with sentinel creds.
pytestmark = pytest.mark.skipif(
    running_version() < (2, 11, 2), reason="default_sentinel needs nats-server 2.11.2+"
)


def placement(world: OperatorWorld) -> FixedGrant:
    """ann -> APP, tim -> TEAM (signing key), otto -> OUTSIDE (not allowed)."""
    return FixedGrant(
        {
            "ann": world.app.public_key,
            "tim": world.team.public_key,
            "otto": world.outside.public_key,
        },
        pub=["shared.>", "own.{user}.>", "$SYS.REQ.USER.INFO"],
        sub=["shared.>", "_INBOX.>"],
        ttl=60,
    )


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "xkey"])
def world(request: pytest.FixtureRequest) -> OperatorWorld:
    return OperatorWorld.generate(with_xkey=request.param)


@pytest.fixture(scope="module")
async def world_server(world: OperatorWorld) -> AsyncIterator[LocalNatsServer]:
    # Our keys claim OUTSIDE is allowed, so the grant reaches nats-server, which refuses it.
    pipeline = CalloutPipeline(world.signing_keys(allowed=["*"]), Passwords(), placement(world))
    with nats_server(world.server_config()) as server:
        async with world.serve(server.url, pipeline):
            yield server


async def test_user_placed_through_signing_key_with_issuer_account(
    world: OperatorWorld, world_server: LocalNatsServer
) -> None:
    client = await login(world_server.url, user="tim", password="tim-pw")
    try:
        assert (await user_info(client))["account"] == world.team.public_key
    finally:
        await client.close()


async def test_account_not_allowed_is_refused_by_the_server(world_server: LocalNatsServer) -> None:
    await refused(world_server.url, user="otto", password="otto-pw")
    # nats-server explains why in its log.
    for _ in range(20):
        if "not permitted as valid account option" in world_server.log():
            break
        await asyncio.sleep(0.05)
    assert "not permitted as valid account option" in world_server.log()


async def test_our_validation_refuses_the_account_first(world: OperatorWorld) -> None:
    keys = world.signing_keys(allowed=[world.app.public_key, world.team.public_key])
    pipeline = CalloutPipeline(keys, Passwords(), placement(world))
    server = FakeServer.for_keys(keys)
    minted = server.request(user="otto", password="otto-pw")
    decision = await pipeline.decide(minted.body, minted.server_xkey)
    assert decision.outcome is Outcome.ERROR
    assert "allowed_accounts" in decision.reason
    verdict = server.check(minted, decision.reply)
    assert not verdict.allowed
    assert "allowed_accounts" in verdict.error
