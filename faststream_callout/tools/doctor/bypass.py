"""Users that log in without the callout: ``auth_users``, ``no_auth_user``, ``allowed_accounts``."""

from __future__ import annotations

from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.report import Status
from faststream_callout.tools.doctor.server_config import GLOBAL_ACCOUNT, ServerConfig

__all__ = ["check_bypass"]


def check_bypass(checkup: Checkup) -> None:
    """Report every configured user that skips the callout, besides the service itself."""
    config = checkup.config
    if config is None or config.operator or not config.callout:
        if checkup.mode == "config" and config is None:
            checkup.report.add(
                "bypass",
                Status.SKIP,
                "users that skip the callout were not checked",
                "give the server configuration (--server-config FILE); nats-server does "
                "not expose auth_callout to clients",
            )
        return
    me = checkup.service_user
    found = _auth_users(checkup, config, me)
    found = _no_auth_user(checkup, config) or found
    found = _outside_allowed_accounts(checkup, config, me) or found
    if not found:
        checkup.report.add(
            "bypass",
            Status.OK,
            f"only the service ('{me}') skips the callout" if me else "no user skips it",
        )


def _auth_users(checkup: Checkup, config: ServerConfig, me: str) -> bool:
    report = checkup.report
    found = False
    for user in config.auth_users:
        account = config.account_of(user)
        if user == me:
            continue
        found = True
        if account is None:
            report.add(
                "auth-users",
                Status.WARN,
                f"auth_users lists '{user}', which no account of the configuration has",
                f"remove '{user}' from auth_users",
                user=user,
            )
            continue
        elsewhere = (
            f"; as a service it would get no requests (they go to account {config.account})"
            if account != config.account
            else ""
        )
        report.add(
            "auth-users",
            Status.WARN,
            f"auth_users also lists '{user}' (account {account}): it logs in without the "
            f"callout{elsewhere}",
            "keep auth_users to the service's own user(s); other logins then go through "
            "the callout",
            user=user,
            account=account,
        )
    if me and me not in config.auth_users:
        found = True
        checkup.mismatch = True
        report.add(
            "auth-users",
            Status.FAIL,
            f"the service user '{me}' is not in auth_callout.auth_users",
            f"add '{me}' to auth_users: otherwise its own login goes to the callout",
        )
    return found


def _no_auth_user(checkup: Checkup, config: ServerConfig) -> bool:
    nobody = config.no_auth_user
    if not nobody:
        return False
    excluded = set(config.allowed_accounts)
    account = config.account_of(nobody) or "?"
    skips = nobody in config.auth_users or (
        bool(excluded) and account not in excluded and account != GLOBAL_ACCOUNT
    )
    if skips:
        checkup.report.add(
            "no-auth-user",
            Status.WARN,
            f"clients without credentials log in as '{nobody}' (account {account}) "
            "without the callout",
            "remove no_auth_user, or let the callout decide about it",
            user=nobody,
        )
    return skips


def _outside_allowed_accounts(checkup: Checkup, config: ServerConfig, me: str) -> bool:
    excluded = set(config.allowed_accounts)
    if not excluded:
        return False
    skipping: dict[str, list[str]] = {}
    for user, account in config.users.items():
        if account not in excluded and account != GLOBAL_ACCOUNT and user != me:
            skipping.setdefault(account, []).append(user)
    for account, users in sorted(skipping.items()):
        checkup.report.add(
            "allowed-accounts",
            Status.WARN,
            f"users of account {account} ({', '.join(sorted(users))}) log in without "
            "the callout: allowed_accounts does not list it",
            "intended for system/monitoring users; list the account in "
            "allowed_accounts to send them to the callout",
            account=account,
            users=sorted(users),
        )
    return bool(skipping)
