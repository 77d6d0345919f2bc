"""The service's keys against the server's side: the configuration file or the account JWT.

A server configured with any key the service holds passes, as the pipeline
would answer it: during a rotation (``next_xkey``, combined issuers) the server
may already use the next one. On a mismatch, :func:`matching_config` renders a
server configuration that would fit the keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Sequence
from typing import Any, Final

from faststream_callout.core.keyring import Keyring
from faststream_callout.core.signing import ANY_ACCOUNT, CalloutMode
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.report import Status
from faststream_callout.tools.doctor.server_config import strings
from faststream_callout.tools.natsconf import operator_authorization, render_config_mode
from faststream_callout.tools.natsconf.render import CALLOUT_ACCOUNT, SYSTEM_ACCOUNT

__all__ = [
    "check_account_jwt",
    "check_config_keys",
    "compare_xkey",
    "configured_xkey",
    "key_problem",
    "matching_config",
]

_PASSWORD_PLACEHOLDER: Final = "<the service's password>"  # noqa: S105 - shown instead of it


def key_problem(checkup: Checkup, check: str, expected: str) -> bool:
    """Report a missing issuer key; True when there is none."""
    if checkup.keys is not None:
        return False
    checkup.report.add(
        check,
        Status.FAIL,
        f"no issuer key to compare: the server expects {expected}",
        f"set CALLOUT_ISSUER_SEED to the seed of {expected}",
        expected=expected,
    )
    return True


def _issuers(keys: Keyring) -> str:
    return ", ".join(keys.callout_accounts)


def compare_xkey(checkup: Checkup, check: str, configured: str, where: str) -> None:
    """Compare the server's xkey with ours (any of them: current or next)."""
    keys, primary = checkup.keys, checkup.primary
    report = checkup.report
    ours = primary.xkey.public_key if primary and primary.xkey else ""
    accepted = {x.public_key for x in keys.xkeys} if keys else set()
    if configured == ours or configured in accepted:
        text = f"requests are encrypted for our xkey {configured}" if configured else ""
        report.add(check, Status.OK, (text or "no xkey, both sides") + f" ({where})")
        return
    checkup.mismatch = True
    if not ours:
        message = (
            f"the server encrypts requests for {configured} ({where}), the service has no xkey"
        )
        hint = f"set CALLOUT_XKEY_SEED to the seed of {configured}"
    elif not configured:
        message = (
            f"the service has xkey {ours} but the server sends plaintext requests ({where}); "
            "the service rejects them"
        )
        hint = f"add xkey {ours} to the server ({where}), or unset CALLOUT_XKEY_SEED"
    else:
        message = f"the server encrypts for {configured} ({where}), our xkey is {ours}"
        hint = f"set the server's xkey to {ours}, or CALLOUT_XKEY_SEED to the seed of {configured}"
    report.add(check, Status.FAIL, message, hint, expected=configured, actual=ours)


def check_config_keys(checkup: Checkup) -> None:
    """Config mode: ``auth_callout.issuer`` and ``xkey`` against the service's keys."""
    config = checkup.config
    if config is None or config.operator or not config.callout:
        return
    if not key_problem(checkup, "issuer", config.issuer):
        keys = checkup.keys
        assert keys is not None  # noqa: S101 - narrowed by key_problem
        if keys.select(config.issuer) is not None:
            checkup.report.add(
                "issuer", Status.OK, f"auth_callout.issuer is our issuer {config.issuer}"
            )
        else:
            checkup.mismatch = True
            ours = _issuers(keys)
            checkup.report.add(
                "issuer",
                Status.FAIL,
                f"the server expects issuer {config.issuer} (auth_callout.issuer), "
                f"the service signs with {ours}",
                f"set auth_callout.issuer: {keys.callout_accounts[0]}, or CALLOUT_ISSUER_SEED to "
                f"the seed of {config.issuer}",
                expected=config.issuer,
                actual=ours,
            )
    if checkup.keys is not None:
        compare_xkey(checkup, "xkey", config.xkey, "auth_callout.xkey")


def configured_xkey(checkup: Checkup) -> str:
    """The xkey the server is configured with, from the file or the account JWT."""
    if checkup.config is not None and not checkup.config.operator:
        return checkup.config.xkey
    auth = (checkup.account_claims or {}).get("authorization")
    return str(auth.get("xkey", "")) if isinstance(auth, dict) else ""


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT the server already trusts (read, not verified)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


