"""The accounts no grant may place a client in: the server's system and callout accounts.

``CalloutSettings.protected_accounts`` names them (``$SYS``, ``SYS`` and ``AUTH`` by
default). A deployment whose accounts are named otherwise and not listed there is one
policy bug away from a client in the system account (``CONNZ``, kicks) or in the callout
account (every request, passwords included without an xkey).
"""

from __future__ import annotations

from typing import Final

from faststream_callout.protocol.nkeys import KeyKind, is_public_key
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.report import Status

__all__ = ["check_protected"]

_WHY: Final = {
    "system": "they could watch and steer the server",
    "callout": "they could read every authorization request",
}


def check_protected(checkup: Checkup) -> None:
    """Warn when the server's system or callout account is missing from ``protected_accounts``."""
    accounts = _accounts(checkup)
    if not accounts:
        return
    protected = checkup.protected_accounts
    missing = {role: name for role, name in accounts.items() if name not in protected}
    if not missing:
        named = " and ".join(f"the {role} account {name}" for role, name in accounts.items())
        checkup.report.add("protected", Status.OK, f"{named}: protected")
        return
    wanted = ", ".join(f'"{name}"' for name in sorted({*protected, *missing.values()}))
    for role, name in missing.items():
        checkup.report.add(
            "protected",
            Status.WARN,
            f"the {role} account {name} is not in protected_accounts: a policy bug could "
            f"place clients there ({_WHY[role]})",
            f"CalloutSettings(protected_accounts={{{wanted}}}) in the service; "
            "--protected-account tells the doctor",
            role=role,
            account=name,
        )


def _accounts(checkup: Checkup) -> dict[str, str]:
    """Role -> the name (config mode) or key (operator mode) the server gives the account."""
    config = checkup.config
    accounts: dict[str, str] = {}
    if checkup.mode == "config":
        if config is not None:
            accounts["system"] = config.system_account
        callout = checkup.service_account or (config.account if config and config.callout else "")
        if callout:
            accounts["callout"] = callout
    elif (
        config is not None
        and checkup.keys is not None
        and is_public_key(config.system_account, KeyKind.ACCOUNT)
    ):
        # Operator mode: strict settings protect the callout account; the system account
        # is only reachable with a key that signs for it.
        system = config.system_account
        ours = (*checkup.keys.current, *checkup.keys.next_keys)
        if any(keys.placement_issue(system) is None for keys in ours):
            accounts["system"] = system
    return accounts
