"""A declarative permission builder: roles to permission sets, with safe subject templates.

Each role is a :class:`PermissionSet`: subjects to publish and subscribe to
(templates such as ``chat.{user}.>`` or ``_INBOX_{user}.>`` expanded from the
identity), denials, response permissions, limits, an expiry, and *conditions*
(connection types, source CIDRs, daily time windows) under which the role
applies. :class:`RoleBasedPermissions` merges the sets of the identity's roles
that apply to the connection into one :class:`~faststream_callout.Grant`.

Template values come from the identity, i.e. from the client's side of the
world (a user name, a token claim). A value could widen a permission if it
carried subject syntax: a user named ``a.>`` must never turn ``chat.{user}.>``
into ``chat.a.>.>``. So every value must be exactly one safe token: not empty,
no ``.``, ``*``, ``>``, whitespace or control characters, and not starting with
``$`` (``{user}.>`` must not become ``$SYS.>``). An unsafe value denies the
login, or, with ``unsafe_values="escape"``, is percent-encoded (an injective
mapping: distinct values never collide).

Nor may a value start a subject with a reserved prefix (:data:`RESERVED_PREFIXES`:
``_INBOX``, ``_R_``, ``$``): a user named ``_INBOX_bob`` must not turn
``{user}.>`` into bob's private inbox ``_INBOX_bob.>``. Such a value always
denies the login, escaping or not. And a template that *starts* with a
placeholder lets the identity choose the subject's root (a user named
``orders`` would get ``orders.>``), so it is refused when the set is built,
unless the set says ``allow_leading_placeholder=True``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import math
import re
import string
import time
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

from faststream_callout.batteries._common import (
    EXPIRES_AT,
    check_keys,
    load_document,
    logger,
)
from faststream_callout.core.errors import ConfigurationError, Denied
from faststream_callout.core.policy import NO_LIMIT, Grant, Identity
from faststream_callout.protocol.claims import (
    AuthorizationRequest,
    ClientInfo,
    Permission,
    ResponsePermission,
    TimeRange,
)
from faststream_callout.protocol.validation import CONNECTION_TYPES, subject_issue

__all__ = [
    "MAX_EXPANDED_SUBJECTS",
    "RESERVED_PREFIXES",
    "PermissionSet",
    "RoleBasedPermissions",
    "connection_types_of",
    "safe_token",
]

#: The most subjects one grant may hold after template expansion.
MAX_EXPANDED_SUBJECTS: Final = 1024
_FIELD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_CLOCK: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d):([0-5]\d)")
_DEFAULT_RESPONSE_TTL_NS: Final = 120_000_000_000  # nats-server's default for resp.ttl 0
_ALL: Final = ">"
#: Subject prefixes a template value may never put at the start of a subject:
#: inboxes (nats-py's default ``_INBOX.`` and the private ``_INBOX_<id>.``), the
#: reply subjects of service imports (``_R_.``) and the server's own namespaces
#: (``$SYS``, ``$JS``, ``$KV`` ...).
RESERVED_PREFIXES: Final = ("_INBOX", "_R_", "$")

UnsafeValues = Literal["deny", "escape"]
_H = TypeVar("_H", str, TimeRange)
AccountChooser = Callable[[Identity, AuthorizationRequest], str]


# -- template values ---------------------------------------------------------------


def _unsafe_char(char: str) -> bool:
    return char in ".*>%" or char.isspace() or not char.isprintable()


def safe_token(value: str, *, escape: bool = False) -> str | None:
    """``value`` as one subject token that cannot widen a permission, or ``None``.

    Safe: non-empty, none of ``.``, ``*``, ``>``, whitespace or non-printable
    characters, no leading ``$``. With ``escape`` unsafe characters (and ``%``)
    are percent-encoded as UTF-8 instead (``a.b`` -> ``a%2Eb``), so distinct
    values stay distinct; only the empty string is refused.
    """
    if not value:
        return None
    if not escape:
        if value[0] == "$" or any(_unsafe_char(c) for c in value):
            return None
        return value
    out = []
    for index, char in enumerate(value):
        if _unsafe_char(char) or (index == 0 and char == "$"):
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
        else:
            out.append(char)
    return "".join(out)


def _template_parts(text: object, where: str) -> list[tuple[str, str | None]]:
    """``text`` as (literal, placeholder name or None) pairs; refuses bad placeholders."""
    if not isinstance(text, str):
        raise ConfigurationError(f"{where}: subjects must be strings")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigurationError(f"{where}: bad template {text!r} ({exc})") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not _FIELD.fullmatch(name)):
            raise ConfigurationError(
                f"{where}: bad placeholder in {text!r}: use {{user}} or {{attribute_name}}"
            )
        parts.append((literal, name))
    return parts


def _sample(parts: Iterable[tuple[str, str | None]]) -> str:
    # A placeholder stands for exactly one safe token: check the shape with one.
    return "".join(literal + ("x" if name else "") for literal, name in parts)


def template_sample(text: str, where: str) -> str:
    """``text`` with each ``{placeholder}`` replaced by one safe token, to check its shape.

    Raises:
        ConfigurationError: a malformed template or placeholder (``{0}``, ``{a.b}``).

    """
    return _sample(_template_parts(text, where))


class _Template:
    """A subject (or ``"subject queue"``) with ``{placeholder}`` fields, parsed once."""

    __slots__ = ("fields", "parts", "reserved_head", "text")

    def __init__(
        self, text: str, *, queue_allowed: bool, where: str, leading_placeholder: bool
    ) -> None:
        parts = _template_parts(text, where)
        self.text = text
        self.parts = tuple(parts)
        self.fields = tuple(name for _, name in parts if name is not None)
        if self.fields and not parts[0][0] and not leading_placeholder:
            raise ConfigurationError(
                f"{where}: {text!r} starts with a placeholder, so the identity would choose "
                "the subject's root; put a literal token first ('chat.{user}.>') or set "
                "allow_leading_placeholder=True on the set"
            )
        # Written by the operator: a template that itself starts with a reserved
        # prefix (_INBOX_{user}.>) is meant to.
        self.reserved_head = parts[0][0].startswith(RESERVED_PREFIXES) if parts else False
        issue = subject_issue(_sample(parts), queue_allowed=queue_allowed, strict=True)
        if issue is not None:
            raise ConfigurationError(f"{where}: {text!r}: {issue}")

    def expand(self, values: Mapping[str, Sequence[str]]) -> list[str]:
        if not self.fields:
            return [self.text]
        choices = [values[name] for name in self.fields]
        out = []
        for combination in itertools.product(*choices):
            chosen = iter(combination)
            subject = "".join(
                literal + (next(chosen) if name else "") for literal, name in self.parts
            )
            if not self.reserved_head and subject.startswith(RESERVED_PREFIXES):
                # Never echo the value: it is client-controlled.
                raise Denied(
                    f"a value of {', '.join(sorted(set(self.fields)))} would start a subject "
                    "with a reserved prefix (_INBOX, _R_, $)"
                )
            out.append(subject)
        return out


def _templates(
    value: object, *, queue_allowed: bool, where: str, leading_placeholder: bool
) -> tuple[_Template, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{where} must be a list of subjects, not {type(value).__name__}")
    return tuple(
        _Template(
            text, queue_allowed=queue_allowed, where=where, leading_placeholder=leading_placeholder
        )
        for text in value
    )


# -- connection conditions -------------------------------------------------------


def connection_types_of(info: ClientInfo) -> frozenset[str]:
    """The user-JWT connection types (``STANDARD``, ``WEBSOCKET`` ...) a client may be.

    nats-server reports ``client_info.kind`` and ``type``; MQTT over websocket
    reports ``mqtt`` like plain MQTT, so ``mqtt`` may be either. An unknown
    kind gives the empty set (no type-restricted role applies).
    """
    kind, kind_type = info.kind, info.type
    if kind == "Leafnode":
        return frozenset({"LEAFNODE_WS" if kind_type == "websocket" else "LEAFNODE"})
    if kind != "Client":
        return frozenset()
    return {
        "nats": frozenset({"STANDARD"}),
        "websocket": frozenset({"WEBSOCKET"}),
        "mqtt": frozenset({"MQTT", "MQTT_WS"}),
    }.get(kind_type, frozenset())


def _clock_seconds(text: str, where: str) -> int:
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ConfigurationError(f"{where}: time {text!r} is not HH:MM:SS (24-hour)")
    hours, minutes, seconds = (int(group) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True, slots=True)
class _Window:
    start: int  # seconds since local midnight
    end: int

    def end_if_inside(self, local: dt.datetime) -> dt.datetime | None:
        """The end of this window as an aware datetime if ``local`` is inside it."""
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        now = local.hour * 3600 + local.minute * 60 + local.second
        if self.start < self.end:
            inside = self.start <= now < self.end
            end_day = midnight
        elif now >= self.start:  # wraps midnight: the evening part
            inside, end_day = True, midnight + dt.timedelta(days=1)
        else:  # the morning part
            inside, end_day = now < self.end, midnight
        if not inside:
            return None
        naive = end_day.replace(tzinfo=None) + dt.timedelta(seconds=self.end)
        return naive.replace(tzinfo=local.tzinfo)


# -- permission sets -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PermissionSet:
    """What one role may do, and when the role applies.

    Subjects may be templates: ``{user}`` is the identity's name, any other
    ``{name}`` the identity attribute ``name`` (a string, an integer, or a
    list of them, which expands to one subject per value).

    Attributes:
        pub: subjects the role may publish to. No ``pub`` in any applying role
            means *nothing* may be published (``deny: [">"]`` is written), never
            the account's defaults; replies stay possible with ``resp``.
        sub: subjects the role may subscribe to (``"subject queue"`` allowed);
            none means nothing.
        deny_pub, deny_sub: denials. NATS applies denials to the whole user,
            so a role's denials also limit the subjects other roles allow.
        resp: may publish to the reply subjects of requests it receives.
        account: the target account for this role; roles that apply together
            must agree. ``None``: the builder's ``account``.
        ttl: seconds the user JWT lives at most for this role (the shortest of
            the applying roles wins); ``None``: the builder's ``default_ttl``.
        connection_types: the role applies only to these connection types
            (``STANDARD``, ``WEBSOCKET``, ``MQTT``, ``LEAFNODE`` ...), e.g.
            ``["WEBSOCKET"]`` for a browser role. Empty: any.
        src: the role applies only to clients from these CIDRs. Empty: any.
        times: the role applies only inside these daily windows
            (``TimeRange(start="08:00:00", end="18:00:00")``), in
            ``times_location`` (an IANA zone, required with ``times``); the user
            JWT then expires when the window ends.
        subs, data, payload: limits written into the user JWT (-1: unlimited).
            nats-server does not apply them to callout users (account limits
            apply); they are informational.
        tags: tags written into the user JWT.
        allow_leading_placeholder: allow templates that start with a
            placeholder (``{tenant}.>``). Off by default: the identity would
            choose the subject's root (a user named ``orders`` gets
            ``orders.>``). Values that would start a subject with a reserved
            prefix (``_INBOX``, ``_R_``, ``$``) deny the login either way.

    Conditions are checked by the builder at login: nats-server does not
    enforce ``allowed_connection_types`` or ``src`` for callout users.

    """

    pub: Sequence[str] = ()
    sub: Sequence[str] = ()
    deny_pub: Sequence[str] = ()
    deny_sub: Sequence[str] = ()
    resp: ResponsePermission | None = None
    account: str | None = None
    ttl: float | None = None
    connection_types: Collection[str] = ()
    src: Collection[str] = ()
    times: Sequence[TimeRange] = ()
    times_location: str = ""
    subs: int = NO_LIMIT
    data: int = NO_LIMIT
    payload: int = NO_LIMIT
    tags: Sequence[str] = ()
    allow_leading_placeholder: bool = False
    _compiled: _Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", _Compiled.of(self))


@dataclass(frozen=True, slots=True)
class _Compiled:
    pub: tuple[_Template, ...]
    sub: tuple[_Template, ...]
    deny_pub: tuple[_Template, ...]
    deny_sub: tuple[_Template, ...]
    connection_types: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    windows: tuple[_Window, ...]
    zone: dt.tzinfo | None

    @classmethod
    def of(cls, role: PermissionSet) -> _Compiled:
        leading = role.allow_leading_placeholder
        pub, sub, deny_pub, deny_sub = (
            _templates(subjects, queue_allowed=queue, where=where, leading_placeholder=leading)
            for subjects, queue, where in (
                (role.pub, False, "pub"),
                (role.sub, True, "sub"),
                (role.deny_pub, False, "deny_pub"),
                (role.deny_sub, True, "deny_sub"),
            )
        )
        for name, items in (("connection_types", role.connection_types), ("src", role.src)):
            if isinstance(items, str):
                raise ConfigurationError(f"{name} must be a list, not a string")
        types = frozenset(t.upper() for t in role.connection_types)
        unknown = sorted(types - CONNECTION_TYPES)
        if unknown:
            raise ConfigurationError(
                f"unknown connection types {unknown}; known: {sorted(CONNECTION_TYPES)}"
            )
        networks = []
        for cidr in role.src:
            # As Go's net.ParseCIDR reads it (nats-server refuses the JWT otherwise):
            # "address/bits", no bare addresses, netmasks, spaces or IPv6 zones.
            address, _, bits = str(cidr).partition("/")
            try:
                if not bits.isdigit() or "%" in address or any(c.isspace() for c in cidr):
                    raise ValueError(cidr)
                networks.append(ipaddress.ip_network(f"{address}/{int(bits)}", strict=False))
            except ValueError:
                raise ConfigurationError(f"src: {cidr!r} is not a CIDR (address/bits)") from None
        windows = []
        for window in role.times:
            start = _clock_seconds(window.start, "times")
            end = _clock_seconds(window.end, "times")
            if start == end:
                raise ConfigurationError(f"times: empty window {window.start}-{window.end}")
            windows.append(_Window(start, end))
        zone: dt.tzinfo | None = None
        if windows:
            if not role.times_location:
                raise ConfigurationError(
                    "times need times_location (an IANA zone such as 'UTC' or 'Europe/Berlin'): "
                    "the service and nats-server must read the windows in the same zone"
                )
            try:
                zone = zoneinfo.ZoneInfo(role.times_location)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigurationError(
                    f"times_location {role.times_location!r} is not an IANA zone"
                ) from None
        if role.ttl is not None and not (math.isfinite(role.ttl) and role.ttl > 0):
            raise ConfigurationError("ttl must be a positive number of seconds")
        if role.resp is not None and (role.resp.max < -1 or role.resp.ttl < 0):
            raise ConfigurationError("resp max must be >= -1 and ttl >= 0")
        return cls(pub, sub, deny_pub, deny_sub, types, tuple(networks), tuple(windows), zone)

    def applies(self, types: frozenset[str], host: str, now: float) -> bool | dt.datetime:
        """Whether the role applies; a datetime is "yes, until then" (a time window)."""
        if self.connection_types and not self.connection_types & types:
            return False
        if self.networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
            candidates = (address,) if mapped is None else (address, mapped)
            if not any(a in network for a in candidates for network in self.networks):
                return False
        if not self.windows or self.zone is None:
            return True
        local = dt.datetime.fromtimestamp(now, self.zone)
        ends = [end for w in self.windows if (end := w.end_if_inside(local)) is not None]
        return max(ends) if ends else False


# -- the builder -------------------------------------------------------------------


def _merge_resp(responses: list[ResponsePermission]) -> ResponsePermission | None:
    if not responses:
        return None
    maxes = [r.max for r in responses]
    most = -1 if -1 in maxes else max(*maxes, 1)
    ttl = max(r.ttl or _DEFAULT_RESPONSE_TTL_NS for r in responses)
    return ResponsePermission(max=most, ttl=ttl)


def _merge_limit(values: list[int]) -> int:
    return NO_LIMIT if any(v < 0 for v in values) else max(values)


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class RoleBasedPermissions:
    """Grants from roles: the identity's groups select :class:`PermissionSet` s, merged.

    For a login, the roles are the identity's ``groups`` (or what ``roles_of``
    returns) that have a set in ``roles``; of those, the ones whose conditions
    (connection type, source address, time window) the connection meets
    *apply*. The grant is their union: allowed subjects, denials (which NATS
    applies to the whole user), response permissions, the shortest TTL. No
    known role, or none that applies, denies the login.

    Every grant expires: after the shortest ``ttl`` of the applying roles, else
    ``default_ttl``, never later than ``max_ttl``, the end of a time window,
    or the credential's own expiry (the identity attribute ``expires_at``, set
    by the OIDC and certificate lookups).

    Example:
        ``RoleBasedPermissions({"chat": PermissionSet(pub=["chat.{user}.>"],
        sub=["chat.>", "_INBOX_{user}.>"])}, account="APP")``

    Args:
        roles: role name -> permission set.
        account: the target account when the applying roles name none: an
            account name (config mode) or public key (operator mode), or a
            callable ``(identity, request) -> account``.
        default_ttl: seconds a user JWT lives when no applying role sets a
            ``ttl``. ``None`` only with ``max_ttl=None``: no expiry at all.
        max_ttl: the longest any user JWT lives, whatever roles say.
        default_role: the role for identities without a known role;
            ``None`` denies them.
        roles_of: the identity's roles; default: ``identity.groups``.
        unsafe_values: template values that could widen a permission
            (``a.>``, ``*``, ``$SYS``, empty) ``"deny"`` the login (default) or
            are ``"escape"`` d (percent-encoded).
        clock: Unix time; injectable for tests.

    """

    def __init__(
        self,
        roles: Mapping[str, PermissionSet],
        *,
        account: str | AccountChooser | None = None,
        default_ttl: float | None = 3600,
        max_ttl: float | None = 86400,
        default_role: str | None = None,
        roles_of: Callable[[Identity], Iterable[str]] | None = None,
        unsafe_values: UnsafeValues = "deny",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not roles:
            raise ConfigurationError("RoleBasedPermissions needs at least one role")
        for name, role in roles.items():
            if not isinstance(role, PermissionSet):
                raise ConfigurationError(f"role {name!r} must be a PermissionSet")
            if role.account is None and account is None:
                raise ConfigurationError(
                    f"role {name!r} names no account and no default account is given"
                )
        for name, value in (("default_ttl", default_ttl), ("max_ttl", max_ttl)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds or None")
        if default_ttl is None and max_ttl is not None:
            raise ConfigurationError("default_ttl=None (no expiry) needs max_ttl=None too")
        if default_ttl is not None and max_ttl is not None and default_ttl > max_ttl:
            raise ConfigurationError("default_ttl cannot exceed max_ttl")
        if default_role is not None and default_role not in roles:
            raise ConfigurationError(f"default_role {default_role!r} is not one of the roles")
        if unsafe_values not in ("deny", "escape"):
            raise ConfigurationError("unsafe_values must be 'deny' or 'escape'")
        self.roles: Mapping[str, PermissionSet] = dict(roles)
        self.account = account
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.default_role = default_role
        self._roles_of = roles_of
        self._escape = unsafe_values == "escape"
        self._clock = clock

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, source: str = "permissions"
    ) -> RoleBasedPermissions:
        """Build from a mapping shaped like the file of :meth:`from_file`."""
        check_keys(
            data,
            ("roles", "account", "default_ttl", "max_ttl", "default_role", "unsafe_values"),
            source,
        )
        roles = data.get("roles")
        if not isinstance(roles, Mapping) or not roles:
            raise ConfigurationError(f"{source}: [roles] must be a non-empty table")
        sets = {}
        for name, entry in roles.items():
            where = f"{source}: roles.{name}"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be a table")
            sets[str(name)] = _role_from_mapping(entry, where)
        account = data.get("account")
        if account is not None and not isinstance(account, str):
            raise ConfigurationError(f"{source}: account must be a string")
        options: dict[str, float | None] = {}
        for key in ("default_ttl", "max_ttl"):
            if key in data:
                value = data[key]
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                ):
                    raise ConfigurationError(f"{source}: {key} must be a number of seconds")
                options[key] = value
        default_role = data.get("default_role")
        if default_role is not None and not isinstance(default_role, str):
            raise ConfigurationError(f"{source}: default_role must be a string")
        unsafe = data.get("unsafe_values", "deny")
        if unsafe not in ("deny", "escape"):
            raise ConfigurationError(f"{source}: unsafe_values must be 'deny' or 'escape'")
        try:
            return cls(
                sets,
                account=account,
                default_role=default_role,
                unsafe_values="escape" if unsafe == "escape" else "deny",
                default_ttl=options.get("default_ttl", 3600),
                max_ttl=options.get("max_ttl", 86400),
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> RoleBasedPermissions:
        """Load roles from a TOML or JSON file.

        ```toml
        account = "APP"
        default_ttl = 3600

        [roles.chat]
        pub = ["chat.{user}.>"]
        sub = ["chat.>", "_INBOX_{user}.>"]
        resp = { max = 1 }

        [roles.browser]
        sub = ["chat.public"]
        connection_types = ["WEBSOCKET"]
        ```
        """
        return cls.from_mapping(load_document(path), source=str(path))

    # -- building -----------------------------------------------------------------

    def roles_for(self, identity: Identity) -> list[str]:
        """The identity's roles that have a permission set, in ``roles`` order."""
        wanted = set(self._roles_of(identity) if self._roles_of else identity.groups)
        known = [name for name in self.roles if name in wanted]
        if not known and self.default_role is not None:
            known = [self.default_role]
        return known

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        """Merge the applying roles of ``identity`` into a grant, or raise ``Denied``."""
        names = self.roles_for(identity)
        if not names:
            raise Denied("identity has no role with permissions")
        now = self._clock()
        info = request.client_info
        types = connection_types_of(info)
        applying: list[PermissionSet] = []
        window_ends: list[float] = []
        windowed = 0
        for name in names:
            role = self.roles[name]
            verdict = role._compiled.applies(types, info.host, now)  # noqa: SLF001
            if verdict is False:
                continue
            applying.append(role)
            if isinstance(verdict, dt.datetime):
                windowed += 1
                window_ends.append(verdict.timestamp())
        if not applying:
            raise Denied(
                "no role of this identity applies to this connection (type, address, time)"
            )
        return self._grant(
            identity, request, applying, window_ends, all_windowed=windowed == len(applying)
        )

    def _grant(
        self,
        identity: Identity,
        request: AuthorizationRequest,
        applying: list[PermissionSet],
        window_ends: list[float],
        *,
        all_windowed: bool,
    ) -> Grant:
        values = _TemplateValues(identity, escape=self._escape)
        pub: list[str] = []
        sub: list[str] = []
        deny_pub: list[str] = []
        deny_sub: list[str] = []
        for role in applying:
            compiled = role._compiled  # noqa: SLF001
            pub += values.expand(compiled.pub, deny=False)
            sub += values.expand(compiled.sub, deny=False)
            deny_pub += values.expand(compiled.deny_pub, deny=True)
            deny_sub += values.expand(compiled.deny_sub, deny=True)
        resp = _merge_resp([role.resp for role in applying if role.resp is not None])
        # An empty allow list would mean "the account's defaults" (often: everything).
        if not pub and resp is None:
            deny_pub.append(_ALL)
        if not sub:
            deny_sub.append(_ALL)
        pub, sub, deny_pub, deny_sub = map(_dedupe, (pub, sub, deny_pub, deny_sub))
        total = len(pub) + len(sub) + len(deny_pub) + len(deny_sub)
        if total > MAX_EXPANDED_SUBJECTS:
            raise Denied("permission templates expand to too many subjects")
        for direction, subjects, queue in (
            ("pub", pub, False),
            ("sub", sub, True),
            ("pub", deny_pub, False),
            ("sub", deny_sub, True),
        ):
            for subject in subjects:
                if subject_issue(subject, queue_allowed=queue, strict=True) is not None:
                    # Cannot happen with safe values; never let it through if it does.
                    logger.error(
                        "a %s permission template expanded to an invalid subject", direction
                    )
                    raise Denied("permission templates produced an invalid subject")
        zones = {role.times_location for role in applying}
        windows = all_windowed and len(zones) == 1
        return Grant(
            account=self._account(identity, request, applying),
            pub=Permission(allow=pub, deny=deny_pub),
            sub=Permission(allow=sub, deny=deny_sub),
            resp=resp,
            ttl=self._ttl(applying),
            expires_at=self._expires_at(identity, window_ends),
            src=tuple(_union_if_all([list(role.src) for role in applying])),
            # The windows are informative (nats-server also times the connection out at
            # the window's end); expires_at already holds the earliest end.
            times=tuple(_union_if_all([list(role.times) for role in applying])) if windows else (),
            times_location=zones.pop() if windows else "",
            allowed_connection_types=tuple(
                _union_if_all([sorted(role._compiled.connection_types) for role in applying])  # noqa: SLF001
            ),
            subs=_merge_limit([r.subs for r in applying]),
            data=_merge_limit([r.data for r in applying]),
            payload=_merge_limit([r.payload for r in applying]),
            tags=tuple(_dedupe(tag for r in applying for tag in r.tags)),
        )

    def _account(
        self, identity: Identity, request: AuthorizationRequest, applying: list[PermissionSet]
    ) -> str:
        accounts = {role.account for role in applying if role.account is not None}
        if len(accounts) > 1:
            raise Denied("the roles of this identity place it in different accounts")
        if accounts:
            return accounts.pop()
        chooser = self.account
        account = chooser(identity, request) if callable(chooser) else chooser
        if not isinstance(account, str) or not account:
            raise Denied("no target account for this identity")
        return account

    def _ttl(self, applying: list[PermissionSet]) -> float | None:
        ttls = [role.ttl for role in applying if role.ttl is not None]
        ttl = min(ttls) if ttls else self.default_ttl
        if self.max_ttl is not None:
            ttl = self.max_ttl if ttl is None else min(ttl, self.max_ttl)
        return ttl

    def _expires_at(self, identity: Identity, window_ends: list[float]) -> float | None:
        limits = list(window_ends)
        credential = identity.attributes.get(EXPIRES_AT)
        if credential is not None:
            if isinstance(credential, bool) or not isinstance(credential, int | float):
                raise Denied("identity has an invalid credential expiry")
            limits.append(float(credential))
        return min(limits) if limits else None

    def __repr__(self) -> str:
        return (
            f"RoleBasedPermissions(roles={sorted(self.roles)}, default_ttl={self.default_ttl}, "
            f"max_ttl={self.max_ttl})"
        )


