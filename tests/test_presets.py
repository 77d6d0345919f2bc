"""Permission presets offline: the exact subjects each one expands to, composition, checks.

The end-to-end proof that these subjects are the right ones (the operations work, the
neighbours are refused) is tests/test_presets_real_server.py.
"""

from __future__ import annotations

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
    PermissionSet,
    Preset,
    RoleBasedPermissions,
    inbox_prefix,
    jetstream_admin,
    jetstream_consumer,
    jetstream_publisher,
    kv_read,
    kv_read_write,
    kv_watch,
    kv_write,
    object_get,
    object_put,
    private_inbox,
    service_call,
    service_serve,
)
from faststream_callout.testing import FakeServer

API = "$JS.API"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or token not in ("*", have[index]):
            return False
    return len(want) == len(have)


def test_the_matcher_matches_like_nats():
    assert matches("a.*.c", "a.b.c")
    assert matches("a.>", "a.b.c")
    assert not matches("a.>", "a")
    assert not matches("a.*", "a.b.c")
    assert not matches("a.b", "a.bc")


# -- the exact subjects ------------------------------------------------------------------


def test_private_inbox():
    preset = private_inbox("alice")
    assert preset.subjects() == {"sub": ["_INBOX_alice.>"]}
    assert preset.resp is None
    assert preset.inbox == inbox_prefix("alice") == "_INBOX_alice"
    assert private_inbox("alice", respond=True).resp == ResponsePermission(max=1)


def test_jetstream_publisher():
    preset = jetstream_publisher("ORDERS", ["orders.>", "refunds.new"])
    assert preset.subjects() == {
        "pub": ["orders.>", "refunds.new", f"{API}.STREAM.INFO.ORDERS"],
    }
    assert preset.needs_inbox


def test_jetstream_consumer_pull_durable():
    assert jetstream_consumer("ORDERS", "worker").subjects() == {
        "pub": [
            f"{API}.STREAM.INFO.ORDERS",
            f"{API}.CONSUMER.INFO.ORDERS.worker",
            f"{API}.CONSUMER.MSG.NEXT.ORDERS.worker",
            "$JS.ACK.ORDERS.worker.*.*.*.*.*",
            "$JS.ACK._.*.ORDERS.worker.*.*.*.*.>",
        ]
    }


def test_jetstream_consumer_pull_durable_created_by_the_client():
    pub = jetstream_consumer("ORDERS", "worker", create=True).pub
    assert pub[-2:] == (
        f"{API}.CONSUMER.CREATE.ORDERS.worker",
        f"{API}.CONSUMER.CREATE.ORDERS.worker.>",
    )


def test_jetstream_consumer_pull_ephemeral():
    assert jetstream_consumer("ORDERS").pub == (
        f"{API}.STREAM.INFO.ORDERS",
        f"{API}.CONSUMER.INFO.ORDERS.*",
        f"{API}.CONSUMER.MSG.NEXT.ORDERS.*",
        "$JS.ACK.ORDERS.*.*.*.*.*.*",
        "$JS.ACK._.*.ORDERS.*.*.*.*.*.>",
        f"{API}.CONSUMER.CREATE.ORDERS.*",
        f"{API}.CONSUMER.CREATE.ORDERS.*.>",
    )


def test_jetstream_consumer_push_ephemeral():
    assert jetstream_consumer("ORDERS", push=True).subjects() == {
        "pub": [
            f"{API}.STREAM.INFO.ORDERS",
            f"{API}.CONSUMER.INFO.ORDERS.*",
            "$JS.FC.ORDERS.*.*",
            "$JS.FC._.*.ORDERS.*.*",
            "$JS.ACK.ORDERS.*.*.*.*.*.*",
            "$JS.ACK._.*.ORDERS.*.*.*.*.*.>",
            f"{API}.CONSUMER.CREATE.ORDERS.*",
            f"{API}.CONSUMER.CREATE.ORDERS.*.>",
            f"{API}.CONSUMER.CREATE.ORDERS",
        ]
    }


