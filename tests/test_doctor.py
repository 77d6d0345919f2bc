"""``faststream_callout.tools.doctor`` and ``faststream-callout doctor`` against real nats-servers.

Every deployment is a real nats-server (config mode, and operator mode with a memory
resolver) with keys generated here. The doctor's verdicts are checked against what
the server really does: the request it publishes, the permissions it enforces, the
users it lets past the callout. No seed or password may ever appear in a report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from callout_env import OperatorWorld as Deployment
from callout_env import eventually, nats_server, write_secret
from callout_env import service as callout_service
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from policies import TableLookup, TablePermissions

from faststream_callout import KeyPair, SigningKeys, XKeyPair
from faststream_callout.core.env import keyring_from_env
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import CalloutPipeline, Decision, Outcome
from faststream_callout.testing import settle
from faststream_callout.testing.local_server import LocalNatsServer, free_port
from faststream_callout.tools.cli import main
from faststream_callout.tools.doctor import Finding, Report, Status, diagnose
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.permissions import may_publish, may_subscribe
from faststream_callout.tools.doctor.protected import check_protected
from faststream_callout.tools.doctor.server_config import ServerConfig
from faststream_callout.tools.natsconf import (
    NatsConfigError,
    load,
    option,
    parse,
    render_config_mode,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH = "$SYS.REQ.USER.AUTH"


@dataclass
class Setup:
    """A config-mode deployment: AUTH (the service), APP, OTHER and SYS."""

    issuer: KeyPair = field(default_factory=KeyPair.create_account)
    xkey: XKeyPair | None = field(default_factory=XKeyPair.generate)
    server_issuer: str = ""  # what the server is told; default: the issuer above
    server_xkey: str | None = ""  # "" = the xkey above, None = none
    service_user: str = "auth"
    service_account: str = "AUTH"
    callout_account: str = "AUTH"
    system_account: str = "SYS"
    service_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    service_permissions: str = ""
    auth_users: tuple[str, ...] = ("auth",)
    allowed_accounts: tuple[str, ...] = ()
    no_auth_user: str = ""
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    port: int = field(default_factory=free_port)

    def render(self) -> str:
        xkey = self.server_xkey
        if xkey == "":
            xkey = self.xkey.public_key if self.xkey else None
        return render_config_mode(
            issuer=self.server_issuer or self.issuer.public_key,
            accounts={"APP": {"dave": "dave-pw"}, "OTHER": {"bob": "bob-pw"}},
            auth_user=self.service_user,
            auth_password=self.service_password,
            auth_user_account=self.service_account,
            callout_account=self.callout_account,
            system_account=self.system_account,
            auth_user_permissions=self.service_permissions,
            auth_users=self.auth_users,
            allowed_accounts=self.allowed_accounts,
            xkey=xkey,
            system_password=self.admin_password,
            timeout=0.5,
            listen=f"127.0.0.1:{self.port}",
            server_name="doctor-test",
            extra=f"no_auth_user: {self.no_auth_user}\n" if self.no_auth_user else "",
        )

    @property
    def credentials(self) -> dict[str, str]:
        return {"user": self.service_user, "password": self.service_password}

    @property
    def security(self) -> SASLPlaintext:
        """The service's FastStream login."""
        return SASLPlaintext(username=self.service_user, password=self.service_password)

    def keys(
        self, *, issuer: KeyPair | None = None, xkey: XKeyPair | bool | None = True
    ) -> SigningKeys:
        chosen = self.xkey if xkey is True else (xkey or None)
        return SigningKeys(issuer or self.issuer, xkey=chosen)

    @property
    def secrets(self) -> list[str]:
        values = [self.issuer.seed, self.service_password, self.admin_password, "dave-pw", "bob-pw"]
        return values + ([self.xkey.seed] if self.xkey else [])


def statuses(report: Report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report.findings:
        found.setdefault(finding.check, []).append(finding.status.value)
    return found


def failing(report: Report, check: str) -> str:
    [finding] = [f for f in report.findings_for(check) if f.status is Status.FAIL]
    return finding.message


def assert_no_secrets(text: str, values: list[str]) -> None:
    for value in values:
        assert value not in text


def assert_clean(report: Report, setup: Setup) -> None:
    assert_no_secrets(report.format() + report.to_json(), setup.secrets)


async def run_doctor(
    setup: Setup, server: LocalNatsServer, keys: SigningKeys | Keyring | None, **options: object
) -> Report:
    options.setdefault("server_config", server.config_path)
    options.setdefault("probe", True)
    options.setdefault("wait", 3.0)
    return await diagnose(server.url, credentials=setup.credentials, keys=keys, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Setup, LocalNatsServer]]:
    """One correctly configured server; the tests vary the service's side."""
    setup = Setup()
    with nats_server(setup) as server:
        yield setup, server


