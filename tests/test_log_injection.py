"""Client-supplied text cannot forge log lines (issue 14, item 6).

A CONNECT user name with a newline once forged a whole ``CRITICAL ... allowed`` line
through the timeout, policy-error and signer-failure lines. Every record the library
logs about such a request must stay one line, whichever path it takes: the pipeline's
lines, the decision log (the client's host too), the server-feedback line (nats-server's
reason and server name), and what ``check`` and ``dev`` print about a login.
"""

from __future__ import annotations

import asyncio
import io
import json
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
from faststream_callout.integration.feedback import ServerFeedback
from faststream_callout.testing import FakeServer
from faststream_callout.tools.cli.dev import _DecisionTap
from faststream_callout.tools.cli.logins import LoginResult, format_login

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
@pytest.mark.parametrize(
    "path", ["policy_error", "timeout", "signer_failure", "invalid_grant", "allowed"]
)
async def test_every_record_stays_one_line(
    caplog: pytest.LogCaptureFixture, path: str, brk: str
) -> None:
    issuer = KeyPair.create_account()
    user = FORGED.replace("\n", brk)
    keys = SigningKeys(BrokenSigner(issuer)) if path == "signer_failure" else SigningKeys(issuer)
    lookup = {"policy_error": Failing(), "timeout": Slow()}.get(path, Anyone())
    grant = FixedGrant("APP", pub=[f"chat.{brk}.>"] if path == "invalid_grant" else ["chat.>"])
    pipeline = CalloutPipeline(keys, lookup, grant, CalloutSettings(max_decision_time=0.05))
    # The host too: behind a proxy it is what the proxy says the client is.
    host = f"10.0.0.1{brk}2026-12-03 CRITICAL forged"
    server = FakeServer.config_mode(issuer.public_key)
    minted = server.request(user=user, password="pw", client_host=host)
    with caplog.at_level(logging.DEBUG, logger="faststream_callout"):
        decision = await pipeline.decide(minted.body, minted.server_xkey)
    expected = {
        "policy_error": Outcome.ERROR,
        "timeout": Outcome.TIMEOUT,
        "signer_failure": Outcome.SIGNER_FAILED,
        "invalid_grant": Outcome.ERROR,
        "allowed": Outcome.ALLOWED,
    }[path]
    assert decision.outcome is expected
    records = [r for r in caplog.records if r.name.startswith("faststream_callout")]
    assert any(r.name == "faststream_callout.decisions" for r in records)
    assert one_line(records) == []
    # ... and the name and host are still there to read, escaped.
    assert any("mallory" in r.getMessage() for r in records)
    assert any("CRITICAL forged" in r.getMessage() for r in records)
    if path != "allowed":
        assert any("mallory" in r.getMessage() for r in records if r.levelno >= logging.WARNING)

    # nats-server then refuses the login it was told to allow, in its own words.
    if path == "allowed":
        feedback = ServerFeedback()
        feedback(decision)
        request = minted.claims.nats
        event = {
            "server": {"id": request.server_id.id, "name": f"n1{brk}CRITICAL forged"},
            "client": {"id": request.client_info.id, "name": user},
            "reason": f"refused{brk}2026-12-03 CRITICAL allowed user='admin'",
        }
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="faststream_callout"):
            assert feedback.handle_event(json.dumps(event)) is not None
        assert len(caplog.records) == 1
        assert one_line(caplog.records) == []


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(b):04X}" for b in BREAKS])
def test_command_line_output_stays_one_line_per_field(brk: str) -> None:
    # `check` and `dev` print the server's view of a login: the user may be the CONNECT user.
    forged = FORGED.replace("\n", brk)
    info = {"user": forged, "account": f"APP{brk}forged", "permissions": {}}
    lines = format_login(LoginResult(allowed=True, info=info))
    assert not [line for line in lines if LINE_BREAKS & set(line)]
    assert any("mallory" in line for line in lines)

    printed = io.StringIO()
    tap = _DecisionTap(printed)
    record = logging.LogRecord("faststream_callout.decisions", logging.INFO, "", 0, "", (), None)
    record.callout = {"outcome": "allowed", "user": forged, "account": f"APP{brk}x", "reason": ""}
    tap.emit(record)
    text = printed.getvalue()
    assert text.endswith("\n")
    assert not LINE_BREAKS & set(text[:-1]), text