def test_jetstream_consumer_push_durable_with_a_deliver_subject():
    preset = jetstream_consumer(
        "ORDERS", "pushed", push=True, deliver_subject="deliver.orders", deliver_group="workers"
    )
    assert preset.subjects() == {
        "pub": [
            f"{API}.STREAM.INFO.ORDERS",
            f"{API}.CONSUMER.INFO.ORDERS.pushed",
            "$JS.FC.ORDERS.pushed.*",
            "$JS.FC._.*.ORDERS.pushed.*",
            "$JS.ACK.ORDERS.pushed.*.*.*.*.*",
            "$JS.ACK._.*.ORDERS.pushed.*.*.*.*.>",
        ],
        "sub": ["deliver.orders workers"],
    }
    created = jetstream_consumer("ORDERS", "pushed", push=True, create=True)
    assert created.pub[-1] == f"{API}.CONSUMER.DURABLE.CREATE.ORDERS.pushed"


def test_jetstream_admin():
    assert jetstream_admin("ORDERS").pub == (
        f"{API}.STREAM.CREATE.ORDERS",
        f"{API}.STREAM.UPDATE.ORDERS",
        f"{API}.STREAM.INFO.ORDERS",
        f"{API}.STREAM.DELETE.ORDERS",
        f"{API}.STREAM.PURGE.ORDERS",
        f"{API}.STREAM.MSG.GET.ORDERS",
        f"{API}.STREAM.MSG.DELETE.ORDERS",
        f"{API}.DIRECT.GET.ORDERS",
        f"{API}.DIRECT.GET.ORDERS.>",
        f"{API}.CONSUMER.CREATE.ORDERS",
        f"{API}.CONSUMER.CREATE.ORDERS.>",
        f"{API}.CONSUMER.DURABLE.CREATE.ORDERS.*",
        f"{API}.CONSUMER.NAMES.ORDERS",
        f"{API}.CONSUMER.LIST.ORDERS",
        f"{API}.CONSUMER.INFO.ORDERS.*",
        f"{API}.CONSUMER.DELETE.ORDERS.*",
        f"{API}.CONSUMER.PAUSE.ORDERS.*",
        f"{API}.CONSUMER.UNPIN.ORDERS.*",
    )
    # Nothing of another stream, nor the account-wide listings.
    for subject in (f"{API}.STREAM.DELETE.AUDIT", f"{API}.STREAM.NAMES", f"{API}.INFO"):
        assert not any(matches(p, subject) for p in jetstream_admin("ORDERS").pub), subject


def test_kv_presets():
    assert kv_read("config").pub == (
        f"{API}.STREAM.INFO.KV_config",
        f"{API}.DIRECT.GET.KV_config.$KV.config.>",
        f"{API}.DIRECT.GET.KV_config",
        f"{API}.STREAM.MSG.GET.KV_config",
    )
    assert kv_read("config", "users.alice.>").pub == (
        f"{API}.STREAM.INFO.KV_config",
        f"{API}.DIRECT.GET.KV_config.$KV.config.users.alice.>",
    )
    assert kv_write("config", "users.alice.>").pub == (
        "$KV.config.users.alice.>",
        f"{API}.STREAM.INFO.KV_config",
    )
    assert kv_read_write("config").pub == (
        f"{API}.STREAM.INFO.KV_config",
        f"{API}.DIRECT.GET.KV_config.$KV.config.>",
        f"{API}.DIRECT.GET.KV_config",
        f"{API}.STREAM.MSG.GET.KV_config",
        "$KV.config.>",
    )
    assert kv_watch("config").pub == (
        f"{API}.STREAM.INFO.KV_config",
        f"{API}.CONSUMER.INFO.KV_config.*",
        f"{API}.CONSUMER.CREATE.KV_config.*.$KV.config.>",
        "$JS.FC.KV_config.*.*",
        "$JS.FC._.*.KV_config.*.*",
        f"{API}.CONSUMER.CREATE.KV_config",
    )
    # A key-prefix watch may only create consumers filtered to its keys.
    assert f"{API}.CONSUMER.CREATE.KV_config" not in kv_watch("config", "a.>").pub
    for preset in (kv_read("config"), kv_write("config"), kv_watch("config")):
        assert preset.needs_inbox
        assert not any("KV_secrets" in s or "$KV.secrets" in s for s in preset.pub)


