"""subject_issue and user_issues: nats-io/jwt's rules, and the strict extras.

The server-side rules come from nats-io/jwt v2 ``types.go`` (``Subject.Validate``,
``checkPermission``, ``Limits.Validate``, ``TimeRange.Validate``) and
``user_claims.go``; ``strict`` adds checks for mistakes nats-server lets through.
"""

from __future__ import annotations

from typing import Any

import pytest

from faststream_callout import KeyPair
from faststream_callout.protocol.claims import Permission, ResponsePermission, TimeRange, User
from faststream_callout.protocol.validation import CONNECTION_TYPES, subject_issue, user_issues


def user(**fields: Any) -> User:
    return User(type="user", version=2, **fields)


# --- subject_issue: what nats-io/jwt rejects ----------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_empty_subject(strict: bool) -> None:
    issue = subject_issue("", strict=strict)
    assert issue is not None
    assert "empty" in issue


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", ["foo bar", "foo.bar baz"])
def test_space_not_allowed_without_queue(subject: str, strict: bool) -> None:
    issue = subject_issue(subject, strict=strict)
    assert issue is not None
    assert "space" in issue


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", ["foo.bar workers", "foo.* q1", "> q", "orders.> group-a"])
def test_queue_permission_allowed_in_subscribe(subject: str, strict: bool) -> None:
    assert subject_issue(subject, queue_allowed=True, strict=strict) is None


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", ["foo bar baz", "foo  bar", " foo", "foo ", " "])
def test_malformed_queue_permission(subject: str, strict: bool) -> None:
    issue = subject_issue(subject, queue_allowed=True, strict=strict)
    assert issue is not None
    assert "queue" in issue


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", [".foo", "foo.", ".", "foo.bar.", ".>"])
def test_leading_or_trailing_dot(subject: str, strict: bool) -> None:
    issue = subject_issue(subject, strict=strict)
    assert issue is not None
    assert "start or end" in issue


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", ["foo..bar", "a.b..c.d", "foo..>"])
def test_consecutive_dots(subject: str, strict: bool) -> None:
    issue = subject_issue(subject, strict=strict)
    assert issue is not None
    assert "consecutive" in issue


@pytest.mark.parametrize("strict", [True, False])
def test_queue_subject_part_is_checked(strict: bool) -> None:
    issue = subject_issue(".foo q", queue_allowed=True, strict=strict)
    assert issue is not None
    assert "start or end" in issue
    issue = subject_issue("foo..bar q", queue_allowed=True, strict=strict)
    assert issue is not None
    assert "consecutive" in issue


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("subject", ["foo q.", "foo .q", "foo a..b"])
def test_queue_name_part_is_checked(subject: str, strict: bool) -> None:
    assert subject_issue(subject, queue_allowed=True, strict=strict) is not None


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "subject",
    ["foo", "foo.bar", "foo.*", "*", ">", "foo.>", "*.bar.>", "$SYS.REQ.USER.INFO", "_INBOX.>"],
)
def test_valid_subjects(subject: str, strict: bool) -> None:
    assert subject_issue(subject, strict=strict) is None


# --- subject_issue: the strict extras ------------------------------------------------


@pytest.mark.parametrize("subject", ["foo*", "foo.b*r", "*foo", "a>", "foo.>bar", "a.**"])
def test_strict_wildcard_inside_token(subject: str) -> None:
    issue = subject_issue(subject)
    assert issue is not None
    assert "whole tokens" in issue
    # nats-server reads them as literals and accepts them.
    assert subject_issue(subject, strict=False) is None


@pytest.mark.parametrize("subject", ["foo.>.bar", ">.foo", "a.>.>"])
def test_strict_full_wildcard_not_last(subject: str) -> None:
    issue = subject_issue(subject)
    assert issue is not None
    assert "last token" in issue
    assert subject_issue(subject, strict=False) is None


def test_strict_checks_the_subject_of_a_queue_permission() -> None:
    assert subject_issue("foo* q", queue_allowed=True) is not None
    assert subject_issue("foo* q", queue_allowed=True, strict=False) is None