@pytest.fixture
async def service(deployment: tuple[Setup, LocalNatsServer]) -> AsyncIterator[NatsBroker]:
    """The callout service itself, answering requests with the deployment's keys."""
    setup, server = deployment
    pipeline = CalloutPipeline(setup.keys(), TableLookup(), TablePermissions())
    async with callout_service(server.url, setup.security, pipeline) as broker:
        yield broker


async def quiet(_: Exception) -> None:
    pass


# -- a correct deployment ----------------------------------------------------------------------


async def test_correct_deployment_is_all_ok(
    deployment: tuple[Setup, LocalNatsServer], service: NatsBroker
) -> None:
    setup, server = deployment
    report = await run_doctor(setup, server, setup.keys())
    assert report.ok, report.format()
    assert {f.status for f in report.findings} == {Status.OK}, report.format()
    assert set(statuses(report)) == {
        "server-config",
        "connect",
        "account",
        "subscribe",
        "reply",
        "issuer",
        "xkey",
        "request",
        "request.xkey",
        "request.verify",
        "request.issuer",
        "bypass",
        "protected",
    }
    assert report.mode == "config"
    assert "2." in report.server  # the server's version, from $SYS.REQ.USER.INFO
    assert report.config_snippet == ""
    # The reply check used the reply subject nats-server really sends.
    [reply] = report.findings_for("reply")
    assert "$SYS._INBOX." in reply.message
    assert report.exit_code == 0
    assert_clean(report, setup)


async def test_watching_takes_no_request_from_the_service(
    deployment: tuple[Setup, LocalNatsServer], service: NatsBroker
) -> None:
    """The doctor's plain subscription gets a copy; the service's queue group still answers."""
    setup, server = deployment
    doctor = asyncio.create_task(run_doctor(setup, server, setup.keys(), probe=False, wait=2.0))
    logins = 0
    while not doctor.done():
        client = await nats.connect(
            server.url, user="alice", password="alice-pw", allow_reconnect=False, error_cb=quiet
        )
        info = await client.request("$SYS.REQ.USER.INFO", b"", timeout=2)
        assert json.loads(info.data)["data"]["account"] == "APP"
        await client.close()
        logins += 1
        await asyncio.sleep(0.1)
    report = doctor.result()
    assert logins >= 1  # each of them answered by the service while the doctor watched
    assert [f.status for f in report.findings_for("request")] == [Status.OK], report.format()
    assert report.ok, report.format()


# -- the service's keys against the server --------------------------------------------------------


async def test_doctor_agrees_with_the_pipeline_during_a_key_rotation(
    deployment: tuple[Setup, LocalNatsServer],
) -> None:
    """The server already uses the *next* issuer and xkey: the service answers, doctor agrees.

    The keys are those of CALLOUT_NEXT_ISSUER_SEED and CALLOUT_NEXT_XKEY_SEED: the
    pipeline opens requests with either xkey and answers with the issuer the
    request names, so doctor must open and verify them the same way.
    """
    setup, server = deployment
    assert setup.xkey is not None
    previous_issuer, previous_xkey = KeyPair.create_account(), XKeyPair.generate()
    keys = keyring_from_env(
        {
            "CALLOUT_ISSUER_SEED": previous_issuer.seed,
            "CALLOUT_NEXT_ISSUER_SEED": setup.issuer.seed,
            "CALLOUT_XKEY_SEED": previous_xkey.seed,
            "CALLOUT_NEXT_XKEY_SEED": setup.xkey.seed,
        }
    )
    decisions: list[Decision] = []
    pipeline = CalloutPipeline(
        keys, TableLookup(), TablePermissions(), observers=[decisions.append]
    )
    async with callout_service(server.url, setup.security, pipeline):
        client = await nats.connect(
            server.url, user="alice", password="alice-pw", allow_reconnect=False, error_cb=quiet
        )
        await client.close()
        report = await run_doctor(setup, server, keys)
        # The doctor may be done before the observer saw the denial of its probe.
        await eventually(lambda: len(decisions) == 2)
    # The pipeline verified every request: alice got in, the doctor's probe was denied.
    assert [d.outcome for d in decisions] == [Outcome.ALLOWED, Outcome.DENIED]
    # ... and the doctor, opening and verifying the same way, finds nothing wrong.
    assert report.ok, report.format()
    assert {f.status for f in report.findings} == {Status.OK}, report.format()
    for check in ("issuer", "xkey", "request.xkey", "request.verify", "request.issuer"):
        assert statuses(report)[check] == ["OK"], report.format()
    assert report.config_snippet == ""
    assert_clean(report, setup)
    assert previous_issuer.seed not in report.to_json()
    assert previous_xkey.seed not in report.to_json()


