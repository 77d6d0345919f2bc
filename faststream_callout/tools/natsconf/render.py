"""Write nats-server configurations for auth callout: the one renderer of the project.

``faststream-callout config`` prints what these return, ``faststream-callout dev``
and the testing package's local servers run nats-server on it, doctor shows it as
the fix for a mismatch, and the benchmarks use it. One set of defaults
(:data:`CALLOUT_ACCOUNT`, :data:`AUTH_USER`, :data:`SYSTEM_ACCOUNT`,
:data:`TARGET_ACCOUNT`, :data:`AUTH_TIMEOUT`) serves all of them.

Config mode is a configuration file with an ``accounts`` block and
``authorization.auth_callout``; operator mode switches the callout on in the
callout account's JWT (:func:`operator_authorization`), and
:func:`render_operator_mode` writes a server configuration that trusts an
operator and preloads account JWTs. The result holds passwords: keep it private.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from faststream_callout.core import env
from faststream_callout.core.pipeline import (
    DEFAULT_PROTECTED_ACCOUNTS,
    GENERATED_CALLOUT_ACCOUNT,
    GENERATED_SYSTEM_ACCOUNT,
)

__all__ = [
    "AUTH_TIMEOUT",
    "AUTH_USER",
    "CALLOUT_ACCOUNT",
    "SYSTEM_ACCOUNT",
    "SYSTEM_USER",
    "TARGET_ACCOUNT",
    "WebSocketListener",
    "new_password",
    "operator_authorization",
    "quote",
    "render_config_mode",
    "render_operator_mode",
]

CALLOUT_ACCOUNT: Final = GENERATED_CALLOUT_ACCOUNT
"""The account the service logs into (``auth_callout.account``); protected by default."""
AUTH_USER: Final = "auth"
"""The service's user name, listed in ``auth_users``."""
SYSTEM_ACCOUNT: Final = GENERATED_SYSTEM_ACCOUNT
"""The system account's name; protected by default."""
SYSTEM_USER: Final = "admin"
"""The system account's user, when given a password; it skips the callout too."""
TARGET_ACCOUNT: Final = "APP"
"""The account clients are placed into when no account is named."""
AUTH_TIMEOUT: Final = 2.0
"""``authorization.timeout``: seconds nats-server waits for the callout's answer."""
_GENERATOR: Final = "faststream-callout"


def new_password() -> str:
    """A fresh random password (32 URL-safe characters) for a generated configuration."""
    return secrets.token_urlsafe(24)


