"""What every nats-server set-up accepts from us: one suite, four environments.

Each test runs in config and operator mode, each with and without xkey
(callout_env.py), with real nats-py clients logging in through the shared table
policies (policies.TableLookup, TablePermissions): alice lands in APP with a deny
inside an allow, bob in OTHER, carol by token read-only, watcher observes, short
gets a 2 s user JWT, and the lookup fails for boom.

nats-server rejects a bad reply silently (the client only sees 'Authorization
Violation'), so each allowed login proves that the response and user JWT were
accepted, and each denial is checked against the reason nats-server reports on
``$SYS.ACCOUNT.CLIENT.AUTH.ERR``, which it only does for a validly signed error
response. In the xkey environments every request and reply is encrypted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from callout_env import (
    CALLOUT_ERROR,
    GENERIC_ERROR_REASON,
    USER_INFO_SUBJECT,
    CalloutEnv,
    messages,
    user_info,
)
from nats.aio.client import Client

from faststream_callout.testing import (
    CalloutDeployment,
    can_publish,
    can_subscribe,
    settle,
)


async def expire_short_user(callout: CalloutDeployment) -> tuple[Client, float]:
    """Log in as 'short' (2 s user JWT); return the client and when the server dropped it."""
    loop = asyncio.get_running_loop()
    disconnected: asyncio.Future[float] = loop.create_future()
    closed = asyncio.Event()

    async def on_disconnected() -> None:
        if not disconnected.done():
            disconnected.set_result(time.monotonic())

    async def on_closed() -> None:
        closed.set()

    start = time.monotonic()
    async with callout.connect(
        user="short", password="short-pw", disconnected_cb=on_disconnected, closed_cb=on_closed
    ) as nc:
        info = await user_info(nc)  # usable until it expires
        assert (info["user"], await callout.account_of(nc)) == ("short", "APP")
        assert info.get("expires"), info  # the server saw the JWT's exp
        dropped_at = await asyncio.wait_for(disconnected, timeout=4)
        await asyncio.wait_for(closed.wait(), timeout=1)
    assert "user authentication expired" in str(nc.last_error).lower(), nc.last_error
    return nc, dropped_at - start


# -- logins ---------------------------------------------------------------------------------


async def test_user_password_allowed(table_callout: CalloutDeployment) -> None:
    async with table_callout.connect(user="alice", password="alice-pw") as nc:
        assert nc.is_connected
        sub = await nc.subscribe("chat.alice.room")
        await nc.publish("chat.alice.room", b"hi")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hi"


async def test_wrong_password_denied_with_the_reason(table_callout: CalloutDeployment) -> None:
    refusal = await table_callout.expect_denied(user="alice", password="wrong")
    assert refusal.error == "Authorization Violation"
    # Logged by nats-server only for a validly signed response with nats.error set.
    assert refusal.reason == CALLOUT_ERROR + "bad credentials"


async def test_token_allowed(table_callout: CalloutDeployment) -> None:
    async with (
        table_callout.connect(token="tok-carol-123") as carol,
        table_callout.connect(user="alice", password="alice-pw") as alice,
    ):
        assert carol.is_connected
        sub = await carol.subscribe("news.>")
        await settle(carol)
        await alice.publish("news.carol", b"for carol")  # APP to APP
        await settle(alice)
        assert await messages(sub, owner=carol) == [("news.carol", b"for carol")]
        # carol's grant is read-only: the token user got her permissions.
        assert not await can_publish(carol, "news.carol")
        assert await messages(sub, owner=carol) == []


async def test_unknown_token_denied(table_callout: CalloutDeployment) -> None:
    refusal = await table_callout.expect_denied(token="tok-nobody")
    assert refusal.reason == CALLOUT_ERROR + "unknown token"


# -- permissions ------------------------------------------------------------------------------


async def test_publish_permissions_enforced(table_callout: CalloutDeployment) -> None:
    async with (
        table_callout.connect(user="alice", password="alice-pw") as alice,
        table_callout.connect(user="watcher", password="watcher-pw") as watcher,
    ):
        seen = await watcher.subscribe("chat.>")
        await settle(watcher)
        # From one connection the server processes these in order: anything
        # wrongly delivered would be seen before the allowed message.
        for subject in ("chat.secret", "chat.bob.room", "chat.alice.secret"):
            # explicitly denied, not allowed, a deny inside an allow
            assert not await can_publish(alice, subject)
        assert await can_publish(alice, "chat.alice.room")
        assert await messages(seen, owner=watcher) == [("chat.alice.room", b"")]
        assert alice.is_connected  # a permissions violation does not close the connection


async def test_subscribe_permissions_enforced(table_callout: CalloutDeployment) -> None:
    async with (
        table_callout.connect(user="alice", password="alice-pw") as alice,
        table_callout.connect(user="alice", password="alice-pw") as publisher,
        table_callout.connect(user="watcher", password="watcher-pw") as watcher,
    ):
        seen = await watcher.subscribe("news.>")
        await settle(watcher)
        assert not await can_subscribe(alice, "chat.bob.room")  # not in the allow list
        assert not await can_subscribe(alice, "news.hidden")  # denied inside the news.> allow
        assert await can_subscribe(alice, "news.>")  # allowed, but news.hidden stays denied
        denied = await alice.subscribe("news.hidden")
        wide = await alice.subscribe("news.>")
        await settle(alice)

        await publisher.publish("news.hidden", b"hidden")
        await publisher.publish("news.open", b"open")
        await settle(publisher)
        # The message was published and deliverable in APP ...
        assert await messages(seen, owner=watcher) == [
            ("news.hidden", b"hidden"),
            ("news.open", b"open"),
        ]
        # ... but not to alice, neither on the denied subscription nor through news.>.
        assert await messages(denied, owner=alice) == []
        assert await messages(wide, owner=alice) == [("news.open", b"open")]
        assert alice.is_connected


async def test_server_applies_the_granted_permissions(table_callout: CalloutDeployment) -> None:
    async with table_callout.connect(user="alice", password="alice-pw") as alice:
        permissions = (await user_info(alice))["permissions"]
    assert sorted(permissions["publish"]["allow"]) == sorted(
        ["chat.alice.>", "news.>", USER_INFO_SUBJECT]
    )
    assert sorted(permissions["publish"]["deny"]) == ["chat.alice.secret", "chat.secret"]
    assert sorted(permissions["subscribe"]["allow"]) == ["_INBOX.>", "chat.alice.>", "news.>"]
    assert permissions["subscribe"]["deny"] == ["news.hidden"]


# -- account placement ------------------------------------------------------------------------


async def test_users_land_in_the_granted_account(
    callout_env: CalloutEnv, table_callout: CalloutDeployment
) -> None:
    async with (
        table_callout.connect(user="alice", password="alice-pw") as alice,
        table_callout.connect(user="bob", password="bob-pw") as bob,
    ):
        alice_info, bob_info = await user_info(alice), await user_info(bob)
        assert await table_callout.account_of(alice) == "APP"
        assert await table_callout.account_of(bob) == "OTHER"
    # Operator mode: the account's public key, signed by the account key itself.
    assert (alice_info["user"], alice_info["account"]) == ("alice", callout_env.account("APP"))
    assert (bob_info["user"], bob_info["account"]) == ("bob", callout_env.account("OTHER"))


async def test_accounts_are_isolated(table_callout: CalloutDeployment) -> None:
    async with (
        table_callout.connect(user="alice", password="alice-pw") as alice,  # APP
        table_callout.connect(user="bob", password="bob-pw") as bob,  # OTHER
    ):
        subject = "news.shared"  # both may publish and subscribe here
        in_app = await alice.subscribe(subject)
        in_other = await bob.subscribe(subject)
        await settle(alice)
        await settle(bob)
        # Each publish is settled before the next, so a leak would arrive
        # interleaved with the account's own (echoed) messages.
        for client, payload in (
            (bob, b"other-1"),
            (alice, b"app-1"),
            (bob, b"other-2"),
            (alice, b"app-2"),
        ):
            await client.publish(subject, payload)
            await settle(client)
        assert await messages(in_app, owner=alice) == [(subject, b"app-1"), (subject, b"app-2")]
        assert await messages(in_other, owner=bob) == [
            (subject, b"other-1"),
            (subject, b"other-2"),
        ]


# -- expiry, failures, resilience -------------------------------------------------------------


async def test_lookup_exception_is_a_fast_signed_denial(
    table_callout: CalloutDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="faststream_callout")
    started = time.monotonic()
    refusal = await table_callout.expect_denied(user="boom", password="x")
    # A handler that raised would send no reply: refused only at the 2 s timeout.
    assert time.monotonic() - started < 1, refusal
    assert refusal.reason == CALLOUT_ERROR + GENERIC_ERROR_REASON
    assert "database is down" not in json.dumps(refusal.reason)  # it stays in our log

    records = [
        r
        for r in caplog.records
        if r.name == "faststream_callout" and r.levelno == logging.ERROR and r.exc_info
    ]
    assert records, caplog.text
    record = records[-1]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert str(record.exc_info[1]) == "database is down"
    assert "boom" in record.getMessage()
    assert "Traceback" in caplog.text


async def test_expiry_disconnects_the_client_and_the_service_keeps_serving(
    table_callout: CalloutDeployment,
) -> None:
    # The expiry runs out while the denial and the error are served.
    expiring = asyncio.create_task(expire_short_user(table_callout))
    await table_callout.expect_denied(user="alice", password="wrong", reason="bad credentials")
    await table_callout.expect_denied(user="boom", password="x", reason=GENERIC_ERROR_REASON)
    expired, elapsed = await expiring
    # A 2 s JWT with one-second resolution: dropped 2-3 s after login (not at once).
    assert 0.9 <= elapsed <= 4, elapsed
    assert expired.is_closed

    async with table_callout.connect(user="alice", password="alice-pw") as nc:
        assert await table_callout.account_of(nc) == "APP"
        sub = await nc.subscribe("chat.alice.again")
        await nc.publish("chat.alice.again", b"still here")
        assert (await sub.next_msg(timeout=2)).data == b"still here"