def test_object_store_presets():
    assert object_get("files").pub == (
        f"{API}.STREAM.INFO.OBJ_files",
        f"{API}.STREAM.MSG.GET.OBJ_files",
        f"{API}.DIRECT.GET.OBJ_files.$O.files.M.>",
        f"{API}.STREAM.NAMES",
        f"{API}.CONSUMER.CREATE.OBJ_files",
        f"{API}.CONSUMER.CREATE.OBJ_files.*.$O.files.C.>",
        "$JS.FC.OBJ_files.*.*",
        "$JS.FC._.*.OBJ_files.*.*",
    )
    assert object_put("files").pub == (
        "$O.files.C.>",
        "$O.files.M.>",
        f"{API}.STREAM.INFO.OBJ_files",
        f"{API}.STREAM.MSG.GET.OBJ_files",
        f"{API}.DIRECT.GET.OBJ_files.$O.files.M.>",
        f"{API}.STREAM.PURGE.OBJ_files",
    )


def test_service_presets():
    call = service_call("echo", ["echo.say"])
    assert call.subjects() == {
        "pub": [
            "echo.say",
            "$SRV.PING.echo",
            "$SRV.PING.echo.*",
            "$SRV.INFO.echo",
            "$SRV.INFO.echo.*",
            "$SRV.STATS.echo",
            "$SRV.STATS.echo.*",
        ]
    }
    assert call.needs_inbox
    serve = service_serve("echo", ["echo.say", "echo.shout"])
    assert serve.subjects() == {
        "sub": [
            "echo.say q",
            "echo.shout q",
            "$SRV.PING",
            "$SRV.PING.echo",
            "$SRV.PING.echo.*",
            "$SRV.INFO",
            "$SRV.INFO.echo",
            "$SRV.INFO.echo.*",
            "$SRV.STATS",
            "$SRV.STATS.echo",
            "$SRV.STATS.echo.*",
        ]
    }
    assert serve.resp == ResponsePermission(max=1)
    assert not serve.needs_inbox
    assert service_serve("echo", ["echo.say"], queue=None).sub[0] == "echo.say"


@pytest.mark.parametrize(
    ("options", "api", "ack_domain"),
    [
        ({"domain": "hub"}, "$JS.hub.API", "hub"),
        ({"api_prefix": "JS.leaf.API"}, "JS.leaf.API", "_"),
    ],
)
def test_domains_and_api_prefixes(options, api, ack_domain):
    consumer = jetstream_consumer("ORDERS", "w", **options)
    assert consumer.pub[:3] == (
        f"{api}.STREAM.INFO.ORDERS",
        f"{api}.CONSUMER.INFO.ORDERS.w",
        f"{api}.CONSUMER.MSG.NEXT.ORDERS.w",
    )
    assert consumer.pub[4] == f"$JS.ACK.{ack_domain}.*.ORDERS.w.*.*.*.*.>"
    presets = [
        jetstream_publisher("ORDERS", ["orders.>"], **options),
        jetstream_admin("ORDERS", **options),
        kv_read_write("config", **options),
        kv_watch("config", **options),
        object_get("files", **options),
        object_put("files", **options),
    ]
    for preset in presets:
        api_subjects = [s for s in preset.pub if ".API." in s or s.endswith(".API")]
        assert api_subjects
        assert all(s.startswith(api + ".") for s in api_subjects), api_subjects


def test_the_two_ack_formats_never_match_each_others_subjects():
    # nats-server's v1 and v2 (js_ack_fc_v2) ack and flow-control subjects.
    v1_ack = "$JS.ACK.ORDERS.worker.1.2.3.1700000000000000000.0"
    v2_ack = "$JS.ACK._.AbCdEfGh.ORDERS.worker.1.2.3.1700000000000000000.0"
    v1_pattern, v2_pattern = jetstream_consumer("ORDERS", "worker").pub[3:5]
    assert matches(v1_pattern, v1_ack)
    assert matches(v2_pattern, v2_ack)
    assert not matches(v1_pattern, v2_ack)
    assert not matches(v2_pattern, v1_ack)
    # Another consumer's or stream's acks are not ours.
    assert not matches(v1_pattern, "$JS.ACK.ORDERS.other.1.2.3.4.0")
    assert not matches(v2_pattern, "$JS.ACK._.AbCdEfGh.AUDIT.worker.1.2.3.4.0")
    fc_v1, fc_v2 = jetstream_consumer("ORDERS", "w", push=True).pub[2:4]
    assert matches(fc_v1, "$JS.FC.ORDERS.w.abc")
    assert matches(fc_v2, "$JS.FC._.AbCdEfGh.ORDERS.w.abc")
    assert not matches(fc_v1, "$JS.FC._.AbCdEfGh.ORDERS.w.abc")
    assert not matches(fc_v2, "$JS.FC.ORDERS.w.abc")


