"""``faststream-callout config``: the nats-server side of auth callout, for given public keys."""

from __future__ import annotations

import argparse
import json

from faststream_callout.protocol.nkeys import KeyKind
from faststream_callout.tools.cli.common import CliError, out, public_key
from faststream_callout.tools.natsconf.render import (
    AUTH_TIMEOUT,
    AUTH_USER,
    CALLOUT_ACCOUNT,
    TARGET_ACCOUNT,
    new_password,
    operator_authorization,
    render_config_mode,
)

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Print the nats-server auth callout configuration. Config mode: an "
        "accounts block and authorization.auth_callout. Operator mode: the callout account "
        "JWT's authorization section and the nsc command that sets it."
    )
    parser.add_argument(
        "--issuer", required=True, metavar="A...", help="issuer / callout account public key"
    )
    parser.add_argument("--xkey", metavar="X...", help="the service's public xkey")
    parser.add_argument("--mode", choices=("config", "operator"), default="config")
    parser.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help=f"a target account (repeatable). Config mode: a name (default {TARGET_ACCOUNT}); "
        "operator mode: a public key A... or '*' (default: none, the callout account only)",
    )
    parser.add_argument(
        "--auth-user",
        metavar="USER",
        help=f"the service's login: config mode a user name (default {AUTH_USER}); operator "
        "mode the public key U... of its user",
    )
    parser.add_argument(
        "--auth-password",
        metavar="PASSWORD",
        help="config mode: the service's password (default: a fresh random one)",
    )
    parser.add_argument(
        "--callout-account",
        default=CALLOUT_ACCOUNT,
        metavar="NAME",
        help=f"config mode: the account the service logs into (default {CALLOUT_ACCOUNT}); "
        "operator mode: its nsc name",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=AUTH_TIMEOUT,
        help=f"authorization timeout in seconds (default {AUTH_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="operator mode: print only the JSON section"
    )


def run(args: argparse.Namespace) -> int:
    """Print the configuration (config mode) or the account JWT section (operator mode)."""
    issuer = public_key(args.issuer, KeyKind.ACCOUNT, "--issuer")
    xkey = public_key(args.xkey, KeyKind.CURVE, "--xkey") if args.xkey else None
    if args.mode == "config":
        if args.json:
            raise CliError("--json is for --mode operator")
        text = render_config_mode(
            issuer=issuer,
            accounts=args.account or [TARGET_ACCOUNT],
            callout_account=args.callout_account,
            auth_user=args.auth_user or AUTH_USER,
            auth_password=args.auth_password or new_password(),
            xkey=xkey,
            timeout=args.timeout,
        )
        out(text, end="")
        return 0
    if not args.auth_user:
        raise CliError("operator mode needs --auth-user U... (the service user's public key)")
    auth_user = public_key(args.auth_user, KeyKind.USER, "--auth-user")
    allowed = [
        account if account == "*" else public_key(account, KeyKind.ACCOUNT, "--account")
        for account in args.account or []
    ]
    section = operator_authorization(auth_users=[auth_user], allowed_accounts=allowed, xkey=xkey)
    if args.json:
        out(json.dumps(section, indent=2))
        return 0
    nsc = f"nsc edit authcallout --account {args.callout_account} --auth-user {auth_user}"
    nsc += "".join(f" --allowed-account {account}" for account in allowed)
    if xkey:
        nsc += f" --curve {xkey}"
    out(f"# Operator mode: auth callout is switched on in the callout account's JWT ({issuer}).")
    out('# Its "authorization" section, inside the JWT\'s "nats" claims:')
    out(json.dumps(section, indent=2))
    if not allowed:
        out("# No --account: users can only be placed into the callout account itself.")
    out("# Set it with nsc:")
    out(nsc)
    out(f"nsc push --account {args.callout_account}   # with the nats account resolver")
    out("# Password and token clients present no JWT: give the server a sentinel (2.11.2+):")
    out('#   default_sentinel: <bearer user JWT of the callout account, pub/sub deny ">">')
    return 0
