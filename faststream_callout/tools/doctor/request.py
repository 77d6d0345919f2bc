"""One real authorization request, opened and verified as the service's pipeline does.

A plain subscription next to the service's queue group receives a copy of every
request without taking any away (the doctor never replies). The request is then
judged by the pipeline's own stage functions
(:mod:`faststream_callout.core.stages`): opened with every xkey the service
holds, its signature and claims checked, its callout account looked up among
the service's keys. The pipeline stops at the first problem; the doctor reports
each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from typing import Any, Final

from faststream_callout.core import stages
from faststream_callout.core.pipeline import CalloutSettings
from faststream_callout.core.signing import RequestKeys
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol.claims import AuthorizationRequestClaims
from faststream_callout.protocol.xkeys import XKeyPair
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.keys import configured_xkey, key_problem
from faststream_callout.tools.doctor.permissions import may_subscribe
from faststream_callout.tools.doctor.report import Status

__all__ = ["analyze", "watch"]

_CLOCK_SKEW_WARNING: Final = 2.0  # seconds: the pipeline checks exp without leeway
# The service's settings are not known here: judged as a service with the defaults would.
_SETTINGS: Final = CalloutSettings()
_MAX_REQUEST_SIZE: Final = _SETTINGS.max_request_size


async def watch(checkup: Checkup) -> tuple[bytes, str | None, float] | None:
    """Wait for one authorization request; the service keeps getting all of them."""
    received: asyncio.Future[tuple[bytes, str | None, str, float]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_request(msg: Any) -> None:  # noqa: ANN401 - a nats-py Msg
        if not received.done():
            header = (msg.headers or {}).get(XKEY_HEADER)
            received.set_result((bytes(msg.data), header, msg.reply or "", time.time()))

    seen = len(checkup.violations)
    subscription = await checkup.client.subscribe(AUTH_CALLOUT_SUBJECT, cb=on_request)
    await checkup.settle()
    if len(checkup.violations) > seen:
        _cannot_watch(checkup)
        return None
    probe = asyncio.ensure_future(_probe_login(checkup)) if checkup.probe else None
    login: tuple[bool, str] | None = None
    try:
        waiters: set[asyncio.Future[Any]] = {received}
        if probe is not None:
            waiters.add(probe)
        done, _ = await asyncio.wait(
            waiters, timeout=checkup.wait, return_when=asyncio.FIRST_COMPLETED
        )
        if probe is not None and probe in done and not received.done():
            # The login ended first: a request it caused is already on its way.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(received), 0.25)
        if probe is not None and probe.done():
            login = probe.result()
    finally:
        if probe is not None and not probe.done():
            probe.cancel()  # the request is what counts, not the login's outcome
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    if not received.done():
        _report_missing_request(checkup, login)
        return None
    body, header, reply, arrived = received.result()
    checkup.observed_reply = reply
    return body, header, arrived


async def _probe_login(checkup: Checkup) -> tuple[bool, str]:
    """Log in once as a random user: (let in, why not). Closed also when cancelled."""
    from nats.aio.client import Client  # noqa: PLC0415
    from nats.errors import Error as NatsError  # noqa: PLC0415

    async def quiet(_: Exception) -> None:
        pass

    client = Client()
    try:
        await client.connect(
            checkup.url,
            user=f"doctor-probe-{secrets.token_hex(4)}",
            password=secrets.token_urlsafe(16),
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=max(1, math.ceil(checkup.wait)),  # nats-py wants an int
            error_cb=quiet,
        )
    except (TimeoutError, NatsError, OSError) as exc:
        return False, str(exc).strip() or type(exc).__name__
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return True, ""


def _cannot_watch(checkup: Checkup) -> None:
    permissions = (checkup.info or {}).get("permissions") or {}
    queue_ok = (
        checkup.info is not None
        and may_subscribe(permissions, AUTH_CALLOUT_SUBJECT, checkup.queue)[0]
    )
    if queue_ok:
        checkup.report.add(
            "request",
            Status.SKIP,
            f"requests were not watched: the service may only subscribe with queue "
            f"{checkup.queue}, and joining it would take requests away from the service",
            f"allow a plain subscription on {AUTH_CALLOUT_SUBJECT} to let the doctor watch",
        )
    elif checkup.info is None:
        checkup.report.add(
            "subscribe",
            Status.FAIL,
            f"the server refused the subscription to {AUTH_CALLOUT_SUBJECT}",
            f"allow subscribe on {AUTH_CALLOUT_SUBJECT} for the service user",
        )


def _report_missing_request(checkup: Checkup, login: tuple[bool, str] | None) -> None:
    report = checkup.report
    where = checkup.service_account or "the service's account"
    if login is None:
        report.add(
            "request",
            Status.FAIL if checkup.probe else Status.SKIP,
            f"no authorization request in {where} within {checkup.wait:g}s"
            + ("" if checkup.probe else " (no client logged in)"),
            "is auth callout configured for this account?"
            if checkup.probe
            else "run with --probe to trigger one",
        )
        return
    allowed, error = login
    if allowed:
        report.add(
            "request",
            Status.FAIL,
            "a login with a random user name and password was let in without an "
            f"authorization request in {where}",
            "the server does not delegate logins to the callout here: check "
            "authorization.auth_callout (or the account JWT) and the accounts",
        )
        return
    hint = (
        "operator mode: clients without a user JWT need default_sentinel (2.11.2+)"
        if checkup.mode == "operator"
        else f"the server publishes requests in auth_callout.account; log the service "
        f"into that account ({where} now)"
    )
    report.add(
        "request",
        Status.FAIL,
        f"a probe login was refused ({error}) but no authorization request reached "
        f"{where}: the server does not call out to this account",
        hint,
    )


# -- judging the request: the pipeline's stages -----------------------------------------------


def analyze(checkup: Checkup, body: bytes, header: str | None, arrived: float) -> None:
    """Judge one observed request the way the service's pipeline does, reporting every problem."""
    encrypted = header is not None
    checkup.report.add(
        "request",
        Status.OK,
        "received an authorization request" + (" (encrypted)" if encrypted else " (not encrypted)"),
    )
    opened = _open(checkup, body, header)
    if opened is None:
        return
    token, xkey = opened
    try:
        claims = stages.decode_request(token)
    except stages.Rejected as exc:
        checkup.report.add(
            "request.verify",
            Status.FAIL,
            f"the request does not verify: {exc.reason}",
            "is something other than nats-server publishing on $SYS.REQ.USER.AUTH?",
        )
        return
    _verify_claims(checkup, claims, arrived)
    keys = _callout_account(checkup, claims)
    if keys is not None:
        exchange = stages.Exchange(claims, claims.nats, keys.signing, keys.xkeys, header, xkey)
        _verify_seal(checkup, exchange)


