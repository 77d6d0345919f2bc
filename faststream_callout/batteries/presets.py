"""Permission presets that know NATS: private inboxes, JetStream, KV, Object Store, services.

NATS permissions are subject-level and low-level: a KV reader needs a handful of
``$JS.API`` subjects besides ``$KV.<bucket>.>``, and a missing one shows up as a
*timeout* in the client, not as a permission error. Each function here returns a
:class:`Preset`, the exact publish and subscribe subjects (and response
permission) that one NATS operation needs, taken from nats-server's JetStream
API (``server/jetstream_api.go``, ``consumer.go``) and from what the clients send
(nats-py 2.16, whose KV, Object Store and micro implementations follow ADR-8,
ADR-20 and ADR-32 like the other official clients). Presets add up with ``+``
and become a grant or a role::

    alice = private_inbox("alice") + kv_read("config") + jetstream_publisher("ORDERS", ["orders.>"])
    grant = alice.grant("APP", ttl=3600)             # a Grant, for your own PermissionBuilder
    role = (private_inbox("{user}") + kv_read("config")).role(ttl=600)   # a PermissionSet

In a role, names may be templates (``private_inbox("{user}")``,
``kv_read_write("{tenant}")``): :class:`RoleBasedPermissions` expands them per
identity with its safety checks. :meth:`Preset.grant` wants final values.

Replies: every JetStream, KV, Object Store and service operation is a request,
and its answer arrives in the client's inbox. A preset that needs one says so
(``needs_inbox``), and :meth:`Preset.grant` refuses it without an inbox:
compose it with :func:`private_inbox` (or, knowing that every client with it
reads every other client's replies, ``Preset(sub=["_INBOX.>"], inbox="_INBOX")``).

Why in batteries, not core: a preset is pure data, but it turns into both a
core :class:`~faststream_callout.Grant` and a batteries
:class:`~faststream_callout.batteries.PermissionSet` (templates, conditions),
and it sits next to the permission builder that expands its templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from faststream_callout.batteries.permissions import (
    PermissionSet,
    _merge_resp,
    safe_token,
    template_sample,
)
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.policy import Grant
from faststream_callout.protocol.claims import Permission, ResponsePermission
from faststream_callout.protocol.validation import subject_issue

__all__ = [
    "DEFAULT_API_PREFIX",
    "INBOX_PREFIX",
    "MICRO_QUEUE_GROUP",
    "Preset",
    "inbox_prefix",
    "jetstream_admin",
    "jetstream_consumer",
    "jetstream_publisher",
    "kv_read",
    "kv_read_write",
    "kv_watch",
    "kv_write",
    "object_get",
    "object_put",
    "private_inbox",
    "service_call",
    "service_serve",
]

#: The JetStream API's subject prefix; with a domain it is ``$JS.<domain>.API``.
DEFAULT_API_PREFIX: Final = "$JS.API"
#: What a private inbox prefix starts with: ``_INBOX_<id>``.
INBOX_PREFIX: Final = "_INBOX_"
#: The queue group NATS micro services subscribe their endpoints with by default.
MICRO_QUEUE_GROUP: Final = "q"
_MICRO_VERBS: Final = ("PING", "INFO", "STATS")
_BUCKET: Final = re.compile(r"[A-Za-z0-9_-]+")
_ALL: Final = ">"
_ONE_REPLY: Final = ResponsePermission(max=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    """Subjects to allow (and deny) for some NATS operations; add presets with ``+``.

    Attributes:
        pub, sub: subjects to allow publishing and subscribing to (``sub``
            entries may be ``"subject queue"``).
        deny_pub, deny_sub: subjects to deny (NATS applies denials to the whole user).
        resp: may publish to the reply subjects of requests it receives.
        inbox: the inbox prefix this preset lets the client read replies on
            (``_INBOX_alice``), for the client's ``inbox_prefix`` setting.
        needs_inbox: the operations get their answers in the client's inbox.

    """

    pub: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    deny_pub: tuple[str, ...] = ()
    deny_sub: tuple[str, ...] = ()
    resp: ResponsePermission | None = None
    inbox: str | None = None
    needs_inbox: bool = False

    def __post_init__(self) -> None:
        for name in ("pub", "sub", "deny_pub", "deny_sub"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ConfigurationError(f"{name} must be a list of subjects")
            subjects = tuple(dict.fromkeys(value))
            queue_allowed = name.endswith("sub")
            for subject in subjects:
                issue = subject_issue(
                    template_sample(subject, name), queue_allowed=queue_allowed, strict=True
                )
                if issue is not None:
                    raise ConfigurationError(f"{name}: {issue}")
            object.__setattr__(self, name, subjects)

    def __add__(self, other: Preset) -> Preset:
        if not isinstance(other, Preset):
            return NotImplemented
        if self.inbox and other.inbox and self.inbox != other.inbox:
            raise ConfigurationError(
                f"two inboxes ({self.inbox}, {other.inbox}): a client has one inbox prefix"
            )
        responses = [r for r in (self.resp, other.resp) if r is not None]
        return Preset(
            pub=self.pub + other.pub,
            sub=self.sub + other.sub,
            deny_pub=self.deny_pub + other.deny_pub,
            deny_sub=self.deny_sub + other.deny_sub,
            resp=_merge_resp(responses) if len(responses) > 1 else next(iter(responses), None),
            inbox=self.inbox or other.inbox,
            needs_inbox=self.needs_inbox or other.needs_inbox,
        )

    def grant(self, account: str, **fields: Any) -> Grant:  # noqa: ANN401 - Grant's fields
        """A :class:`~faststream_callout.Grant` of exactly these permissions.

        ``fields`` are the grant's other fields (``ttl=``, ``name=``, ...). A
        direction without allowed subjects is closed (``deny: [">"]``), never
        left to the account's defaults; with ``resp`` the client may still reply.

        Raises:
            ConfigurationError: a ``{placeholder}`` is left (use :meth:`role`), or
                a preset that needs an inbox has none.

        """
        for subject in (*self.pub, *self.sub, *self.deny_pub, *self.deny_sub):
            if "{" in subject or "}" in subject:
                raise ConfigurationError(
                    f"{subject!r} is a template: give the value, or use the preset in a role "
                    "(Preset.role) that RoleBasedPermissions expands"
                )
        if self.needs_inbox and self.inbox is None:
            raise ConfigurationError(
                "these operations answer in the client's inbox: add private_inbox(<id>) "
                "(and connect with its inbox_prefix), or the replies never arrive"
            )
        deny_pub, deny_sub = list(self.deny_pub), list(self.deny_sub)
        if not self.pub and self.resp is None:
            deny_pub.append(_ALL)
        if not self.sub:
            deny_sub.append(_ALL)
        return Grant(
            account=account,
            pub=Permission(allow=list(self.pub), deny=deny_pub),
            sub=Permission(allow=list(self.sub), deny=deny_sub),
            resp=self.resp,
            **fields,
        )

    def role(self, **conditions: Any) -> PermissionSet:  # noqa: ANN401 - PermissionSet's fields
        """A :class:`~faststream_callout.batteries.PermissionSet` of these permissions.

        ``conditions`` are the set's other fields (``ttl=``, ``connection_types=``,
        ``account=``, ...). Templates (``{user}``) are expanded per identity by
        :class:`~faststream_callout.batteries.RoleBasedPermissions`. Whether an
        inbox is there is not checked: another role of the identity may bring it.
        """
        return PermissionSet(
            pub=self.pub,
            sub=self.sub,
            deny_pub=self.deny_pub,
            deny_sub=self.deny_sub,
            resp=self.resp,
            **conditions,
        )

    def subjects(self) -> dict[str, list[str]]:
        """The non-empty subject lists by name (``pub``, ``sub``, ``deny_pub``, ``deny_sub``)."""
        return {
            name: list(getattr(self, name))
            for name in ("pub", "sub", "deny_pub", "deny_sub")
            if getattr(self, name)
        }


# -- checking names ------------------------------------------------------------------


def _token(value: str, what: str) -> str:
    """``value`` if it is one safe subject token (placeholders stand for one), else refuse."""
    sample = template_sample(value, what)
    if safe_token(sample) != sample or "/" in sample or "\\" in sample:
        raise ConfigurationError(
            f"{what} {value!r} must be one subject token: no '.', '*', '>', '%', '/', "
            "whitespace or leading '$'"
        )
    return value


def _bucket(value: str, what: str) -> str:
    sample = template_sample(value, what)
    if not _BUCKET.fullmatch(sample):
        raise ConfigurationError(f"{what} {value!r} may only hold letters, digits, '_' and '-'")
    return value


def _subjects(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ConfigurationError(f"{what} must be a list of subjects, not a string")
    subjects = tuple(values)
    if not subjects:
        raise ConfigurationError(f"{what}: name at least one subject")
    for subject in subjects:
        issue = subject_issue(template_sample(subject, what), strict=True)
        if issue is not None:
            raise ConfigurationError(f"{what}: {issue}")
    return subjects


def _api(domain: str | None, api_prefix: str | None) -> str:
    if domain is not None and api_prefix is not None:
        raise ConfigurationError("give a JetStream domain or an API prefix, not both")
    if domain is not None:
        return f"$JS.{_token(domain, 'domain')}.API"
    if api_prefix is None:
        return DEFAULT_API_PREFIX
    sample = template_sample(api_prefix, "api_prefix")
    issue = subject_issue(sample, strict=True)
    if issue is not None or "*" in sample.split(".") or _ALL in sample.split("."):
        raise ConfigurationError(f"api_prefix {api_prefix!r} must be a subject without wildcards")
    return api_prefix


def _acks(stream: str, consumer: str, domain: str | None) -> tuple[str, ...]:
    """Where a client acknowledges the consumer's messages (the messages' reply subjects).

    nats-server writes ``$JS.ACK.<stream>.<consumer>.<5 numbers>`` (9 tokens),
    or with the ``js_ack_fc_v2`` feature flag
    ``$JS.ACK.<domain or _>.<account hash>.<stream>.<consumer>.<5 numbers>[...]``
    (11 or more). The two patterns cannot match each other's subjects.
    """
    return (
        f"$JS.ACK.{stream}.{consumer}.*.*.*.*.*",
        f"$JS.ACK.{domain or '_'}.*.{stream}.{consumer}.*.*.*.*.>",
    )


def _flow_control(stream: str, consumer: str, domain: str | None) -> tuple[str, ...]:
    """Where a push client answers flow-control messages (v1: 5 tokens, v2: 7)."""
    return (
        f"$JS.FC.{stream}.{consumer}.*",
        f"$JS.FC.{domain or '_'}.*.{stream}.{consumer}.*",
    )


# -- private inbox --------------------------------------------------------------------


def inbox_prefix(inbox_id: str, *, escape: bool = False) -> str:
    """The client-side inbox prefix for :func:`private_inbox` (``_INBOX_<id>``).

    Pass it to the client: nats-py ``nats.connect(inbox_prefix=...)``, nats.go
    ``nats.CustomInboxPrefix(...)``, nats.js ``connect({inboxPrefix: ...})``,
    nats.java ``Options.Builder().inboxPrefix(...)``, nats.net
    ``NatsOpts { InboxPrefix = ... }``, async-nats ``ConnectOptions::custom_inbox_prefix``.
    """
    return INBOX_PREFIX + _inbox_id(inbox_id, escape=escape)


def _inbox_id(inbox_id: str, *, escape: bool) -> str:
    if not escape:
        return _token(inbox_id, "inbox id")
    escaped = safe_token(inbox_id, escape=True)
    if escaped is None:
        raise ConfigurationError("an inbox id cannot be empty")
    # A value, never a template: braces are encoded too ('%' already is, so
    # the mapping stays injective).
    return escaped.replace("{", "%7B").replace("}", "%7D")


def private_inbox(inbox_id: str, *, respond: bool = False, escape: bool = False) -> Preset:
    """Replies for this identity only: subscribe to ``_INBOX_<id>.>``.

    Granting ``_INBOX.>`` lets every client read every other client's replies.
    A private inbox gives each identity its own prefix; the client must then
    create its inboxes there (see :func:`inbox_prefix` for each client's
    setting), or its requests wait for replies it may not receive.

    The id is one subject token (no ``.``, ``*``, ``>``, whitespace, control
    characters or leading ``$``), so no identity's inbox is a prefix of
    another's: ``_INBOX_bob.>`` never matches ``_INBOX_bob2.x`` or
    ``_INBOX_bob.x.y`` of a user ``bob.x``, which cannot exist. In a role use
    ``private_inbox("{user}")``: RoleBasedPermissions refuses unsafe values.

    Args:
        inbox_id: the identity's id, or a template such as ``"{user}"``.
        respond: also allow answering requests this client receives
            (``resp``, one reply each): their reply subjects are other
            identities' private inboxes, which it may not publish to otherwise.
        escape: percent-encode an unsafe id instead of refusing it
            (injective: distinct ids stay distinct); for ids from the client
            side, such as a user name, in your own PermissionBuilder. The id is
            then a value, never a template.

    """
    prefix = inbox_prefix(inbox_id, escape=escape)
    return Preset(sub=(f"{prefix}.>",), resp=_ONE_REPLY if respond else None, inbox=prefix)


# -- JetStream ------------------------------------------------------------------------


def jetstream_publisher(
    stream: str,
    subjects: Sequence[str],
    *,
    domain: str | None = None,
    api_prefix: str | None = None,
) -> Preset:
    """Publish to a stream with acknowledgement (``js.publish``), nothing else.

    Allows publishing to ``subjects`` (the stream's subjects, or some of them)
    and ``<api>.STREAM.INFO.<stream>``; the publish acknowledgement comes back
    as a reply to the client's inbox.

    Args:
        stream: the stream's name.
        subjects: the subjects to publish to.
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream = _token(stream, "stream")
    return Preset(
        pub=(*_subjects(subjects, "subjects"), f"{api}.STREAM.INFO.{stream}"),
        needs_inbox=True,
    )


def jetstream_consumer(
    stream: str,
    consumer: str | None = None,
    *,
    push: bool = False,
    deliver_subject: str | None = None,
    deliver_group: str | None = None,
    create: bool = False,
    domain: str | None = None,
    api_prefix: str | None = None,
) -> Preset:
    """Read a stream through a consumer and acknowledge: pull or push, durable or ephemeral.

    Always: ``<api>.STREAM.INFO.<stream>``, ``<api>.CONSUMER.INFO.<stream>.<consumer>``
    and the acknowledgements ``$JS.ACK.<stream>.<consumer>...`` (both formats, see
    docs/permissions.md). Pull: ``<api>.CONSUMER.MSG.NEXT.<stream>.<consumer>``; the
    messages arrive in the client's inbox. Push: the flow-control replies
    ``$JS.FC.<stream>.<consumer>...``; the messages arrive on the deliver
    subject (``deliver_subject``, else an inbox of the client's, as nats-py makes).

    An ephemeral consumer (``consumer=None``) has a name only known once it
    exists, so the consumer token is ``*``: any consumer of this stream.
    Creating consumers (ephemeral ones, or ``create=True`` for a durable)
    allows ``<api>.CONSUMER.CREATE.<stream>.<consumer>[.<filter>]``, and for
    push ``<api>.CONSUMER.CREATE.<stream>`` (nats-py's ephemeral push consumer)
    or ``<api>.CONSUMER.DURABLE.CREATE.<stream>.<consumer>`` (its durable one).
    The client then chooses the consumer's configuration, including a push
    consumer's deliver subject, where nats-server delivers the stream's
    messages whatever the client's publish permissions: grant creation to
    clients trusted with that, or create durables yourself and bind to them.

    Nothing else: no other stream, no stream or consumer changes, no deletes.
    nats-py looks a stream up by subject (``$JS.API.STREAM.NAMES``) when
    ``stream=`` is not given: pass it.

    Args:
        stream: the stream's name.
        consumer: the durable consumer's name; ``None``: ephemeral consumers.
        push: a push consumer (else pull).
        deliver_subject: a push consumer's fixed deliver subject (a durable
            made by an administrator); subscribed to, in ``deliver_group`` if given.
        deliver_group: the push consumer's deliver (queue) group.
        create: the client may create the durable ``consumer`` itself.
        domain: the JetStream domain (``$JS.<domain>.API``, and the acks' domain).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream = _token(stream, "stream")
    if consumer is not None:
        _token(consumer, "consumer")
    if not push and (deliver_subject is not None or deliver_group is not None):
        raise ConfigurationError("deliver_subject and deliver_group are for push consumers")
    if deliver_group is not None and deliver_subject is None:
        raise ConfigurationError("deliver_group needs the deliver_subject")
    name = consumer or "*"
    pub = [f"{api}.STREAM.INFO.{stream}", f"{api}.CONSUMER.INFO.{stream}.{name}"]
    if push:
        pub += _flow_control(stream, name, domain)
    else:
        pub.append(f"{api}.CONSUMER.MSG.NEXT.{stream}.{name}")
    pub += _acks(stream, name, domain)
    if consumer is None or create:
        pub += [
            f"{api}.CONSUMER.CREATE.{stream}.{name}",
            f"{api}.CONSUMER.CREATE.{stream}.{name}.>",
        ]
        if push:
            pub.append(
                f"{api}.CONSUMER.CREATE.{stream}"
                if consumer is None
                else f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"
            )
    sub: tuple[str, ...] = ()
    if deliver_subject is not None:
        (subject,) = _subjects([deliver_subject], "deliver_subject")
        if deliver_group is not None:
            subject += " " + _token(deliver_group, "deliver_group")
        sub = (subject,)
    return Preset(pub=tuple(pub), sub=sub, needs_inbox=True)


def jetstream_admin(
    stream: str, *, domain: str | None = None, api_prefix: str | None = None
) -> Preset:
    """Administer one stream: create, update, inspect, purge, delete it, and its consumers.

    The stream's API subjects: ``<api>.STREAM.{CREATE,UPDATE,INFO,DELETE,PURGE}.<stream>``,
    ``<api>.STREAM.MSG.{GET,DELETE}.<stream>``, ``<api>.DIRECT.GET.<stream>[.>]``,
    ``<api>.CONSUMER.{CREATE,NAMES,LIST}.<stream>``, ``<api>.CONSUMER.CREATE.<stream>.>``,
    ``<api>.CONSUMER.DURABLE.CREATE.<stream>.*``,
    ``<api>.CONSUMER.{INFO,DELETE,PAUSE,UNPIN}.<stream>.*``. Not included: the
    account-wide listings (``STREAM.NAMES``, ``STREAM.LIST``, ``INFO``),
    snapshots and restores, cluster operations (leader step-down, peer removal),
    reading through consumers (add :func:`jetstream_consumer`) and publishing
    (add :func:`jetstream_publisher`).

    Args:
        stream: the stream's name.
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream = _token(stream, "stream")
    pub = [f"{api}.STREAM.{verb}.{stream}" for verb in ("CREATE", "UPDATE", "INFO", "DELETE")]
    pub += [
        f"{api}.STREAM.PURGE.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.STREAM.MSG.DELETE.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{api}.CONSUMER.NAMES.{stream}",
        f"{api}.CONSUMER.LIST.{stream}",
    ]
    pub += [f"{api}.CONSUMER.{verb}.{stream}.*" for verb in ("INFO", "DELETE", "PAUSE", "UNPIN")]
    return Preset(pub=tuple(pub), needs_inbox=True)


# -- Key/Value --------------------------------------------------------------------------


def _kv(bucket: str, keys: str) -> tuple[str, str]:
    bucket = _bucket(bucket, "bucket")
    (subject,) = _subjects([f"$KV.{bucket}.{keys}"], "keys")
    return f"KV_{bucket}", subject


def kv_read(
    bucket: str, keys: str = _ALL, *, domain: str | None = None, api_prefix: str | None = None
) -> Preset:
    """Get keys of a KV bucket (``kv.get``); read-only.

    Allows ``<api>.STREAM.INFO.KV_<bucket>`` (binding to the bucket) and the
    direct get of the keys, ``<api>.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<keys>``.
    For the whole bucket (``keys=">"``) also the gets by revision and of
    buckets without direct gets: ``<api>.DIRECT.GET.KV_<bucket>`` and
    ``<api>.STREAM.MSG.GET.KV_<bucket>``. With a key prefix those stay closed
    (they name the key in the request body, where permissions cannot look),
    so the bucket needs direct gets (nats-py: ``KeyValueConfig(direct=True)``;
    its default is without) and ``get(key, revision=...)`` is refused.

    Args:
        bucket: the bucket's name.
        keys: the keys, as a subject pattern under the bucket: ``">"`` (all),
            ``"users.alice.>"``, ``"config"``.
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream, subject = _kv(bucket, keys)
    pub = [f"{api}.STREAM.INFO.{stream}", f"{api}.DIRECT.GET.{stream}.{subject}"]
    if keys == _ALL:
        pub += [f"{api}.DIRECT.GET.{stream}", f"{api}.STREAM.MSG.GET.{stream}"]
    return Preset(pub=tuple(pub), needs_inbox=True)


def kv_write(
    bucket: str, keys: str = _ALL, *, domain: str | None = None, api_prefix: str | None = None
) -> Preset:
    """Put, create, update, delete and purge keys of a KV bucket; no reading.

    Allows publishing to ``$KV.<bucket>.<keys>`` (the acknowledgement comes to
    the inbox) and ``<api>.STREAM.INFO.KV_<bucket>``. nats-py's ``create`` reads
    the key when it exists: use :func:`kv_read_write` for it.

    Args:
        bucket: the bucket's name.
        keys: the keys, as a subject pattern under the bucket (``">"``: all).
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream, subject = _kv(bucket, keys)
    return Preset(pub=(subject, f"{api}.STREAM.INFO.{stream}"), needs_inbox=True)


def kv_read_write(
    bucket: str, keys: str = _ALL, *, domain: str | None = None, api_prefix: str | None = None
) -> Preset:
    """:func:`kv_read` and :func:`kv_write` together."""
    return kv_read(bucket, keys, domain=domain, api_prefix=api_prefix) + kv_write(
        bucket, keys, domain=domain, api_prefix=api_prefix
    )


def kv_watch(
    bucket: str, keys: str = _ALL, *, domain: str | None = None, api_prefix: str | None = None
) -> Preset:
    """Watch keys of a KV bucket (``kv.watch``, ``keys()``, ``history()``).

    A watch is an ordered push consumer on ``KV_<bucket>``, delivered to the
    client's inbox: ``<api>.STREAM.INFO.KV_<bucket>``,
    ``<api>.CONSUMER.INFO.KV_<bucket>.*``, the consumer creation with the keys
    as its filter, ``<api>.CONSUMER.CREATE.KV_<bucket>.*.$KV.<bucket>.<keys>``,
    and the flow-control replies ``$JS.FC.KV_<bucket>.*...``. nats-py creates
    its watchers without the filter in the subject
    (``<api>.CONSUMER.CREATE.KV_<bucket>``, filter in the body): that is
    allowed for the whole bucket only, so a key-prefix watch needs a client
    that names its filter in the subject (nats.go, nats.js, or nats-py's
    ``js.subscribe`` with a named consumer).

    Args:
        bucket: the bucket's name.
        keys: the keys, as a subject pattern under the bucket (``">"``: all).
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    stream, subject = _kv(bucket, keys)
    pub = [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.CREATE.{stream}.*.{subject}",
        *_flow_control(stream, "*", domain),
    ]
    if keys == _ALL:
        pub.append(f"{api}.CONSUMER.CREATE.{stream}")
    return Preset(pub=tuple(pub), needs_inbox=True)


# -- Object Store ------------------------------------------------------------------------


def _object_store(bucket: str, api: str) -> tuple[str, str, tuple[str, str, str]]:
    """The bucket, its stream and what reads its metadata (binding and object heads)."""
    bucket = _bucket(bucket, "bucket")
    stream = f"OBJ_{bucket}"
    metadata = (
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.$O.{bucket}.M.>",
    )
    return bucket, stream, metadata


def object_get(bucket: str, *, domain: str | None = None, api_prefix: str | None = None) -> Preset:
    """Read objects of one Object Store bucket (``obs.get``, ``get_info``); read-only.

    Allows ``<api>.STREAM.INFO.OBJ_<bucket>`` (binding), the metadata reads
    ``<api>.STREAM.MSG.GET.OBJ_<bucket>`` and
    ``<api>.DIRECT.GET.OBJ_<bucket>.$O.<bucket>.M.>``, the chunks through an
    ordered consumer (``<api>.CONSUMER.CREATE.OBJ_<bucket>`` and
    ``<api>.CONSUMER.CREATE.OBJ_<bucket>.*.$O.<bucket>.C.>``, flow control
    ``$JS.FC.OBJ_<bucket>.*...``), delivered to the inbox, and
    ``<api>.STREAM.NAMES``: nats-py looks the stream up by the chunks' subject,
    which also lets the client list the account's stream names.

    Args:
        bucket: the bucket's name.
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    bucket, stream, metadata = _object_store(bucket, api)
    return Preset(
        pub=(
            *metadata,
            f"{api}.STREAM.NAMES",
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}.*.$O.{bucket}.C.>",
            *_flow_control(stream, "*", domain),
        ),
        needs_inbox=True,
    )


