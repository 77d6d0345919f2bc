"""Check a callout deployment: :func:`diagnose` and ``faststream-callout doctor``.

The doctor logs in with the service's own credentials and compares what
nats-server does with what the service's keys need:

- the account the service lands in and its permissions (``$SYS.REQ.USER.INFO``):
  subscribe on ``$SYS.REQ.USER.AUTH``, publish the replies (``$SYS._INBOX.>``);
- the issuer and xkey against the server configuration (config mode, from the
  file) or the callout account JWT (operator mode, with system credentials or
  the file's ``resolver_preload``);
- one real authorization request: a plain subscription next to the service's
  queue group receives a copy of every request without taking any away (the
  doctor never replies). Is it encrypted, can our xkey open it, does it verify,
  is it for our issuer? ``probe`` triggers one with a throwaway login;
- users that skip the callout (``auth_users``, ``no_auth_user``, accounts left
  out of ``allowed_accounts``);
- on a mismatch, the server configuration that would match the keys we have.

Nothing secret is ever reported: no seed, password or request content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import nacl.exceptions

from faststream_callout.core.errors import InvalidJWTError, InvalidKeyError
from faststream_callout.core.signing import ANY_ACCOUNT, CalloutMode, SigningKeys
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, XKEY_HEADER
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import AUTH_REQUEST_AUDIENCE, AuthorizationRequestClaims
from faststream_callout.protocol.nkeys import KeyKind, is_public_key
from faststream_callout.testing.probes import settle
from faststream_callout.tools import natsconf
from faststream_callout.tools.natsconf import operator_authorization, render_config_mode

__all__ = ["Finding", "Report", "Status", "diagnose"]

USER_INFO_SUBJECT: Final = "$SYS.REQ.USER.INFO"
DEFAULT_QUEUE: Final = "faststream-callout"  # callout_router's default queue group
GLOBAL_ACCOUNT: Final = "$G"
# nats-server replies come from "$SYS._INBOX.<hash>.<id>" (server/events.go inboxRespSubj).
_REPLY_SAMPLE: Final = "$SYS._INBOX.doctor.check"
_PASSWORD_PLACEHOLDER: Final = "<the service's password>"  # noqa: S105 - shown instead of it
_CLOCK_SKEW_WARNING: Final = 2.0  # seconds: the pipeline checks exp without leeway
# The order findings are shown in: what the service does, then the server's side.
_ORDER: Final = (
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
    """Everything :func:`diagnose` found, printable and JSON-serialisable."""

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


async def diagnose(
    url: str,
    *,
    credentials: Mapping[str, str],
    keys: SigningKeys | None,
    server_config: str | Path | None = None,
    system_credentials: Mapping[str, str] | None = None,
    wait: float = 3.0,
    probe: bool = False,
    queue: str = DEFAULT_QUEUE,
    timeout: float = 5.0,  # noqa: ASYNC109 - connect timeout, passed to nats-py
) -> Report:
    """Check a deployment and return a :class:`Report`; never raises for what it finds.

    Args:
        url: the nats-server the service connects to.
        credentials: the service's login, as ``nats.connect`` keywords
            (``user``/``password``, ``user_credentials``, ``nkeys_seed``, ``token``).
        keys: the service's :class:`SigningKeys` (issuer and xkey); ``None`` when
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

    """
    doctor = _Doctor(
        Report(url),
        url=url,
        credentials=credentials,
        keys=keys,
        system_credentials=system_credentials,
        wait=wait,
        probe=probe,
        queue=queue,
        timeout=timeout,
    )
    await doctor.run(server_config)
    return doctor.report


# -- the server configuration ---------------------------------------------------------------


@dataclass
class _ServerConfig:
    """What the callout depends on in a nats-server configuration file."""

    path: str
    operator: bool = False
    callout: bool = False
    issuer: str = ""
    account: str = GLOBAL_ACCOUNT
    auth_users: list[str] = field(default_factory=list)
    xkey: str = ""
    allowed_accounts: list[str] = field(default_factory=list)
    timeout: float | None = None
    users: dict[str, str] = field(default_factory=dict)  # user name or nkey -> account
    accounts: list[str] = field(default_factory=list)
    no_auth_user: str = ""
    system_account: str = "$SYS"
    preload: dict[str, str] = field(default_factory=dict)

    def account_of(self, user: str) -> str | None:
        return self.users.get(user)


def _strings(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float)]
    if isinstance(value, str) and value:
        return [value]
    return []


def _login_names(entries: object) -> list[str]:
    """User names and nkeys of a ``users`` / ``nkeys`` list."""
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        name = natsconf.option(entry, "user", "username", "nkey")
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _read_server_config(path: str | Path) -> _ServerConfig:
    data = natsconf.load(path)
    view = _ServerConfig(path=str(path))
    trusted = ("operator", "operators", "root", "roots", "trusted", "trusted_keys")
    view.operator = natsconf.option(data, *trusted) is not None
    accounts = natsconf.option(data, "accounts")
    if isinstance(accounts, dict):
        for name, body in accounts.items():
            view.accounts.append(name)
            for user in _login_names(natsconf.option(body, "users")) + _login_names(
                natsconf.option(body, "nkeys")
            ):
                view.users[user] = name
    elif isinstance(accounts, list):
        view.accounts += _strings(accounts)
    authorization = natsconf.option(data, "authorization")
    for user in _login_names(natsconf.option(authorization, "users")):
        view.users.setdefault(user, GLOBAL_ACCOUNT)
    single = natsconf.option(authorization, "user", "username")
    if isinstance(single, str) and single:
        view.users.setdefault(single, GLOBAL_ACCOUNT)
    timeout = natsconf.option(authorization, "timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        view.timeout = float(timeout)
    elif isinstance(timeout, str) and timeout.endswith("s"):
        with contextlib.suppress(ValueError):
            view.timeout = float(timeout.removesuffix("ms").removesuffix("s")) * (
                0.001 if timeout.endswith("ms") else 1
            )
    callout = natsconf.option(authorization, "auth_callout", "auth_hook")
    if isinstance(callout, dict):
        view.callout = True
        view.issuer = str(natsconf.option(callout, "issuer") or "")
        view.account = str(natsconf.option(callout, "account", "acc") or GLOBAL_ACCOUNT)
        view.auth_users = _strings(natsconf.option(callout, "auth_users", "users"))
        view.xkey = str(natsconf.option(callout, "xkey", "key") or "")
        view.allowed_accounts = _strings(natsconf.option(callout, "allowed_accounts"))
    no_auth = natsconf.option(data, "no_auth_user")
    view.no_auth_user = no_auth if isinstance(no_auth, str) else ""
    system = natsconf.option(data, "system_account", "system")
    if isinstance(system, str) and system:
        view.system_account = system
    preload = natsconf.option(data, "resolver_preload")
    if isinstance(preload, dict):
        view.preload = {k: v for k, v in preload.items() if isinstance(v, str)}
    return view


# -- permissions, as nats-server's client.go canSubscribe / pubAllowed evaluate them --------


def _subject_matches(pattern: str, subject: str) -> bool:
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
    return any(queue == q or _subject_matches(q, queue) for q in queues)


def _may_subscribe(permissions: Mapping[str, Any], subject: str, queue: str) -> tuple[bool, str]:
    """Whether a (queue) subscription to the literal ``subject`` is allowed, and why not."""
    section = permissions.get("subscribe") or {}
    allow, deny = _entries(section, "allow"), _entries(section, "deny")
    if allow:
        matched = [(s, q) for s, q in allow if _subject_matches(s, subject)]
        queues = [q for _, q in matched if q]
        allowed = any(not q for _, q in matched)
        if queue and queues:
            allowed = _queue_matches(queue, queues)
        if not allowed:
            shown = ", ".join(" ".join(x for x in entry if x) for entry in allow)
            return False, f"subscribe allow list [{shown}] does not cover it"
    matched = [(s, q) for s, q in deny if _subject_matches(s, subject)]
    plain = [s for s, q in matched if not q]
    if plain:
        return False, f'denied by subscribe deny "{plain[0]}"'
    queues = [q for _, q in matched if q]
    if queue and queues and _queue_matches(queue, queues):
        return False, f"queue {queue} is denied by subscribe deny"
    return True, ""


def _may_publish(permissions: Mapping[str, Any], subject: str) -> tuple[bool, str]:
    section = permissions.get("publish") or {}
    allow = [s for s, _ in _entries(section, "allow")]
    deny = [s for s, _ in _entries(section, "deny")]
    if allow and not any(_subject_matches(s, subject) for s in allow):
        return False, f"publish allow list [{', '.join(allow)}] does not cover it"
    for pattern in deny:
        if _subject_matches(pattern, subject):
            return False, f'denied by publish deny "{pattern}"'
    return True, ""


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT the server already trusts (read, not verified)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


# -- the checks -----------------------------------------------------------------------------


class _Doctor:
    def __init__(
        self,
        report: Report,
        *,
        url: str,
        credentials: Mapping[str, str],
        keys: SigningKeys | None,
        system_credentials: Mapping[str, str] | None,
        wait: float,
        probe: bool,
        queue: str,
        timeout: float,
    ) -> None:
        self.report = report
        self.url = url
        self.credentials = dict(credentials)
        self.keys = keys
        self.system_credentials = system_credentials
        self.wait = wait
        self.probe = probe
        self.queue = queue
        self.timeout = timeout
        self.config: _ServerConfig | None = None
        self.client: Any = None
        self.info: dict[str, Any] | None = None
        self.violations: list[str] = []
        self.mismatch = False  # a key/account mismatch: print the matching configuration
        self.account_claims: dict[str, Any] | None = None
        self.observed_reply = ""

    # -- plumbing -----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self.config is not None:
            return "operator" if self.config.operator else "config"
        if self.info is not None:
            account = str(self.info.get("account", ""))
            return "operator" if is_public_key(account, KeyKind.ACCOUNT) else "config"
        if self.keys is not None:
            return self.keys.mode.value
        return ""

    @property
    def service_user(self) -> str:
        user = self.credentials.get("user") or (self.info or {}).get("user")
        return str(user or "")

    @property
    def service_account(self) -> str:
        return str((self.info or {}).get("account", ""))

    async def _on_error(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            self.violations.append(str(exc))

    async def _settle(self) -> None:
        with contextlib.suppress(Exception):
            await settle(self.client, timeout=self.timeout)

    async def run(self, server_config: str | Path | None) -> None:
        if server_config is not None:
            self._load_config(server_config)
        try:
            if await self._connect():
                await self._user_info()
                self.report.mode = self.mode
                request = await self._watch()
                self._check_account()
                self._check_permissions()
                await self._check_account_jwt()
                self._check_config_keys()
                if request is not None:
                    self._analyze(*request)
            else:
                self.report.mode = self.mode
                self._check_config_keys()
            self._check_bypass()
            self._snippet()
        finally:
            rank = {check: index for index, check in enumerate(_ORDER)}
            self.report.findings.sort(key=lambda f: rank.get(f.check, len(rank)))
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await self.client.close()

    # -- server configuration file ------------------------------------------------------

    def _load_config(self, path: str | Path) -> None:
        try:
            self.config = _read_server_config(path)
        except natsconf.NatsConfigError as exc:
            self.report.add(
                "server-config",
                Status.FAIL,
                f"cannot read the server configuration: {exc}",
                "give the file nats-server runs with (nats-server -c FILE)",
            )
            return
        config = self.config
        if config.operator:
            self.report.add("server-config", Status.OK, f"{path}: operator mode")
        elif not config.callout:
            self.report.add(
                "server-config",
                Status.FAIL,
                f"{path} has no authorization.auth_callout block: the server never calls out",
                "add the auth_callout block (faststream-callout config prints one)",
            )
            self.mismatch = True
        else:
            self.report.add(
                "server-config",
                Status.OK,
                f"{path}: config mode, auth_callout in account {config.account}",
            )

    # -- connect, account, permissions ------------------------------------------------------

    async def _connect(self) -> bool:
        import nats  # noqa: PLC0415 - keep importing the module light
        from nats.errors import Error as NatsError  # noqa: PLC0415

        who = f"'{self.credentials['user']}'" if self.credentials.get("user") else "the service"
        try:
            self.client = await asyncio.wait_for(
                nats.connect(
                    self.url,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # 0 would retry an unreachable server forever
                    reconnect_time_wait=0.1,
                    connect_timeout=self.timeout,
                    error_cb=self._on_error,
                    **self.credentials,
                ),
                timeout=self.timeout + 1,
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
            self.report.add(
                "connect", Status.FAIL, f"cannot log in as {who}: {text}", hint, refused=refused
            )
            return False
        self.report.add("connect", Status.OK, f"logged in as {who}")
        return True

    async def _user_info(self) -> None:
        from nats.errors import Error as NatsError  # noqa: PLC0415

        seen = len(self.violations)
        try:
            reply = await self.client.request(USER_INFO_SUBJECT, b"", timeout=1.0)
            payload = json.loads(reply.data)
        except (TimeoutError, NatsError, ValueError) as exc:
            denied = len(self.violations) > seen
            reason = "publishing it is not allowed" if denied else (str(exc) or "no answer")
            self.report.add(
                "account",
                Status.WARN,
                f"cannot ask {USER_INFO_SUBJECT} ({reason}): the service's account and "
                "permissions are not checked",
                f"allow publish on {USER_INFO_SUBJECT} for the service user to check them",
            )
            return
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(data, dict):
            self.info = data
            server = payload.get("server") or {}
            if isinstance(server, dict) and server.get("ver"):
                self.report.server = f"nats-server {server.get('name', '')} {server['ver']}".strip()

    def _check_account(self) -> None:
        if self.info is None:
            return
        account = self.service_account
        name = str(self.info.get("account_name") or account)
        shown = account if name == account else f"{name} ({account})"
        config = self.config
        config_mode = self.mode == "config" and config is not None and config.callout
        if config_mode and config is not None and config.account != account:
            self.mismatch = True
            self.report.add(
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
        keys = self.keys
        if self.mode == "operator" and keys is not None and keys.callout_account != account:
            self.mismatch = True
            self.report.add(
                "account",
                Status.FAIL,
                f"the service logs into account {shown}, but its keys sign for callout "
                f"account {keys.callout_account}",
                "use the callout account's key as the issuer, or give its public key "
                "(--callout-account) when the issuer is one of its signing keys",
                expected=account,
                actual=keys.callout_account,
            )
            return
        self.report.add("account", Status.OK, f"the service logs into account {shown}")

    def _check_permissions(self) -> None:
        if self.info is None:
            return
        permissions = self.info.get("permissions") or {}
        user = self.service_user or "the service"
        allowed, why = _may_subscribe(permissions, AUTH_CALLOUT_SUBJECT, self.queue)
        if allowed:
            self.report.add(
                "subscribe", Status.OK, f"'{user}' may subscribe to {AUTH_CALLOUT_SUBJECT}"
            )
        else:
            self.report.add(
                "subscribe",
                Status.FAIL,
                f"'{user}' may not subscribe to {AUTH_CALLOUT_SUBJECT} (queue {self.queue}): {why}",
                f"allow subscribe on {AUTH_CALLOUT_SUBJECT} for the service user",
            )
        reply = self.observed_reply or _REPLY_SAMPLE
        allowed, why = _may_publish(permissions, reply)
        responses = permissions.get("responses")
        if isinstance(responses, dict) and not (permissions.get("publish") or {}).get("allow"):
            allowed = False  # allow_responses alone: replies only (nats-server's auth.go)
        if allowed:
            self.report.add("reply", Status.OK, f"'{user}' may publish the replies ({reply})")
        elif isinstance(responses, dict):
            self.report.add(
                "reply",
                Status.OK,
                f"'{user}' may answer requests (allow_responses, max {responses.get('max', 1)})",
            )
        else:
            self.report.add(
                "reply",
                Status.FAIL,
                f"'{user}' may not publish the replies to {reply}: {why}",
                "allow publish on $SYS._INBOX.> for the service user, or set allow_responses: true",
            )

    # -- keys against the server's configuration ------------------------------------------------

    def _key_problem(self, check: str, expected: str) -> bool:
        """Report a missing issuer key; True when there is none."""
        if self.keys is not None:
            return False
        self.report.add(
            check,
            Status.FAIL,
            f"no issuer key to compare: the server expects {expected}",
            f"set CALLOUT_ISSUER_SEED to the seed of {expected}",
            expected=expected,
        )
        return True

    def _compare_xkey(self, check: str, configured: str, where: str) -> None:
        ours = self.keys.xkey.public_key if self.keys and self.keys.xkey else ""
        if configured == ours:
            text = f"requests are encrypted for our xkey {ours}" if ours else "no xkey, both sides"
            self.report.add(check, Status.OK, text + f" ({where})")
            return
        self.mismatch = True
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
            hint = (
                f"set the server's xkey to {ours}, or CALLOUT_XKEY_SEED to the seed of {configured}"
            )
        self.report.add(check, Status.FAIL, message, hint, expected=configured, actual=ours)

    def _check_config_keys(self) -> None:
        config = self.config
        if config is None or config.operator or not config.callout:
            return
        if not self._key_problem("issuer", config.issuer):
            assert self.keys is not None  # noqa: S101 - narrowed by _key_problem
            ours = self.keys.callout_account
            if config.issuer == ours:
                self.report.add("issuer", Status.OK, f"auth_callout.issuer is our issuer {ours}")
            else:
                self.mismatch = True
                self.report.add(
                    "issuer",
                    Status.FAIL,
                    f"the server expects issuer {config.issuer} (auth_callout.issuer), "
                    f"the service signs with {ours}",
                    f"set auth_callout.issuer: {ours}, or CALLOUT_ISSUER_SEED to the seed of "
                    f"{config.issuer}",
                    expected=config.issuer,
                    actual=ours,
                )
        if self.keys is not None:
            self._compare_xkey("xkey", config.xkey, "auth_callout.xkey")

    async def _check_account_jwt(self) -> None:
        if self.mode != "operator" or self.info is None:
            return
        account = self.service_account
        token = await self._fetch_account_jwt(account)
        if token is None and self.config is not None:
            token = self.config.preload.get(account)
        if token is None:
            self.report.add(
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
        self.account_claims = nats_claims
        auth = nats_claims.get("authorization") or {}
        auth_users = _strings(auth.get("auth_users") if isinstance(auth, dict) else None)
        if not auth_users:
            self.mismatch = True
            self.report.add(
                "account-jwt",
                Status.FAIL,
                f"the callout account JWT of {account} has no authorization.auth_users: "
                "auth callout is off",
                "set it with nsc edit authcallout (faststream-callout config --mode operator)",
            )
            return
        self.report.add("account-jwt", Status.OK, f"the callout account JWT of {account} is read")
        me = self.service_user
        for user in auth_users:
            if user != me:
                self.report.add(
                    "auth-users",
                    Status.WARN,
                    f"auth_users also lists {user} (not this service): it logs in without "
                    "the callout",
                    "keep auth_users to the service's own users",
                    user=user,
                )
        if me not in auth_users:
            self.mismatch = True
            self.report.add(
                "auth-users",
                Status.FAIL,
                f"the service user {me} is not in the account JWT's auth_users",
                "add the service user's public key to auth_users",
            )
        if self.keys is None:
            return
        xkey = str(auth.get("xkey", "")) if isinstance(auth, dict) else ""
        self._compare_xkey("xkey", xkey, "the account JWT's authorization.xkey")
        signer = self.keys.response_signer.key.public_key
        signing_keys = set()
        for entry in nats_claims.get("signing_keys") or []:
            key = entry.get("key") if isinstance(entry, dict) else entry
            if isinstance(key, str):
                signing_keys.add(key)
        if signer == account or signer in signing_keys:
            self.report.add("signing-key", Status.OK, f"responses are signed by {signer}")
        else:
            self.mismatch = True
            self.report.add(
                "signing-key",
                Status.FAIL,
                f"responses are signed by {signer}, neither the callout account {account} "
                "nor one of its signing keys",
                f"add {signer} to the account's signing keys, or sign with the account key",
                expected=account,
                actual=signer,
            )
        allowed = _strings(auth.get("allowed_accounts") if isinstance(auth, dict) else None)
        if ANY_ACCOUNT not in allowed:
            for target in sorted(self.keys.target_accounts - {account}):
                if target not in allowed:
                    self.report.add(
                        "allowed-accounts",
                        Status.WARN,
                        f"the service has a key for {target}, which allowed_accounts does not "
                        "list: users placed there are refused",
                        f"add {target} to the account JWT's allowed_accounts",
                        account=target,
                    )

    async def _fetch_account_jwt(self, account: str) -> str | None:
        if not self.system_credentials:
            return None
        import nats  # noqa: PLC0415
        from nats.errors import Error as NatsError  # noqa: PLC0415

        async def quiet(_: Exception) -> None:
            pass

        client = None
        try:
            client = await asyncio.wait_for(
                nats.connect(
                    self.url,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    connect_timeout=self.timeout,
                    error_cb=quiet,
                    **self.system_credentials,
                ),
                timeout=self.timeout + 1,
            )
            reply = await client.request(f"$SYS.REQ.ACCOUNT.{account}.INFO", b"", timeout=2)
            data = json.loads(reply.data).get("data") or {}
            token = data.get("jwt") if isinstance(data, dict) else None
        except (TimeoutError, NatsError, OSError, ValueError, AttributeError) as exc:
            self.report.add(
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

    # -- one real request -----------------------------------------------------------------------

    async def _watch(self) -> tuple[bytes, str | None, float] | None:
        """Wait for one authorization request; the service keeps getting all of them."""
        received: asyncio.Future[tuple[bytes, str | None, str, float]] = (
            asyncio.get_running_loop().create_future()
        )

        async def on_request(msg: Any) -> None:  # noqa: ANN401 - a nats-py Msg
            if not received.done():
                header = (msg.headers or {}).get(XKEY_HEADER)
                received.set_result((bytes(msg.data), header, msg.reply or "", time.time()))

        seen = len(self.violations)
        subscription = await self.client.subscribe(AUTH_CALLOUT_SUBJECT, cb=on_request)
        await self._settle()
        if len(self.violations) > seen:
            self._cannot_watch()
            return None
        probe = asyncio.ensure_future(self._probe_login()) if self.probe else None
        login: tuple[bool, str] | None = None
        try:
            waiters: set[asyncio.Future[Any]] = {received}
            if probe is not None:
                waiters.add(probe)
            done, _ = await asyncio.wait(
                waiters, timeout=self.wait, return_when=asyncio.FIRST_COMPLETED
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
            self._report_missing_request(login)
            return None
        body, header, reply, arrived = received.result()
        self.observed_reply = reply
        return body, header, arrived

    async def _probe_login(self) -> tuple[bool, str]:
        """Log in once as a random user: (let in, why not). Closed also when cancelled."""
        from nats.aio.client import Client  # noqa: PLC0415
        from nats.errors import Error as NatsError  # noqa: PLC0415

        async def quiet(_: Exception) -> None:
            pass

        client = Client()
        try:
            await client.connect(
                self.url,
                user=f"doctor-probe-{secrets.token_hex(4)}",
                password=secrets.token_urlsafe(16),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=max(1, math.ceil(self.wait)),  # nats-py wants an int
                error_cb=quiet,
            )
        except (TimeoutError, NatsError, OSError) as exc:
            return False, str(exc).strip() or type(exc).__name__
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        return True, ""

    def _cannot_watch(self) -> None:
        permissions = (self.info or {}).get("permissions") or {}
        queue_ok = (
            self.info is not None
            and _may_subscribe(permissions, AUTH_CALLOUT_SUBJECT, self.queue)[0]
        )
        if queue_ok:
            self.report.add(
                "request",
                Status.SKIP,
                f"requests were not watched: the service may only subscribe with queue "
                f"{self.queue}, and joining it would take requests away from the service",
                f"allow a plain subscription on {AUTH_CALLOUT_SUBJECT} to let the doctor watch",
            )
        elif self.info is None:
            self.report.add(
                "subscribe",
                Status.FAIL,
                f"the server refused the subscription to {AUTH_CALLOUT_SUBJECT}",
                f"allow subscribe on {AUTH_CALLOUT_SUBJECT} for the service user",
            )

    def _report_missing_request(self, login: tuple[bool, str] | None) -> None:
        where = self.service_account or "the service's account"
        if login is None:
            self.report.add(
                "request",
                Status.FAIL if self.probe else Status.SKIP,
                f"no authorization request in {where} within {self.wait:g}s"
                + ("" if self.probe else " (no client logged in)"),
                "is auth callout configured for this account?"
                if self.probe
                else "run with --probe to trigger one",
            )
            return
        allowed, error = login
        if allowed:
            self.report.add(
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
            if self.mode == "operator"
            else f"the server publishes requests in auth_callout.account; log the service "
            f"into that account ({where} now)"
        )
        self.report.add(
            "request",
            Status.FAIL,
            f"a probe login was refused ({error}) but no authorization request reached "
            f"{where}: the server does not call out to this account",
            hint,
        )

    def _analyze(self, body: bytes, header: str | None, arrived: float) -> None:
        """Check one observed request the way the service's pipeline will."""
        keys = self.keys
        ours = keys.xkey if keys is not None else None
        configured = self._configured_xkey()
        target = configured or "an xkey that is not ours"
        token: bytes | None = body
        encrypted = header is not None or not body.startswith(b"eyJ")
        self.report.add(
            "request",
            Status.OK,
            "received an authorization request"
            + (" (encrypted)" if encrypted else " (not encrypted)"),
        )
        if encrypted and ours is None:
            self.mismatch = True
            token = None
            self.report.add(
                "request.xkey",
                Status.FAIL,
                f"the server encrypts requests (server xkey {header}) for {target}, but the "
                "service has no xkey",
                "set CALLOUT_XKEY_SEED to the seed of "
                + (configured or "the xkey the server is configured with"),
                expected=configured,
                actual="",
            )
        elif encrypted and ours is not None:
            try:
                token = ours.open(body, header or "")
            except (InvalidKeyError, nacl.exceptions.CryptoError):
                self.mismatch = True
                token = None
                self.report.add(
                    "request.xkey",
                    Status.FAIL,
                    f"cannot decrypt the request: the server encrypts for {target}, our xkey "
                    f"is {ours.public_key}",
                    f"set the server's xkey to {ours.public_key}, or CALLOUT_XKEY_SEED to the "
                    "seed of the server's xkey",
                    expected=configured,
                    actual=ours.public_key,
                )
            else:
                self.report.add(
                    "request.xkey",
                    Status.OK,
                    f"the request is encrypted for our xkey {ours.public_key}",
                )
        elif ours is not None:
            self.mismatch = True
            self.report.add(
                "request.xkey",
                Status.FAIL,
                f"the request is not encrypted, but the service has xkey {ours.public_key}: "
                "it rejects plaintext requests",
                f"add xkey {ours.public_key} to the server's auth_callout (or the account "
                "JWT), or unset CALLOUT_XKEY_SEED",
                expected="",
                actual=ours.public_key,
            )
        if token is None:
            return
        try:
            claims = jwt.decode(token, AuthorizationRequestClaims)
        except InvalidJWTError as exc:
            self.report.add(
                "request.verify",
                Status.FAIL,
                f"the request does not verify: {exc}",
                "is something other than nats-server publishing on $SYS.REQ.USER.AUTH?",
            )
            return
        self._verify(claims, header, arrived)
        self._check_request_issuer(claims.sub)

    def _configured_xkey(self) -> str:
        if self.config is not None and not self.config.operator:
            return self.config.xkey
        auth = (self.account_claims or {}).get("authorization")
        return str(auth.get("xkey", "")) if isinstance(auth, dict) else ""

    def _verify(
        self, claims: AuthorizationRequestClaims, header: str | None, arrived: float
    ) -> None:
        request = claims.nats
        problems = []
        if claims.aud != AUTH_REQUEST_AUDIENCE:
            problems.append(f"audience is {claims.aud!r}, not {AUTH_REQUEST_AUDIENCE}")
        if claims.iss != request.server_id.id:
            problems.append("the signer is not the server named in server_id")
        if header is not None and header != request.server_id.xkey:
            problems.append("the Nats-Server-Xkey header differs from the signed server_id.xkey")
        skew = arrived - claims.iat if claims.iat else 0.0
        try:
            jwt.validate_times(claims, now=arrived)
        except InvalidJWTError:
            problems.append(
                f"it had expired when it arrived: this machine's clock is {skew:+.0f}s off "
                "the server's"
            )
        server = request.server_id.name or request.server_id.id
        if problems:
            self.report.add(
                "request.verify",
                Status.FAIL,
                f"the request from {server} fails verification: {'; '.join(problems)}",
                "compare the server and this machine (clock, which server publishes)",
            )
            return
        if abs(skew) > _CLOCK_SKEW_WARNING:
            self.report.add(
                "request.verify",
                Status.WARN,
                f"this machine's clock is {skew:+.0f}s off the server's: requests may expire "
                "before they are answered",
                "synchronise the clocks (NTP)",
            )
            return
        self.report.add(
            "request.verify",
            Status.OK,
            f"signed by server {server} ({request.server_id.version or '?'}), audience and "
            "expiry check out",
        )

    def _check_request_issuer(self, sub: str) -> None:
        operator = self.mode == "operator"
        what = "callout account" if operator else "issuer"
        if self._key_problem("request.issuer", sub):
            return
        assert self.keys is not None  # noqa: S101 - narrowed by _key_problem
        ours = self.keys.callout_account
        if sub == ours:
            self.report.add("request.issuer", Status.OK, f"the request is for our {what} {ours}")
            return
        self.mismatch = True
        source = "the account JWT's subject" if operator else "auth_callout.issuer"
        self.report.add(
            "request.issuer",
            Status.FAIL,
            f"the server expects {what} {sub} ({source}), the service signs with {ours}",
            f"set CALLOUT_ISSUER_SEED to the seed of {sub}, or configure the server with {ours}",
            expected=sub,
            actual=ours,
        )

    # -- users that skip the callout ----------------------------------------------------------

    def _check_bypass(self) -> None:
        config = self.config
        if config is None or config.operator or not config.callout:
            if self.mode == "config" and config is None:
                self.report.add(
                    "bypass",
                    Status.SKIP,
                    "users that skip the callout were not checked",
                    "give the server configuration (--server-config FILE); nats-server does "
                    "not expose auth_callout to clients",
                )
            return
        me = self.service_user
        found = False
        for user in config.auth_users:
            account = config.account_of(user)
            if user == me:
                continue
            found = True
            if account is None:
                self.report.add(
                    "auth-users",
                    Status.WARN,
                    f"auth_users lists '{user}', which no account of the configuration has",
                    f"remove '{user}' from auth_users",
                    user=user,
                )
                continue
            elsewhere = (
                f"; as a service it would get no requests (they go to account {config.account})"
                if account != config.account
                else ""
            )
            self.report.add(
                "auth-users",
                Status.WARN,
                f"auth_users also lists '{user}' (account {account}): it logs in without the "
                f"callout{elsewhere}",
                "keep auth_users to the service's own user(s); other logins then go through "
                "the callout",
                user=user,
                account=account,
            )
        if me and me not in config.auth_users:
            found = True
            self.mismatch = True
            self.report.add(
                "auth-users",
                Status.FAIL,
                f"the service user '{me}' is not in auth_callout.auth_users",
                f"add '{me}' to auth_users: otherwise its own login goes to the callout",
            )
        excluded = set(config.allowed_accounts)
        nobody = config.no_auth_user
        if nobody:
            account = config.account_of(nobody) or "?"
            skips = nobody in config.auth_users or (
                bool(excluded) and account not in excluded and account != GLOBAL_ACCOUNT
            )
            if skips:
                found = True
                self.report.add(
                    "no-auth-user",
                    Status.WARN,
                    f"clients without credentials log in as '{nobody}' (account {account}) "
                    "without the callout",
                    "remove no_auth_user, or let the callout decide about it",
                    user=nobody,
                )
        if excluded:
            skipping: dict[str, list[str]] = {}
            for user, account in config.users.items():
                if account not in excluded and account != GLOBAL_ACCOUNT and user != me:
                    skipping.setdefault(account, []).append(user)
            for account, users in sorted(skipping.items()):
                found = True
                self.report.add(
                    "allowed-accounts",
                    Status.WARN,
                    f"users of account {account} ({', '.join(sorted(users))}) log in without "
                    "the callout: allowed_accounts does not list it",
                    "intended for system/monitoring users; list the account in "
                    "allowed_accounts to send them to the callout",
                    account=account,
                    users=sorted(users),
                )
        if not found:
            self.report.add(
                "bypass",
                Status.OK,
                f"only the service ('{me}') skips the callout" if me else "no user skips it",
            )

    # -- the matching configuration -----------------------------------------------------------

    def _snippet(self) -> None:
        keys = self.keys
        if not self.mismatch or keys is None:
            return
        xkey = keys.xkey.public_key if keys.xkey else None
        if self.mode == "operator":
            claims = self.account_claims or {}
            auth = claims.get("authorization") or {}
            allowed = _strings(auth.get("allowed_accounts") if isinstance(auth, dict) else None)
            if not allowed and keys.mode is CalloutMode.OPERATOR:
                allowed = sorted(keys.allowed_accounts)
            section = operator_authorization(
                auth_users=[self.service_user] if self.service_user else [],
                allowed_accounts=allowed,
                xkey=xkey,
            )
            account = self.service_account or keys.callout_account
            self.report.config_snippet = (
                f'# the callout account JWT ({account}), inside its "nats" claims:\n'
                + json.dumps(section, indent=2)
                + "\n"
            )
            return
        config = self.config
        callout_account = self.service_account or (config.account if config else "AUTH")
        system = config.system_account if config else "SYS"
        targets: Sequence[str] = [
            a for a in (config.accounts if config else []) if a not in {callout_account, system}
        ] or ["APP"]
        self.report.config_snippet = render_config_mode(
            issuer=keys.callout_account,
            accounts=targets,
            callout_account=callout_account,
            auth_user=self.service_user or "auth",
            auth_password=_PASSWORD_PLACEHOLDER,
            xkey=xkey,
            system_account=system,
            timeout=(config.timeout if config and config.timeout else 2.0),
        )