def _open(
    checkup: Checkup, body: bytes, header: str | None
) -> tuple[bytes, XKeyPair | None] | None:
    """The request token and the xkey that opened it, as the pipeline opens it; None: reported."""
    keys = checkup.keys
    xkeys = keys.xkeys if keys is not None else ()
    configured = configured_xkey(checkup)
    target = configured or "an xkey that is not ours"
    report = checkup.report
    if header is not None and not xkeys:
        checkup.mismatch = True
        report.add(
            "request.xkey",
            Status.FAIL,
            f"the server encrypts requests (server xkey {header}) for {target}, but the "
            "service has no xkey",
            "set CALLOUT_XKEY_SEED to the seed of "
            + (configured or "the xkey the server is configured with"),
            expected=configured,
            actual="",
        )
        return None
    try:
        token, xkey = stages.open_request(body, header, xkeys, max_size=_MAX_REQUEST_SIZE)
    except stages.Rejected as exc:
        if len(body) > _MAX_REQUEST_SIZE:
            report.add("request.verify", Status.FAIL, f"the {exc.reason}")
            return None
        checkup.mismatch = True
        ours = " or ".join(x.public_key for x in xkeys)
        report.add(
            "request.xkey",
            Status.FAIL,
            f"cannot decrypt the request: the server encrypts for {target}, our xkey is {ours}",
            f"set the server's xkey to {xkeys[0].public_key}, or CALLOUT_XKEY_SEED to the "
            "seed of the server's xkey",
            expected=configured,
            actual=xkeys[0].public_key,
        )
        return None
    return token, xkey


