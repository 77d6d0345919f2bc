"""RoleBasedPermissions: roles to grants, safe templates, conditions, expiry."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from batteries_support import make_request
from hypothesis import given
from hypothesis import strategies as st
from policies import FixedLookup

from faststream_callout import (
    CalloutPipeline,
    ConfigurationError,
    Denied,
    Identity,
    KeyPair,
    ResponsePermission,
    SigningKeys,
)
from faststream_callout.batteries import (
    EXPIRES_AT,
    PermissionSet,
    RoleBasedPermissions,
    connection_types_of,
    safe_token,
)
from faststream_callout.protocol.claims import ClientInfo, TimeRange
from faststream_callout.protocol.validation import subject_issue
from faststream_callout.testing import FakeServer

T = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def chat(**kwargs) -> RoleBasedPermissions:
    roles = {
        "chat": PermissionSet(pub=["chat.{user}.>"], sub=["chat.>", "_INBOX_{user}.>"]),
        "reader": PermissionSet(sub=["news.>"]),
    }
    kwargs.setdefault("account", "APP")
    kwargs.setdefault("clock", lambda: T)
    return RoleBasedPermissions(roles, **kwargs)


def alice(*groups: str, name: str = "alice", **attributes: object) -> Identity:
    return Identity(name, frozenset(groups or ("chat",)), attributes)


# -- templates and safety ------------------------------------------------------------


def test_templates_expand_from_the_identity():
    grant = chat().build(alice(), make_request())
    assert grant.account == "APP"
    assert grant.pub.allow == ["chat.alice.>"]
    assert grant.sub.allow == ["chat.>", "_INBOX_alice.>"]
    assert grant.pub.deny == []
    assert grant.sub.deny == []


@pytest.mark.parametrize(
    "name",
    ["a.>", "a.b", "*", ">", "a*", "a>", "a b", "a\tb", "a\nb", "", "$SYS", "x\x00", "a\u2028b"],
)
def test_unsafe_names_deny_the_login(name):
    with pytest.raises(Denied) as caught:
        chat().build(alice(name=name), make_request())
    assert "not safe" in caught.value.reason or "cannot" in caught.value.reason
    assert name not in caught.value.reason or not name  # the value is never echoed


def test_a_dollar_prefixed_value_cannot_reach_system_subjects():
    rules = RoleBasedPermissions(
        {"r": PermissionSet(pub=["{user}.>"], allow_leading_placeholder=True)}, account="APP"
    )
    with pytest.raises(Denied):
        rules.build(Identity("$SYS", frozenset({"r"})), make_request())


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("{user}.>", "_INBOX_bob"),  # bob's private inbox (the README's _INBOX_{user}.>)
        ("{user}.>", "_INBOX"),  # everyone's replies
        ("{user}.>", "_R_"),  # service-import replies
        ("{user}_x.>", "_INBOX"),  # a suffix does not help
        ("_{user}.>", "INBOX_bob"),  # the literal head and the value together
        ("_{user}.>", "R_"),
        ("{tenant}.{user}", "_R_x"),
    ],
)
def test_values_cannot_start_a_subject_with_a_reserved_prefix(template, name):
    for unsafe_values in ("deny", "escape"):
        rules = RoleBasedPermissions(
            {
                "r": PermissionSet(
                    pub=["ok"], sub=[template], allow_leading_placeholder=template[0] == "{"
                )
            },
            account="APP",
            unsafe_values=unsafe_values,  # type: ignore[arg-type]
        )
        bob = Identity(name, frozenset({"r"}), {"tenant": name})
        with pytest.raises(Denied, match="reserved prefix") as caught:
            rules.build(bob, make_request())
        # The value is never echoed: the reason names the placeholders only.
        said, _, prefixes = caught.value.reason.partition(" with a reserved prefix ")
        assert name not in said
        assert prefixes == "(_INBOX, _R_, $)"


def test_reserved_prefixes_in_values_are_fine_where_they_cannot_start_a_subject():
    rules = RoleBasedPermissions(
        {"r": PermissionSet(pub=["chat.{user}.>"], sub=["_INBOX_{user}.>", "$KV.{user}.>"])},
        account="APP",
    )
    grant = rules.build(Identity("_INBOX_bob", frozenset({"r"})), make_request())
    assert grant.pub.allow == ["chat._INBOX_bob.>"]
    assert grant.sub.allow == ["_INBOX__INBOX_bob.>", "$KV._INBOX_bob.>"]


@pytest.mark.parametrize("subject", ["{user}.>", "{user}", "{tenant}_events.>", "{user} q"])
def test_a_template_starting_with_a_placeholder_needs_the_flag(subject):
    with pytest.raises(ConfigurationError, match="allow_leading_placeholder"):
        PermissionSet(sub=[subject])
    with pytest.raises(ConfigurationError, match="allow_leading_placeholder"):
        PermissionSet(deny_pub=["x", subject.split(" ")[0]])
    role = PermissionSet(sub=[subject], allow_leading_placeholder=True)
    assert role.allow_leading_placeholder
    rules = RoleBasedPermissions({"r": role}, account="APP")
    identity = Identity("alice", frozenset({"r"}), {"tenant": "acme"})
    assert rules.build(identity, make_request()).sub.allow


def test_the_leading_placeholder_flag_in_files(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text('account = "APP"\n[roles.r]\nsub = ["{user}.>"]\n')
    with pytest.raises(ConfigurationError, match=r"roles\.r.*allow_leading_placeholder"):
        RoleBasedPermissions.from_file(path)
    path.write_text(
        'account = "APP"\n[roles.r]\nsub = ["{user}.>"]\nallow_leading_placeholder = true\n'
    )
    grant = RoleBasedPermissions.from_file(path).build(alice("r"), make_request())
    assert grant.sub.allow == ["alice.>"]


@pytest.mark.parametrize("name", ["a.>", "a.b", "*", ">", "a b", "%2E", "$SYS", "é.ü"])
def test_escaping_is_injective_and_stays_in_one_token(name):
    grant = chat(unsafe_values="escape").build(alice(name=name), make_request())
    subject = grant.pub.allow[0]
    assert subject.startswith("chat.")
    assert subject.endswith(".>")
    middle = subject[len("chat.") : -len(".>")]
    assert "." not in middle
    assert "*" not in middle
    assert ">" not in middle
    assert subject_issue(subject) is None


@given(st.text(max_size=12), st.text(max_size=12))
def test_escaped_values_never_collide_or_widen(a, b):
    ea, eb = safe_token(a, escape=True), safe_token(b, escape=True)
    if not a or not b:
        assert (ea is None) == (not a)
        assert (eb is None) == (not b)
        return
    assert (ea == eb) == (a == b)
    for token in (ea, eb):
        assert token is not None
        assert not any(c in token for c in ".*> \t\r\n")
        assert not token.startswith("$")
        assert subject_issue(f"chat.{token}.>") is None


@given(st.text(min_size=1, max_size=12))
def test_denied_or_exactly_one_token(value):
    token = safe_token(value)
    if token is not None:
        assert token == value
        assert subject_issue(f"chat.{token}.>") is None
        assert len(f"chat.{token}.>".split(".")) == 3


def test_attribute_placeholders_and_lists():
    rules = RoleBasedPermissions(
        {"team": PermissionSet(pub=["t.{tenant}.{teams}.>"], sub=["t.{tenant}.>"])},
        account="APP",
    )
    grant = rules.build(
        Identity("bob", frozenset({"team"}), {"tenant": "acme", "teams": ["red", "blue"], "n": 1}),
        make_request(),
    )
    assert grant.pub.allow == ["t.acme.red.>", "t.acme.blue.>"]
    assert grant.sub.allow == ["t.acme.>"]


def test_missing_attribute_denies():
    rules = RoleBasedPermissions({"r": PermissionSet(pub=["t.{tenant}.>"])}, account="APP")
    with pytest.raises(Denied, match="no attribute 'tenant'"):
        rules.build(Identity("bob", frozenset({"r"})), make_request())


@pytest.mark.parametrize("value", [True, 1.5, None, {"a": 1}, ["ok", "a.b"], [["x"]]])
def test_unusable_attribute_values_deny(value):
    rules = RoleBasedPermissions({"r": PermissionSet(pub=["t.{v}.>"])}, account="APP")
    with pytest.raises(Denied):
        rules.build(Identity("bob", frozenset({"r"}), {"v": value}), make_request())


def test_an_empty_list_in_a_deny_template_denies_instead_of_vanishing():
    rules = RoleBasedPermissions(
        {"r": PermissionSet(pub=["t.>"], deny_pub=["t.{blocked}.>"])}, account="APP"
    )
    with pytest.raises(Denied, match="expands to nothing"):
        rules.build(Identity("bob", frozenset({"r"}), {"blocked": []}), make_request())
    # In an allow list an empty list simply allows nothing more.
    rules = RoleBasedPermissions({"r": PermissionSet(pub=["t.{teams}.>"])}, account="APP")
    grant = rules.build(Identity("bob", frozenset({"r"}), {"teams": []}), make_request())
    assert grant.pub.allow == []
    assert grant.pub.deny == [">"]


def test_expansion_is_capped():
    rules = RoleBasedPermissions({"r": PermissionSet(pub=["t.{a}.{b}"])}, account="APP")
    many = [f"v{i}" for i in range(40)]
    with pytest.raises(Denied, match="too many"):
        rules.build(Identity("bob", frozenset({"r"}), {"a": many, "b": many}), make_request())


@pytest.mark.parametrize(
    "subject",
    [
        "chat..x",
        ".chat",
        "chat.",
        "chat.>.x",
        "chat.a*",
        "chat.{user",
        "chat.{user.name}",
        "chat.{0}",
        "chat.{}",
        "chat.{user!r}",
        "chat.{user:>5}",
        "a b",
        "",
        "chat.{user}>",
    ],
)
def test_bad_templates_are_refused_at_construction(subject):
    with pytest.raises(ConfigurationError):
        PermissionSet(pub=[subject])


def test_a_string_instead_of_a_list_is_refused():
    with pytest.raises(ConfigurationError, match="list of subjects"):
        PermissionSet(pub="chat.>")  # type: ignore[arg-type]


def test_queue_subscriptions_template_the_queue_too():
    rules = RoleBasedPermissions(
        {"w": PermissionSet(pub=["jobs.done"], sub=["jobs.{user} workers_{user}"])}, account="APP"
    )
    grant = rules.build(Identity("w1", frozenset({"w"})), make_request())
    assert grant.sub.allow == ["jobs.w1 workers_w1"]
    with pytest.raises(ConfigurationError):
        PermissionSet(pub=["jobs.x q"])  # queues only on sub


# -- roles and merging -----------------------------------------------------------------


def test_no_known_role_denies():
    with pytest.raises(Denied, match="no role"):
        chat().build(alice("stranger"), make_request())
    with pytest.raises(Denied, match="no role"):
        chat().build(Identity("alice"), make_request())


def test_default_role_for_identities_without_one():
    grant = chat(default_role="reader").build(alice("stranger"), make_request())
    assert grant.sub.allow == ["news.>"]


def test_roles_merge_allows_and_denials():
    rules = RoleBasedPermissions(
        {
            "a": PermissionSet(pub=["x.>"], deny_pub=["x.secret"], sub=["x.>"]),
            "b": PermissionSet(pub=["y.>"], sub=["y.>"], deny_sub=["y.secret"]),
        },
        account="APP",
    )
    grant = rules.build(Identity("u", frozenset({"a", "b"})), make_request())
    assert grant.pub.allow == ["x.>", "y.>"]
    assert grant.pub.deny == ["x.secret"]
    assert grant.sub.allow == ["x.>", "y.>"]
    assert grant.sub.deny == ["y.secret"]


def test_empty_directions_mean_nothing_not_the_account_defaults():
    grant = chat().build(alice("reader"), make_request())
    assert grant.pub.allow == []
    assert grant.pub.deny == [">"]
    assert grant.sub.allow == ["news.>"]
    rules = RoleBasedPermissions({"r": PermissionSet(pub=["x"])}, account="APP")
    grant = rules.build(Identity("u", frozenset({"r"})), make_request())
    assert grant.sub.deny == [">"]


def test_responders_without_pub_get_reply_only_publishing():
    rules = RoleBasedPermissions(
        {"svc": PermissionSet(sub=["svc.requests"], resp=ResponsePermission(max=1))},
        account="APP",
    )
    grant = rules.build(Identity("s", frozenset({"svc"})), make_request())
    # nats-server turns "resp without pub.allow" into "publish replies only".
    assert grant.pub.allow == []
    assert grant.pub.deny == []
    assert grant.resp == ResponsePermission(max=1, ttl=120_000_000_000)


def test_response_permissions_merge_to_the_widest():
    rules = RoleBasedPermissions(
        {
            "a": PermissionSet(sub=["a"], resp=ResponsePermission(max=1, ttl=0)),
            "b": PermissionSet(sub=["b"], resp=ResponsePermission(max=5, ttl=10**9)),
        },
        account="APP",
    )
    grant = rules.build(Identity("s", frozenset({"a", "b"})), make_request())
    assert grant.resp == ResponsePermission(max=5, ttl=120_000_000_000)


def test_accounts_per_role_must_agree():
    rules = RoleBasedPermissions(
        {
            "app": PermissionSet(sub=["a"], account="APP"),
            "other": PermissionSet(sub=["b"], account="OTHER"),
            "plain": PermissionSet(sub=["c"]),
        },
        account="DEFAULT",
    )
    assert rules.build(Identity("u", frozenset({"app"})), make_request()).account == "APP"
    assert rules.build(Identity("u", frozenset({"plain"})), make_request()).account == "DEFAULT"
    assert rules.build(Identity("u", frozenset({"app", "plain"})), make_request()).account == "APP"
    with pytest.raises(Denied, match="different accounts"):
        rules.build(Identity("u", frozenset({"app", "other"})), make_request())


def test_account_chosen_by_a_callable():
    rules = RoleBasedPermissions(
        {"r": PermissionSet(sub=["x"])},
        account=lambda identity, request: str(identity.attributes["tenant"]).upper(),
    )
    grant = rules.build(Identity("u", frozenset({"r"}), {"tenant": "acme"}), make_request())
    assert grant.account == "ACME"


def test_roles_without_an_account_need_a_default():
    with pytest.raises(ConfigurationError, match="no account"):
        RoleBasedPermissions({"r": PermissionSet(sub=["x"])})


def test_roles_of_maps_identities_to_roles():
    rules = chat(roles_of=lambda identity: ["chat"] if identity.name.startswith("a") else [])
    assert rules.build(Identity("ann"), make_request()).pub.allow == ["chat.ann.>"]
    with pytest.raises(Denied):
        rules.build(Identity("bob", frozenset({"chat"})), make_request())


# -- expiry -----------------------------------------------------------------------------


def test_every_grant_expires_by_default():
    assert chat().build(alice(), make_request()).ttl == 3600
    assert chat(default_ttl=60).build(alice(), make_request()).ttl == 60


def test_role_ttl_shortest_wins_and_max_ttl_caps():
    rules = RoleBasedPermissions(
        {"a": PermissionSet(sub=["a"], ttl=600), "b": PermissionSet(sub=["b"], ttl=10**6)},
        account="APP",
        max_ttl=7200,
    )
    assert rules.build(Identity("u", frozenset({"a", "b"})), make_request()).ttl == 600
    assert rules.build(Identity("u", frozenset({"b"})), make_request()).ttl == 7200


def test_ttl_configuration_is_checked():
    with pytest.raises(ConfigurationError):
        chat(default_ttl=0)
    with pytest.raises(ConfigurationError):
        chat(default_ttl=10, max_ttl=5)
    with pytest.raises(ConfigurationError):
        chat(default_ttl=None)  # no expiry needs max_ttl=None too
    assert chat(default_ttl=None, max_ttl=None).build(alice(), make_request()).ttl is None
    with pytest.raises(ConfigurationError):
        PermissionSet(ttl=-1)


def test_credential_expiry_bounds_the_grant():
    grant = chat().build(alice(**{EXPIRES_AT: T + 90}), make_request())
    assert grant.expires_at == T + 90
    with pytest.raises(Denied, match="invalid credential expiry"):
        chat().build(alice(**{EXPIRES_AT: "soon"}), make_request())


async def test_credential_expiry_reaches_the_user_jwt():
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    pipeline = CalloutPipeline(
        SigningKeys(issuer),
        FixedLookup(alice(**{EXPIRES_AT: T + 90}), sync=True),
        chat(),
        clock=lambda: T,
    )
    minted = server.request(user="alice", now=T)
    verdict = server.check(minted, await pipeline(minted.body), now=T)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.exp == int(T + 90)


# -- conditions -------------------------------------------------------------------------


def test_connection_types_of_clients():
    assert connection_types_of(ClientInfo(kind="Client", type="nats")) == {"STANDARD"}
    assert connection_types_of(ClientInfo(kind="Client", type="websocket")) == {"WEBSOCKET"}
    assert connection_types_of(ClientInfo(kind="Client", type="mqtt")) == {"MQTT", "MQTT_WS"}
    assert connection_types_of(ClientInfo(kind="Leafnode")) == {"LEAFNODE"}
    assert connection_types_of(ClientInfo(kind="Account")) == set()


def browser_rules() -> RoleBasedPermissions:
    return RoleBasedPermissions(
        {
            "browser": PermissionSet(
                sub=["chat.public"], pub=["chat.public"], connection_types=["websocket"]
            ),
            "ops": PermissionSet(pub=["ops.>"], sub=["ops.>"], src=["10.0.0.0/8", "::1/128"]),
        },
        account="APP",
        clock=lambda: T,
    )


def test_websocket_only_role():
    rules = browser_rules()
    web = rules.build(alice("browser"), make_request(client_type="websocket"))
    assert web.pub.allow == ["chat.public"]
    assert web.allowed_connection_types == ("WEBSOCKET",)
    with pytest.raises(Denied, match="applies to this connection"):
        rules.build(alice("browser"), make_request(client_type="nats"))


def test_source_cidrs():
    rules = browser_rules()
    grant = rules.build(alice("ops"), make_request(host="10.1.2.3"))
    assert grant.src == ("10.0.0.0/8", "::1/128")
    assert rules.build(alice("ops"), make_request(host="::1")).pub.allow == ["ops.>"]
    assert rules.build(alice("ops"), make_request(host="::ffff:10.9.8.7")).pub.allow == ["ops.>"]
    for host in ("192.168.1.1", "", "not-an-ip"):
        with pytest.raises(Denied):
            rules.build(alice("ops"), make_request(host=host))


def test_only_the_roles_that_apply_contribute():
    rules = browser_rules()
    # From 10.x over plain NATS: ops applies, browser does not.
    grant = rules.build(alice("browser", "ops"), make_request(host="10.0.0.1"))
    assert grant.pub.allow == ["ops.>"]
    assert grant.allowed_connection_types == ()
    # Over websocket from 10.x: both apply; one is unrestricted in type, so none is written.
    grant = rules.build(
        alice("browser", "ops"), make_request(host="10.0.0.1", client_type="websocket")
    )
    assert grant.pub.allow == ["chat.public", "ops.>"]
    assert grant.allowed_connection_types == ()
    assert grant.src == ()


def office_rules(clock: float, zone: str = "Europe/Berlin") -> RoleBasedPermissions:
    return RoleBasedPermissions(
        {
            "office": PermissionSet(
                pub=["work.>"],
                times=[TimeRange(start="08:00:00", end="18:00:00")],
                times_location=zone,
            ),
            "night": PermissionSet(
                pub=["night.>"],
                times=[TimeRange(start="22:00:00", end="06:00:00")],
                times_location="UTC",
            ),
        },
        account="APP",
        clock=lambda: clock,
    )


def at(zone: str, *args: int) -> float:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()


def test_time_windows_apply_and_end_the_grant():
    noon = at("Europe/Berlin", 2027, 1, 15, 12, 0, 0)
    grant = office_rules(noon).build(alice("office"), make_request())
    assert grant.expires_at == at("Europe/Berlin", 2027, 1, 15, 18, 0, 0)
    assert grant.times == (TimeRange(start="08:00:00", end="18:00:00"),)
    assert grant.times_location == "Europe/Berlin"
    evening = at("Europe/Berlin", 2027, 1, 15, 19, 0, 0)
    with pytest.raises(Denied):
        office_rules(evening).build(alice("office"), make_request())


def test_windows_across_midnight():
    late = at("UTC", 2027, 1, 15, 23, 30, 0)
    grant = office_rules(late).build(alice("night"), make_request())
    assert grant.expires_at == at("UTC", 2027, 1, 16, 6, 0, 0)
    early = at("UTC", 2027, 1, 16, 5, 0, 0)
    assert office_rules(early).build(alice("night"), make_request()).expires_at == at(
        "UTC", 2027, 1, 16, 6, 0, 0
    )
    with pytest.raises(Denied):
        office_rules(at("UTC", 2027, 1, 16, 12, 0, 0)).build(alice("night"), make_request())


def test_windows_in_different_zones_are_not_written_but_still_bound_expiry():
    # office 08-18 Tokyo is 23:00-09:00 UTC; night is 22:00-06:00 UTC.
    both = at("UTC", 2027, 1, 15, 23, 30, 0)
    grant = office_rules(both, zone="Asia/Tokyo").build(alice("office", "night"), make_request())
    assert grant.pub.allow == ["work.>", "night.>"]
    assert grant.times == ()
    assert grant.times_location == ""
    assert grant.expires_at == at("UTC", 2027, 1, 16, 6, 0, 0)  # the earlier window end
    only_office = at("UTC", 2027, 1, 16, 7, 0, 0)
    grant = office_rules(only_office, zone="Asia/Tokyo").build(
        alice("office", "night"), make_request()
    )
    assert grant.pub.allow == ["work.>"]
    assert grant.times_location == "Asia/Tokyo"
    assert grant.expires_at == at("UTC", 2027, 1, 16, 9, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"times": [TimeRange(start="08:00:00", end="18:00:00")]},  # no zone
        {"times": [TimeRange(start="8:00", end="18:00:00")], "times_location": "UTC"},
        {"times": [TimeRange(start="08:00:00", end="08:00:00")], "times_location": "UTC"},
        {"times": [TimeRange(start="08:00:00", end="18:00:00")], "times_location": "Mars/Base"},
        {"connection_types": ["CARRIER_PIGEON"]},
        {"connection_types": "WEBSOCKET"},
        {"src": ["10.0.0.0/33"]},
        {"src": ["10.0.0.1"]},  # Go's ParseCIDR needs the prefix length
        {"src": ["10.0.0.0/255.0.0.0"]},
        {"src": ["fe80::1%eth0/64"]},
        {"resp": ResponsePermission(max=-5)},
    ],
)
def test_bad_conditions_are_refused_at_construction(kwargs):
    with pytest.raises(ConfigurationError):
        PermissionSet(sub=["x"], **kwargs)


# -- the file format --------------------------------------------------------------------


def test_from_file(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text(
        """
