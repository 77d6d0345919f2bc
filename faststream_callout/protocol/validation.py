"""Checks on user claims.

What nats-io/jwt ``UserClaims.Validate`` checks, and (``strict``) mistakes
nats-server lets through but that are almost surely bugs.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from functools import lru_cache
from typing import Final

from faststream_callout.protocol.claims import Permission, User
from faststream_callout.protocol.nkeys import KeyKind, is_public_key

__all__ = ["CONNECTION_TYPES", "subject_issue", "user_issues"]

CONNECTION_TYPES: Final = frozenset(
    {"STANDARD", "WEBSOCKET", "LEAFNODE", "LEAFNODE_WS", "MQTT", "MQTT_WS", "IN_PROCESS"}
)
# Go's "15:04:05" layout: the hour may have one digit, minutes and seconds two.
_CLOCK: Final = re.compile(r"([01]?\d|2[0-3]):[0-5]\d:[0-5]\d")


def subject_issue(subject: str, *, queue_allowed: bool = False, strict: bool = True) -> str | None:
    """Why ``subject`` is not a valid permission subject, or ``None``.

    nats-io/jwt rejects empty subjects, spaces (except one ``"subject queue"``
    separator in subscribe permissions), a leading or trailing ``.`` and ``..``.
    ``strict`` also rejects wildcards inside a token (``foo*``, ``a>``) and
    ``>`` before the last token: NATS reads those as literals, never as intended.
    """
    return _subject_issue(subject, queue_allowed, strict)


# Grants repeat the same subjects login after login. Positional arguments: an
# lru_cache key with keywords costs more to build than most checks below.
@lru_cache(maxsize=8192)
def _subject_issue(subject: str, queue_allowed: bool, strict: bool) -> str | None:  # noqa: FBT001
    if not subject:
        return "subject cannot be empty"
    name = subject
    if " " in subject:
        name, _, queue = subject.partition(" ")
        if not queue_allowed:
            return f"subject {subject!r} cannot have spaces"
        if not name or not queue or " " in queue:
            return f"queue permission {subject!r} must be 'subject queue'"
        # nats-io/jwt checks the queue name like a subject too.
        if queue[0] == "." or queue[-1] == "." or ".." in queue:
            return f"queue {queue!r} in {subject!r} is not a valid name"
    if name[0] == "." or name[-1] == ".":
        return f"subject {name!r} cannot start or end with a '.'"
    if ".." in name:
        return f"subject {name!r} cannot contain consecutive '.'"
    if strict:
        tokens = name.split(".")
        for index, part in enumerate(tokens):
            if part in ("*", ">"):
                if part == ">" and index != len(tokens) - 1:
                    return f"subject {name!r}: '>' must be the last token"
            elif "*" in part or ">" in part:
                return f"subject {name!r}: wildcards must be whole tokens"
            elif not part.isprintable():
                return f"subject {name!r} contains control characters"
    return None


def _permission_issues(
    issues: list[str], direction: str, permission: Permission, *, strict: bool
) -> None:
    queue_allowed = direction == "sub"
    for kind, subjects in (("allow", permission.allow), ("deny", permission.deny)):
        for subject in subjects:
            issue = _subject_issue(subject, queue_allowed, strict)
            if issue:
                issues.append(f"{direction}.{kind}: {issue}")


def _is_cidr(cidr: str) -> bool:
    # Go's net.ParseCIDR: "address/bits" only; no netmasks, spaces or IPv6 zones.
    address, _, bits = cidr.partition("/")
    if not bits.isdigit() or "%" in address or any(c.isspace() for c in cidr):
        return False
    try:
        ipaddress.ip_network(f"{address}/{int(bits)}", strict=False)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=256)
def _zone_issue(name: str) -> str | None:
    if name in ("", "UTC", "Local"):
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"could not parse iana time zone by name: {name!r}"
    return None


def user_issues(user: User, *, strict: bool = True) -> list[str]:
    """Everything wrong with the ``nats`` part of a user JWT; empty when it is valid.

    With ``strict=False`` only what nats-server (nats-io/jwt v2) rejects is
    reported; with ``strict=True`` also wildcards that would be read as literals
    and unknown connection types.
    """
    issues: list[str] = []
    _permission_issues(issues, "pub", user.pub, strict=strict)
    _permission_issues(issues, "sub", user.sub, strict=strict)
    issues += [
        f"invalid cidr {cidr!r} in user src limits" for cidr in user.src if not _is_cidr(cidr)
    ]
    for window in user.times:
        if not _CLOCK.fullmatch(window.start):
            issues.append(f"start in time range is invalid {window.start!r}")
        if not _CLOCK.fullmatch(window.end):
            issues.append(f"end in time range is invalid {window.end!r}")
    zone = _zone_issue(user.times_location) if user.times_location else None
    if zone:
        issues.append(zone)
    if user.issuer_account and not is_public_key(user.issuer_account, KeyKind.ACCOUNT):
        issues.append("account_id is not an account public key")
    if strict and user.resp is not None and (user.resp.max < -1 or user.resp.ttl < 0):
        issues.append("response permission max and ttl must not be negative")
    if user.allowed_connection_types:
        types = [t.upper() for t in user.allowed_connection_types]
        unknown = [t for t in types if t not in CONNECTION_TYPES]
        if len(unknown) == len(types) or (strict and unknown):
            issues.append(f"unknown connection types {unknown}")
    return issues