async def test_wrong_issuer_fails_with_expected_and_actual_key(
    deployment: tuple[Setup, LocalNatsServer],
) -> None:
    setup, server = deployment
    other = KeyPair.create_account()
    report = await run_doctor(setup, server, setup.keys(issuer=other))
    assert not report.ok
    for check in ("issuer", "request.issuer"):
        [finding] = report.findings_for(check)
        assert finding.status is Status.FAIL
        assert finding.details == {"expected": setup.issuer.public_key, "actual": other.public_key}
        assert setup.issuer.public_key in finding.message
        assert other.public_key in finding.message
    # The configuration that would match: our issuer, the service's login, no password.
    snippet = report.config_snippet
    assert f"issuer: {other.public_key}" in snippet
    assert 'auth_users: [ "auth" ]' in snippet
    assert setup.xkey is not None
    assert f"xkey: {setup.xkey.public_key}" in snippet
    assert '"APP": {}' in snippet
    assert '"OTHER": {}' in snippet
    assert_clean(report, setup)
    assert other.seed not in report.format() + report.to_json()
    # The snippet is a configuration nats-server accepts (parsed with our reader).
    parsed = parse(snippet)
    assert option(option(option(parsed, "authorization"), "auth_callout"), "issuer") == (
        other.public_key
    )


async def test_wrong_xkey_fails_naming_both_keys(deployment: tuple[Setup, LocalNatsServer]) -> None:
    setup, server = deployment
    assert setup.xkey is not None
    other = XKeyPair.generate()
    report = await run_doctor(setup, server, setup.keys(xkey=other))
    message = failing(report, "request.xkey")
    assert "cannot decrypt" in message
    assert f"the server encrypts for {setup.xkey.public_key}" in message
    assert f"our xkey is {other.public_key}" in message
    [configured] = report.findings_for("xkey")
    assert configured.status is Status.FAIL
    assert configured.details == {"expected": setup.xkey.public_key, "actual": other.public_key}
    assert f"xkey: {other.public_key}" in report.config_snippet
    # Undecryptable: the issuer is compared with the configuration only.
    assert "request.issuer" not in statuses(report)
    assert statuses(report)["issuer"] == ["OK"]
    assert other.seed not in report.to_json()


async def test_missing_xkey_fails(deployment: tuple[Setup, LocalNatsServer]) -> None:
    setup, server = deployment
    assert setup.xkey is not None
    report = await run_doctor(setup, server, setup.keys(xkey=None))
    message = failing(report, "request.xkey")
    assert "the server encrypts requests" in message
    assert "the service has no xkey" in message
    assert setup.xkey.public_key in message
    assert "CALLOUT_XKEY_SEED" in report.findings_for("request.xkey")[0].hint
    assert failing(report, "xkey").endswith("the service has no xkey")
    assert "xkey:" not in report.config_snippet
    assert report.exit_code == 1


async def test_xkey_on_the_service_only_fails() -> None:
    setup = Setup(server_xkey=None)
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys())
    message = failing(report, "request.xkey")
    assert "not encrypted" in message
    assert setup.xkey is not None
    assert setup.xkey.public_key in message
    assert "plaintext" in failing(report, "xkey")
    assert statuses(report)["request.issuer"] == ["OK"]  # plaintext: still verified


async def test_without_server_config_the_request_names_the_expected_issuer(
    deployment: tuple[Setup, LocalNatsServer],
) -> None:
    setup, server = deployment
    other = KeyPair.create_account()
    report = await run_doctor(setup, server, setup.keys(issuer=other), server_config=None)
    [finding] = report.findings_for("request.issuer")
    assert finding.status is Status.FAIL
    assert finding.details == {"expected": setup.issuer.public_key, "actual": other.public_key}
    assert "issuer" not in statuses(report)  # nothing to compare without the file
    assert statuses(report)["bypass"] == ["SKIP"]


