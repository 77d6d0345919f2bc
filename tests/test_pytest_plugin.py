"""The pytest plugin: users' test files, run by pytester against real nats-servers.

Each pytester run is an in-process pytest session with its own pytest-asyncio
configuration; its tests log real nats-py clients in through a real
nats-server and a real callout service. Tests named ``test_wrong_*`` in those
files hold deliberately wrong expectations: they must fail, with messages
that say which subject or login surprised. The last group uses the library
core (``run_deployment``, the probes) directly, in this suite's event loop.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from faststream_callout import CalloutPipeline, Denied, Drop, Grant, Identity, KeyPair, Permission
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.operator import creds, user_jwt
from faststream_callout.testing.deployment import (
    DeploymentError,
    LocalCalloutServer,
    LoginRefused,
    run_deployment,
)
from faststream_callout.testing.probes import (
    PermissionMismatch,
    can_publish,
    can_subscribe,
    expect_permissions,
    settle,
)

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

# The policy under test in the inner sessions, written once for both modes:
# grants name accounts through deployment.accounts (a name in config mode, a
# public key in operator mode).
POLICY = """
from faststream_callout import CalloutPipeline, Denied, Grant, Identity, Permission

USERS = {"alice": "alice-pw"}
TOKENS = {"tok-carol": "carol"}


class Lookup:
    async def lookup(self, request):
        opts = request.connect_opts
        if opts.auth_token:
            if opts.auth_token in TOKENS:
                return Identity(TOKENS[opts.auth_token])
            raise Denied("unknown token")
        if opts.password and USERS.get(opts.user) == opts.password:
            return Identity(opts.user)
        raise Denied("bad credentials")


class Rules:
    def __init__(self, accounts):
        self.accounts = accounts

    def build(self, identity, request):
        if identity.name == "carol":  # read-only, in TEAM
            return Grant(
                account=self.accounts["TEAM"],
                pub=Permission(deny=[">"]),
                sub=Permission(allow=["news.>"]),
            )
        return Grant(
            account=self.accounts["APP"],
            pub=Permission(allow=["orders.>"], deny=["orders.secret"]),
            sub=Permission(allow=["orders.>", "_INBOX.>"], deny=["orders.hidden"]),
        )


def make_service(deployment):
    return CalloutPipeline(deployment.keys, Lookup(), Rules(deployment.accounts))
"""

SESSION_LOOP_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
"""


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in-process with only pytest-asyncio and our plugin loaded.

    Autoload is off so the inner session does not also load the plugin from its
    entry point (a second registration under another name is an error).
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    # With CI set pytest prints untruncated summaries, which changes the counts below.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)

    def run_inner(*args: str) -> pytest.RunResult:
        return pytester.runpytest_inprocess(
            "-p", "asyncio", "-p", "faststream_callout.testing.pytest_plugin",
            "-p", "no:cacheprovider",
            *args,
        )  # fmt: skip

    return run_inner


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- config and operator mode, xkey on: what passes, what fails and how -------------------

MATRIX_TESTS = """
import os

from faststream_callout.testing.probes import can_publish, can_subscribe, expect_permissions


def record_pid(callout):
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.write(f"{callout.server.pid}\\n")


async def test_alice_gets_her_grant(callout):
    record_pid(callout)
    assert callout.keys.xkey is not None
    async with callout.connect(user="alice", password="alice-pw") as nc:
        assert await callout.account_of(nc) == "APP"
        assert await can_publish(nc, "orders.new")
        assert not await can_publish(nc, "orders.secret")
        assert await can_subscribe(nc, "orders.>")
        assert not await can_subscribe(nc, "orders.hidden")
        await expect_permissions(
            nc,
            pub_allow=["orders.>", "orders.new"],
            pub_deny=["orders.secret", "admin.x", "news.x"],
            sub_allow=["orders.>", "orders.new workers"],
            sub_deny=["orders.hidden", "admin.>", "news.>"],
        )


async def test_token_user_lands_read_only_in_team(callout):
    record_pid(callout)
    nc = await callout.connect(token="tok-carol")
    assert await callout.account_of(nc) == "TEAM"
    await expect_permissions(nc, pub_deny=["news.x", "orders.new"], sub_allow=["news.>"])


async def test_refusals_carry_the_service_reason(callout):
    record_pid(callout)
    refusal = await callout.expect_denied(user="alice", password="guess", reason="bad credentials")
    assert refusal.error == "Authorization Violation"
    assert refusal.service_reason == "bad credentials"
    refusal = await callout.expect_denied(token="tok-nobody")
    assert refusal.service_reason == "unknown token"


async def test_wrong_permission_expectations(callout):
    async with callout.connect(user="alice", password="alice-pw") as nc:
        await expect_permissions(
            nc,
            pub_allow=["admin.x", "orders.new"],
            pub_deny=["orders.>"],
            sub_allow=["orders.hidden"],
            sub_deny=["orders.>"],
        )


async def test_wrong_probe_assertion(callout):
    async with callout.connect(user="alice", password="alice-pw") as nc:
        assert await can_publish(nc, "admin.x")


async def test_wrong_expect_denied(callout):
    await callout.expect_denied(user="alice", password="alice-pw")


async def test_wrong_reason(callout):
    await callout.expect_denied(user="alice", password="guess", reason="account locked")


async def test_wrong_password_in_connect(callout):
    await callout.connect(user="alice", password="guess")
"""