def test_strict_is_the_default() -> None:
    assert subject_issue("foo*") is not None


# --- user_issues -------------------------------------------------------------------


def test_valid_user_has_no_issues() -> None:
    valid = user(
        pub=Permission(allow=["chat.>", "news.*"], deny=["chat.secret"]),
        sub=Permission(allow=["chat.> workers", "_INBOX.>"], deny=["news.hidden"]),
        resp=ResponsePermission(max=1, ttl=60_000_000_000),
        src=["10.0.0.0/8", "192.168.1.7/32", "::1/128", "2001:db8::/32"],
        times=[
            TimeRange(start="08:00:00", end="17:30:00"),
            TimeRange(start="22:00:00", end="06:00:00"),  # wraps midnight
            TimeRange(start="00:00:00", end="23:59:59"),
        ],
        times_location="Europe/Berlin",
        allowed_connection_types=["STANDARD", "WEBSOCKET", "MQTT"],
        issuer_account=KeyPair.create_account().public_key,
        subs=-1,
        data=-1,
        payload=-1,
    )
    assert user_issues(valid) == []
    assert user_issues(valid, strict=False) == []
    assert user_issues(user()) == []


@pytest.mark.parametrize(
    ("direction", "kind"), [("pub", "allow"), ("pub", "deny"), ("sub", "allow"), ("sub", "deny")]
)
def test_permission_issues_name_their_place(direction: str, kind: str) -> None:
    bad = Permission(**{kind: ["ok.subject", "bad..subject"]})
    issues = user_issues(user(**{direction: bad}))
    assert len(issues) == 1
    assert issues[0].startswith(f"{direction}.{kind}: ")
    assert "bad..subject" in issues[0]
    assert "consecutive" in issues[0]


@pytest.mark.parametrize("strict", [True, False])
def test_queue_permission_refused_in_publish(strict: bool) -> None:
    issues = user_issues(user(pub=Permission(allow=["foo q"])), strict=strict)
    assert len(issues) == 1
    assert issues[0].startswith("pub.allow: ")
    # The same entry is fine for subscribe.
    assert user_issues(user(sub=Permission(allow=["foo q"])), strict=strict) == []


def test_every_issue_is_reported() -> None:
    issues = user_issues(
        user(
            pub=Permission(allow=[""], deny=[".x"]),
            sub=Permission(allow=["a..b"]),
            src=["nonsense"],
            times=[TimeRange(start="25:00:00", end="x")],
            times_location="No/Such_Zone",
            issuer_account="nope",
        )
    )
    assert len(issues) == 8
    prefixes = [issue.split(":")[0] for issue in issues[:3]]
    assert prefixes == ["pub.allow", "pub.deny", "sub.allow"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "cidr", ["nonsense", "10.0.0.1", "10.0.0.0/33", "300.0.0.0/8", "::1/129", "", "10.0.0.0/"]
)
def test_invalid_cidr(cidr: str, strict: bool) -> None:
    issues = user_issues(user(src=[cidr]), strict=strict)
    assert issues == [f"invalid cidr {cidr!r} in user src limits"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "0.0.0.0/0", "fe80::/10", "10.0.0.0/08"])
def test_valid_cidr(cidr: str, strict: bool) -> None:
    # Go's net.ParseCIDR accepts host bits and leading zeros in the prefix length.
    assert user_issues(user(src=[cidr]), strict=strict) == []


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "cidr", ["10.0.0.0/255.0.0.0", "10.0.0.0/0.255.255.255", " 10.0.0.0/8", "fe80::1%eth0/64"]
)
def test_cidr_forms_go_rejects(cidr: str, strict: bool) -> None:
    assert user_issues(user(src=[cidr]), strict=strict) == [
        f"invalid cidr {cidr!r} in user src limits"
    ]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("start", ["24:00:00", "09:00", "09:60:00", "09:00:60", "9am", "", "x"])
