"""nats-server 2.15 (config mode) accepts what we sign, with real nats-py clients.

Every test talks to the session's real nats-server through real nats-py
clients; the service is our router in a FastStream broker (see conftest).
nats-server rejects a bad reply silently (the client only sees
'Authorization Violation'), so each allowed login here proves that the
response and user JWT were accepted, and each denial is checked against the
reason nats-server reports on ``$SYS.ACCOUNT.CLIENT.AUTH.ERR``, which it only
does for a validly signed error response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats_versions import running_version

from faststream_callout.testing.probes import settle

pytestmark = pytest.mark.usefixtures("callout_service")

AUTH_ERROR_SUBJECT = "$SYS.ACCOUNT.CLIENT.AUTH.ERR"
USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"
AUTH_VIOLATION = "Authorization Violation"
PERMISSIONS_VIOLATION = "Permissions Violation"
GENERIC_ERROR_REASON = "authorization service error"  # CalloutSettings.error_reason
REPO = Path(__file__).resolve().parent.parent


# -- helpers -------------------------------------------------------------------


class Recorder:
    """An ``error_cb`` that keeps the errors (and stops nats-py printing them)."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self._changed = asyncio.Condition()

    async def on_error(self, exc: Exception) -> None:
        async with self._changed:
            self.errors.append(exc)
            self._changed.notify_all()

    def matching(self, text: str) -> list[str]:
        """Errors containing ``text``, lower-cased: nats-py 2.16 lower-cases server errors."""
        return [str(e).lower() for e in self.errors if text.lower() in str(e).lower()]

    async def wait_for(self, text: str, count: int = 1, within: float = 2) -> list[str]:
        """The errors containing ``text`` once there are ``count`` (or ``within`` s passed)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.matching(text)) >= count), within
                )
            return self.matching(text)


def client_name(label: str) -> str:
    """A unique CONNECT name, to find this client's auth-error event."""
    return f"{label}-{secrets.token_hex(4)}"


async def login(url: str, recorder: Recorder | None = None, **options: Any) -> Client:
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=3,
        error_cb=(recorder or Recorder()).on_error,
        **options,
    )


async def _login_and_close(url: str, **options: Any) -> None:
    nc = await login(url, **options)
    await nc.close()


async def refused(url: str, **options: Any) -> tuple[NatsError, float]:
    """Log in expecting a refusal; return the error and how long the refusal took."""
    start = time.monotonic()
    with pytest.raises(NatsError, match=AUTH_VIOLATION) as caught:
        await _login_and_close(url, **options)
    return caught.value, time.monotonic() - start


async def user_info(nc: Client) -> dict[str, Any]:
    """The server's view of this connection (``$SYS.REQ.USER.INFO``)."""
    reply = await nc.request(USER_INFO_SUBJECT, b"", timeout=2)
    body = json.loads(reply.data)
    assert "error" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def messages(sub: Any, *, owner: Client) -> list[tuple[str, bytes]]:
    """Everything delivered to ``sub`` so far.

    The server queues the PONG of ``settle(owner)`` after every message it
    already delivered to this connection, and the producers were settled
    before: an empty result means nothing was delivered.
    """
    await settle(owner)
    got: list[tuple[str, bytes]] = []
    while sub.pending_msgs:
        msg = await sub.next_msg(timeout=1)
        got.append((msg.subject, msg.data))
    return got


