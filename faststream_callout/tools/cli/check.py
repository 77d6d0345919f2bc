"""``faststream-callout check URL``: log in and show what the callout decided."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from faststream_callout.core.stages import printable
from faststream_callout.tools.cli.common import CliError, out
from faststream_callout.tools.cli.logins import format_login, try_login

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Connect with the given credentials and show the decision: the account and "
        "permissions of an allowed login (if the user may ask $SYS.REQ.USER.INFO), or the "
        "refusal. Exit status 0 when allowed, 1 when refused or unreachable. A password or "
        "token given as an argument shows in the process list: take it from an environment "
        "variable (--password-env, --token-env) or a prompt (--password-prompt, --token-prompt; "
        "on a terminal --user alone asks for the password). Secrets are never printed."
    )
    parser.add_argument("url", help="the server, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--user")
    password = parser.add_mutually_exclusive_group()
    password.add_argument(
        "--password", help="visible in the process list; prompted for when --user comes alone"
    )
    password.add_argument(
        "--password-env", metavar="VAR", help="read the password from environment variable VAR"
    )
    password.add_argument(
        "--password-prompt",
        action="store_true",
        help="ask for the password (not echoed); the default for --user alone on a terminal",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="visible in the process list; see --token-env")
    token.add_argument(
        "--token-env", metavar="VAR", help="read the token from environment variable VAR"
    )
    token.add_argument("--token-prompt", action="store_true", help="ask for the token (not echoed)")
    parser.add_argument("--creds", metavar="FILE", help="a .creds file (user JWT + seed)")
    parser.add_argument("--nkey", metavar="FILE", help="a file holding a user nkey seed (SU...)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def run(args: argparse.Namespace) -> int:
    """Log in once; print the outcome."""
    credentials: dict[str, str] = {}
    password = args.password
    if args.password_env:
        password = _from_env(args.password_env, "--password-env")
    if not args.user and (password is not None or args.password_prompt):
        raise CliError("a password needs --user")
    if args.user:
        credentials["user"] = args.user
        if args.password_prompt or (password is None and sys.stdin.isatty()):
            password = getpass.getpass(f"password for {printable(args.user)}: ")
        credentials["password"] = password or ""
    token = args.token
    if args.token_env:
        token = _from_env(args.token_env, "--token-env")
    elif args.token_prompt:
        token = getpass.getpass("token: ")
    if token:
        credentials["token"] = token
    if args.creds:
        credentials["user_credentials"] = args.creds
    if args.nkey:
        credentials["nkeys_seed"] = args.nkey
    result = asyncio.run(try_login(args.url, credentials, timeout=args.timeout))
    lines = format_login(result)
    out(f"{args.url}: {lines[0]}")
    for line in lines[1:]:
        out(line)
    return 0 if result.allowed else 1


def _from_env(name: str, option: str) -> str:
    """The secret in environment variable ``name``; the error names the variable only."""
    value = os.environ.get(name, "")
    if not value:
        raise CliError(f"{option}: environment variable {name} is not set or empty")
    return value
