"""``faststream-callout check URL``: log in and show what the callout decided."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from faststream_callout.tools.cli.common import CliError, out
from faststream_callout.tools.cli.logins import format_login, try_login

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Connect with the given credentials and show the decision: the account and "
        "permissions of an allowed login (if the user may ask $SYS.REQ.USER.INFO), or the "
        "refusal. Exit status 0 when allowed, 1 when refused or unreachable."
    )
    parser.add_argument("url", help="the server, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--user")
    parser.add_argument("--password", help="prompted for when --user is given without it")
    parser.add_argument("--token")
    parser.add_argument("--creds", metavar="FILE", help="a .creds file (user JWT + seed)")
    parser.add_argument("--nkey", metavar="FILE", help="a file holding a user nkey seed (SU...)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def run(args: argparse.Namespace) -> int:
    """Log in once; print the outcome."""
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
    out(f"{args.url}: {lines[0]}")
    for line in lines[1:]:
        out(line)
    return 0 if result.allowed else 1