async def test_without_probe_and_logins_the_request_is_skipped(
    deployment: tuple[Setup, LocalNatsServer],
) -> None:
    setup, server = deployment
    report = await run_doctor(setup, server, setup.keys(), probe=False, wait=0.3)
    [finding] = report.findings_for("request")
    assert finding.status is Status.SKIP
    assert "--probe" in finding.hint
    assert report.ok


async def test_no_keys_fail_but_show_what_the_server_expects(
    deployment: tuple[Setup, LocalNatsServer],
) -> None:
    setup, server = deployment
    report = await run_doctor(setup, server, None)
    [finding] = report.findings_for("issuer")
    assert finding.status is Status.FAIL
    assert setup.issuer.public_key in finding.message
    assert "CALLOUT_ISSUER_SEED" in finding.hint
    assert "no xkey" in failing(report, "request.xkey")  # and the request stays sealed
    assert report.config_snippet == ""


# -- the service's login and permissions ----------------------------------------------------------


async def test_service_without_subscribe_permission_fails() -> None:
    setup = Setup(
        service_permissions='{ publish: { allow: ["$SYS.REQ.USER.INFO", "$SYS._INBOX.>"] }, '
        'subscribe: { allow: ["_INBOX.>"] } }'
    )
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys())
    message = failing(report, "subscribe")
    assert AUTH in message
    assert "_INBOX.>" in message  # the allow list that does not cover it
    assert statuses(report)["reply"] == ["OK"]
    assert "request" not in statuses(report)  # the server refused the watch subscription
    assert report.exit_code == 1


async def test_service_that_cannot_reply_fails_unless_responses_are_allowed() -> None:
    cannot = Setup(
        service_permissions='{ publish: { allow: ["$SYS.REQ.USER.INFO"] }, '
        f'subscribe: {{ allow: ["{AUTH}", "_INBOX.>"] }} }}'
    )
    with nats_server(cannot) as server:
        report = await run_doctor(cannot, server, cannot.keys())
    message = failing(report, "reply")
    assert "$SYS._INBOX." in message
    assert "allow_responses" in report.findings_for("reply")[0].hint
    # The real reply subject of the watched request was checked.
    assert statuses(report)["request"] == ["OK"]

    can = Setup(
        service_permissions='{ publish: { allow: ["$SYS.REQ.USER.INFO"] }, '
        f'subscribe: {{ allow: ["{AUTH}", "_INBOX.>"] }}, allow_responses: true }}'
    )
    with nats_server(can) as server:
        report = await run_doctor(can, server, can.keys())
    assert report.ok, report.format()
    assert "allow_responses" in report.findings_for("reply")[0].message


async def test_queue_only_permission_is_ok_but_not_watched() -> None:
    setup = Setup(
        service_permissions="{ subscribe: { allow: "
        f'["{AUTH} faststream-callout", "_INBOX.>"] }} }}'
    )
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys())
        assert statuses(report)["subscribe"] == ["OK"]
        [finding] = report.findings_for("request")
        assert finding.status is Status.SKIP
        assert "faststream-callout" in finding.message
        # Another queue group is not allowed: the service would not get requests.
        report = await run_doctor(setup, server, setup.keys(), queue="workers")
    assert "queue workers" in failing(report, "subscribe")


async def test_service_in_another_account_fails() -> None:
    """The service logs in as an auth user of APP: requests go to AUTH, it never sees them."""
    setup = Setup(service_user="svc", service_account="APP", auth_users=("auth", "svc"))
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys(), wait=2.0)
    [account] = report.findings_for("account")
    assert account.status is Status.FAIL
    assert account.details == {"expected": "AUTH", "actual": "APP"}
    message = failing(report, "request")
    assert "no authorization request reached APP" in message
    # The matching configuration publishes the requests where the service is.
    assert 'account: "APP"' in report.config_snippet
    assert 'auth_users: [ "svc" ]' in report.config_snippet


