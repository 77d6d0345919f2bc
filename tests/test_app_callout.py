"""Auth callout added to an existing FastStream app (AuthCallout), on real nats-servers.

The example app (examples/orders_app.py) keeps serving its own clients once the callout
is added, whatever order the app is put together in; mistakes stop the start with one
line naming them (under ``faststream run`` too); decisions show in FastStream's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nats
import pytest
from callout_env import (
    CalloutEnv,
    OperatorWorld,
    login,
    nats_server,
    write_secret,
)
from dishka import Provider, Scope, make_async_container, provide
from dishka_faststream import FastStreamProvider, setup_dishka
from faststream import FastStream
from faststream.asgi import AsgiFastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.errors import Error as NatsError
from policies import FixedGrant, Passwords

from faststream_callout import (
    AuthCallout,
    AuthorizationRequest,
    CalloutPipeline,
    CalloutProvider,
    ConfigurationError,
    Identity,
    IdentityLookup,
    KeyPair,
    PermissionBuilder,
    PolicyProvider,
    SigningKeys,
)
from faststream_callout.core import env
from faststream_callout.integration.app import CalloutStartError
from faststream_callout.protocol.operator import creds, user_jwt
from faststream_callout.testing import LocalCalloutServer, free_port
from faststream_callout.testing.probes import can_publish, expect_permissions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "orders_app.py"
FASTSTREAM = str(Path(sys.executable).parent / "faststream")
APP_SPEC = "examples.orders_app:app"
AUTH_VIOLATION = "Authorization Violation"
SEED = re.compile(r"S[A-Z][A-Z2-7]{50,}")
STARTED = "FastStream app started successfully"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # FastStream colours its level names


def load_example() -> ModuleType:
    """examples/orders_app.py as a module (``examples`` is no package)."""
    spec = importlib.util.spec_from_file_location("orders_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


orders = load_example()


# -- the shared config-mode server, and one app at a time on it --------------------------


@pytest.fixture
def server(real_server: CalloutEnv, monkeypatch: pytest.MonkeyPatch) -> LocalCalloutServer:
    """The session's config-mode server, its variables set as `faststream-callout dev` does."""
    for name in (env.CALLOUT_XKEY_SEED, env.CALLOUT_NEXT_XKEY_SEED, env.CALLOUT_CREDS):
        monkeypatch.delenv(name, raising=False)
    for name, value in real_server.server.environ.items():
        monkeypatch.setenv(name, value)
    return real_server.server


def connections(server: LocalCalloutServer) -> list[dict[str, Any]]:
    """The server's client connections (monitoring), with their user names."""
    found: list[dict[str, Any]] = (
        server.server.monitor("/connz", auth=1, limit=1024).get("connections") or []
    )
    return found


def callout_logins(server: LocalCalloutServer) -> int:
    """How many connections of the callout the server has seen, open or closed."""
    total = 0
    for state in ("open", "closed"):
        found = server.server.monitor("/connz", state=state, limit=100_000).get("connections") or []
        total += sum(1 for c in found if c.get("name") == "faststream-callout")
    return total


async def until(condition: Callable[[], bool], within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.asynccontextmanager
async def running(
    app: FastStream | AsgiFastStream, server: LocalCalloutServer
) -> AsyncIterator[None]:
    """Start ``app``, stop it, and check nothing of it stays behind: tasks, connections."""
    before = asyncio.all_tasks()
    await app.start()
    try:
        yield
    finally:
        await app.stop()
    # Nothing keeps serving: the next test on this server must get every request.
    assert await until(lambda: server.callout_subscribers() == 0), "the callout still serves"
    assert await until(lambda: not connections(server)), connections(server)
    current = asyncio.current_task()

    def leftovers() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}

    deadline = time.monotonic() + 2
    while leftovers() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling tasks
        await asyncio.sleep(0.02)
    assert not leftovers(), leftovers()


async def client(url: str, user: str, password: str) -> nats.NATS:
    return await login(url, user=user, password=password)