def test_policy_in_config_and_operator_mode_with_xkey(run, pytester, tmp_path, monkeypatch):
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("PIDS_FILE", str(pids_file))
    pytester.makeini(SESSION_LOOP_INI)
    pytester.makeconftest(
        POLICY
        + "\nfrom faststream_callout.testing.pytest_plugin import callout_deployment\n"
        + "callout = callout_deployment(make_service, mode=['config', 'operator'], xkey=True,"
        + " accounts=['APP', 'TEAM'])\n"
    )
    pytester.makepyfile(test_policy=MATRIX_TESTS)
    result = run("-v")
    # 3 right expectations and 5 wrong ones, in each mode.
    result.assert_outcomes(passed=6, failed=10)
    for mode in ("config", "operator"):
        result.stdout.fnmatch_lines(
            [
                f"*test_alice_gets_her_grant?{mode}? PASSED*",
                f"*test_token_user_lands_read_only_in_team?{mode}? PASSED*",
                f"*test_refusals_carry_the_service_reason?{mode}? PASSED*",
            ],
            consecutive=False,
        )
    output = result.stdout.str()
    # Every wrong expectation is named with the subject and the server's answer,
    # once per mode.
    expected_lines = [
        "permissions of client 'alice' differ from the expected ones (4 of 5 checks):",
        (
            'publish to "admin.x": expected ALLOWED, but nats-server denied it '
            '(nats: permissions violation for publish to "admin.x")'
        ),
        (
            'subscribe to "orders.hidden": expected ALLOWED, but nats-server denied it '
            '(nats: permissions violation for subscription to "orders.hidden")'
        ),
        'subscribe to "orders.>": expected DENIED, but nats-server allowed it',
        (
            '<Probe publish to "admin.x": denied: nats: permissions violation for publish to '
            '"admin.x">'
        ),
        "expected the login of user 'alice' to be refused, but nats-server let it in (account APP)",
        (
            "the login of user 'alice' was refused as expected, but nats-server's reason is "
            "'Auth callout service returned an error: bad credentials', expected it to contain "
            "'account locked'"
        ),
        (
            "LoginRefused: nats-server refused the login of user 'alice': Authorization "
            "Violation; nats-server says: Auth callout service returned an error: bad credentials"
        ),
    ]
    for line in expected_lines:
        assert output.count(line) == 2, (line, output[-6000:])
    # "orders.>" is probed on a concrete subject, and the message names it.
    probed = r'publish to "orders\.>" \(probed as "orders\.probe[0-9a-f]{8}"\): expected DENIED'
    assert len(re.findall(probed, output)) == 2, output[-6000:]
    # No secret in any error message (the tracebacks quote the test source, hence "E ").
    errors = [line for line in output.splitlines() if line.startswith("E ")]
    assert errors
    assert not [line for line in errors if "alice-pw" in line or "guess" in line]
    # One server per mode for the whole session, stopped by PID at its end.
    pids = _pids(pids_file)
    assert len(pids) == 6
    assert len(set(pids)) == 2, pids
    assert all(_gone(pid) for pid in set(pids))


# -- pytest-asyncio's defaults: strict mode, a loop per test -------------------------------

STRICT_TESTS = """
import os

import pytest

import conftest
from faststream_callout.testing.probes import can_publish


def record(callout):
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.write(f"{callout.server.pid}\\n")


@pytest.mark.asyncio
async def test_first(callout):
    record(callout)
    async with callout.connect(user="alice", password="alice-pw") as nc:
        assert await can_publish(nc, "orders.new")


@pytest.mark.asyncio
async def test_second(callout):
    record(callout)
    async with callout.connect(user="alice", password="alice-pw") as nc:
        assert not await can_publish(nc, "orders.secret")
    assert conftest.STARTED == 2  # a fresh service for each test


@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_loop(callout):
    await callout.connect(user="alice", password="alice-pw")
"""


