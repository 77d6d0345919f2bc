"""Every entry of docs/troubleshooting.md, provoked against a real nats-server.

Each entry (a ``##`` heading) quotes what nats-server logs in a ``**Server log:**``
bullet. Its scenario below provokes that condition on a real nats-server with the
library's own parts, and the test checks that the server's log (or, for a
configuration nats-server refuses, ``nats-server -t``) holds each quoted line: the
quotes are read from the page, so the page and the server cannot drift apart. A
``...`` in a quote, and any word with a digit (addresses, client ids, durations),
match anything.

One config-mode server serves the scenarios (``authorization.timeout`` 2 s, debug
logging, so the lines the page says are debug-only are checked at that level); the
operator-mode entries get a server of their own.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from callout_env import ConfigServer, OperatorWorld, config_server, login, nats_server, refused
from faststream import BaseMiddleware
from nats.aio.msg import Msg
from policies import FixedGrant, Passwords

from faststream_callout import (
    CalloutPipeline,
    CalloutSettings,
    ConfigurationError,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.operator import account_jwt
from faststream_callout.testing import check_config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
TIMEOUT = 2.0  # the shared server's authorization.timeout: the default, as the page says
SERVICE_USER = "callout-svc"  # the service's auth_users login
UNLISTED_USER = "auth"  # a user of the callout account that auth_users leaves out
# A quoted line starts with its level, or with what `nats-server -t` prefixes.
LOGGED = ("[ERR] ", "[WRN] ", "[DBG] ", "[INF] ", "nats-server: ")


# -- the page ---------------------------------------------------------------------------------


def entries() -> dict[str, list[str]]:
    """Heading -> the log lines its ``**Server log:**`` bullet quotes (see LOGGED)."""
    found: dict[str, list[str]] = {}
    heading, bullet = "", None
    for line in PAGE.read_text().splitlines():
        if line.startswith("## "):
            heading, bullet = line[3:].strip(), None
            continue
        if line.startswith("- "):
            bullet = [] if line.startswith("- **Server log:**") else None
            if bullet is not None:
                found.setdefault(heading, bullet)
        elif not line.strip():
            bullet = None
        if bullet is not None:
            bullet.extend(q for q in re.findall(r"`([^`]+)`", line) if q.startswith(LOGGED))
    return found


def quoted(line: str) -> re.Pattern[str]:
    """A quoted log line: words literally; ``...`` and words with a digit match anything."""
    parts: list[str] = []
    for word in line.split():
        if "..." in word or any(c.isdigit() for c in word):
            if not parts or parts[-1] != r".*?":
                parts.append(r".*?")
        else:
            parts.append(re.escape(word))
    return re.compile(r"\s+".join(parts))


# -- the shared server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[ConfigServer]:
    with config_server(
        accounts={"APP": {}, "AUTH": {UNLISTED_USER: "auth-pw"}},
        auth_user=SERVICE_USER,
        timeout=TIMEOUT,
        extra="debug: true",
    ) as server:
        yield server


def chat() -> FixedGrant:
    return FixedGrant("APP", pub=["chat.>"], sub=["chat.>", "_INBOX.>"], ttl=60)


# -- the scenarios, one per entry -------------------------------------------------------------

Scenario = Callable[
    [ConfigServer], Awaitable[str | None]
]  # may return text to search besides the log
SCENARIOS: dict[str, Scenario] = {}


def scenario(heading: str) -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        SCENARIOS[heading] = function
        return function

    return register


@scenario("Every login waits 2 s, then `Authorization Violation`")
async def nobody_answers(lab: ConfigServer) -> None:
    waited = await refused(lab.url, user="alice", password="alice-pw")
    assert waited >= TIMEOUT - 0.1


@scenario("The service itself cannot log in")
async def service_user_not_in_auth_users(lab: ConfigServer) -> None:
    await refused(lab.url, user=UNLISTED_USER, password="auth-pw")


@scenario('`Auth callout violation: "no reason supplied" on account "AUTH"`')
async def unsigned_denials(lab: ConfigServer) -> None:
    # Keys for another issuer: the request is not for us, so it gets an empty reply.
    other = CalloutPipeline(SigningKeys(KeyPair.create_account()), Passwords(), chat())
    async with lab.serve(other):
        await refused(lab.url, user="alice", password="alice-pw")
    # The reverse: the service has an xkey, the server none: a signed denial.
    keys = SigningKeys(lab.issuer, xkey=XKeyPair.generate())
    async with lab.serve(CalloutPipeline(keys, Passwords(), chat())):
        await refused(lab.url, user="alice", password="alice-pw")


@scenario("`Auth callout service returned an error: ...`")
async def denied(lab: ConfigServer) -> None:
    async with lab.serve(CalloutPipeline(lab.keys, Passwords(), chat())):
        await refused(lab.url, user="alice", password="wrong")


@scenario('`No valid account "NOPE" for auth callout response on account "AUTH": account missing`')
async def unknown_account(lab: ConfigServer) -> None:
    async with lab.serve(
        CalloutPipeline(lab.keys, Passwords(), FixedGrant("NOPE", pub=["chat.>"]))
    ):
        await refused(lab.url, user="alice", password="alice-pw")


@scenario("`Auth callout violation: auth callout response is not for expected user`")
async def replayed_reply(lab: ConfigServer) -> None:
    # A responder that caches its first reply and sends it again: made for another
    # connection attempt's user_nkey.
    pipeline = CalloutPipeline(lab.keys, Passwords(), chat())
    first: list[bytes] = []
    service_client = await login(lab.url, user=SERVICE_USER, password=lab.config.auth_password)

    async def respond(msg: Msg) -> None:
        reply = await pipeline(msg.data)
        assert reply is not None
        if not first:
            first.append(reply)
        await msg.respond(first[0])

    await service_client.subscribe("$SYS.REQ.USER.AUTH", cb=respond)
    await service_client.flush()
    try:
        client = await login(lab.url, user="alice", password="alice-pw")
        await client.close()
        await refused(lab.url, user="alice", password="alice-pw")
    finally:
        await service_client.close()


@scenario("The issuer must be an account key")
async def user_key_as_issuer(lab: ConfigServer) -> str:
    config = replace(lab.config, issuer=KeyPair.create_user().public_key)
    path = Path(lab.server.config_path).with_name("user-issuer.conf")
    path.write_text(config.render())
    with pytest.raises(ConfigurationError) as refusal:
        await asyncio.to_thread(check_config, path)
    return str(refusal.value)


@scenario("Operator mode: clients get in, but every publish is a violation")
async def no_authorization_section(lab: ConfigServer) -> None:
    world = OperatorWorld.generate(with_xkey=False)
    config = world.server_config()
    without = dict(config.account_jwts)  # the callout account's JWT, less its authorization
    without[world.callout.public_key] = account_jwt(
        world.callout.public_key, world.operator, name="AUTH"
    )
    with nats_server(replace(config, account_jwts=without)) as server:
        client = await login(server.url, user="alice", password="alice-pw")
        try:
            await client.publish("chat.x", b"hi")
            await client.flush()
            await asyncio.sleep(0.1)
        finally:
            await client.close()
        return server.log()


@scenario("Operator mode: `Auth callout signing key is unknown`")
async def unlisted_signing_key(lab: ConfigServer) -> str:
    # A rotation in the wrong order: the service signs with a signing key the callout
    # account's JWT does not list (yet, or any more).
    world = OperatorWorld.generate(with_xkey=False)
    keys = SigningKeys.operator(
        world.callout.public_key,
        signing_key=KeyPair.create_account(),
        accounts={world.app.public_key: world.app},
    )
    grant = FixedGrant(world.app.public_key, pub=["chat.>"])
    with nats_server(world.server_config()) as server:
        async with world.serve(server.url, CalloutPipeline(keys, Passwords(), grant)):
            await refused(server.url, user="alice", password="alice-pw")
        await asyncio.sleep(0.1)
        return server.log()


@scenario("Clock skew")
async def clock_skew(lab: ConfigServer) -> None:
    ahead = CalloutPipeline(lab.keys, Passwords(), chat(), clock=lambda: time.time() + 5)
    async with lab.serve(ahead):
        await refused(lab.url, user="alice", password="alice-pw")
    behind = CalloutPipeline(lab.keys, Passwords(), chat(), clock=lambda: time.time() - 120)
    async with lab.serve(behind):
        await refused(lab.url, user="alice", password="alice-pw")
    past = Grant(account="APP", pub=Permission(allow=["chat.>"]), expires_at=int(time.time()) - 5)
    async with lab.serve(CalloutPipeline(lab.keys, Passwords(), _Fixed(past))):
        await refused(lab.url, user="alice", password="alice-pw")


@scenario("Clients are dropped after a while")
async def expired(lab: ConfigServer) -> None:
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    short = FixedGrant("APP", pub=["chat.>"], sub=["_INBOX.>"], ttl=1)
    async with lab.serve(CalloutPipeline(lab.keys, Passwords(), short)):
        client = await login(lab.url, user="alice", password="alice-pw", closed_cb=on_closed)
        await asyncio.wait_for(closed.wait(), 5)
        assert "expired" in str(client.last_error)


@scenario("Slow lookups")
async def slow_lookup(lab: ConfigServer) -> None:
    settings = CalloutSettings(auth_timeout=TIMEOUT, max_decision_time=0.2)
    slow = CalloutPipeline(lab.keys, Passwords(delay=0.5), chat(), settings=settings)
    async with lab.serve(slow):
        await refused(lab.url, user="alice", password="alice-pw")


@scenario("FastStream broker-wide parser, decoder or codec")
async def broker_wide_parser(lab: ConfigServer) -> None:
    async def rewrite(message: Any, original: Any) -> Any:  # a parser that changes the body
        parsed = await original(message)
        parsed.body = b"{" + parsed.body + b"}"
        return parsed

    # A middleware takes requests down FastStream's own path, where the parser runs.
    broker = {"parser": rewrite, "middlewares": [BaseMiddleware]}
    async with lab.serve(CalloutPipeline(lab.keys, Passwords(), chat()), **broker):
        await refused(lab.url, user="alice", password="alice-pw")


@scenario("Permission violations after login")
async def permission_violations(lab: ConfigServer) -> None:
    async with lab.serve(CalloutPipeline(lab.keys, Passwords(), chat())):
        client = await login(lab.url, user="alice", password="alice-pw")
        try:
            await client.publish("secret.x", b"")
            await client.subscribe("secret.y")
            await client.flush()
            await asyncio.sleep(0.1)
        finally:
            await client.close()


class _Fixed:
    def __init__(self, grant: Grant) -> None:
        self.grant = grant

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return self.grant


# -- the tests --------------------------------------------------------------------------------


def test_every_entry_quoting_the_server_has_a_scenario() -> None:
    found = entries()
    assert set(found) == set(SCENARIOS)
    assert all(found.values()), f"a Server log bullet without a quoted line: {found}"


@pytest.mark.parametrize("heading", list(SCENARIOS))
async def test_the_server_logs_what_the_page_quotes(lab: ConfigServer, heading: str) -> None:
    start = len(lab.server.log())
    extra = await SCENARIOS[heading](lab)
    lines = entries().get(heading, [])
    deadline = time.monotonic() + 3
    while True:
        said = lab.server.log()[start:] + "\n" + (extra or "")
        missing = [line for line in lines if not quoted(line).search(said)]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not missing, f"{heading}: not logged: {missing}\n{said[-4000:]}"