async def order_round_trip(url: str) -> dict[str, Any]:
    """alice places an order; the app's own subscriber confirms it to her."""
    nc = await client(url, "alice", "alice-secret")
    try:
        confirmations = await nc.subscribe("orders.confirmed")
        await nc.flush()
        await nc.publish("orders.created", json.dumps({"id": 7, "item": "tea"}).encode())
        reply = await confirmations.next_msg(timeout=5)
        body: dict[str, Any] = json.loads(reply.data)
        return body
    finally:
        await nc.close()


# -- the example app ---------------------------------------------------------------------


def example_as_written() -> FastStream:
    return orders.create_app()


def callout_attached_first() -> FastStream:
    """The callout attached to an empty app; broker and Dishka added afterwards."""
    container = make_async_container(
        orders.Orders(), FastStreamProvider(), CalloutProvider(), orders.CalloutPolicy()
    )
    app = FastStream()
    AuthCallout(container).attach(app)
    app.add_broker(orders.orders_broker())
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    return app


def own_hook_logs_in_first() -> FastStream:
    """An on_startup hook of the app, registered first, logs in through the callout."""
    container = make_async_container(
        orders.Orders(), FastStreamProvider(), CalloutProvider(), orders.CalloutPolicy()
    )

    async def warm_up() -> None:
        nc = await client(os.environ[env.NATS_URL], "orders-service", "orders-service-secret")
        await nc.close()

    app = FastStream(orders.orders_broker(), on_startup=[warm_up])
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    AuthCallout(container).attach(app)
    return app


def asgi_app() -> AsgiFastStream:
    container = make_async_container(
        orders.Orders(), FastStreamProvider(), CalloutProvider(), orders.CalloutPolicy()
    )
    app = AsgiFastStream(orders.orders_broker())
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    AuthCallout(container).attach(app)
    return app


def own_container_for_the_callout() -> FastStream:
    """The callout's providers in a container of their own; the app's stays as it was."""
    app_container = make_async_container(orders.Orders(), FastStreamProvider())
    callout_container = make_async_container(CalloutProvider(), orders.CalloutPolicy())
    app = FastStream(orders.orders_broker(), after_shutdown=[callout_container.close])
    setup_dishka(app_container, app, auto_inject=True, finalize_container=True)
    AuthCallout(callout_container).attach(app)
    return app


BUILDS: dict[str, Callable[[], FastStream | AsgiFastStream]] = {
    "as-written": example_as_written,
    "callout-attached-first": callout_attached_first,
    "own-hook-first": own_hook_logs_in_first,
    "asgi": asgi_app,
    "own-container": own_container_for_the_callout,
}


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
async def test_the_app_still_serves_its_clients(
    server: LocalCalloutServer, build: Callable[[], FastStream | AsgiFastStream]
) -> None:
    app = build()
    async with running(app, server):
        # The callout in the callout account; the app's broker beside the clients, in APP.
        assert server.callout_subscribers() == 1
        users = {c.get("authorized_user"): c for c in connections(server)}
        assert users["orders-service"]["account"] == "APP", users
        assert users["auth"]["name"] == "faststream-callout", users
        confirmation = await order_round_trip(server.url)
    # position 1: the handler's OrderBook came from the container (setup_dishka).
    assert confirmation == {"id": 7, "status": "confirmed", "position": 1}


def test_the_example_wires_dishka_to_the_app_broker_and_the_callout_bypasses_it() -> None:
    app = orders.create_app()
    (broker,) = app.brokers
    assert any("Dishka" in type(m).__name__ for m in broker.middlewares)


async def test_the_callout_broker_has_no_middlewares_so_requests_go_direct(
    server: LocalCalloutServer,
) -> None:
    container = make_async_container(
        orders.Orders(), FastStreamProvider(), CalloutProvider(), orders.CalloutPolicy()
    )
    app = FastStream(orders.orders_broker())
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    callout = AuthCallout(container).attach(app)
    async with running(app, server):
        assert callout.broker is not None
        assert not callout.broker.middlewares
        subscriber = next(
            s for s in callout.broker.subscribers if "USER.AUTH" in str(s.subject.broker_address)
        )
        assert subscriber.direct  # type: ignore[attr-defined]
    assert callout.broker is None