def test_default_pytest_asyncio_config_restarts_the_service_per_test(
    run, pytester, tmp_path, monkeypatch
):
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("PIDS_FILE", str(pids_file))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        POLICY
        + """
from faststream_callout.testing.pytest_plugin import callout_deployment

STARTED = 0


def counted(deployment):
    global STARTED
    STARTED += 1
    return make_service(deployment)


callout = callout_deployment(counted, accounts=["APP", "TEAM"])
"""
    )
    pytester.makepyfile(test_strict=STRICT_TESTS)
    result = run()
    result.assert_outcomes(passed=2, failed=1)
    # A test in another loop than the service is told so, not left to time out.
    result.stdout.fnmatch_lines(
        [
            (
                "*DeploymentError: this deployment's callout service runs in another event "
                "loop*The fixture 'callout' runs in the function-scoped loop*"
            ),
        ]
    )
    pids = _pids(pids_file)
    assert len(pids) == 2
    assert len(set(pids)) == 1  # the service restarts, nats-server does not
    assert _gone(pids[0])


# -- the ready-made fixture from ini options, an app configured by env vars -----------------

APP_MODULE = """
import os

from dishka import Provider, Scope, make_async_container, provide
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import (
    CalloutProvider, IdentityLookup, PermissionBuilder, SigningKeys, callout_router,
)
from faststream_callout.core.env import signing_keys_from_env
from conftest import Lookup, Rules


class Policy(Provider):
    scope = Scope.APP

    @provide
    def lookup(self) -> IdentityLookup:
        return Lookup()

    @provide
    def permissions(self) -> PermissionBuilder:
        return Rules({"APP": "APP", "TEAM": "TEAM"})

    @provide
    def keys(self) -> SigningKeys:
        return signing_keys_from_env()  # read when the first login arrives


def make_app():
    # Like an app run by `faststream-callout dev`: everything from the environment.
    container = make_async_container(CalloutProvider(), Policy())
    broker = NatsBroker(
        os.environ["NATS_URL"],
        security=SASLPlaintext(
            username=os.environ["CALLOUT_USER"], password=os.environ["CALLOUT_PASSWORD"]
        ),
        logger=None,
    )
    broker.include_router(callout_router(container))
    return FastStream(broker, on_shutdown=[container.close], logger=None)
"""

INI_TESTS = """
import os

from faststream_callout.testing.probes import can_publish


async def test_app_from_the_environment(callout):
    assert os.environ["NATS_URL"] == callout.url
    assert callout.server.xkey.public_key in callout.server.server.config
    async with callout.connect(user="alice", password="alice-pw") as nc:
        assert await can_publish(nc, "orders.new")
    await callout.expect_denied(user="alice", password="guess", reason="bad credentials")


async def test_wrong_service_never_subscribes(broken):
    pass
"""


def test_ini_configured_fixture_runs_an_app_from_the_environment(run, pytester, monkeypatch):
    for name in ("NATS_URL", "CALLOUT_USER", "CALLOUT_PASSWORD", "CALLOUT_ISSUER_SEED"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini(
        SESSION_LOOP_INI
        + "pythonpath = .\ncallout_service = myservice:make_app\ncallout_xkey = true\n"
        + "callout_accounts = APP TEAM\n"
    )
    pytester.makeconftest(
        POLICY
        + """
from faststream.nats import NatsBroker
from faststream_callout.testing.pytest_plugin import callout_deployment

# Connects, but includes no callout router: the fixture must say so, not hang.
broken = callout_deployment(
    lambda d: NatsBroker(d.url, security=d.service_security, logger=None), start_timeout=0.5
)
"""
    )
    pytester.makepyfile(myservice=APP_MODULE, test_ini=INI_TESTS)
    result = run()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*DeploymentError: the callout service started, but nothing subscribes to "
                "$SYS.REQ.USER.AUTH in the callout account*"
            ),
        ]
    )
    # The environment the app saw is gone with the session.
    assert "CALLOUT_ISSUER_SEED" not in os.environ
    assert "NATS_URL" not in os.environ


def test_readme_example_passes(run, pytester):
    """docs/testing.md's example is a test module; run it with the options of its __main__."""
    text = (REPO / "docs" / "testing.md").read_text()
    [example] = re.findall(r"```python test_policy.py\n(.*?)```", text, flags=re.DOTALL)
    options = re.findall(r'"(asyncio_[a-z_]+=[a-z]+)"', example)
    assert len(options) == 3, options
    pytester.makepyfile(test_policy=example)
    result = run(*(arg for option in options for arg in ("-o", option)))
    result.assert_outcomes(passed=4)