async def test_refused_service_login_fails_connect() -> None:
    setup = Setup()
    with nats_server(setup) as server:
        wrong = Setup(issuer=setup.issuer, service_password="not-the-password")
        report = await diagnose(
            server.url, credentials=wrong.credentials, keys=setup.keys(), probe=True, wait=0.5
        )
        [finding] = report.findings_for("connect")
        assert finding.status is Status.FAIL
        assert "authorization violation" in finding.message.lower()
        assert "auth_users" in finding.hint
        assert "not-the-password" not in report.to_json()
    unreachable = await diagnose(
        f"nats://127.0.0.1:{free_port()}",
        credentials=setup.credentials,
        keys=setup.keys(),
        timeout=1,
    )
    assert "nats-server running" in unreachable.findings_for("connect")[0].hint


# -- users that skip the callout ------------------------------------------------------------


async def test_extra_auth_users_user_warns_naming_it() -> None:
    setup = Setup(auth_users=("auth", "dave"))
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys())
        # nats-server really lets dave in without asking (no service runs here).
        client = await nats.connect(
            server.url, user="dave", password="dave-pw", allow_reconnect=False, error_cb=quiet
        )
        await client.close()
    [finding] = report.findings_for("auth-users")
    assert finding.status is Status.WARN
    assert "'dave'" in finding.message
    assert "account APP" in finding.message
    assert finding.details == {"user": "dave", "account": "APP"}
    assert report.ok
    assert report.exit_code == 0
    assert "bypass" not in statuses(report)


async def test_no_auth_user_and_allowed_accounts_bypasses_warn() -> None:
    setup = Setup(allowed_accounts=("APP",), no_auth_user="bob")
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys())
        # Check against the server: a client without credentials is let in as bob.
        client = await nats.connect(server.url, allow_reconnect=False, error_cb=quiet)
        info = await client.request("$SYS.REQ.USER.INFO", b"", timeout=2)
        assert json.loads(info.data)["data"]["user"] == "bob"
        await client.close()
    [nobody] = report.findings_for("no-auth-user")
    assert nobody.status is Status.WARN
    assert "'bob' (account OTHER)" in nobody.message
    skipped = {
        f.details["account"]: f.details["users"] for f in report.findings_for("allowed-accounts")
    }
    assert skipped == {"OTHER": ["bob"], "SYS": ["admin"]}
    assert report.ok


async def test_service_missing_from_auth_users_cannot_log_in() -> None:
    # Without auth_users membership the service's own login goes to the callout.
    setup = Setup(auth_users=("dave",))
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys(), wait=1.0)
    assert failing(report, "connect")
    assert "'auth' is not in auth_callout.auth_users" in failing(report, "auth-users")
    assert statuses(report)["issuer"] == ["OK"]  # the file is still compared


async def test_accounts_named_otherwise_warn_until_protected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = Setup(service_account="CALLOUT", callout_account="CALLOUT", system_account="SYSTEM")
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys(), probe=False, wait=0.1)
        warned = {
            f.details["role"]: f.details["account"]
            for f in report.findings_for("protected")
            if f.status is Status.WARN
        }
        assert warned == {"system": "SYSTEM", "callout": "CALLOUT"}, report.format()
        # The configuration the library writes says what to protect.
        assert 'protected_accounts={"CALLOUT", "SYSTEM"}' in server.config_path.read_text()

        environ = doctor_env(setup, server)
        argv = ["--server-config", str(server.config_path), "--wait", "0.1", "--json"]
        protect = ["--protected-account", "CALLOUT", "--protected-account", "SYSTEM"]
        await run_main(monkeypatch, environ, *argv, *protect)
        findings = json.loads(capsys.readouterr().out)["findings"]
        assert [f["status"] for f in findings if f["check"] == "protected"] == ["OK"]


def test_operator_mode_warns_only_when_our_keys_can_sign_for_the_system_account() -> None:
    callout, system, app = (KeyPair.create_account() for _ in range(3))

    def protected(accounts: dict[str, KeyPair], protect: frozenset[str]) -> list[Finding]:
        keys = Keyring(SigningKeys.operator(callout, accounts=accounts))
        config = ServerConfig(path="nats.conf", operator=True, system_account=system.public_key)
        checkup = Checkup(
            Report("offline"), url="", credentials={}, keys=keys, protected_accounts=protect
        )
        checkup.config = config
        check_protected(checkup)
        return checkup.report.findings_for("protected")

    assert protected({app.public_key: app}, frozenset()) == []  # it cannot place anyone there
    [warning] = protected({system.public_key: system}, frozenset())
    assert warning.status is Status.WARN
    assert warning.details == {"role": "system", "account": system.public_key}
    [ok] = protected({system.public_key: system}, frozenset({system.public_key}))
    assert ok.status is Status.OK