async def test_clients_are_allowed_denied_and_kept_to_their_permissions(
    server: LocalCalloutServer,
) -> None:
    app = orders.create_app()
    async with running(app, server):
        with pytest.raises(NatsError, match=AUTH_VIOLATION):
            await client(server.url, "alice", "guess")
        with pytest.raises(NatsError, match=AUTH_VIOLATION):
            await client(server.url, "mallory", "alice-secret")
        alice = await client(server.url, "alice", "alice-secret")
        bob = await client(server.url, "bob", "bob-secret")
        try:
            await expect_permissions(
                alice,
                pub_allow=["orders.created"],
                pub_deny=["orders.confirmed", "billing.invoice"],
                sub_allow=["orders.confirmed"],
                sub_deny=["orders.created", "billing.>"],
            )
            await expect_permissions(
                bob, pub_deny=["orders.created"], sub_allow=["orders.confirmed"]
            )
            assert not await can_publish(bob, "orders.created")
        finally:
            await alice.close()
            await bob.close()


class GatedLookup:
    """Passwords, but ``slowpoke`` waits for ``gate``; fails once the container closed it."""

    def __init__(self) -> None:
        self.passwords = Passwords({"orders-service": "svc-pw", "slowpoke": "slow-pw"})
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.closed = False

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        if request.connect_opts.user == "slowpoke":
            self.waiting.set()
            await self.gate.wait()
        if self.closed:
            raise RuntimeError("lookup used after the container closed it")
        return await self.passwords.lookup(request)


@pytest.mark.parametrize("dishka_first", [True, False], ids=["setup_dishka-first", "attach-first"])
async def test_a_request_in_flight_at_shutdown_is_answered_before_the_container_closes(
    server: LocalCalloutServer, dishka_first: bool
) -> None:
    lookup = GatedLookup()

    class Gated(Provider):
        scope = Scope.APP

        @provide
        def lookup(self) -> Iterator[IdentityLookup]:
            yield lookup
            lookup.closed = True  # finalized by container.close

        @provide
        def keys(self) -> SigningKeys:
            return SigningKeys(KeyPair.from_seed(os.environ[env.CALLOUT_ISSUER_SEED]))

        @provide
        def permissions(self) -> PermissionBuilder:
            return FixedGrant("APP", pub=["orders.>"], sub=["orders.>", "_INBOX.>"])

    container = make_async_container(FastStreamProvider(), CalloutProvider(), Gated())
    broker = NatsBroker(
        server.url, security=SASLPlaintext(username="orders-service", password="svc-pw")
    )
    app = FastStream(broker)
    callout = AuthCallout(container)
    if dishka_first:
        setup_dishka(container, app, finalize_container=True)
        callout.attach(app)
    else:
        callout.attach(app)
        setup_dishka(container, app, finalize_container=True)
    await app.start()
    attempt = asyncio.create_task(client(server.url, "slowpoke", "slow-pw"))
    await asyncio.wait_for(lookup.waiting.wait(), 3)
    stopping = asyncio.create_task(app.stop())
    # The app's broker stops first; the callout is still draining slowpoke's request.
    assert await until(lambda: broker._connection is None, within=3)
    await asyncio.sleep(0.2)
    assert not lookup.closed, "the container was closed while a request was in flight"
    lookup.gate.set()
    nc = await attempt  # allowed: the lookup ran with the container still open
    await nc.close()
    await stopping
    assert lookup.closed
    assert callout.broker is None
    assert await until(lambda: server.callout_subscribers() == 0)


# -- mistakes, named at start ------------------------------------------------------------


def run_faststream(
    *args: str, environ: dict[str, str], timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FASTSTREAM, "run", APP_SPEC, *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def base_environ(server: LocalCalloutServer) -> dict[str, str]:
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALLOUT_", "NATS_URL", "ORDERS_", "PYTEST_"))
    }
    return {**kept, **server.environ}


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


