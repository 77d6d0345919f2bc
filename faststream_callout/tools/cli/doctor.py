"""``faststream-callout doctor [URL]``: check that the deployment is wired up right.

Runs :func:`faststream_callout.tools.doctor.diagnose`; this module (and doctor) is
imported only for this command.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from faststream_callout.core import env
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import DEFAULT_PROTECTED_ACCOUNTS
from faststream_callout.core.signing import SigningKeys
from faststream_callout.protocol.nkeys import KeyKind
from faststream_callout.tools import doctor
from faststream_callout.tools.cli.common import CliError, out, public_key

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Log in with the service's credentials (CALLOUT_USER/CALLOUT_PASSWORD or "
        "--creds) and check its account and permissions, its keys (CALLOUT_ISSUER_SEED, "
        "CALLOUT_XKEY_SEED) against the server configuration and against one real "
        "authorization request (watched, never answered), and the users that skip the "
        "callout. Exit status 1 when a check fails. Seeds and passwords are never printed."
    )
    parser.add_argument("url", nargs="?", help=f"the server (default: ${env.NATS_URL})")
    parser.add_argument(
        "--creds", metavar="FILE", help="the service's .creds file instead of CALLOUT_USER"
    )
    parser.add_argument(
        "--server-config",
        metavar="FILE",
        help="the nats-server configuration file, to compare auth_callout (config mode) or "
        "resolver_preload (operator mode) and list the users that skip the callout",
    )
    parser.add_argument(
        "--system-creds",
        metavar="FILE",
        help="operator mode: a system account user's .creds, to read the callout account JWT",
    )
    parser.add_argument(
        "--callout-account",
        metavar="A...",
        help="operator mode: the callout account's public key, when CALLOUT_ISSUER_SEED is "
        "one of its signing keys",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="trigger a request with one login as a random user (refused; the service "
        "counts one failed login)",
    )
    parser.add_argument(
        "--wait", type=float, default=3.0, help="seconds to wait for a request (default 3)"
    )
    parser.add_argument("--queue", default="faststream-callout", help="the service's queue group")
    parser.add_argument(
        "--protected-account",
        action="append",
        metavar="NAME",
        help="an account of the service's CalloutSettings.protected_accounts (repeatable; "
        f"default: {', '.join(sorted(DEFAULT_PROTECTED_ACCOUNTS))}), compared with the "
        "server's system and callout accounts",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="connect timeout (s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Diagnose the deployment at the URL; print the report."""
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
        keys = env.keyring_from_env()  # with the next issuer and xkey of a rotation
        if args.callout_account:
            account = public_key(args.callout_account, KeyKind.ACCOUNT, "--callout-account")
            keys = _as_signing_keys_of(account, keys)
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
            protected_accounts=args.protected_account or DEFAULT_PROTECTED_ACCOUNTS,
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
    out(report.to_json() if args.json else report.format(), end="" if not args.json else "\n")
    return report.exit_code


def _as_signing_keys_of(account: str, keyring: Keyring) -> Keyring:
    """Operator mode: the issuer seeds are signing keys of ``account``; the next ones rotate."""
    current = keyring.current[0]
    # keyring_from_env puts a next issuer beside the first, and a next xkey in next_keys.
    following = keyring.current[1] if len(keyring.current) > 1 else current
    next_xkey = keyring.next_keys[0].xkey if keyring.next_keys else current.xkey
    first = SigningKeys.operator(
        account, signing_key=current.response_signer.key, xkey=current.xkey
    )
    if following is current and not keyring.next_keys:
        return Keyring(first)
    rotated = SigningKeys.operator(
        account, signing_key=following.response_signer.key, xkey=next_xkey
    )
    return Keyring(first, next_keys=[rotated])