# -- the core, in this suite's event loop ---------------------------------------------------


class _Lookup:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.nkey:  # nats-server checked the nonce signature before asking
            return Identity(opts.nkey)
        if opts.user == "alice" and opts.password == "alice-pw":
            return Identity("alice")
        raise Denied("bad credentials")


class _Rules:
    def __init__(self, account: str) -> None:
        self.account = account

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(
            account=self.account,
            pub=Permission(allow=["orders.>"], deny=["orders.secret"]),
            sub=Permission(allow=["orders.>"], deny=["orders.hidden"]),
        )


@pytest.fixture(scope="module")
def shared_server():
    server = LocalCalloutServer(mode="config").start()
    process = server.server.process
    try:
        yield server
    finally:
        server.close()
        assert process is not None
        assert process.poll() is not None


def _service(deployment):
    return CalloutPipeline(deployment.keys, _Lookup(), _Rules(deployment.account("APP")))


async def test_probes_are_exact_over_many_rounds(shared_server):
    """No sleeps: each answer is settled by a round trip, so none is ever misread."""
    async with (
        run_deployment(_service, server=shared_server) as deployment,
        deployment.connect(user="alice", password="alice-pw") as nc,
    ):
        for index in range(60):
            assert await can_publish(nc, f"orders.{index}")
            assert not await can_publish(nc, "orders.secret")
            assert not await can_publish(nc, f"admin.{index}")
            assert await can_subscribe(nc, f"orders.{index}.>")
            assert not await can_subscribe(nc, "orders.hidden")
        assert nc.is_connected


async def test_a_client_from_elsewhere_is_probed_and_keeps_its_error_callback(shared_server):
    seen: list[Exception] = []

    async def own_callback(exc: Exception) -> None:
        seen.append(exc)

    async with run_deployment(_service, server=shared_server) as deployment:
        nc: Client = await nats.connect(
            deployment.url,
            user="alice",
            password="alice-pw",
            allow_reconnect=False,
            error_cb=own_callback,
        )
        try:
            probe = await can_publish(nc, "admin.x")
            assert not probe
            assert 'publish to "admin.x"' in probe.violation
            assert await can_publish(nc, "orders.x")
            await settle(nc)
            assert [str(e) for e in seen] == [probe.violation]
        finally:
            await nc.close()


async def test_nkey_and_creds_logins_and_a_shared_server_between_services():
    """Operator mode: nats-server sends a nonce, the client signs it with its nkey."""
    user = KeyPair.create_user()
    shared_server = LocalCalloutServer(mode="operator").start()
    for _ in range(2):  # the second service finds the first one's subscription gone
        async with run_deployment(_service, server=shared_server) as deployment:
            nc = await deployment.connect(nkey_seed=user.seed)
            assert await deployment.account_of(nc) == "APP"
            with pytest.raises(PermissionMismatch, match=r"client 'nkey U[A-Z0-9]+'"):
                await expect_permissions(nc, pub_allow=["admin.x"])
            # A .creds login (a user JWT of APP itself) skips the callout: plumbing only.
            signer = deployment.keys.user_jwt_signer(deployment.account("APP"))
            assert signer is not None
            jwt_user = KeyPair.create_user()
            text = creds(user_jwt(jwt_user.public_key, signer.key), jwt_user)
            async with deployment.connect(creds=text) as direct:
                assert await deployment.account_of(direct) == "APP"
            # nc is left open on purpose: the deployment closes its clients.
        assert nc.is_closed
        assert shared_server.is_running()
        assert shared_server.callout_subscribers() == 0
    shared_server.close()


class _SilentLookup:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        # Never answers, like a service that hangs past nats-server's timeout. (A slow
        # lookup would race the pipeline's own deadline, which answers with a denial.)
        raise Drop("hanging")


async def test_a_hanging_service_is_a_refusal_that_says_so():
    def slow(deployment):
        return CalloutPipeline(deployment.keys, _SilentLookup(), _Rules("APP"))

    async with run_deployment(slow, auth_timeout=0.5) as deployment:
        with pytest.raises(LoginRefused) as refused:
            await deployment.connect(user="alice", password="alice-pw")
    assert refused.value.who == "user 'alice'"
    # nats-server gave up first (0.5 s) and publishes no reason for that: the
    # message says what the timing means.
    assert refused.value.reason == ""
    assert "after the callout timeout (0.5s): did the service answer?" in str(refused.value)
    assert "alice-pw" not in str(refused.value)
    # run_deployment started this server itself, and stopped it.
    with pytest.raises(DeploymentError, match="nats-server is not running"):
        deployment.server.check_alive()