def object_put(bucket: str, *, domain: str | None = None, api_prefix: str | None = None) -> Preset:
    """Write objects to one Object Store bucket (``obs.put``, ``delete``).

    Allows ``<api>.STREAM.INFO.OBJ_<bucket>``, the chunks ``$O.<bucket>.C.>``
    and metadata ``$O.<bucket>.M.>`` (acknowledged to the inbox), the metadata
    reads a put starts with (``<api>.STREAM.MSG.GET.OBJ_<bucket>``,
    ``<api>.DIRECT.GET.OBJ_<bucket>.$O.<bucket>.M.>``) and
    ``<api>.STREAM.PURGE.OBJ_<bucket>``: replacing or deleting an object purges
    its old chunks (any subject of this bucket's stream). Add
    :func:`object_get` to read the objects back.

    Args:
        bucket: the bucket's name.
        domain: the JetStream domain (``$JS.<domain>.API``).
        api_prefix: another API prefix, e.g. one imported from another account.

    """
    api = _api(domain, api_prefix)
    bucket, stream, metadata = _object_store(bucket, api)
    return Preset(
        pub=(
            f"$O.{bucket}.C.>",
            f"$O.{bucket}.M.>",
            *metadata,
            f"{api}.STREAM.PURGE.{stream}",
        ),
        needs_inbox=True,
    )