async def test_unreadable_server_config_fails(tmp_path: Path) -> None:
    setup = Setup()
    broken = tmp_path / "nats.conf"
    broken.write_text(f'authorization {{\n  password: "{setup.service_password}"\n  users: [\n')
    with nats_server(setup) as server:
        report = await run_doctor(setup, server, setup.keys(), server_config=broken)
    message = failing(report, "server-config")
    assert "line" in message
    assert setup.service_password not in message
    assert statuses(report)["request.issuer"] == ["OK"]  # the rest still runs


# -- operator mode ---------------------------------------------------------------------------------


@contextmanager
def operator_deployment() -> Iterator[tuple[Deployment, LocalNatsServer, Path, Path]]:
    d = Deployment.generate(with_xkey=True)
    # A short callout timeout: the server waits it out for the unanswered probe at shutdown.
    config = dataclasses.replace(d.server_config(), extra="authorization { timeout: 0.5 }\n")
    with tempfile.TemporaryDirectory() as tmp, nats_server(config) as server:
        service_creds = write_secret(Path(tmp) / "svc.creds", d.service_creds())
        system_creds = write_secret(Path(tmp) / "sys.creds", d.system_creds())
        yield d, server, service_creds, system_creds


def operator_keys(d: Deployment, **changes: object) -> SigningKeys:
    options: dict[str, object] = {
        "accounts": {d.app.public_key: d.app, d.team.public_key: d.team_signer},
        "xkey": d.xkey,
    }
    options.update(changes)
    return SigningKeys.operator(d.callout, **options)  # type: ignore[arg-type]


async def test_operator_mode_correct_deployment_is_all_ok() -> None:
    with operator_deployment() as (d, server, service_creds, system_creds):
        report = await diagnose(
            server.url,
            credentials={"user_credentials": str(service_creds)},
            keys=operator_keys(d),
            system_credentials={"user_credentials": str(system_creds)},
            probe=True,
            wait=3,
        )
    assert {f.status for f in report.findings} == {Status.OK}, report.format()
    assert report.mode == "operator"
    assert {"account-jwt", "xkey", "signing-key", "request.issuer"} <= set(statuses(report))
    assert d.callout.seed not in report.to_json()


async def test_operator_mode_mismatches_fail() -> None:
    with operator_deployment() as (d, server, service_creds, _):
        other = XKeyPair.generate()
        stranger = KeyPair.create_account()
        # The account JWT comes from the configuration's resolver_preload here.
        report = await diagnose(
            server.url,
            credentials={"user_credentials": str(service_creds)},
            keys=operator_keys(d, xkey=other, accounts={d.outside.public_key: d.outside}),
            server_config=server.config_path,
            probe=True,
            wait=3,
        )
        assert d.xkey is not None
        [xkey] = report.findings_for("xkey")
        assert xkey.details == {"expected": d.xkey.public_key, "actual": other.public_key}
        assert "cannot decrypt" in failing(report, "request.xkey")
        [outside] = report.findings_for("allowed-accounts")
        assert outside.status is Status.WARN
        assert outside.details == {"account": d.outside.public_key}
        snippet = json.loads(report.config_snippet.split("\n", 1)[1])
        assert snippet["authorization"]["xkey"] == other.public_key
        assert snippet["authorization"]["auth_users"] == [d.service_user.public_key]

        signer = await diagnose(
            server.url,
            credentials={"user_credentials": str(service_creds)},
            keys=SigningKeys.operator(d.callout.public_key, signing_key=stranger, xkey=d.xkey),
            server_config=server.config_path,
            probe=False,
            wait=0.2,
        )
        [finding] = signer.findings_for("signing-key")
        assert finding.status is Status.FAIL
        assert finding.details == {"expected": d.callout.public_key, "actual": stranger.public_key}


# -- the command ---------------------------------------------------------------------------------


def doctor_env(setup: Setup, server: LocalNatsServer, **changes: str | None) -> dict[str, str]:
    environ = {
        "NATS_URL": server.url,
        "CALLOUT_USER": setup.service_user,
        "CALLOUT_PASSWORD": setup.service_password,
        "CALLOUT_ISSUER_SEED": setup.issuer.seed,
        "CALLOUT_XKEY_SEED": setup.xkey.seed if setup.xkey else "",
    }
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