def _union_if_all(lists: list[list[_H]]) -> list[_H]:
    """The union of per-role restrictions, or none if one applying role is unrestricted.

    Written into the user JWT for information: the builder already checked them.
    """
    if not all(lists):
        return []
    return list(dict.fromkeys(item for items in lists for item in items))


class _TemplateValues:
    """Values for the placeholders of one identity, made safe, computed once each."""

    __slots__ = ("_cache", "_escape", "_identity")

    def __init__(self, identity: Identity, *, escape: bool) -> None:
        self._identity = identity
        self._escape = escape
        self._cache: dict[str, tuple[str, ...]] = {}

    def get(self, name: str) -> tuple[str, ...]:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        if name == "user":
            raw: object = self._identity.name
        elif name in self._identity.attributes:
            raw = self._identity.attributes[name]
        else:
            raise Denied(f"identity has no attribute {name!r} for the permission templates")
        items: list[object]
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            items = [raw]
        elif isinstance(raw, list | tuple | set | frozenset):
            items = sorted(raw, key=str) if isinstance(raw, set | frozenset) else list(raw)
        else:
            raise Denied(f"identity attribute {name!r} cannot be used in a subject")
        safe: list[str] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise Denied(f"identity attribute {name!r} cannot be used in a subject")
            token = safe_token(str(item), escape=self._escape)
            if token is None:
                # Never echo the value: it is client-controlled.
                raise Denied(f"identity attribute {name!r} is not safe in a subject")
            safe.append(token)
        result = tuple(dict.fromkeys(safe))
        self._cache[name] = result
        return result

    def expand(self, templates: tuple[_Template, ...], *, deny: bool) -> list[str]:
        out: list[str] = []
        for template in templates:
            values = {name: self.get(name) for name in template.fields}
            subjects = template.expand(values)
            if deny and not subjects:
                # A denial that vanishes (an empty list attribute) would widen the grant.
                raise Denied("a denied-subject template expands to nothing for this identity")
            out += subjects
            if len(out) > MAX_EXPANDED_SUBJECTS:
                raise Denied("permission templates expand to too many subjects")
        return out