USER_SEED = KeyPair.create_user().seed
MALFORMED_SEED = "SA" + "Q" * 56

MISTAKES = {
    "missing-seed": ({env.CALLOUT_ISSUER_SEED: ""}, "CALLOUT_ISSUER_SEED is not set"),
    "user-seed": (
        {env.CALLOUT_ISSUER_SEED: USER_SEED},
        "CALLOUT_ISSUER_SEED must be an account seed",
    ),
    "malformed-seed": (
        {env.CALLOUT_ISSUER_SEED: MALFORMED_SEED},
        "CALLOUT_ISSUER_SEED is not a valid nkey seed",
    ),
    "provider-raises": (
        {"ORDERS_USERS": "/nonexistent/orders_users.toml"},
        "provider CalloutPolicy.lookup raised ConfigurationError",
    ),
    "no-callout-password": ({env.CALLOUT_PASSWORD: ""}, "CALLOUT_PASSWORD is not set"),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_stops_faststream_run_with_one_line_naming_it(
    server: LocalCalloutServer, mistake: tuple[dict[str, str], str]
) -> None:
    changes, expected = mistake
    logins_before = callout_logins(server)
    environ = base_environ(server)
    environ.update(changes)
    started = time.monotonic()
    done = run_faststream(environ=environ)
    output = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode != 0, output
    assert time.monotonic() - started < 30
    (error,) = [line for line in lines(output) if "ERROR" in line]
    assert "faststream-callout cannot start:" in error
    assert expected in error, output
    assert len(lines(output)) <= 3, output  # "app starting", the error; no traceback
    assert "Traceback" not in output
    assert STARTED not in output
    assert not SEED.search(output), output
    for secret in (server.environ[env.CALLOUT_PASSWORD], USER_SEED, MALFORMED_SEED):
        assert secret not in output
    # Never served: the callout did not even log in.
    assert callout_logins(server) == logins_before


def test_a_refused_callout_login_names_the_user_and_what_it_must_be(
    server: LocalCalloutServer,
) -> None:
    environ = base_environ(server)
    environ[env.CALLOUT_PASSWORD] = "not-the-password"
    done = run_faststream(environ=environ)
    output = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode != 0, output
    (error,) = [line for line in lines(output) if "ERROR" in line]
    assert "the callout connection's login as user 'auth' (CALLOUT_USER) was refused" in error
    assert "must be an auth_users entry of the callout account" in error
    assert "Authorization Violation" in error
    assert "Traceback" not in output
    assert "not-the-password" not in output


async def test_a_user_that_is_no_auth_user_is_named_in_config_mode(
    server: LocalCalloutServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env.CALLOUT_USER, "orders-service")  # a client, not an auth user
    monkeypatch.setenv(env.CALLOUT_PASSWORD, "orders-service-secret")
    app = orders.create_app()
    with pytest.raises(CalloutStartError) as raised:
        await app.start()
    message = str(raised.value)
    assert "login as user 'orders-service' (CALLOUT_USER) was refused" in message
    assert "auth_users entry of the callout account" in message
    assert "orders-service-secret" not in message
    assert server.callout_subscribers() == 0
    assert await until(lambda: not connections(server))


async def test_operator_mode_logs_in_with_creds_and_names_a_refused_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world = OperatorWorld.generate(with_xkey=False)
    config = world.server_config()
    with nats_server(config) as nats_srv:
        keys = world.signing_keys()
        pipeline = CalloutPipeline(
            keys, Passwords({"alice": "alice-pw"}), FixedGrant(world.app.public_key, pub=["x"])
        )
        monkeypatch.setenv(env.NATS_URL, nats_srv.url)
        for name in (env.CALLOUT_USER, env.CALLOUT_PASSWORD):
            monkeypatch.delenv(name, raising=False)
        good = write_secret(tmp_path / "service.creds", world.service_creds())
        monkeypatch.setenv(env.CALLOUT_CREDS, str(good))
        callout = AuthCallout(pipeline)
        await callout.start()
        try:
            nc = await login(nats_srv.url, user="alice", password="alice-pw")
            await nc.close()
        finally:
            await callout.stop()
        # A user of the callout account that is not one of its auth_users: its own
        # login goes to the callout, which is not serving yet.
        stranger = KeyPair.create_user()
        token = user_jwt(stranger.public_key, world.callout, name="stranger")
        bad = write_secret(tmp_path / "stranger.creds", creds(token, stranger))
        monkeypatch.setenv(env.CALLOUT_CREDS, str(bad))
        started = time.monotonic()
        with pytest.raises(CalloutStartError) as raised:
            await AuthCallout(pipeline).start()
        # Refused once the server's 2 s callout deadline passed, not retried meanwhile.
        assert time.monotonic() - started < 6
    message = str(raised.value)
    # The server reached, the login waiting on the callout: never "cannot reach".
    assert not [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert f"user 'stranger' {stranger.public_key} of account {world.callout.public_key}" in message
    assert "(CALLOUT_CREDS) was refused" in message
    assert "must hold the callout account's credentials" in message
    assert stranger.seed not in message


# -- the start itself: what is read, what is named ----------------------------------------


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("user store unreachable")


async def start_error(callout: AuthCallout) -> str:
    with pytest.raises(CalloutStartError) as raised:
        await callout.start()
    assert callout.broker is None
    return str(raised.value)


async def test_a_raising_provider_class_is_named() -> None:
    class Policy(Provider):
        scope = Scope.APP
        lookup = provide(Broken, provides=IdentityLookup)

    container = make_async_container(
        CalloutProvider(),
        Policy(),
        PolicyProvider(keys=SigningKeys(KeyPair.create_account()), permissions=FixedGrant()),
    )
    message = await start_error(AuthCallout(container, environ={}))
    assert message == (
        "cannot build the auth callout pipeline: provider Broken raised "
        "RuntimeError: user store unreachable"
    )


async def test_a_secret_in_a_provider_error_is_not_repeated() -> None:
    leaked = KeyPair.create_account().seed

    class Policy(Provider):
        scope = Scope.APP

        @provide
        def keys(self) -> SigningKeys:
            raise ValueError(f"bad key {leaked} from vault token hvs.s3cr3t-t0ken")

    container = make_async_container(
        CalloutProvider(),
        Policy(),
        PolicyProvider(lookup=Passwords(), permissions=FixedGrant()),
    )
    environ = {"VAULT_TOKEN": "hvs.s3cr3t-t0ken"}
    message = await start_error(AuthCallout(container, environ=environ))
    assert "provider Policy.keys raised ValueError: bad key <seed> from vault token" in message
    assert leaked not in message
    assert "s3cr3t" not in message


LOGINS = {
    "nothing": ({}, "the callout connection has no login: set CALLOUT_USER and CALLOUT_PASSWORD"),
    "user-only": ({"CALLOUT_USER": "auth"}, "CALLOUT_PASSWORD is not set"),
    "both-modes": (
        {"CALLOUT_USER": "auth", "CALLOUT_PASSWORD": "pw", "CALLOUT_CREDS": "/x.creds"},
        "both CALLOUT_CREDS (operator mode) and CALLOUT_USER (config mode) are set",
    ),
    "no-creds-file": ({"CALLOUT_CREDS": "/nonexistent/x.creds"}, "CALLOUT_CREDS: cannot read"),
}


@pytest.mark.parametrize("login_case", LOGINS.values(), ids=LOGINS.keys())
async def test_an_incomplete_login_is_named_before_connecting(
    pipeline: CalloutPipeline, login_case: tuple[dict[str, str], str]
) -> None:
    environ, expected = login_case
    # No server at this address: a start that tried to connect would hang, not fail.
    environ = {env.NATS_URL: "nats://127.0.0.1:9", **environ}
    message = await asyncio.wait_for(start_error(AuthCallout(pipeline, environ=environ)), 5)
    assert expected in message
    assert "'pw'" not in message


async def test_arguments_replace_the_variables(pipeline: CalloutPipeline) -> None:
    callout = AuthCallout(pipeline, url="nats://u:p@127.0.0.1:9", user="svc", environ={})
    message = await start_error(callout)
    assert message.startswith("password= is not set: the password of user= 'svc'")
    with pytest.raises(ValueError, match="creds"):
        AuthCallout(pipeline, creds="/x.creds", user="svc")
    with pytest.raises(TypeError, match="make_async_container"):
        AuthCallout(object())  # type: ignore[arg-type]


def test_attach_needs_a_faststream_app(pipeline: CalloutPipeline) -> None:
    with pytest.raises(TypeError, match="not a FastStream application"):
        AuthCallout(pipeline).attach(NatsBroker())  # type: ignore[arg-type]


async def test_an_error_from_the_start_hook_reaches_the_app(
    pipeline: CalloutPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastStream(NatsBroker("nats://127.0.0.1:9"))
    AuthCallout(pipeline, environ={}).attach(app)
    caplog.set_level(logging.ERROR, "faststream_callout")
    with pytest.raises(CalloutStartError) as raised:
        await asyncio.wait_for(app.start(), 5)  # the app's broker never tried to connect
    assert isinstance(raised.value, ConfigurationError)
    (record,) = [r for r in caplog.records if r.name == "faststream_callout"]
    assert record.getMessage() == f"faststream-callout cannot start: {raised.value}"
    assert record.exc_info is None


async def test_an_unreachable_server_is_said_while_the_start_retries(
    pipeline: CalloutPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    environ = {env.NATS_URL: url, env.CALLOUT_USER: "auth", env.CALLOUT_PASSWORD: "pw"}
    callout = AuthCallout(pipeline, environ=environ)
    caplog.set_level(logging.WARNING, "faststream_callout")
    starting = asyncio.create_task(callout.start())

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "faststream_callout"]

    try:
        assert await until(lambda: bool(warnings()), within=3)
        assert not starting.done()  # still retrying: the server may come up
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    (warning,) = warnings()  # once, not once per retry
    assert warning.startswith(f"the callout connection cannot reach {url} yet (")
    assert "'pw'" not in warning
    assert callout.broker is None


# -- server feedback and the decision log ------------------------------------------------


async def test_a_grant_into_an_unknown_account_is_logged_with_its_name(
    server: LocalCalloutServer, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = CalloutPipeline(
        SigningKeys(KeyPair.from_seed(os.environ[env.CALLOUT_ISSUER_SEED])),
        Passwords({"ghost": "ghost-pw"}),
        FixedGrant("NOPE", pub=["x"]),
    )
    callout = AuthCallout(pipeline)
    caplog.set_level(logging.INFO, "faststream_callout")
    await callout.start()
    try:
        with pytest.raises(NatsError, match=AUTH_VIOLATION):
            await client(server.url, "ghost", "ghost-pw")

        def refusals() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "faststream_callout.feedback"]

        assert await until(lambda: bool(refusals()), within=5)
    finally:
        await callout.stop()
    (refusal,) = refusals()
    assert refusal.levelno == logging.WARNING
    message = refusal.getMessage()
    assert "we allowed 'ghost'" in message
    assert "account 'NOPE'" in message
    assert "NOPE" in message.rsplit("refused it:", 1)[1]  # the server's own reason names it
    assert callout.feedback is not None
    assert callout.feedback.refused == 1
    assert await until(lambda: server.callout_subscribers() == 0)


async def test_configured_logging_is_left_alone(
    server: LocalCalloutServer, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's capture handler sits on the root logger: logging is configured.
    assert logging.getLogger().handlers
    app = orders.create_app()
    ours = logging.getLogger("faststream_callout")
    caplog.set_level(logging.INFO, "faststream_callout")
    async with running(app, server):
        assert ours.handlers == []
        assert ours.propagate
        await order_round_trip(server.url)
    decisions = [r for r in caplog.records if r.name == "faststream_callout.decisions"]
    assert [r.callout["user"] for r in decisions] == ["orders-service", "alice"]  # type: ignore[attr-defined]


@contextlib.contextmanager
def faststream_running(
    server: LocalCalloutServer, *args: str, log: Path
) -> Iterator[Callable[[], str]]:
    """``faststream run`` the example in the background until its broker is up.

    Yields a function returning the output so far; stops the app with SIGINT (Ctrl-C).
    """
    with log.open("w") as out:
        process = subprocess.Popen(
            [FASTSTREAM, "run", APP_SPEC, *args],
            cwd=ROOT,
            env=base_environ(server),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output() -> str:
        return ANSI.sub("", log.read_text())

    def app_broker_up() -> bool:
        return any(c.get("authorized_user") == "orders-service" for c in connections(server))

    try:
        deadline = time.monotonic() + 30
        while not app_broker_up():
            assert process.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.05)
        yield output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, output()


async def log_alice_in(url: str) -> None:
    nc = await client(url, "alice", "alice-secret")
    await nc.close()


def decision_lines(output: str, user: str) -> list[str]:
    return [line for line in lines(output) if f"allowed user={user!r} account='APP'" in line]


async def test_faststream_run_log_level_info_shows_each_decision_once(
    server: LocalCalloutServer, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    with faststream_running(server, "--log-level", "info", log=log) as output:
        await log_alice_in(server.url)
        assert await until(lambda: bool(decision_lines(output(), "alice")))
    text = output()
    assert len(decision_lines(text, "orders-service")) == 1, text
    assert len(decision_lines(text, "alice")) == 1, text
    assert re.search(r"INFO\s+- auth callout serving on nats://\S+ as user 'auth'", text), text
    assert server.environ[env.CALLOUT_PASSWORD] not in text


async def test_faststream_run_log_level_warning_hides_decisions(
    server: LocalCalloutServer, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    with faststream_running(server, "--log-level", "warning", log=log) as output:
        await log_alice_in(server.url)
        await asyncio.sleep(0.3)
    assert "allowed user=" not in output()


async def test_faststream_run_log_config_gets_each_decision_once(
    server: LocalCalloutServer, tmp_path: Path
) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mine": {"format": "MINE %(name)s %(message)s"}},
        "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "mine"}},
        "root": {"level": "INFO", "handlers": ["out"]},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    arguments = ("--log-config", str(path), "--log-level", "info")
    with faststream_running(server, *arguments, log=tmp_path / "out.log") as output:
        await log_alice_in(server.url)
        assert await until(lambda: bool(decision_lines(output(), "alice")))
    alice = decision_lines(output(), "alice")
    assert len(alice) == 1, output()
    assert alice[0].startswith("MINE faststream_callout.decisions allowed"), alice


async def test_the_callout_starts_first_and_stops_right_after_the_brokers(
    server: LocalCalloutServer,
) -> None:
    events: list[str] = []
    container = make_async_container(
        orders.Orders(), FastStreamProvider(), CalloutProvider(), orders.CalloutPolicy()
    )
    app = FastStream(
        orders.orders_broker(),
        on_startup=[lambda: events.append("app on_startup")],
        after_shutdown=[lambda: events.append("app after_shutdown")],
    )
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    app.after_startup(lambda: events.append("app after_startup"))
    app.on_shutdown(lambda: events.append("app on_shutdown"))
    callout = AuthCallout(container)
    start, stop = callout.start, callout.stop

    async def recorded_start() -> None:
        events.append("callout start")
        await start()

    async def recorded_stop() -> None:
        assert app.broker is not None
        events.append(f"callout stop (app broker running: {app.broker.running})")
        await stop()

    callout.start = recorded_start  # type: ignore[method-assign]
    callout.stop = recorded_stop  # type: ignore[method-assign]
    callout.attach(app)  # after every hook above
    async with running(app, server):
        pass
    assert events == [
        "callout start",
        "app on_startup",
        "app after_startup",
        "app on_shutdown",
        "callout stop (app broker running: False)",
        "app after_shutdown",
    ]
