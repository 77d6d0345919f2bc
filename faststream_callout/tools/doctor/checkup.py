"""What one doctor run knows so far: the inputs, the connection, and what was learned."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import DEFAULT_PROTECTED_ACCOUNTS
from faststream_callout.core.signing import SigningKeys
from faststream_callout.protocol.nkeys import KeyKind, is_public_key
from faststream_callout.testing.probes import settle
from faststream_callout.tools.doctor.report import Report

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from faststream_callout.tools.doctor.server_config import ServerConfig

__all__ = ["Checkup"]


@dataclass
class Checkup:
    """The state the checks share; each check module reads and adds to it."""

    report: Report
    url: str
    credentials: Mapping[str, str]
    keys: Keyring | None  # the service's keys, current and next (a rotation)
    system_credentials: Mapping[str, str] | None = None
    wait: float = 3.0
    probe: bool = False
    queue: str = "faststream-callout"
    timeout: float = 5.0
    protected_accounts: Collection[str] = DEFAULT_PROTECTED_ACCOUNTS
    config: ServerConfig | None = None
    client: Any = None  # the service's nats-py connection
    info: dict[str, Any] | None = None  # $SYS.REQ.USER.INFO's data
    violations: list[str] = field(default_factory=list)
    mismatch: bool = False  # a key/account mismatch: print the matching configuration
    account_claims: dict[str, Any] | None = None  # the callout account JWT's "nats"
    observed_reply: str = ""  # the reply subject of the request the doctor saw

    @property
    def mode(self) -> str:
        """``"config"`` or ``"operator"``, from the best source at hand; ``""`` unknown."""
        if self.config is not None:
            return "operator" if self.config.operator else "config"
        if self.info is not None:
            account = str(self.info.get("account", ""))
            return "operator" if is_public_key(account, KeyKind.ACCOUNT) else "config"
        if self.keys is not None:
            return self.keys.current[0].mode.value
        return ""

    @property
    def primary(self) -> SigningKeys | None:
        """The keys of the first callout account: what the service signs with by default."""
        return self.keys.current[0] if self.keys is not None else None

    @property
    def service_user(self) -> str:
        """The service's login name (config mode) or user public key."""
        user = self.credentials.get("user") or (self.info or {}).get("user")
        return str(user or "")

    @property
    def service_account(self) -> str:
        """The account the service logged into, when the server told."""
        return str((self.info or {}).get("account", ""))

    async def on_error(self, exc: Exception) -> None:
        """The connection's error callback: keeps the permissions violations."""
        if "permissions violation" in str(exc).lower():
            self.violations.append(str(exc))

    async def settle(self) -> None:
        """Wait until the server processed everything sent so far."""
        with contextlib.suppress(Exception):
            await settle(self.client, timeout=self.timeout)