async def run_main(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], *argv: str) -> int:
    for name in (
        "NATS_URL",
        "CALLOUT_USER",
        "CALLOUT_PASSWORD",
        "CALLOUT_ISSUER_SEED",
        "CALLOUT_XKEY_SEED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return await asyncio.to_thread(main, ["doctor", *argv])


async def test_cli_exit_codes_and_json(
    deployment: tuple[Setup, LocalNatsServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup, server = deployment
    config = str(server.config_path)
    environ = doctor_env(setup, server)
    assert await run_main(monkeypatch, environ, "--server-config", config, "--probe", "--json") == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["ok"] is True
    assert data["url"] == server.url
    assert {f["status"] for f in data["findings"]} == {"OK"}
    assert data["counts"]["OK"] == len(data["findings"])
    assert_no_secrets(out + err, setup.secrets)

    wrong = KeyPair.create_account()
    environ = doctor_env(setup, server, CALLOUT_ISSUER_SEED=wrong.seed)
    assert await run_main(monkeypatch, environ, "--server-config", config, "--probe") == 1
    out, err = capsys.readouterr()
    assert "FAIL  issuer" in out
    assert f"the server expects issuer {setup.issuer.public_key}" in out
    assert f"the service signs with {wrong.public_key}" in out
    assert "fix: " in out
    assert "A server configuration matching the service's keys" in out
    assert_no_secrets(out + err, [*setup.secrets, wrong.seed])

    # A seed that cannot be loaded: reported as a failed check, never echoed.
    bogus = "SA" + "Z" * 56
    environ = doctor_env(setup, server, CALLOUT_ISSUER_SEED=bogus)
    assert await run_main(monkeypatch, environ, "--json", "--wait", "0.2") == 1
    out, err = capsys.readouterr()
    keys = [f for f in json.loads(out)["findings"] if f["check"] == "keys"]
    assert keys[0]["status"] == "FAIL"
    assert "CALLOUT_ISSUER_SEED" in keys[0]["message"]
    assert bogus not in out + err

    # No service login at all: a usage error.
    environ = doctor_env(setup, server, CALLOUT_USER=None)
    assert await run_main(monkeypatch, environ) == 2
    assert "CALLOUT_USER" in capsys.readouterr().err


async def test_cli_in_operator_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with operator_deployment() as (d, server, service_creds, system_creds):
        assert d.xkey is not None
        environ = {"CALLOUT_ISSUER_SEED": d.callout.seed, "CALLOUT_XKEY_SEED": d.xkey.seed}
        argv = [server.url, "--creds", str(service_creds), "--system-creds", str(system_creds)]
        argv += ["--callout-account", d.callout.public_key, "--probe", "--json"]
        assert await run_main(monkeypatch, environ, *argv) == 0
        out, err = capsys.readouterr()
        data = json.loads(out)
        assert data["mode"] == "operator"
        assert {f["status"] for f in data["findings"]} == {"OK"}, out
        assert_no_secrets(out + err, [d.callout.seed, d.xkey.seed, d.service_user.seed])

        # A key that is neither the callout account nor one of its signing keys.
        environ["CALLOUT_ISSUER_SEED"] = KeyPair.create_account().seed
        assert await run_main(monkeypatch, environ, *argv) == 1
        findings = json.loads(capsys.readouterr().out)["findings"]
        assert [f["status"] for f in findings if f["check"] == "signing-key"] == ["FAIL"]


def test_cli_entry_point_runs_the_doctor() -> None:
    setup = Setup(auth_users=("auth", "dave"))
    with nats_server(setup) as server:
        environ = {**os.environ, **doctor_env(setup, server)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "faststream_callout",
                "doctor",
                "--probe",
                "--wait",
                "2",
                "--server-config",
                str(server.config_path),
            ],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN  auth-users" in result.stdout
    assert "result: " in result.stdout
    assert_no_secrets(result.stdout + result.stderr, setup.secrets)


# -- reading nats-server configuration ------------------------------------------------------------


def test_config_reader_follows_nats_server_syntax(tmp_path: Path) -> None:
    (tmp_path / "users.conf").write_text(
        "SVC_PASS = 'from-include'\nAPP_USERS = [ {user: a, password: b} ]\n"
    )
    text = textwrap.dedent("""
    # a comment
    // another
    include users.conf
    Listen 127.0.0.1:4222; port = 4222
    accounts {
      AUTH { users: [ { user: auth, password: $SVC_PASS } ] }   # same line comment
      APP: { users: $APP_USERS }
      "QUOTED KEY": {}
    }
    AUTHORIZATION = {
      timeout: 2.5
      auth_callout {
        issuer: "A\\x41B"
        auth_users: [
          auth
          'other'  // comment in an array
        ]
        xkey = $XKEY_FROM_ENV
      }
    }
    flags: [on, off, yes, no, true]
    size: 1KB
    block: (
    line one
    )
    """)
    data = parse(text, base_dir=tmp_path, environ={"XKEY_FROM_ENV": "XENV"})
    assert option(data, "listen") == "127.0.0.1:4222"
    assert data["port"] == 4222
    assert option(option(option(data, "accounts"), "AUTH"), "users") == [
        {"user": "auth", "password": "from-include"}
    ]
    assert option(option(data, "accounts"), "APP") == {"users": [{"user": "a", "password": "b"}]}
    assert "QUOTED KEY" in data["accounts"]  # type: ignore[operator]
    callout = option(option(data, "authorization"), "auth_callout")
    assert callout == {"issuer": "AAB", "auth_users": ["auth", "other"], "xkey": "XENV"}
    assert option(option(data, "authorization"), "timeout") == 2.5
    assert data["flags"] == [True, False, True, False, True]
    assert data["size"] == 1024
    assert str(data["block"]).strip() == "line one"


def test_config_reader_errors_name_the_line_not_the_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text('a: 1\nb: "s3cret-value\n')
    with pytest.raises(NatsConfigError, match=r"bad.conf line \d") as info:
        load(path)
    assert "s3cret" not in str(info.value)
    with pytest.raises(NatsConfigError, match=r"\$MISSING_VAR"):
        parse("a: $MISSING_VAR", environ={})
    with pytest.raises(NatsConfigError, match="cannot read"):
        load(tmp_path / "missing.conf")


def test_config_reader_reads_what_local_server_writes() -> None:
    setup = Setup(allowed_accounts=("APP",), no_auth_user="dave")
    data = parse(setup.render())
    callout = option(option(data, "authorization"), "auth_callout")
    assert option(callout, "issuer") == setup.issuer.public_key
    assert option(callout, "allowed_accounts") == ["APP"]
    assert option(data, "no_auth_user") == "dave"


# -- permissions, as nats-server evaluates them ----------------------------------------------


def test_permission_rules_match_nats_server() -> None:
    assert may_subscribe({}, AUTH, "q") == (True, "")
    wildcard = {"subscribe": {"allow": ["$SYS.REQ.USER.*"]}}
    assert may_subscribe(wildcard, AUTH, "q")[0]
    assert not may_subscribe({"subscribe": {"allow": ["$SYS.REQ.>"], "deny": [AUTH]}}, AUTH, "q")[0]
    queued = {"subscribe": {"allow": [f"{AUTH} q"]}}
    assert may_subscribe(queued, AUTH, "q")[0]
    assert not may_subscribe(queued, AUTH, "")[0]  # plain subscriptions: not covered
    assert not may_subscribe(queued, AUTH, "other")[0]
    assert not may_subscribe({"subscribe": {"deny": [f"{AUTH} q"]}}, AUTH, "q")[0]
    assert may_subscribe({"subscribe": {"deny": [f"{AUTH} q"]}}, AUTH, "other")[0]
    assert may_publish({"publish": {"allow": ["$SYS._INBOX.>"]}}, "$SYS._INBOX.a.b")[0]
    assert not may_publish({"publish": {"allow": ["_INBOX.>"]}}, "$SYS._INBOX.a.b")[0]
    assert not may_publish({"publish": {"deny": [">"]}}, "$SYS._INBOX.a.b")[0]


async def test_queue_rules_agree_with_the_server() -> None:
    """The queue-permission rules above, checked against nats-server itself."""
    setup = Setup(service_permissions=f'{{ subscribe: {{ allow: ["{AUTH} q1"] }} }}')
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc))

    with nats_server(setup) as server:
        client = await nats.connect(
            server.url, **setup.credentials, allow_reconnect=False, error_cb=record
        )
        try:
            for queue in ("q1", "", "q2"):
                errors.clear()
                await client.subscribe(AUTH, queue=queue)
                await settle(client)
                refused = any("permissions violation" in e.lower() for e in errors)
                permissions = {"subscribe": {"allow": [f"{AUTH} q1"]}}
                assert may_subscribe(permissions, AUTH, queue)[0] is not refused, queue
        finally:
            await client.close()
