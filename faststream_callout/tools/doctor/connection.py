"""The service's login: whether it connects, the account it lands in, what it may do."""

from __future__ import annotations

import asyncio
import json
from typing import Final

from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.permissions import may_publish, may_subscribe
from faststream_callout.tools.doctor.report import Status

__all__ = ["USER_INFO_SUBJECT", "check_account", "check_permissions", "connect", "user_info"]

USER_INFO_SUBJECT: Final = "$SYS.REQ.USER.INFO"
# nats-server replies come from "$SYS._INBOX.<hash>.<id>" (server/events.go inboxRespSubj).
_REPLY_SAMPLE: Final = "$SYS._INBOX.doctor.check"


async def connect(checkup: Checkup) -> bool:
    """Log in with the service's credentials; whether that worked."""
    import nats  # noqa: PLC0415 - keep importing the module light
    from nats.errors import Error as NatsError  # noqa: PLC0415

    credentials = checkup.credentials
    who = f"'{credentials['user']}'" if credentials.get("user") else "the service"
    try:
        checkup.client = await asyncio.wait_for(
            nats.connect(
                checkup.url,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # 0 would retry an unreachable server forever
                reconnect_time_wait=0.1,
                connect_timeout=checkup.timeout,
                error_cb=checkup.on_error,
                **credentials,
            ),
            timeout=checkup.timeout + 1,
        )
    except (TimeoutError, NatsError, OSError) as exc:
        text = str(exc).strip() or type(exc).__name__
        refused = "authorization violation" in text.lower()
        hint = (
            "the service's login must be a user of the callout account listed in "
            "auth_users (config mode) or the callout account JWT's auth_users (operator "
            "mode); otherwise its own login is sent to the callout"
            if refused
            else "is the URL right and nats-server running and reachable from here?"
        )
        checkup.report.add(
            "connect", Status.FAIL, f"cannot log in as {who}: {text}", hint, refused=refused
        )
        return False
    checkup.report.add("connect", Status.OK, f"logged in as {who}")
    return True


async def user_info(checkup: Checkup) -> None:
    """Ask the server who the service is (``$SYS.REQ.USER.INFO``): account and permissions."""
    from nats.errors import Error as NatsError  # noqa: PLC0415

    seen = len(checkup.violations)
    try:
        reply = await checkup.client.request(USER_INFO_SUBJECT, b"", timeout=1.0)
        payload = json.loads(reply.data)
    except (TimeoutError, NatsError, ValueError) as exc:
        denied = len(checkup.violations) > seen
        reason = "publishing it is not allowed" if denied else (str(exc) or "no answer")
        checkup.report.add(
            "account",
            Status.WARN,
            f"cannot ask {USER_INFO_SUBJECT} ({reason}): the service's account and "
            "permissions are not checked",
            f"allow publish on {USER_INFO_SUBJECT} for the service user to check them",
        )
        return
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, dict):
        checkup.info = data
        server = payload.get("server") or {}
        if isinstance(server, dict) and server.get("ver"):
            checkup.report.server = f"nats-server {server.get('name', '')} {server['ver']}".strip()


def check_account(checkup: Checkup) -> None:
    """Check the service is in the account the requests go to, and holds that account's keys."""
    if checkup.info is None:
        return
    report = checkup.report
    account = checkup.service_account
    name = str(checkup.info.get("account_name") or account)
    shown = account if name == account else f"{name} ({account})"
    config = checkup.config
    config_mode = checkup.mode == "config" and config is not None and config.callout
    if config_mode and config is not None and config.account != account:
        checkup.mismatch = True
        report.add(
            "account",
            Status.FAIL,
            f"the service logs into account {account}, but the server publishes "
            f"requests in account {config.account} (auth_callout.account)",
            f"log in as an auth_users user of {config.account}, or set "
            f"auth_callout.account: {account}",
            expected=config.account,
            actual=account,
        )
        return
    keys = checkup.keys
    if checkup.mode == "operator" and keys is not None and keys.select(account) is None:
        checkup.mismatch = True
        ours = ", ".join(keys.callout_accounts)
        report.add(
            "account",
            Status.FAIL,
            f"the service logs into account {shown}, but its keys sign for callout account {ours}",
            "use the callout account's key as the issuer, or give its public key "
            "(--callout-account) when the issuer is one of its signing keys",
            expected=account,
            actual=ours,
        )
        return
    report.add("account", Status.OK, f"the service logs into account {shown}")


def check_permissions(checkup: Checkup) -> None:
    """Check the service may subscribe to the requests and publish the replies."""
    if checkup.info is None:
        return
    report = checkup.report
    permissions = checkup.info.get("permissions") or {}
    user = checkup.service_user or "the service"
    queue = checkup.queue
    allowed, why = may_subscribe(permissions, AUTH_CALLOUT_SUBJECT, queue)
    if allowed:
        report.add("subscribe", Status.OK, f"'{user}' may subscribe to {AUTH_CALLOUT_SUBJECT}")
    else:
        report.add(
            "subscribe",
            Status.FAIL,
            f"'{user}' may not subscribe to {AUTH_CALLOUT_SUBJECT} (queue {queue}): {why}",
            f"allow subscribe on {AUTH_CALLOUT_SUBJECT} for the service user",
        )
    reply = checkup.observed_reply or _REPLY_SAMPLE
    allowed, why = may_publish(permissions, reply)
    responses = permissions.get("responses")
    if isinstance(responses, dict) and not (permissions.get("publish") or {}).get("allow"):
        allowed = False  # allow_responses alone: replies only (nats-server's auth.go)
    if allowed:
        report.add("reply", Status.OK, f"'{user}' may publish the replies ({reply})")
    elif isinstance(responses, dict):
        report.add(
            "reply",
            Status.OK,
            f"'{user}' may answer requests (allow_responses, max {responses.get('max', 1)})",
        )
    else:
        report.add(
            "reply",
            Status.FAIL,
            f"'{user}' may not publish the replies to {reply}: {why}",
            "allow publish on $SYS._INBOX.> for the service user, or set allow_responses: true",
        )
