"""Log in and read the server's view of the client: shared by ``check`` and ``dev``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from faststream_callout.core.stages import printable

__all__ = ["USER_INFO_SUBJECT", "LoginResult", "format_login", "try_login"]

USER_INFO_SUBJECT: Final = "$SYS.REQ.USER.INFO"


@dataclass
class LoginResult:
    """What happened when a client logged in."""

    allowed: bool
    error: str = ""
    refused: bool = False  # the server answered: not allowed (vs. unreachable, TLS, ...)
    info: dict[str, Any] | None = None
    info_problem: str = ""


async def try_login(
    url: str,
    credentials: Mapping[str, str],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - nats-py's connect timeout
    info_timeout: float = 1.0,
) -> LoginResult:
    """Connect with ``credentials`` and ask the server who we are (``$SYS.REQ.USER.INFO``)."""
    import nats  # noqa: PLC0415 - only the login commands need the client
    from nats.errors import Error as NatsError  # noqa: PLC0415

    violations: asyncio.Queue[str] = asyncio.Queue()
    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        # Permission violations arrive here; a refused login raises from connect.
        if "permissions violation" in str(exc).lower():
            violations.put_nowait(str(exc))
        else:
            errors.append(exc)

    try:
        client = await asyncio.wait_for(
            nats.connect(
                url,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # 0 would mean: retry an unreachable server forever
                reconnect_time_wait=0.1,
                connect_timeout=timeout,
                error_cb=on_error,
                **credentials,
            ),
            timeout=timeout + 1,
        )
    except (TimeoutError, NatsError, OSError) as exc:
        if errors and not isinstance(exc, NatsError | OSError):
            exc = errors[-1]  # the timeout hides why
        cause = errors[-1] if errors and "no servers" in _describe(exc).lower() else exc
        text = _describe(cause)
        refused = "authorization violation" in text.lower() or "authentication" in text.lower()
        return LoginResult(allowed=False, error=text, refused=refused)
    try:
        asking = client.request(USER_INFO_SUBJECT, b"", timeout=info_timeout)
        request = asyncio.ensure_future(asking)
        violation = asyncio.ensure_future(violations.get())
        done, _ = await asyncio.wait([request, violation], return_when=asyncio.FIRST_COMPLETED)
        request.cancel()
        violation.cancel()
        if violation in done:
            return LoginResult(
                allowed=True,
                info_problem=f"this user may not ask {USER_INFO_SUBJECT} ({violation.result()})",
            )
        try:
            reply = request.result()
        except (TimeoutError, NatsError) as exc:
            return LoginResult(allowed=True, info_problem=f"{USER_INFO_SUBJECT}: {_describe(exc)}")
        try:
            payload = json.loads(reply.data)
        except ValueError:
            return LoginResult(allowed=True, info_problem="unreadable user info reply")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            problem = payload.get("error") if isinstance(payload, dict) else None
            return LoginResult(allowed=True, info_problem=f"no user info ({problem})")
        return LoginResult(allowed=True, info=data)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text


def format_login(result: LoginResult, *, indent: str = "  ") -> list[str]:
    """Readable lines for a login's outcome: the account and permissions, or the refusal."""
    if not result.allowed:
        return [f"denied: {result.error}" if result.refused else f"no login: {result.error}"]
    lines = ["allowed"]
    info = result.info
    if info is None:
        lines.append(f"{indent}permissions unknown: {result.info_problem}")
        lines.append(
            f"{indent}(grant publish on {USER_INFO_SUBJECT} and subscribe on _INBOX.> to see them)"
        )
        return lines
    # The user name may be the client's own CONNECT user: one line, escaped.
    lines.append(f"{indent}{'user':<12} {printable(str(info.get('user', '?')))}")
    lines.append(f"{indent}{'account':<12} {printable(str(info.get('account', '?')))}")
    permissions = info.get("permissions") or {}
    for label, key in (("publish", "publish"), ("subscribe", "subscribe")):
        section = permissions.get(key) or {}
        # Sorted: the server lists them in no fixed order.
        allow, deny = (
            sorted(map(str, section.get("allow") or [])),
            sorted(map(str, section.get("deny") or [])),
        )
        if not allow and not deny:
            lines.append(f"{indent}{label:<12} (account defaults)")
            continue
        if allow:
            lines.append(f"{indent}{label:<12} allow {', '.join(map(str, allow))}")
        if deny:
            lines.append(f"{indent}{'' if allow else label:<12} deny  {', '.join(map(str, deny))}")
    responses = permissions.get("responses")
    if isinstance(responses, dict):
        ttl = responses.get("ttl") or 0
        ttl_text = f", ttl {ttl / 1e9:g}s" if ttl else ""
        lines.append(f"{indent}{'responses':<12} max {responses.get('max', 1)}{ttl_text}")
    expires = info.get("expires")
    if isinstance(expires, int | float) and expires > 0:
        seconds = expires / 1e9  # a Go duration, in nanoseconds
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + seconds))
        lines.append(f"{indent}{'expires':<12} in {_duration(seconds)} (about {at})")
    else:
        lines.append(f"{indent}{'expires':<12} never")
    return lines


def _duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