_ROLE_KEYS: Final = (
    "pub",
    "sub",
    "deny_pub",
    "deny_sub",
    "resp",
    "account",
    "ttl",
    "connection_types",
    "src",
    "times",
    "times_location",
    "subs",
    "data",
    "payload",
    "tags",
    "allow_leading_placeholder",
)


def _role_from_mapping(entry: Mapping[str, object], where: str) -> PermissionSet:
    check_keys(entry, _ROLE_KEYS, where)
    kwargs: dict[str, object] = {}
    for key in ("pub", "sub", "deny_pub", "deny_sub", "connection_types", "src", "tags"):
        if key in entry:
            value = entry[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigurationError(f"{where}: {key} must be a list of strings")
            kwargs[key] = tuple(value)
    for key in ("account", "times_location"):
        if key in entry:
            if not isinstance(entry[key], str):
                raise ConfigurationError(f"{where}: {key} must be a string")
            kwargs[key] = entry[key]
    for key in ("ttl", "subs", "data", "payload"):
        if key in entry:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{where}: {key} must be a number")
            kwargs[key] = value if key == "ttl" else int(value)
    if "allow_leading_placeholder" in entry:
        if not isinstance(entry["allow_leading_placeholder"], bool):
            raise ConfigurationError(f"{where}: allow_leading_placeholder must be true or false")
        kwargs["allow_leading_placeholder"] = entry["allow_leading_placeholder"]
    if "resp" in entry:
        resp = entry["resp"]
        if not isinstance(resp, Mapping) or set(resp) - {"max", "ttl"}:
            raise ConfigurationError(f"{where}: resp must be a table with max and/or ttl")
        numbers = [resp.get("max", 1), resp.get("ttl", 0)]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
            raise ConfigurationError(f"{where}: resp max and ttl must be integers")
        kwargs["resp"] = ResponsePermission(max=int(numbers[0]), ttl=int(numbers[1]))
    if "times" in entry:
        times = entry["times"]
        if not isinstance(times, list) or not all(
            isinstance(t, Mapping) and set(t) == {"start", "end"} for t in times
        ):
            raise ConfigurationError(f"{where}: times must be a list of {{start, end}} tables")
        kwargs["times"] = tuple(TimeRange(start=str(t["start"]), end=str(t["end"])) for t in times)
    try:
        return PermissionSet(**kwargs)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