class AuthErrorEvents:
    """Auth-error events nats-server publishes in the callout account, by client name."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, Any]] = {}
        self._arrived = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        async with self._arrived:
            self._events[event["client"].get("name", "")] = event
            self._arrived.notify_all()

    async def for_client(self, name: str, within: float = 2) -> dict[str, Any]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: name in self._events), within)
            return self._events[name]


@pytest.fixture(scope="module")
async def auth_errors(real_server) -> AsyncIterator[AuthErrorEvents]:
    """Subscribed as the auth service user, in the callout account (SPEC 1.5)."""
    events = AuthErrorEvents()
    nc = await login(
        real_server.url,
        user=real_server.config.auth_user,
        password=real_server.config.auth_password,
    )
    await nc.subscribe(AUTH_ERROR_SUBJECT, cb=events.on_message)
    await settle(nc)
    try:
        yield events
    finally:
        await nc.close()


async def expire_short_user(url: str) -> tuple[Client, float]:
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
    nc = await login(
        url,
        user="short",
        password="short-pw",
        disconnected_cb=on_disconnected,
        closed_cb=on_closed,
    )
    try:
        info = await user_info(nc)  # usable until it expires
        assert (info["user"], info["account"]) == ("short", "APP")
        assert info.get("expires"), info  # the server saw the JWT's exp
        dropped_at = await asyncio.wait_for(disconnected, timeout=4)
        await asyncio.wait_for(closed.wait(), timeout=1)
    finally:
        await nc.close()
    assert "user authentication expired" in str(nc.last_error).lower(), nc.last_error
    return nc, dropped_at - start


# -- logins ---------------------------------------------------------------------


async def test_user_password_allowed(real_server):
    nc = await login(real_server.url, user="alice", password="alice-pw")
    try:
        assert nc.is_connected
        sub = await nc.subscribe("chat.alice.room")
        await nc.publish("chat.alice.room", b"hi")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hi"
    finally:
        await nc.close()


async def test_wrong_password_denied(real_server):
    with pytest.raises(NatsError, match=AUTH_VIOLATION):
        await nats.connect(
            real_server.url,
            user="alice",
            password="wrong",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=Recorder().on_error,
        )


async def test_denied_reason_reaches_the_server(real_server, auth_errors):
    name = client_name("wrong-password")
    await refused(real_server.url, user="alice", password="wrong", name=name)
    event = await auth_errors.for_client(name)
    assert event["client"]["user"] == "alice"
    # Logged by nats-server only for a validly signed response with nats.error set.
    assert event["reason"] == "Auth callout service returned an error: bad credentials"


async def test_token_allowed(real_server):
    recorder = Recorder()
    carol = await login(real_server.url, recorder, token="tok-carol-123")
    alice = await login(real_server.url, user="alice", password="alice-pw")
    try:
        assert carol.is_connected
        sub = await carol.subscribe("news.>")
        await settle(carol)
        await alice.publish("news.carol", b"for carol")  # APP to APP
        await settle(alice)
        assert await messages(sub, owner=carol) == [("news.carol", b"for carol")]
        # carol's grant is read-only: the token user got her permissions.
        await carol.publish("news.carol", b"nope")
        assert await recorder.wait_for(PERMISSIONS_VIOLATION)
        assert await messages(sub, owner=carol) == []
    finally:
        await carol.close()
        await alice.close()


async def test_unknown_token_denied(real_server, auth_errors):
    name = client_name("unknown-token")
    await refused(real_server.url, token="tok-nobody", name=name)
    event = await auth_errors.for_client(name)
    assert event["reason"] == "Auth callout service returned an error: unknown token"


async def test_static_user_still_goes_to_the_callout(real_server, auth_errors):
    """dave's static password is right, but the callout (which does not know him) decides."""
    [(user, password)] = real_server.config.accounts["APP"].items()  # dave, from conftest
    name = client_name("static")
    await refused(real_server.url, user=user, password=password, name=name)
    event = await auth_errors.for_client(name)
    if running_version() >= (2, 11, 0):  # 2.10 leaves name_tag out of the event
        assert event["client"]["name_tag"] == "APP"  # static auth had succeeded first
    assert event["reason"] == "Auth callout service returned an error: bad credentials"


# -- permissions ----------------------------------------------------------------


async def test_publish_permissions_enforced(real_server):
    recorder = Recorder()
    alice = await login(real_server.url, recorder, user="alice", password="alice-pw")
    watcher = await login(real_server.url, user="watcher", password="watcher-pw")
    try:
        seen = await watcher.subscribe("chat.>")
        await settle(watcher)
        # From one connection the server processes these in order: anything
        # wrongly delivered would be seen before the allowed message.
        await alice.publish("chat.secret", b"explicitly denied")
        await alice.publish("chat.bob.room", b"not allowed")
        await alice.publish("chat.alice.secret", b"deny inside an allow")
        await alice.publish("chat.alice.room", b"allowed")
        await settle(alice)
        assert await messages(seen, owner=watcher) == [("chat.alice.room", b"allowed")]
        violations = await recorder.wait_for(PERMISSIONS_VIOLATION, count=3)
        assert len(violations) == 3, recorder.errors
        for subject in ("chat.secret", "chat.bob.room", "chat.alice.secret"):
            assert any(f'publish to "{subject}"' in v for v in violations), violations
        assert alice.is_connected  # a permissions violation does not close the connection
    finally:
        await alice.close()
        await watcher.close()