async def check_account_jwt(checkup: Checkup) -> None:
    """Operator mode: the callout account JWT's auth users, xkey, signing keys, accounts."""
    if checkup.mode != "operator" or checkup.info is None:
        return
    report = checkup.report
    account = checkup.service_account
    token = await _fetch_account_jwt(checkup, account)
    if token is None and checkup.config is not None:
        token = checkup.config.preload.get(account)
    if token is None:
        report.add(
            "account-jwt",
            Status.SKIP,
            f"the callout account JWT ({account}) was not checked",
            "give system account credentials (--system-creds) or the server "
            "configuration with resolver_preload",
        )
        return
    claims = _jwt_claims(token)
    nats_claims = claims.get("nats") if isinstance(claims.get("nats"), dict) else {}
    assert isinstance(nats_claims, dict)  # noqa: S101 - for mypy
    checkup.account_claims = nats_claims
    auth = nats_claims.get("authorization") or {}
    auth_users = strings(auth.get("auth_users") if isinstance(auth, dict) else None)
    if not auth_users:
        checkup.mismatch = True
        report.add(
            "account-jwt",
            Status.FAIL,
            f"the callout account JWT of {account} has no authorization.auth_users: "
            "auth callout is off",
            "set it with nsc edit authcallout (faststream-callout config --mode operator)",
        )
        return
    report.add("account-jwt", Status.OK, f"the callout account JWT of {account} is read")
    me = checkup.service_user
    for user in auth_users:
        if user != me:
            report.add(
                "auth-users",
                Status.WARN,
                f"auth_users also lists {user} (not this service): it logs in without the callout",
                "keep auth_users to the service's own users",
                user=user,
            )
    if me not in auth_users:
        checkup.mismatch = True
        report.add(
            "auth-users",
            Status.FAIL,
            f"the service user {me} is not in the account JWT's auth_users",
            "add the service user's public key to auth_users",
        )
    if checkup.keys is None:
        return
    selected = checkup.keys.select(account)  # several callout accounts: this one's
    keys = selected.signing if selected is not None else checkup.keys.current[0]
    xkey = str(auth.get("xkey", "")) if isinstance(auth, dict) else ""
    compare_xkey(checkup, "xkey", xkey, "the account JWT's authorization.xkey")
    signer = keys.response_signer.key.public_key
    signing_keys = set()
    for entry in nats_claims.get("signing_keys") or []:
        key = entry.get("key") if isinstance(entry, dict) else entry
        if isinstance(key, str):
            signing_keys.add(key)
    if signer == account or signer in signing_keys:
        report.add("signing-key", Status.OK, f"responses are signed by {signer}")
    else:
        checkup.mismatch = True
        report.add(
            "signing-key",
            Status.FAIL,
            f"responses are signed by {signer}, neither the callout account {account} "
            "nor one of its signing keys",
            f"add {signer} to the account's signing keys, or sign with the account key",
            expected=account,
            actual=signer,
        )
    allowed = strings(auth.get("allowed_accounts") if isinstance(auth, dict) else None)
    if ANY_ACCOUNT not in allowed:
        for target in sorted(keys.target_accounts - {account}):
            if target not in allowed:
                report.add(
                    "allowed-accounts",
                    Status.WARN,
                    f"the service has a key for {target}, which allowed_accounts does not "
                    "list: users placed there are refused",
                    f"add {target} to the account JWT's allowed_accounts",
                    account=target,
                )


async def _fetch_account_jwt(checkup: Checkup, account: str) -> str | None:
    if not checkup.system_credentials:
        return None
    import nats  # noqa: PLC0415
    from nats.errors import Error as NatsError  # noqa: PLC0415

    async def quiet(_: Exception) -> None:
        pass

    client = None
    try:
        client = await asyncio.wait_for(
            nats.connect(
                checkup.url,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                connect_timeout=checkup.timeout,
                error_cb=quiet,
                **checkup.system_credentials,
            ),
            timeout=checkup.timeout + 1,
        )
        reply = await client.request(f"$SYS.REQ.ACCOUNT.{account}.INFO", b"", timeout=2)
        data = json.loads(reply.data).get("data") or {}
        token = data.get("jwt") if isinstance(data, dict) else None
    except (TimeoutError, NatsError, OSError, ValueError, AttributeError) as exc:
        checkup.report.add(
            "account-jwt",
            Status.WARN,
            f"cannot fetch the callout account JWT with the system credentials: "
            f"{str(exc) or type(exc).__name__}",
            "give credentials of a system account user",
        )
        return None
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
    return token if isinstance(token, str) and token else None


def matching_config(checkup: Checkup) -> None:
    """After a mismatch: the server configuration (or account JWT section) our keys fit."""
    keys = checkup.primary
    if not checkup.mismatch or keys is None:
        return
    xkey = keys.xkey.public_key if keys.xkey else None
    if checkup.mode == "operator":
        claims = checkup.account_claims or {}
        auth = claims.get("authorization") or {}
        allowed = strings(auth.get("allowed_accounts") if isinstance(auth, dict) else None)
        if not allowed and keys.mode is CalloutMode.OPERATOR:
            allowed = sorted(keys.allowed_accounts)
        section = operator_authorization(
            auth_users=[checkup.service_user] if checkup.service_user else [],
            allowed_accounts=allowed,
            xkey=xkey,
        )
        account = checkup.service_account or keys.callout_account
        checkup.report.config_snippet = (
            f'# the callout account JWT ({account}), inside its "nats" claims:\n'
            + json.dumps(section, indent=2)
            + "\n"
        )
        return
    config = checkup.config
    callout_account = checkup.service_account or (config.account if config else CALLOUT_ACCOUNT)
    system = config.system_account if config else SYSTEM_ACCOUNT
    targets: Sequence[str] = [
        a for a in (config.accounts if config else []) if a not in {callout_account, system}
    ] or ["APP"]
    checkup.report.config_snippet = render_config_mode(
        issuer=keys.callout_account,
        accounts=targets,
        callout_account=callout_account,
        auth_user=checkup.service_user or "auth",
        auth_password=_PASSWORD_PLACEHOLDER,
        xkey=xkey,
        system_account=system,
        timeout=(config.timeout if config and config.timeout else 2.0),
    )
