"""The doctor's report: findings, their order, and how they are printed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

__all__ = ["ORDER", "Finding", "Report", "Status"]

# The order findings are shown in: what the service does, then the server's side.
ORDER: Final = (
    "keys",
    "server-config",
    "connect",
    "account",
    "subscribe",
    "reply",
    "account-jwt",
    "issuer",
    "xkey",
    "signing-key",
    "request",
    "request.xkey",
    "request.verify",
    "request.issuer",
    "auth-users",
    "no-auth-user",
    "allowed-accounts",
    "bypass",
    "protected",
)


class Status(StrEnum):
    """How a check came out; only ``FAIL`` makes the report fail."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # could not be checked with what was given


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check: a one-line explanation and a hint how to fix it."""

    check: str
    status: Status
    message: str
    hint: str = ""
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "check": self.check,
            "status": self.status.value,
            "message": self.message,
            "hint": self.hint,
            "details": dict(self.details),
        }


@dataclass
class Report:
    """Everything ``diagnose`` found, printable and JSON-serialisable."""

    url: str
    findings: list[Finding] = field(default_factory=list)
    mode: str = ""  # "config" or "operator", when known
    server: str = ""  # nats-server name and version, when known
    config_snippet: str = ""  # a server configuration matching our keys, after a mismatch

    def add(
        self, check: str, status: Status, message: str, hint: str = "", **details: object
    ) -> Finding:
        """Record a finding and return it."""
        finding = Finding(check, status, message, hint, details)
        self.findings.append(finding)
        return finding

    def sort(self) -> None:
        """Put the findings in :data:`ORDER` (checks it does not name go last)."""
        rank = {check: index for index, check in enumerate(ORDER)}
        self.findings.sort(key=lambda f: rank.get(f.check, len(rank)))

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return not any(f.status is Status.FAIL for f in self.findings)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 1 when a check failed, else 0."""
        return 0 if self.ok else 1

    def findings_for(self, check: str) -> list[Finding]:
        """The findings of one check (some checks report several)."""
        return [f for f in self.findings if f.check == check]

    def counts(self) -> dict[str, int]:
        """How many findings of each status."""
        return {s.value: sum(f.status is s for f in self.findings) for s in Status}

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "url": self.url,
            "ok": self.ok,
            "mode": self.mode,
            "server": self.server,
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
            "config_snippet": self.config_snippet,
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """The report as readable text, one line per finding plus its fix."""
        about = ", ".join(x for x in (self.server, f"{self.mode} mode" if self.mode else "") if x)
        lines = [f"faststream-callout doctor: {self.url}" + (f" ({about})" if about else "")]
        width = max((len(f.check) for f in self.findings), default=8)
        for finding in self.findings:
            lines.append(f"  {finding.status.value:<5} {finding.check:<{width}}  {finding.message}")
            if finding.hint and finding.status is not Status.OK:
                lines.append(f"  {'':<5} {'':<{width}}  fix: {finding.hint}")
        counts = self.counts()
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        lines.append(f"result: {summary or 'nothing checked'}")
        if self.config_snippet:
            lines += ["", "A server configuration matching the service's keys:", ""]
            lines += [f"  {line}" if line else "" for line in self.config_snippet.splitlines()]
        return "\n".join(lines) + "\n"