async def test_subscribe_permissions_enforced(real_server):
    recorder = Recorder()
    alice = await login(real_server.url, recorder, user="alice", password="alice-pw")
    publisher = await login(real_server.url, user="alice", password="alice-pw")
    watcher = await login(real_server.url, user="watcher", password="watcher-pw")
    try:
        seen = await watcher.subscribe("news.>")
        await settle(watcher)
        await alice.subscribe("chat.bob.room")  # not in the allow list
        denied = await alice.subscribe("news.hidden")  # denied inside the news.> allow
        wide = await alice.subscribe("news.>")  # allowed, but news.hidden stays denied
        await settle(alice)
        violations = await recorder.wait_for(PERMISSIONS_VIOLATION, count=2)
        assert len(violations) == 2, recorder.errors
        assert any('subscription to "chat.bob.room"' in v for v in violations), violations
        assert any('subscription to "news.hidden"' in v for v in violations), violations

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
    finally:
        await alice.close()
        await publisher.close()
        await watcher.close()


async def test_server_applies_the_granted_permissions(real_server):
    alice = await login(real_server.url, user="alice", password="alice-pw")
    try:
        permissions = (await user_info(alice))["permissions"]
    finally:
        await alice.close()
    assert sorted(permissions["publish"]["allow"]) == sorted(
        ["chat.alice.>", "news.>", USER_INFO_SUBJECT]
    )
    assert sorted(permissions["publish"]["deny"]) == ["chat.alice.secret", "chat.secret"]
    assert sorted(permissions["subscribe"]["allow"]) == ["_INBOX.>", "chat.alice.>", "news.>"]
    assert permissions["subscribe"]["deny"] == ["news.hidden"]


# -- account placement ----------------------------------------------------------


async def test_users_land_in_the_granted_account(real_server):
    alice = await login(real_server.url, user="alice", password="alice-pw")
    bob = await login(real_server.url, user="bob", password="bob-pw")
    try:
        alice_info = await user_info(alice)
        bob_info = await user_info(bob)
    finally:
        await alice.close()
        await bob.close()
    assert (alice_info["user"], alice_info["account"]) == ("alice", "APP")
    assert (bob_info["user"], bob_info["account"]) == ("bob", "OTHER")


async def test_accounts_are_isolated(real_server):
    alice = await login(real_server.url, user="alice", password="alice-pw")  # APP
    bob = await login(real_server.url, user="bob", password="bob-pw")  # OTHER
    try:
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
    finally:
        await alice.close()
        await bob.close()


# -- expiry, failures, resilience ----------------------------------------------


async def test_user_jwt_expiry_disconnects_the_client(real_server):
    nc, elapsed = await expire_short_user(real_server.url)
    # A 2 s JWT with one-second resolution: dropped 1-2 s after login (not at once).
    assert 0.9 <= elapsed <= 4, elapsed
    assert nc.is_closed


async def test_lookup_exception_is_a_fast_signed_denial(real_server, auth_errors, caplog):
    caplog.set_level(logging.ERROR, logger="faststream_callout")
    name = client_name("boom")
    _, elapsed = await refused(real_server.url, user="boom", password="x", name=name)
    # A handler that raised would send no reply: refused only at the 2 s timeout.
    assert elapsed < 1, elapsed

    event = await auth_errors.for_client(name)
    assert event["reason"] == f"Auth callout service returned an error: {GENERIC_ERROR_REASON}"
    assert "database is down" not in json.dumps(event)  # the exception stays in our log

    records = [
        r
        for r in caplog.records
        if r.name == "faststream_callout" and r.levelno == logging.ERROR and r.exc_info
    ]
    assert records, caplog.text
    record = records[-1]
    assert isinstance(record.exc_info[1], RuntimeError)
    assert str(record.exc_info[1]) == "database is down"
    assert "boom" in record.getMessage()
    assert "Traceback" in caplog.text


async def test_service_keeps_serving_after_denial_error_and_expiry(real_server, auth_errors):
    name = client_name("after-denial")
    await refused(real_server.url, user="alice", password="wrong", name=name)
    assert "bad credentials" in (await auth_errors.for_client(name))["reason"]
    name = client_name("after-error")
    await refused(real_server.url, user="boom", password="x", name=name)
    assert GENERIC_ERROR_REASON in (await auth_errors.for_client(name))["reason"]
    expired, _ = await expire_short_user(real_server.url)
    assert expired.is_closed

    nc = await login(real_server.url, user="alice", password="alice-pw")
    try:
        assert (await user_info(nc))["account"] == "APP"
        sub = await nc.subscribe("chat.alice.again")
        await nc.publish("chat.alice.again", b"still here")
        assert (await sub.next_msg(timeout=2)).data == b"still here"
    finally:
        await nc.close()


# -- the example ---------------------------------------------------------------


async def test_example_run_local_once():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/run_local.py",
        "--once",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()  # our own child, by its handle
        await process.wait()
        raise
    output = stdout.decode(errors="replace")
    assert process.returncode == 0, output + stderr.decode(errors="replace")
    assert "all logins behaved as expected" in output, output