# -- composing and granting ------------------------------------------------------------------


def test_presets_add_up_without_duplicates():
    both = private_inbox("alice") + kv_read("config") + kv_write("config")
    assert both.pub.count(f"{API}.STREAM.INFO.KV_config") == 1
    assert both.sub == ("_INBOX_alice.>",)
    assert both.inbox == "_INBOX_alice"
    assert both.needs_inbox
    widest = private_inbox("a", respond=True) + Preset(resp=ResponsePermission(max=5, ttl=10))
    assert widest.resp is not None
    assert widest.resp.max == 5
    with pytest.raises(ConfigurationError, match="two inboxes"):
        private_inbox("alice") + private_inbox("bob")
    assert sum([kv_read("config"), private_inbox("a")], Preset()).inbox == "_INBOX_a"


def test_a_grant_holds_exactly_the_preset():
    grant = (private_inbox("alice") + kv_read("config")).grant("APP", ttl=60, name="Alice")
    assert grant.account == "APP"
    assert grant.ttl == 60
    assert grant.name == "Alice"
    assert grant.pub.allow == list(kv_read("config").pub)
    assert grant.pub.deny == []
    assert grant.sub.allow == ["_INBOX_alice.>"]
    assert grant.sub.deny == []


def test_a_grant_closes_the_directions_a_preset_does_not_name():
    grant = private_inbox("alice").grant("APP")
    assert grant.pub.allow == []
    assert grant.pub.deny == [">"]  # not the account's defaults
    serve = service_serve("echo", ["echo.say"]).grant("APP")
    assert serve.pub.deny == []  # replies only: nats-server allows nothing else with resp
    assert serve.resp == ResponsePermission(max=1)
    publisher = (private_inbox("p") + jetstream_publisher("ORDERS", ["orders.>"])).grant("APP")
    assert publisher.sub.allow == ["_INBOX_p.>"]
    assert Preset(pub=("x",)).grant("APP").sub.deny == [">"]


def test_a_grant_needs_the_inbox_its_operations_answer_in():
    with pytest.raises(ConfigurationError, match="private_inbox"):
        kv_read("config").grant("APP")
    shared = kv_read("config") + Preset(sub=("_INBOX.>",), inbox="_INBOX")
    assert shared.grant("APP").sub.allow == ["_INBOX.>"]


def test_templates_are_for_roles_not_grants():
    with pytest.raises(ConfigurationError, match="template"):
        (private_inbox("{user}") + kv_read("{tenant}")).grant("APP")


async def test_every_preset_grant_is_accepted_as_nats_server_would():
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    everything = (
        private_inbox("alice", respond=True)
        + jetstream_publisher("ORDERS", ["orders.>"])
        + jetstream_consumer("ORDERS", "w", push=True, deliver_subject="d.o", deliver_group="g")
        + jetstream_consumer("ORDERS")
        + jetstream_admin("ORDERS", domain="hub")
        + kv_read_write("config", "users.alice.>")
        + kv_watch("config")
        + object_get("files")
        + object_put("files")
        + service_call("echo", ["echo.>"])
        + service_serve("echo", ["echo.say"])
    )

    class Everything:
        def build(self, identity, request):
            return everything.grant("APP", ttl=60)

    pipeline = CalloutPipeline(SigningKeys(issuer), FixedLookup(Identity("alice")), Everything())
    minted = server.request(user="alice")
    decision = await pipeline.decide(minted.body)
    assert decision.allowed, decision.reason
    verdict = server.check(minted, decision.reply)
    assert verdict.allowed, verdict.reason
    assert verdict.user is not None
    assert verdict.user.nats.pub.allow == list(everything.pub)
    assert verdict.user.nats.sub.allow == list(everything.sub)