# -- services (NATS micro, ADR-32) ---------------------------------------------------------


def service_call(name: str, subjects: Sequence[str]) -> Preset:
    """Call a NATS micro service: its endpoints, and its discovery by name.

    Allows publishing to the endpoint ``subjects`` and to
    ``$SRV.{PING,INFO,STATS}.<name>[.*]`` (every instance, or one by id); the
    replies arrive in the client's inbox.

    Args:
        name: the service's name (``ServiceConfig.name``).
        subjects: the endpoint subjects to call (``"orders.create"``, ``"orders.>"``).

    """
    name = _token(name, "service name")
    discovery = [f"$SRV.{verb}.{name}{tail}" for verb in _MICRO_VERBS for tail in ("", ".*")]
    return Preset(pub=(*_subjects(subjects, "subjects"), *discovery), needs_inbox=True)


def service_serve(
    name: str, subjects: Sequence[str], *, queue: str | None = MICRO_QUEUE_GROUP
) -> Preset:
    """Serve a NATS micro service: its endpoints in their queue group, and its discovery.

    Allows subscribing to each endpoint subject in ``queue`` (``"subject q"``;
    micro's default group; a plain subscription is then refused), to
    ``$SRV.{PING,INFO,STATS}``, ``$SRV.{PING,INFO,STATS}.<name>`` and
    ``$SRV.{PING,INFO,STATS}.<name>.*`` (the instance's own id), and replying
    to what it receives (``resp``, one reply per request).

    Args:
        name: the service's name (``ServiceConfig.name``).
        subjects: the endpoint subjects (with their group prefix).
        queue: the endpoints' queue group; ``None``: plain subscriptions.

    """
    name = _token(name, "service name")
    group = "" if queue is None else " " + _token(queue, "queue")
    endpoints = tuple(subject + group for subject in _subjects(subjects, "subjects"))
    discovery = [
        f"$SRV.{verb}{tail}" for verb in _MICRO_VERBS for tail in ("", f".{name}", f".{name}.*")
    ]
    return Preset(sub=(*endpoints, *discovery), resp=_ONE_REPLY)