def test_invalid_time_range_start(start: str, strict: bool) -> None:
    issues = user_issues(user(times=[TimeRange(start=start, end="10:00:00")]), strict=strict)
    assert issues == [f"start in time range is invalid {start!r}"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("end", ["24:00:00", "10:0:00", "10:00:00 ", "-1:00:00"])
def test_invalid_time_range_end(end: str, strict: bool) -> None:
    issues = user_issues(user(times=[TimeRange(start="09:00:00", end=end)]), strict=strict)
    assert issues == [f"end in time range is invalid {end!r}"]


def test_single_digit_hour_is_accepted_by_the_server() -> None:
    assert user_issues(user(times=[TimeRange(start="9:00:00", end="17:00:00")]), strict=False) == []


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("zone", ["", "UTC", "Local", "Europe/Berlin", "America/New_York"])
def test_valid_time_zone(zone: str, strict: bool) -> None:
    assert user_issues(user(times_location=zone), strict=strict) == []


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Berlinn", "../../etc/passwd", "/"])
def test_invalid_time_zone(zone: str, strict: bool) -> None:
    issues = user_issues(user(times_location=zone), strict=strict)
    assert len(issues) == 1
    assert issues[0].startswith("could not parse iana time zone by name")
    assert zone in issues[0]


@pytest.mark.parametrize("strict", [True, False])
def test_issuer_account_must_be_an_account_key(strict: bool) -> None:
    for bad in ("not-a-key", KeyPair.create_user().public_key, KeyPair.create_server().public_key):
        assert user_issues(user(issuer_account=bad), strict=strict) == [
            "account_id is not an account public key"
        ]
    good = KeyPair.create_account().public_key
    assert user_issues(user(issuer_account=good), strict=strict) == []


@pytest.mark.parametrize(
    "resp",
    [ResponsePermission(max=-2, ttl=0), ResponsePermission(max=1, ttl=-1)],
)
def test_strict_negative_response_permission(resp: ResponsePermission) -> None:
    issues = user_issues(user(resp=resp))
    assert len(issues) == 1
    assert "negative" in issues[0]
    # nats-io/jwt accepts any values.
    assert user_issues(user(resp=resp), strict=False) == []


def test_response_permission_unlimited_max_is_fine() -> None:
    assert user_issues(user(resp=ResponsePermission(max=-1, ttl=0))) == []


def test_connection_types_known() -> None:
    assert {
        "STANDARD",
        "WEBSOCKET",
        "LEAFNODE",
        "LEAFNODE_WS",
        "MQTT",
        "MQTT_WS",
        "IN_PROCESS",
    } == CONNECTION_TYPES
    for strict in (True, False):
        assert (
            user_issues(user(allowed_connection_types=sorted(CONNECTION_TYPES)), strict=strict)
            == []
        )
        # nats-server upper-cases them.
        assert (
            user_issues(user(allowed_connection_types=["websocket", "Mqtt"]), strict=strict) == []
        )


@pytest.mark.parametrize("strict", [True, False])
def test_all_connection_types_unknown(strict: bool) -> None:
    issues = user_issues(user(allowed_connection_types=["BOGUS", "TCP"]), strict=strict)
    assert len(issues) == 1
    assert "unknown connection types" in issues[0]
    assert "BOGUS" in issues[0]


def test_some_connection_types_unknown() -> None:
    types = ["STANDARD", "BOGUS"]
    issues = user_issues(user(allowed_connection_types=types))
    assert len(issues) == 1
    assert "BOGUS" in issues[0]
    assert "STANDARD" not in issues[0]
    # nats-server only refuses a list in which every entry is unknown.
    assert user_issues(user(allowed_connection_types=types), strict=False) == []


def test_strict_wildcards_in_permissions() -> None:
    wild = user(pub=Permission(allow=["orders*"]), sub=Permission(deny=["a.>.b"]))
    issues = user_issues(wild)
    assert len(issues) == 2
    assert issues[0].startswith("pub.allow: ")
    assert issues[1].startswith("sub.deny: ")
    assert user_issues(wild, strict=False) == []