def _verify_claims(checkup: Checkup, claims: AuthorizationRequestClaims, arrived: float) -> None:
    """The request's claims checks, all of them, at the time it arrived."""
    request = claims.nats
    server = stages.printable(request.server_id.name or request.server_id.id)
    skew = arrived - claims.iat if claims.iat else 0.0
    problems = [
        f"{problem.reason} (this machine's clock is {skew:+.0f}s off the server's)"
        if problem.check == "times"
        else problem.reason
        for problem in stages.claims_problems(claims, arrived, _SETTINGS)
    ]
    if problems:
        checkup.report.add(
            "request.verify",
            Status.FAIL,
            f"the request from {server} fails verification: {'; '.join(problems)}",
            "compare the server and this machine (clock, which server publishes)",
        )
        return
    if abs(skew) > _CLOCK_SKEW_WARNING:
        checkup.report.add(
            "request.verify",
            Status.WARN,
            f"this machine's clock is {skew:+.0f}s off the server's: requests may expire "
            "before they are answered",
            "synchronise the clocks (NTP)",
        )
        return
    checkup.report.add(
        "request.verify",
        Status.OK,
        f"signed by server {server} ({request.server_id.version or '?'}), audience and "
        "expiry check out",
    )


def _callout_account(checkup: Checkup, claims: AuthorizationRequestClaims) -> RequestKeys | None:
    """The keys the pipeline answers the request with; reported. None without keys."""
    operator = checkup.mode == "operator"
    what = "callout account" if operator else "issuer"
    if key_problem(checkup, "request.issuer", claims.sub):
        return None
    keys = checkup.keys
    assert keys is not None  # noqa: S101 - narrowed by key_problem
    try:
        selected = stages.select_keys(keys, claims)
    except stages.Rejected:
        checkup.mismatch = True
        source = "the account JWT's subject" if operator else "auth_callout.issuer"
        ours = ", ".join(keys.callout_accounts)
        checkup.report.add(
            "request.issuer",
            Status.FAIL,
            f"the server expects {what} {claims.sub} ({source}), the service signs with {ours}",
            f"set CALLOUT_ISSUER_SEED to the seed of {claims.sub}, or configure the server "
            f"with {keys.callout_accounts[0]}",
            expected=claims.sub,
            actual=ours,
        )
        # The encryption is still checked, against all our xkeys.
        return RequestKeys(keys.current[0], keys.xkeys)
    checkup.report.add("request.issuer", Status.OK, f"the request is for our {what} {claims.sub}")
    return selected


def _verify_seal(checkup: Checkup, exchange: stages.Exchange) -> None:
    """The encryption checks against the keys of the request's callout account."""
    report = checkup.report
    problems = stages.seal_problems(exchange)
    for problem in problems:
        checkup.mismatch = True
        xkeys = exchange.accepted_xkeys
        if problem.check == "encrypted":
            ours = xkeys[0].public_key
            report.add(
                "request.xkey",
                Status.FAIL,
                f"the request is not encrypted, but the service has xkey {ours}: "
                "it rejects plaintext requests",
                f"add xkey {ours} to the server's auth_callout (or the account JWT), or unset "
                "CALLOUT_XKEY_SEED",
                expected="",
                actual=ours,
            )
        else:
            report.add(
                "request.xkey",
                Status.FAIL,
                f"the {problem.reason}",
                "compare the server's xkey with the service's keys for that account",
            )
    if not problems and exchange.xkey is not None:
        report.add(
            "request.xkey",
            Status.OK,
            f"the request is encrypted for our xkey {exchange.xkey.public_key}",
        )