# -- in roles: templates expanded per identity ------------------------------------------------


def test_presets_in_roles_expand_per_identity():
    rules = RoleBasedPermissions(
        {
            "member": (private_inbox("{user}") + kv_read_write("config", "users.{user}.>")).role(
                ttl=600
            ),
            "tenant": jetstream_consumer("{tenant}_ORDERS", "{user}").role(),
        },
        account="APP",
    )
    assert isinstance(rules.roles["member"], PermissionSet)
    identity = Identity("alice", frozenset({"member", "tenant"}), {"tenant": "acme"})
    grant = rules.build(identity, make_request())
    assert grant.sub.allow == ["_INBOX_alice.>"]
    assert "$KV.config.users.alice.>" in grant.pub.allow
    assert f"{API}.DIRECT.GET.KV_config.$KV.config.users.alice.>" in grant.pub.allow
    assert f"{API}.CONSUMER.MSG.NEXT.acme_ORDERS.alice" in grant.pub.allow
    assert grant.ttl == 600
    # Template values stay one safe token: no other user's keys, no wildcards.
    for name in ("bob.x", "*", ">", "", "a b"):
        with pytest.raises(Denied):
            rules.build(Identity(name, frozenset({"member"})), make_request())


def test_role_conditions_pass_through():
    role = private_inbox("{user}").role(connection_types=["WEBSOCKET"], ttl=30)
    assert role.connection_types == ["WEBSOCKET"]
    assert role.ttl == 30
    assert role.sub == ("_INBOX_{user}.>",)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.b", "*", ">", "", "a b", "$SYS", "a/b", "a%b", "x\x00"])
def test_names_must_be_one_safe_token(name):
    with pytest.raises(ConfigurationError):
        jetstream_consumer(name)
    with pytest.raises(ConfigurationError):
        jetstream_consumer("ORDERS", name)
    with pytest.raises(ConfigurationError):
        private_inbox(name)
    with pytest.raises(ConfigurationError):
        service_call(name, ["x"])
    with pytest.raises(ConfigurationError):
        kv_read(name)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: kv_read("config", "a..b"), "consecutive"),
        (lambda: kv_read("con.fig"), "letters"),
        (lambda: object_get("fi les"), "letters"),
        (lambda: kv_read("config", domain="hub", api_prefix="JS.x.API"), "not both"),
        (lambda: kv_read("config", api_prefix="JS.*.API"), "without wildcards"),
        (lambda: kv_read("config", api_prefix="JS.>"), "without wildcards"),
        (lambda: jetstream_consumer("S", deliver_subject="d"), "push consumers"),
        (lambda: jetstream_consumer("S", push=True, deliver_group="g"), "deliver_subject"),
        (lambda: jetstream_publisher("S", []), "at least one"),
        (lambda: jetstream_publisher("S", "orders.>"), "not a string"),
        (lambda: service_serve("echo", ["echo.say"], queue="a b"), "queue"),
        (lambda: Preset(pub="x"), "list of subjects"),
        (lambda: Preset(pub=("a..b",)), "consecutive"),
        (lambda: Preset(pub=("x q",)), "spaces"),
        (lambda: private_inbox("a.b", escape=False), "one subject token"),
    ],
)
def test_bad_arguments_name_the_problem(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()


@given(st.text(max_size=10), st.text(max_size=10))
def test_escaped_private_inboxes_never_reach_each_other(a, b):
    if not a or not b:
        return
    inbox_a = private_inbox(a, escape=True)
    inbox_b = private_inbox(b, escape=True)
    (pattern_a,) = inbox_a.sub
    assert inbox_a.inbox is not None
    assert inbox_b.inbox is not None
    assert len(inbox_a.inbox.split(".")) == 1  # one token: no prefix of another id
    reply_of_b = f"{inbox_b.inbox}.AbCdEf.1"
    assert matches(pattern_a, reply_of_b) == (a == b)
    assert not inbox_a.inbox[len("_INBOX_") :].startswith("$")
    assert inbox_a.grant("APP").sub.allow == [pattern_a]  # a value, never a template
