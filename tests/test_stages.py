"""The pipeline's stage functions, and the doctor judging requests with them as the pipeline does.

Requests are minted by FakeServer; the doctor's request analysis runs offline on
the same bytes the pipeline decides, so a request the pipeline answers and the
doctor fails (or the other way round) shows up here without a server.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import msgspec
import pytest
from policies import Everyone, FixedGrant

from faststream_callout import CalloutPipeline, CalloutSettings, Grant, KeyPair, XKeyPair
from faststream_callout.core import stages
from faststream_callout.core.errors import Denied
from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import Outcome
from faststream_callout.core.signing import SigningKeys
from faststream_callout.integration.router import XKEY_HEADER
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import (
    AuthorizationRequestClaims,
    Permission,
    ResponsePermission,
)
from faststream_callout.testing import FakeServer, MintedRequest
from faststream_callout.tools.doctor.checkup import Checkup
from faststream_callout.tools.doctor.report import Report, Status
from faststream_callout.tools.doctor.request import analyze

T = 1_800_000_000.25
REQUEST_CHECKS = ("request.xkey", "request.verify", "request.issuer")


def pipeline_for(keys: SigningKeys) -> CalloutPipeline:
    return CalloutPipeline(keys, Everyone(), FixedGrant(pub=["chat.>"]), clock=lambda: T)


def doctor_findings(keys: SigningKeys | Keyring | None, body: bytes, header: str | None) -> Report:
    keyring = keys if keys is None or isinstance(keys, Keyring) else Keyring(keys)
    checkup = Checkup(Report("offline"), url="", credentials={}, keys=keyring)
    analyze(checkup, body, header, T)
    return checkup.report


def failed(report: Report) -> dict[str, str]:
    return {f.check: f.message for f in report.findings if f.status is Status.FAIL}


def reseal(server: FakeServer, minted: MintedRequest, claims: AuthorizationRequestClaims) -> bytes:
    """The request re-signed by the server with changed claims, sealed like the original."""
    token = jwt.encode(claims, server.key, now=claims.iat).encode()
    if server.service_xkey is None:
        return token
    return server.xkey.seal(token, server.service_xkey)


# -- the scenarios: (keys of the service, the server, the request) ---------------------------


@dataclasses.dataclass
class Scenario:
    keys: SigningKeys | Keyring
    body: bytes
    header: str | None


def _mint(server: FakeServer, **options: float) -> MintedRequest:
    return server.request(user="alice", now=options.get("now", T))


def plain() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    minted = _mint(FakeServer.for_keys(keys))
    return Scenario(keys, minted.body, minted.server_xkey)


def encrypted() -> Scenario:
    keys = SigningKeys(KeyPair.create_account(), xkey=XKeyPair.generate())
    minted = _mint(FakeServer.for_keys(keys))
    return Scenario(keys, minted.body, minted.server_xkey)


def next_xkey() -> Scenario:
    following = XKeyPair.generate()
    issuer = KeyPair.create_account()
    keys = Keyring(
        SigningKeys(issuer, xkey=XKeyPair.generate()),
        next_keys=[SigningKeys(issuer, xkey=following)],
    )
    server = FakeServer.config_mode(issuer.public_key, xkey=following.public_key)
    minted = _mint(server)
    return Scenario(keys, minted.body, minted.server_xkey)


def next_issuer() -> Scenario:
    xkey, following = XKeyPair.generate(), KeyPair.create_account()
    keys = Keyring(
        SigningKeys(KeyPair.create_account(), xkey=xkey), SigningKeys(following, xkey=xkey)
    )
    minted = _mint(FakeServer.config_mode(following.public_key, xkey=xkey.public_key))
    return Scenario(keys, minted.body, minted.server_xkey)


def wrong_xkey() -> Scenario:
    keys = SigningKeys(KeyPair.create_account(), xkey=XKeyPair.generate())
    server = FakeServer.config_mode(keys.callout_account, xkey=XKeyPair.generate().public_key)
    minted = _mint(server)
    return Scenario(keys, minted.body, minted.server_xkey)


def plaintext_to_an_xkey_service() -> Scenario:
    keys = SigningKeys(KeyPair.create_account(), xkey=XKeyPair.generate())
    minted = _mint(FakeServer.config_mode(keys.callout_account))
    return Scenario(keys, minted.body, minted.server_xkey)


def encrypted_to_a_service_without_xkey() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.config_mode(keys.callout_account, xkey=XKeyPair.generate().public_key)
    minted = _mint(server)
    return Scenario(keys, minted.body, minted.server_xkey)


def expired() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    minted = _mint(FakeServer.for_keys(keys), now=T - 3600)
    return Scenario(keys, minted.body, minted.server_xkey)


def unknown_issuer() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    minted = _mint(FakeServer.config_mode(KeyPair.create_account().public_key))
    return Scenario(keys, minted.body, minted.server_xkey)


def header_not_signed() -> Scenario:
    keys = SigningKeys(KeyPair.create_account(), xkey=XKeyPair.generate())
    server = FakeServer.for_keys(keys)
    minted = _mint(server)
    claims = minted.claims
    forged = msgspec.structs.replace(
        claims,
        nats=msgspec.structs.replace(
            claims.nats,
            server_id=msgspec.structs.replace(
                claims.nats.server_id, xkey=XKeyPair.generate().public_key
            ),
        ),
    )
    return Scenario(keys, reseal(server, minted, forged), minted.server_xkey)


def xkey_of_another_account() -> Scenario:
    ours, theirs = XKeyPair.generate(), XKeyPair.generate()
    other = KeyPair.create_account()
    keys = Keyring(
        SigningKeys(KeyPair.create_account(), xkey=ours), SigningKeys(other, xkey=theirs)
    )
    # A request for the second account, sealed for the first one's xkey.
    minted = _mint(FakeServer.config_mode(other.public_key, xkey=ours.public_key))
    return Scenario(keys, minted.body, minted.server_xkey)


def bad_audience() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    minted = _mint(server)
    forged = msgspec.structs.replace(minted.claims, aud="someone-else")
    return Scenario(keys, reseal(server, minted, forged), None)


def far_future_expiry() -> Scenario:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    server.auth_timeout = 32_503_680_000 - T  # exp in the year 3000
    return Scenario(keys, _mint(server).body, None)


def garbage() -> Scenario:
    return Scenario(SigningKeys(KeyPair.create_account()), b"not a request", None)


ACCEPTED = [plain, encrypted, next_xkey, next_issuer]
REJECTED = [
    wrong_xkey,
    plaintext_to_an_xkey_service,
    encrypted_to_a_service_without_xkey,
    expired,
    unknown_issuer,
    header_not_signed,
    xkey_of_another_account,
    bad_audience,
    far_future_expiry,
    garbage,
]


@pytest.mark.parametrize("make", ACCEPTED + REJECTED, ids=lambda make: make.__name__)
async def test_doctor_and_pipeline_agree_on_every_request(make: Callable[[], Scenario]) -> None:
    scenario = make()
    decision = await pipeline_for(scenario.keys).decide(scenario.body, scenario.header)
    report = doctor_findings(scenario.keys, scenario.body, scenario.header)
    problems = failed(report)
    assert set(problems) <= set(REQUEST_CHECKS), report.format()
    if make in ACCEPTED:
        assert decision.allowed, decision.reason
        assert problems == {}, report.format()
        assert {f.check for f in report.findings} >= {"request.verify", "request.issuer"}
    else:
        assert decision.outcome is Outcome.REJECTED
        assert problems, f"the pipeline rejected ({decision.reason}) but the doctor passed it"


def test_the_doctor_reports_every_problem_the_pipeline_stops_at_the_first() -> None:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    minted = server.request(user="alice", now=T - 3600)
    forged = msgspec.structs.replace(minted.claims, aud="someone-else")  # and expired
    body = reseal(server, minted, forged)
    exchange = stages.Exchange(forged, forged.nats, keys, keys.xkeys)
    settings = CalloutSettings()
    assert stages.verify(exchange, T, settings) == (
        "request audience is not nats-authorization-request"
    )
    assert [p.check for p in stages.claims_problems(forged, T, settings)] == ["audience", "times"]
    message = failed(doctor_findings(keys, body, None))["request.verify"]
    assert "audience is not nats-authorization-request" in message
    assert "expired" in message
    assert "clock is" in message  # the doctor explains the expiry by the clocks


def test_without_keys_the_doctor_still_verifies_a_plaintext_request() -> None:
    minted = FakeServer.config_mode(KeyPair.create_account().public_key).request(now=T)
    report = doctor_findings(None, minted.body, None)
    assert [f.status for f in report.findings_for("request.verify")] == [Status.OK]
    assert "no issuer key" in failed(report)["request.issuer"]


# -- the stages on their own ---------------------------------------------------------------


def test_open_tries_every_xkey_and_says_which_opened() -> None:
    current, following = XKeyPair.generate(), XKeyPair.generate()
    server = FakeServer.config_mode(KeyPair.create_account().public_key, xkey=following.public_key)
    minted = server.request(now=T)
    token, used = stages.open_request(
        minted.body, minted.server_xkey, (current, following), max_size=1 << 20
    )
    assert used is following
    assert stages.decode_request(token) == minted.claims
    with pytest.raises(stages.Rejected, match=current.public_key):
        stages.open_request(minted.body, minted.server_xkey, (current,), max_size=1 << 20)
    with pytest.raises(stages.Rejected, match="exceeds the size limit"):
        stages.open_request(minted.body, minted.server_xkey, (following,), max_size=10)
    with pytest.raises(stages.Rejected, match="has no xkey"):
        stages.open_request(minted.body, minted.server_xkey, (), max_size=1 << 20)
    assert minted.headers[XKEY_HEADER] == minted.server_xkey


def test_the_callout_account_comes_from_the_signed_sub_not_the_wire() -> None:
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key)
    minted = server.request(now=T)
    claims = minted.claims
    lying = msgspec.structs.replace(
        claims, nats=msgspec.structs.replace(claims.nats, callout_account="ALIAR")
    )
    decoded = stages.decode_request(reseal(server, minted, lying))
    assert decoded.nats.callout_account == "ALIAR"  # on the wire, ignored:
    request = stages.callout_request(decoded)
    assert request.callout_account == issuer.public_key
    assert decoded.nats.callout_account == "ALIAR"  # a new struct; the decoded one is untouched


def test_select_keys_names_the_accounts_we_sign_for() -> None:
    first, second = KeyPair.create_account(), KeyPair.create_account()
    keys = Keyring(SigningKeys(first), SigningKeys(second))
    minted = FakeServer.config_mode(second.public_key).request(now=T)
    assert stages.select_keys(keys, minted.claims).signing.callout_account == second.public_key
    stranger = FakeServer.config_mode(KeyPair.create_account().public_key).request(now=T)
    with pytest.raises(stages.Rejected) as refused:
        stages.select_keys(keys, stranger.claims)
    assert f"{first.public_key}, {second.public_key}" in refused.value.reason


def test_expiry_rules() -> None:
    settings = CalloutSettings(max_ttl=600, default_ttl=60)
    assert stages.expiry(Grant(account="APP"), T, settings) == int(T) + 61  # default, rounded up
    assert stages.expiry(Grant(account="APP", ttl=3600), T, settings) == int(T) + 601  # capped
    credential = Grant(account="APP", expires_at=int(T) + 30.9)
    assert stages.expiry(credential, T, settings) == int(T) + 30  # never outlive it: down
    assert stages.expiry(Grant(account="APP"), T, CalloutSettings()) == 0  # no expiry
    with pytest.raises(stages.InvalidGrant, match="ttl must be positive"):
        stages.expiry(Grant(account="APP", ttl=0), T, settings)
    with pytest.raises(Denied, match="credential expired"):
        stages.expiry(Grant(account="APP", expires_at=T - 1), T, settings)


def test_placement_and_version_rules() -> None:
    keys = SigningKeys(KeyPair.create_account())
    settings = CalloutSettings(protected_accounts={"AUTH", "$SYS"})
    assert stages.placement_problem(Grant(account="APP"), keys, settings) is None
    assert "protected account AUTH" in str(
        stages.placement_problem(Grant(account="AUTH"), keys, settings)
    )
    assert stages.placement_problem(Grant(account=""), keys, settings) == "grant names no account"
    old = FakeServer.config_mode(keys.callout_account)
    old.version = "2.11.0"
    request = old.request(now=T).claims.nats
    assert "2.12+" in str(
        stages.version_problem(Grant(account="APP", proxy_required=True), request)
    )
    assert stages.version_problem(Grant(account="APP"), request) is None


def test_budget_and_signing_deadline_follow_the_server() -> None:
    settings = CalloutSettings(auth_timeout=2.0, max_decision_time=1.5, deadline_margin=0.25)
    now = time.time()
    # exp rounded down by the server: its real deadline is up to a second after exp.
    assert stages.decision_budget(int(now) + 2, now, settings) == 1.5
    assert stages.decision_budget(int(now), now, settings) == pytest.approx(
        int(now) + 1 - 0.25 - now
    )


def test_strict_closes_the_direction_a_grant_leaves_out() -> None:
    keys = SigningKeys(KeyPair.create_account())
    signer = keys.user_jwt_signer("APP")
    assert signer is not None

    def written(grant: Grant, *, strict: bool = True) -> tuple[Permission, Permission]:
        claims = stages.user_claims(
            grant,
            name="u",
            user_nkey=KeyPair.create_user().public_key,
            signer=signer,
            mode=keys.mode,
            expires=0,
            strict=strict,
        )
        return claims.nats.pub, claims.nats.sub

    chat = Permission(allow=["chat.>"])
    deny_all = Permission(deny=[">"])
    assert written(Grant(account="APP", sub=chat)) == (deny_all, chat)
    assert written(Grant(account="APP", pub=chat)) == (chat, deny_all)
    # An empty allow list is no restriction: nats-server never sees it.
    assert written(Grant(account="APP", pub=chat, sub=Permission(allow=[]))) == (chat, deny_all)
    # resp alone: nothing published but replies, nothing subscribed.
    responder = Grant(account="APP", resp=ResponsePermission(max=1))
    assert written(responder) == (deny_all, deny_all)
    # Open on purpose, written out; and nats-server's own rule without strict.
    everything = Permission(allow=[">"])
    assert written(Grant(account="APP", pub=chat, sub=everything)) == (chat, everything)
    assert written(Grant(account="APP", sub=chat), strict=False) == (Permission(), chat)
    # The account defaults apply to a grant without any permission, said so, only.
    assert written(Grant(account="APP", account_defaults=True)) == (Permission(), Permission())
    with pytest.raises(stages.InvalidGrant, match="sets no permissions"):
        written(Grant(account="APP"))
    with pytest.raises(stages.InvalidGrant, match="account_defaults=True with pub, sub or resp"):
        written(Grant(account="APP", sub=chat, account_defaults=True))


@pytest.mark.parametrize(
    ("server_timeout", "allowed"), [(3, True), (12, True), (13, False), (3600, False)]
)
async def test_a_request_may_live_the_auth_timeout_and_a_leeway(
    server_timeout: float, allowed: bool
) -> None:
    keys = SigningKeys(KeyPair.create_account())
    server = FakeServer.for_keys(keys)
    server.auth_timeout = server_timeout  # exp = iat + this, as nats-server writes it
    minted = _mint(server)
    decision = await pipeline_for(keys).decide(minted.body, minted.server_xkey)
    assert decision.allowed is allowed  # 2 s (the settings' default) + 10 s leeway
    if not allowed:
        # A verified server asked: a signed denial that says why, like other invalid requests.
        assert decision.outcome is Outcome.REJECTED
        assert f"expires {server_timeout}s after it was issued" in decision.reason
        verdict = server.check(minted, decision.reply, now=T)
        assert not verdict.allowed
        assert "CalloutSettings.auth_timeout" in verdict.error