account = "APP"
default_ttl = 600

[roles.chat]
pub = ["chat.{user}.>"]
sub = ["chat.>", "_INBOX_{user}.>"]
resp = { max = 1 }
tags = ["chat"]

[roles.browser]
sub = ["chat.public"]
connection_types = ["WEBSOCKET"]
times = [{ start = "00:00:00", end = "23:59:59" }]
times_location = "UTC"
"""
    )
    rules = RoleBasedPermissions.from_file(path)
    grant = rules.build(alice("chat"), make_request())
    assert grant.pub.allow == ["chat.alice.>"]
    assert grant.ttl == 600
    assert grant.tags == ("chat",)
    assert grant.resp == ResponsePermission(max=1, ttl=120_000_000_000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[roles.chat]\npub = ["chat.>"]\n', "no account"),
        ('account = "APP"\n[roles.chat]\npubs = ["x"]\n', "unknown key"),
        ('account = "APP"\n[roles.chat]\npub = "chat.>"\n', "list of strings"),
        ('account = "APP"\n[roles.chat]\npub = ["chat..x"]\n', "consecutive"),
        ('account = "APP"\n', "roles"),
        ('account = "APP"\ndefault_ttl = "1h"\n[roles.c]\nsub=["x"]\n', "number"),
    ],
)
def test_from_file_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "roles.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        RoleBasedPermissions.from_file(path)


def test_repr_is_short():
    assert "RoleBasedPermissions(roles=['chat', 'reader']" in repr(chat())


# -- property: whatever the identity, the grant is valid and never wider --------------------


PROPERTY_ISSUER = KeyPair.create_account()
PROPERTY_SERVER = FakeServer.config_mode(PROPERTY_ISSUER.public_key, accounts=["APP"])
PROPERTY_RULES = {
    mode: RoleBasedPermissions(
        {
            "chat": PermissionSet(
                pub=["chat.{user}.>", "t.{tenant}.{user}"],
                sub=["chat.>", "_INBOX_{user}.>", "jobs.{tenant} q_{user}"],
                deny_pub=["chat.{user}.admin"],
            )
        },
        account="APP",
        unsafe_values=mode,
    )
    for mode in ("deny", "escape")
}


@given(
    name=st.text(max_size=8),
    tenant=st.one_of(st.text(max_size=6), st.lists(st.text(max_size=4), max_size=3)),
    mode=st.sampled_from(["deny", "escape"]),
)
async def test_any_identity_gets_a_valid_narrow_grant_or_a_denial(name, tenant, mode):
    identity = Identity(name, frozenset({"chat"}), {"tenant": tenant})
    pipeline = CalloutPipeline(
        SigningKeys(PROPERTY_ISSUER), FixedLookup(identity, sync=True), PROPERTY_RULES[mode]
    )
    minted = PROPERTY_SERVER.request(user="x")
    decision = await pipeline.decide(minted.body)
    assert decision.outcome.value in ("allowed", "denied"), decision.reason
    if not decision.allowed:
        return
    verdict = PROPERTY_SERVER.check(minted, decision.reply)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    permissions = verdict.user.nats
    # Every subject keeps its template's shape: one token per placeholder.
    for subject in permissions.pub.allow:
        assert len(subject.split(".")) == 3, subject
        assert "*" not in subject
        assert ">" not in subject[:-1]
    inbox, *queues = permissions.sub.allow[1:]
    assert len(inbox.split(".")) == 2
    assert inbox.startswith("_INBOX_")
    for queue in queues:
        subject, group = queue.split(" ")
        assert len(subject.split(".")) == 2
        assert group.startswith("q_")
        assert "." not in group
    user_token = permissions.pub.allow[0].split(".")[1]
    assert permissions.pub.deny == [f"chat.{user_token}.admin"]
