"""Server feedback: refusals of logins we allowed, provoked on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from callout_env import CONFIG, CalloutEnv, login, run_in
from clocks import ManualClock
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.specification import AsyncAPI
from nats_versions import running_version
from policies import Everyone, GrantByName

from faststream_callout import Grant, Identity, Permission, callout_router
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.feedback import (
    AUTH_ERROR_SUBJECT,
    ServerFeedback,
    ServerRefusal,
    feedback_router,
)
from faststream_callout.integration.observers import observe
from faststream_callout.protocol.claims import AuthorizationRequest, ClientInfo, ServerId
from faststream_callout.testing import CalloutDeployment, settle

# The server's auth-error events look the same in every set-up; "NOPE" is an account
# name, which only config mode reports back as it is.
pytestmark = run_in(CONFIG)

FEEDBACK_LOGGER = "faststream_callout.feedback"


def permissions() -> GrantByName:
    """ghost -> an account the server does not have; proxy -> proxy_required (2.12+)."""
    pub = Permission(allow=["x.>"])
    return GrantByName(
        {
            "ghost": Grant(account="NOPE", pub=pub),
            "proxy": Grant(account="APP", pub=pub, proxy_required=True),
        },
        default=Grant(account="APP", pub=pub),
    )


class Refusals:
    """An ``on_refusal`` callback one can wait on."""

    def __init__(self) -> None:
        self.seen: list[ServerRefusal] = []
        self._changed = asyncio.Condition()

    def __call__(self, refusal: ServerRefusal) -> None:
        self.seen.append(refusal)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, identity: str, within: float = 2) -> ServerRefusal:
        def found() -> ServerRefusal | None:
            return next((r for r in self.seen if r.login.identity == identity), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), within)
        refusal = found()
        assert refusal is not None
        return refusal


@dataclass
class Served:
    deployment: CalloutDeployment
    feedback: ServerFeedback
    refusals: Refusals


@pytest.fixture(scope="module")
async def fb_service(callout_env: CalloutEnv) -> AsyncIterator[Served]:
    refusals = Refusals()
    feedback = ServerFeedback(on_refusal=[refusals])
    # The two steps the README shows: the feedback observes the decisions (here
    # without Dishka) and its own router feeds it the server's events.
    users = Everyone(frozenset({"ghost", "proxy", "alice"}))
    pipeline = observe(callout_env.pipeline(users, permissions()), feedback)
    broker = callout_env.broker(callout_router(pipeline), feedback_router(feedback))
    async with callout_env.run(broker) as deployment:
        yield Served(deployment, feedback, refusals)


async def test_unknown_account_refusal_is_logged_and_counted(fb_service, caplog):
    feedback, refusals = fb_service.feedback, fb_service.refusals
    before = feedback.refused
    with caplog.at_level(logging.WARNING, logger=FEEDBACK_LOGGER):
        await fb_service.deployment.expect_denied(
            user="ghost", password="pw", name=f"ghost-{secrets.token_hex(3)}"
        )
        refusal = await refusals.wait_for("ghost")
    assert refusal.login.account == "NOPE"
    assert refusal.login.user_nkey.startswith("U")
    assert 'No valid account "NOPE"' in refusal.reason
    assert feedback.refused == before + 1
    assert feedback.reasons[refusal.reason] >= 1
    assert refusal.event["client"]["user"] == "ghost"
    records = [r for r in caplog.records if r.name == FEEDBACK_LOGGER]
    assert records
    assert records[-1].levelno == logging.WARNING
    message = records[-1].getMessage()
    assert "we allowed 'ghost'" in message
    assert "No valid account" in message
    assert records[-1].callout_refusal["account"] == "NOPE"  # type: ignore[attr-defined]


@pytest.mark.skipif(
    running_version() < (2, 12, 0),
    reason="nats-server < 2.12 ignores proxy_required, so the pipeline refuses such grants "
    "itself (tests/test_version_matrix.py)",
)
async def test_proxy_required_refusal(fb_service):
    await fb_service.deployment.expect_denied(user="proxy", password="pw", name="proxy-client")
    refusal = await fb_service.refusals.wait_for("proxy")
    assert refusal.reason.lower() == "proxy connection required"
    assert refusal.login.account == "APP"


async def test_accepted_and_denied_logins_are_not_refusals(fb_service):
    deployment, feedback = fb_service.deployment, fb_service.feedback
    refused, unmatched = feedback.refused, feedback.unmatched
    # The auth user watches the same events, to know when the server has spoken.
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        await events.put(json.loads(msg.data))

    watcher = await login(deployment.url, **deployment.server.service_login)
    try:
        await watcher.subscribe(AUTH_ERROR_SUBJECT, cb=on_event)
        await settle(watcher)
        async with deployment.connect(user="alice", password="pw", name="alice-client"):
            pass  # accepted: no event at all
        # our own denial
        await deployment.expect_denied(user="mallory", password="pw", name="mallory-client")
        event = await asyncio.wait_for(events.get(), 2)
        assert event["client"]["name"] == "mallory-client"
        assert event["reason"].endswith("bad credentials")
        # The service's own subscription gets the same event about now.
        for _ in range(100):
            if feedback.unmatched > unmatched:
                break
            await asyncio.sleep(0.01)
    finally:
        await watcher.close()
    assert feedback.refused == refused
    assert feedback.unmatched == unmatched + 1
    assert events.empty()  # alice's login raised nothing


# -- the bookkeeping, without a server ---------------------------------------------


def _decision(cid: int, server: str, outcome: Outcome = Outcome.ALLOWED) -> Decision:
    request = AuthorizationRequest(
        server_id=ServerId(id=server, name="s"),
        user_nkey="UABC",
        client_info=ClientInfo(id=cid, user=f"u{cid}"),
        type="authorization_request",
        version=2,
    )
    return Decision(outcome, b"", "", request, Identity(f"u{cid}"), "APP")


def _event(cid: int, server: str = "NSERVER", reason: str = "nope") -> bytes:
    return json.dumps(
        {"server": {"id": server, "name": "s"}, "client": {"id": cid}, "reason": reason}
    ).encode()


def test_matches_on_server_id_and_client_id():
    feedback = ServerFeedback()
    feedback(_decision(7, "NSERVER"))
    assert feedback.handle_event(_event(7, "NOTHER")) is None  # same cid, other server
    refusal = feedback.handle_event(_event(7))
    assert refusal is not None
    assert refusal.reason == "nope"
    assert refusal.login.identity == "u7"
    assert feedback.handle_event(_event(7)) is None  # matched once, then forgotten
    assert (feedback.refused, feedback.unmatched) == (1, 2)


def test_denials_are_not_remembered():
    feedback = ServerFeedback()
    feedback(_decision(1, "NSERVER", Outcome.DENIED))
    assert len(feedback) == 0


def test_entries_expire_and_are_bounded():
    clock = ManualClock()
    feedback = ServerFeedback(ttl=5, max_entries=3, clock=clock)
    for cid in range(5):
        feedback(_decision(cid, "NSERVER"))
    assert len(feedback) == 3  # the two oldest were dropped
    assert feedback.handle_event(_event(0)) is None
    clock.now += 6
    assert len(feedback) == 0
    assert feedback.handle_event(_event(4)) is None


@pytest.mark.parametrize(
    "event",
    [b"not json", b"[]", b"{}", b'{"server": {"id": 1}, "client": {"id": "x"}}', "{}", {}],
)
def test_malformed_events_are_ignored(event):
    feedback = ServerFeedback()
    feedback(_decision(1, "NSERVER"))
    assert feedback.handle_event(event) is None
    assert feedback.refused == 0
    assert len(feedback) == 1


def test_failing_refusal_callback_is_logged(caplog):
    def broken(_: ServerRefusal) -> None:
        raise RuntimeError("boom")

    feedback = ServerFeedback(on_refusal=[broken])
    feedback(_decision(1, "NSERVER"))
    with caplog.at_level(logging.WARNING, logger=FEEDBACK_LOGGER):
        assert feedback.handle_event(_event(1)) is not None
    assert any("refusal callback" in r.getMessage() for r in caplog.records)


def test_invalid_settings():
    with pytest.raises(ValueError):
        ServerFeedback(ttl=0)
    with pytest.raises(ValueError):
        ServerFeedback(max_entries=0)


# -- the router -----------------------------------------------------------------------


async def test_feedback_router_feeds_the_events_to_the_feedback():
    feedback = ServerFeedback()
    feedback(_decision(7, "NSERVER"))
    router = feedback_router(feedback)
    assert feedback_router(feedback) is not router  # fresh each call: including moves it
    broker = NatsBroker()
    broker.include_router(router)
    (subscriber,) = broker.subscribers
    assert subscriber.subject.broker_address == AUTH_ERROR_SUBJECT
    assert not subscriber.queue  # every instance sees every event
    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(_event(8), AUTH_ERROR_SUBJECT)  # not ours
        await test_broker.publish(_event(7, reason="account missing"), AUTH_ERROR_SUBJECT)
    assert (feedback.refused, feedback.unmatched) == (1, 1)
    assert feedback.reasons == {"account missing": 1}


@pytest.mark.parametrize("include", [True, False])
def test_feedback_router_in_schema(include):
    broker = NatsBroker()
    broker.include_router(feedback_router(ServerFeedback(), include_in_schema=include))
    channels = AsyncAPI(broker).to_specification().to_jsonable().get("channels", {})
    assert bool(channels) is include
