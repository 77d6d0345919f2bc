"""Check a callout deployment: :func:`diagnose` and ``faststream-callout doctor``.

The doctor logs in with the service's own credentials and compares what
nats-server does with what the service's keys need, one module per concern:

- :mod:`.connection`: the account the service lands in and its permissions
  (``$SYS.REQ.USER.INFO``): subscribe on ``$SYS.REQ.USER.AUTH``, publish the
  replies (``$SYS._INBOX.>``);
- :mod:`.keys`: the issuer and xkey against the server configuration (config
  mode, from the file: :mod:`.server_config`) or the callout account JWT
  (operator mode, with system credentials or the file's ``resolver_preload``);
  on a mismatch, the server configuration that would match the keys we have;
- :mod:`.request`: one real authorization request, watched next to the
  service's queue group (the doctor never replies) and judged by the pipeline's
  own stage functions: can our xkeys open it, does it verify, is it for our
  issuer? ``probe`` triggers one with a throwaway login;
- :mod:`.bypass`: users that skip the callout (``auth_users``, ``no_auth_user``,
  accounts left out of ``allowed_accounts``);
- :mod:`.protected`: the server's system and callout accounts against the service's
  ``protected_accounts``;
- :mod:`.report`: the findings, as text or JSON.

Nothing secret is ever reported: no seed, password or request content.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Final

from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import DEFAULT_PROTECTED_ACCOUNTS
from faststream_callout.core.signing import SigningKeys
from faststream_callout.tools.doctor.bypass import check_bypass
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.connection import (
    check_account,
    check_permissions,
    connect,
    user_info,
)
from faststream_callout.tools.doctor.keys import (
    check_account_jwt,
    check_config_keys,
    matching_config,
)
from faststream_callout.tools.doctor.protected import check_protected
from faststream_callout.tools.doctor.report import Finding, Report, Status
from faststream_callout.tools.doctor.request import analyze, watch
from faststream_callout.tools.doctor.server_config import load_config

__all__ = ["Finding", "Report", "Status", "diagnose"]

DEFAULT_QUEUE: Final = "faststream-callout"  # callout_router's default queue group


async def diagnose(
    url: str,
    *,
    credentials: Mapping[str, str],
    keys: SigningKeys | Keyring | None,
    server_config: str | Path | None = None,
    system_credentials: Mapping[str, str] | None = None,
    wait: float = 3.0,
    probe: bool = False,
    queue: str = DEFAULT_QUEUE,
    timeout: float = 5.0,  # noqa: ASYNC109 - connect timeout, passed to nats-py
    protected_accounts: Collection[str] = DEFAULT_PROTECTED_ACCOUNTS,
) -> Report:
    """Check a deployment and return a :class:`Report`; never raises for what it finds.

    Args:
        url: the nats-server the service connects to.
        credentials: the service's login, as ``nats.connect`` keywords
            (``user``/``password``, ``user_credentials``, ``nkeys_seed``, ``token``).
        keys: the service's :class:`SigningKeys` (issuer and xkey), or its :class:`Keyring`
            (several callout accounts, a rotation's next keys); ``None`` when
            they could not be loaded (the key checks then fail).
        server_config: the nats-server configuration file, to compare the
            ``auth_callout`` block (config mode) or ``resolver_preload``
            (operator mode) and to list the users that skip the callout.
        system_credentials: a system account login (``nats.connect`` keywords);
            operator mode uses it to fetch the callout account JWT. nats-server
            does not expose ``auth_callout`` to the system account in config mode.
        wait: seconds to wait for an authorization request.
        probe: trigger a request by logging in once with a random user name and
            password (refused; the service counts it as one failed login).
        queue: the service's queue group (``callout_router``'s ``queue``).
        timeout: seconds to wait for connections.
        protected_accounts: the service's ``CalloutSettings.protected_accounts``,
            compared with the server's system and callout accounts.

    """
    checkup = Checkup(
        Report(url),
        url=url,
        credentials=dict(credentials),
        keys=keys if keys is None or isinstance(keys, Keyring) else Keyring(keys),
        system_credentials=system_credentials,
        wait=wait,
        probe=probe,
        queue=queue,
        timeout=timeout,
        protected_accounts=frozenset(protected_accounts),
    )
    await _run(checkup, server_config)
    return checkup.report


async def _run(checkup: Checkup, server_config: str | Path | None) -> None:
    report = checkup.report
    if server_config is not None:
        load_config(checkup, server_config)
    try:
        if await connect(checkup):
            await user_info(checkup)
            report.mode = checkup.mode
            request = await watch(checkup)
            check_account(checkup)
            check_permissions(checkup)
            await check_account_jwt(checkup)
            check_config_keys(checkup)
            if request is not None:
                analyze(checkup, *request)
        else:
            report.mode = checkup.mode
            check_config_keys(checkup)
        check_bypass(checkup)
        check_protected(checkup)
        matching_config(checkup)
    finally:
        report.sort()
        if checkup.client is not None:
            with contextlib.suppress(Exception):
                await checkup.client.close()