def quote(value: str) -> str:
    """``value`` as a double-quoted string of the nats-server configuration format."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, kw_only=True)
class WebSocketListener:
    """A ``websocket`` block: browsers connect here, their cookies carry the credentials.

    nats-server copies a cookie's value into the client's CONNECT options when
    the client sent none there itself (``jwt_cookie`` -> ``jwt``,
    ``user_cookie`` -> ``user``, ``pass_cookie`` -> ``pass``, ``token_cookie``
    -> ``auth_token``), so the callout sees them as connect options. A
    ``jwt_cookie`` needs operator mode (nats-server refuses it otherwise).
    Plain text (``no_tls``), for local use: put TLS in front, or configure it.

    Attributes:
        port: the websocket port.
        host: the address to listen on.
        jwt_cookie, user_cookie, pass_cookie, token_cookie: cookie names.
        allowed_origins: the web origins allowed to connect (``https://app.example``):
            a browser sends its cookies to the server from any page, so without
            it any site the user visits can log in as them.

    """

    port: int
    host: str = "127.0.0.1"
    jwt_cookie: str = ""
    user_cookie: str = ""
    pass_cookie: str = ""
    token_cookie: str = ""
    allowed_origins: Sequence[str] = ()

    def render(self) -> str:
        """The block's configuration text."""
        lines = ["websocket {", f"  listen: {quote(f'{self.host}:{self.port}')}", "  no_tls: true"]
        for option in ("jwt_cookie", "user_cookie", "pass_cookie", "token_cookie"):
            name = getattr(self, option)
            if name:
                lines.append(f"  {option}: {quote(name)}")
        if self.allowed_origins:
            lines.append(f"  allowed_origins: [ {', '.join(map(quote, self.allowed_origins))} ]")
        return "\n".join([*lines, "}", ""])


def render_config_mode(
    *,
    issuer: str,
    accounts: Iterable[str] | Mapping[str, Mapping[str, str]] = (TARGET_ACCOUNT,),
    callout_account: str = CALLOUT_ACCOUNT,
    auth_user: str = AUTH_USER,
    auth_password: str,
    xkey: str | None = None,
    system_account: str = SYSTEM_ACCOUNT,
    system_password: str | None = None,
    timeout: float = AUTH_TIMEOUT,
    jetstream: bool = False,
    listen: str | None = None,
    server_name: str | None = None,
    extra: str = "",
    auth_users: Sequence[str] | None = None,
    allowed_accounts: Sequence[str] = (),
    auth_user_account: str | None = None,
    auth_user_permissions: str = "",
    websocket: WebSocketListener | None = None,
) -> str:
    """A config-mode nats-server configuration with auth callout.

    Args:
        issuer: the public account key that signs the service's responses.
        accounts: the target accounts clients may be placed into, as names or
            as name -> {user: password} of statically configured users (who,
            not being in ``auth_users``, still go through the callout).
        callout_account: the account the service logs into.
        auth_user: the service's user (in ``auth_users``: it skips the callout).
        auth_password: the service's password.
        xkey: the service's public xkey: requests are then encrypted.
        system_account: the system account's name.
        system_password: with it, the system account gets the user
            :data:`SYSTEM_USER`, also in ``auth_users``: monitoring, kicks and
            claim updates then do not depend on the callout service. Without it
            a comment marks where such a user goes.
        timeout: ``authorization.timeout``, seconds.
        jetstream: enable JetStream in the target accounts and the callout
            account, where the shared stores keep their buckets (the server
            needs it enabled too: a ``jetstream`` block, or ``-js``).
        listen: ``host:port`` for a ``listen`` line; none by default (add yours).
        server_name: for a ``server_name`` line.
        extra: raw configuration lines appended at the top level.
        auth_users: ``auth_callout.auth_users``; by default the service's user
            (and the system user). Doctor's tests name others to provoke mistakes.
        allowed_accounts: ``auth_callout.allowed_accounts`` (nats-server 2.11+):
            only users of these accounts (and unknown users) go through the callout.
        auth_user_account: the account the service's user is defined in; the
            callout account by default (anything else is a misconfiguration).
        auth_user_permissions: a permissions block for the service's user, as
            configuration text (``{ subscribe: { allow: [...] } }``).
        websocket: a websocket listener; its clients go through the callout too.

    """
    if isinstance(accounts, Mapping):
        users = {name: dict(static) for name, static in accounts.items()}
    else:
        users = {name: {} for name in accounts}
    users.setdefault(callout_account, {})
    users.setdefault(auth_user_account or callout_account, {})[auth_user] = auth_password
    callout_users = users.pop(callout_account)
    system_users = users.pop(system_account, {})
    default_auth_users = [auth_user]
    if system_password is not None:
        system_users[SYSTEM_USER] = system_password
        default_auth_users.append(SYSTEM_USER)
    auth_users = list(default_auth_users if auth_users is None else auth_users)
    permissions = {auth_user: auth_user_permissions} if auth_user_permissions else {}
    service = f"{quote(auth_user)} (account {callout_account})"
    xkey_hint = f" {env.CALLOUT_XKEY_SEED}=<seed of {xkey}>" if xkey else ""
    lines = [
        f"# nats-server configuration: auth callout in config mode (generated by {_GENERATOR}).",
        f"# Every client login is decided by the callout service, which logs in as {service}",
        "# and signs with the issuer key. Run it with:",
        (
            f"#   {env.NATS_URL}=nats://<this server>:4222 {env.CALLOUT_USER}={auth_user}"
            f" {env.CALLOUT_PASSWORD}=<its password below>"
        ),
        f"#   {env.CALLOUT_ISSUER_SEED}=<seed of {issuer}>{xkey_hint}",
        "# Keep this file private: it holds the service's password.",
        _protection_note(system_account, callout_account),
    ]
    lines += _server_lines(listen, server_name)
    lines += [
        "accounts {",
        _account(callout_account, callout_users, permissions, jetstream=jetstream),
        *(
            _account(name, static, permissions, jetstream=jetstream)
            for name, static in users.items()
        ),
        _account(system_account, system_users, permissions)
        + ("" if system_users else "   # add an admin user here for monitoring"),
        "}",
        f"system_account: {quote(system_account)}",
        "authorization {",
        f"  timeout: {timeout:g}",
        "  auth_callout {",
        f"    issuer: {issuer}",
        f"    account: {quote(callout_account)}",
        f"    auth_users: [ {', '.join(map(quote, auth_users))} ]",
    ]
    if xkey:
        lines.append(f"    xkey: {xkey}")
    if allowed_accounts:
        lines.append(f"    allowed_accounts: [ {', '.join(map(quote, allowed_accounts))} ]")
    lines += ["  }", "}"]
    if websocket is not None:
        lines.append(websocket.render().rstrip("\n"))
    return "\n".join([*lines, ""]) + extra


def render_operator_mode(
    *,
    operator_jwt: str,
    system_account: str,
    account_jwts: Mapping[str, str],
    default_sentinel: str | None = None,
    listen: str | None = None,
    server_name: str | None = None,
    extra: str = "",
) -> str:
    """An operator-mode nats-server configuration with a memory resolver.

    Args:
        operator_jwt: the trusted operator's JWT.
        system_account: the system account's public key.
        account_jwts: account public key -> account JWT, preloaded into the
            resolver; the callout account's JWT turns the callout on (see
            :func:`operator_authorization`).
        default_sentinel: a bearer user JWT for clients that present none
            (nats-server 2.11.2+), so user/password and token clients reach the callout.
        listen: ``host:port`` for a ``listen`` line.
        server_name: for a ``server_name`` line.
        extra: raw configuration lines appended at the top level.

    """
    lines = [
        f"# nats-server configuration: operator mode (generated by {_GENERATOR}).",
        *_server_lines(listen, server_name),
        f"operator: {operator_jwt}",
        f"system_account: {system_account}",
        "resolver: MEM",
        "resolver_preload: {",
        *(f"  {account}: {token}" for account, token in account_jwts.items()),
        "}",
    ]
    if default_sentinel:
        lines.append(f"default_sentinel: {default_sentinel}")
    return "\n".join([*lines, ""]) + extra


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


def _protection_note(system_account: str, callout_account: str) -> str:
    """The comment that names the accounts the service must never place clients in."""
    names = sorted({system_account, callout_account})
    unprotected = [name for name in names if name not in DEFAULT_PROTECTED_ACCOUNTS]
    if not unprotected:
        return (
            f"# The service's default CalloutSettings refuse to place clients in "
            f"{' or '.join(names)} (protected_accounts)."
        )
    protected = ", ".join(map(quote, names))
    return (
        f"# Protect {' and '.join(names)} in the service, or a policy bug could place clients "
        f"there: CalloutSettings(protected_accounts={{{protected}}})"
    )


def _server_lines(listen: str | None, server_name: str | None) -> list[str]:
    lines = [f"listen: {listen}"] if listen else []
    return lines + ([f"server_name: {quote(server_name)}"] if server_name else [])


def _account(
    name: str,
    users: Mapping[str, str],
    permissions: Mapping[str, str] | None = None,
    *,
    jetstream: bool = False,
) -> str:
    fields = ["jetstream: enabled"] if jetstream else []
    permissions = permissions or {}
    if users:
        entries = ", ".join(
            f"{{ user: {quote(user)}, password: {quote(password)}"
            + (f", permissions: {permissions[user]} }}" if user in permissions else " }")
            for user, password in users.items()
        )
        fields.append(f"users: [ {entries} ]")
    return f"  {quote(name)}: {{ {', '.join(fields)} }}" if fields else f"  {quote(name)}: {{}}"
