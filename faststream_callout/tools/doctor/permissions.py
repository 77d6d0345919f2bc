"""Subject permissions, evaluated as nats-server's client.go canSubscribe / pubAllowed do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["may_publish", "may_subscribe", "subject_matches"]


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the literal ``subject`` matches ``pattern`` (``*`` and ``>`` wildcards)."""
    wanted, parts = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(parts) > index
        if index >= len(parts) or (part not in ("*", parts[index])):
            return False
    return len(wanted) == len(parts)


def _entries(section: object, key: str) -> list[tuple[str, str]]:
    """(subject, queue) pairs of a permission list; ``"subject queue"`` restricts queues."""
    values = section.get(key) if isinstance(section, dict) else None
    pairs: list[tuple[str, str]] = []
    for value in values if isinstance(values, list) else []:
        subject, _, queue = str(value).strip().partition(" ")
        pairs.append((subject, queue.strip()))
    return pairs


def _queue_matches(queue: str, queues: list[str]) -> bool:
    return any(queue == q or subject_matches(q, queue) for q in queues)


def may_subscribe(permissions: Mapping[str, Any], subject: str, queue: str) -> tuple[bool, str]:
    """Whether a (queue) subscription to the literal ``subject`` is allowed, and why not."""
    section = permissions.get("subscribe") or {}
    allow, deny = _entries(section, "allow"), _entries(section, "deny")
    if allow:
        matched = [(s, q) for s, q in allow if subject_matches(s, subject)]
        queues = [q for _, q in matched if q]
        allowed = any(not q for _, q in matched)
        if queue and queues:
            allowed = _queue_matches(queue, queues)
        if not allowed:
            shown = ", ".join(" ".join(x for x in entry if x) for entry in allow)
            return False, f"subscribe allow list [{shown}] does not cover it"
    matched = [(s, q) for s, q in deny if subject_matches(s, subject)]
    plain = [s for s, q in matched if not q]
    if plain:
        return False, f'denied by subscribe deny "{plain[0]}"'
    queues = [q for _, q in matched if q]
    if queue and queues and _queue_matches(queue, queues):
        return False, f"queue {queue} is denied by subscribe deny"
    return True, ""


def may_publish(permissions: Mapping[str, Any], subject: str) -> tuple[bool, str]:
    """Whether publishing to the literal ``subject`` is allowed, and why not."""
    section = permissions.get("publish") or {}
    allow = [s for s, _ in _entries(section, "allow")]
    deny = [s for s, _ in _entries(section, "deny")]
    if allow and not any(subject_matches(s, subject) for s in allow):
        return False, f"publish allow list [{', '.join(allow)}] does not cover it"
    for pattern in deny:
        if subject_matches(pattern, subject):
            return False, f'denied by publish deny "{pattern}"'
    return True, ""
