"""Client-supplied text cannot forge log lines (issue 14, item 6).

A CONNECT user name with a newline once forged a whole ``CRITICAL ... allowed`` line
through the timeout, policy-error and signer-failure lines. Every record the library
logs about such a request must stay one line, whichever path it takes.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from policies import FixedGrant

from faststream_callout import (
    AuthorizationRequest,
    CalloutPipeline,
    CalloutSettings,
    Identity,
    KeyPair,
    SigningKeys,
)
from faststream_callout.core.pipeline import Outcome
from faststream_callout.testing import FakeServer

FORGED = "mallory\n2026-12-03 CRITICAL allowed user='admin' account='SYS'"
BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
LINE_BREAKS = frozenset(BREAKS)


class Failing:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        raise RuntimeError("the user store is down")


class Slow:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        await asyncio.sleep(30)
        raise AssertionError


class Anyone:
    def lookup(self, request: AuthorizationRequest) -> Identity:
        return Identity(request.connect_opts.user)


class BrokenSigner:
    """Signs nothing: the signer-failure path."""

    def __init__(self, key: KeyPair) -> None:
        self.public_key = key.public_key

    async def sign(self, data: bytes) -> bytes:
        raise RuntimeError("kms unavailable")


def one_line(records: list[logging.LogRecord]) -> list[str]:
    """The messages that span more than one line."""
    return [r.getMessage() for r in records if LINE_BREAKS & set(r.getMessage())]


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(b):04X}" for b in BREAKS])
@pytest.mark.parametrize("path", ["policy_error", "timeout", "signer_failure", "invalid_grant"])
async def test_every_record_stays_one_line(
    caplog: pytest.LogCaptureFixture, path: str, brk: str
) -> None:
    issuer = KeyPair.create_account()
    user = FORGED.replace("\n", brk)
    keys = SigningKeys(BrokenSigner(issuer)) if path == "signer_failure" else SigningKeys(issuer)
    lookup = {"policy_error": Failing(), "timeout": Slow()}.get(path, Anyone())
    grant = FixedGrant("APP", pub=[f"chat.{brk}.>"] if path == "invalid_grant" else ["chat.>"])
    pipeline = CalloutPipeline(
        keys, lookup, grant, CalloutSettings(max_decision_time=0.05)
    )
    minted = FakeServer.config_mode(issuer.public_key).request(user=user, password="pw")
    with caplog.at_level(logging.DEBUG, logger="faststream_callout"):
        decision = await pipeline.decide(minted.body, minted.server_xkey)
    expected = {
        "policy_error": Outcome.ERROR,
        "timeout": Outcome.TIMEOUT,
        "signer_failure": Outcome.SIGNER_FAILED,
        "invalid_grant": Outcome.ERROR,
    }[path]
    assert decision.outcome is expected
    records = [r for r in caplog.records if r.name.startswith("faststream_callout")]
    assert len(records) >= 2, [r.getMessage() for r in records]  # the path's line + the decision
    assert one_line(records) == []
    # ... and the name is still there to read, escaped.
    assert any("mallory" in r.getMessage() for r in records if r.levelno >= logging.WARNING)
