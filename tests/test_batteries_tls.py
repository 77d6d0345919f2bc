"""ClientCertificateLookup: verified chains to identities (unit tests; the real server is
in test_batteries_real_server.py)."""

from __future__ import annotations

import pytest
from batteries_support import Pki, make_request

from faststream_callout import ConfigurationError, Denied, Identity
from faststream_callout.batteries import EXPIRES_AT, NotApplicable
from faststream_callout.batteries.tls import ClientCertificateLookup
from faststream_callout.protocol.claims import ClientTLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def alice_cert(pki):
    _, _, cert = pki.issue("alice", "alice", emails=("alice@example.com",), units=("chat", "ops"))
    return cert


def verified(pki: Pki, *leaves) -> ClientTLS:
    ca = pki.pem(pki.ca_cert).decode()
    return ClientTLS(
        version="1.3", verified_chains=[[pki.pem(leaf).decode(), ca] for leaf in leaves]
    )


def unverified(pki: Pki, leaf) -> ClientTLS:
    return ClientTLS(version="1.3", certs=[pki.pem(leaf).decode()])


async def test_common_name_by_default(pki, alice_cert):
    identity = await ClientCertificateLookup().lookup(make_request(tls=verified(pki, alice_cert)))
    assert identity.name == "alice"
    assert identity.groups == frozenset()
    assert identity.attributes[EXPIRES_AT] == alice_cert.not_valid_after_utc.timestamp()
    assert identity.attributes["email"] == "alice@example.com"
    assert identity.attributes["certificate_subject"] == "OU=ops,OU=chat,CN=alice"
    assert len(str(identity.attributes["certificate_fingerprint"])) == 64


async def test_name_from_a_san_and_groups_from_ou(pki, alice_cert):
    lookup = ClientCertificateLookup(name_from=("email", "cn"), groups_from_ou=True)
    identity = await lookup.lookup(make_request(tls=verified(pki, alice_cert)))
    assert identity.name == "alice@example.com"
    assert identity.groups == {"chat", "ops"}
    _, _, plain = pki.issue("bob", "bob")
    assert (await lookup.lookup(make_request(tls=verified(pki, plain)))).name == "bob"
    dns = ClientCertificateLookup(name_from=("dns",))
    assert (await dns.lookup(make_request(tls=verified(pki, plain)))).name == (
        "bob.clients.invalid"
    )
    with pytest.raises(Denied, match="no usable name"):
        await ClientCertificateLookup(name_from=("uri",)).lookup(
            make_request(tls=verified(pki, plain))
        )


async def test_issuer_restriction(pki, other_pki, alice_cert):
    lookup = ClientCertificateLookup(issuer="CN=Battery Test CA")
    assert (await lookup.lookup(make_request(tls=verified(pki, alice_cert)))).name == "alice"
    _, _, foreign = other_pki.issue("mallory", "mallory")
    strict = ClientCertificateLookup(issuer=["CN=Some Other CA"])
    with pytest.raises(Denied, match="accepted issuer"):
        await strict.lookup(make_request(tls=verified(other_pki, foreign)))
    with pytest.raises(ConfigurationError):
        ClientCertificateLookup(issuer="not a dn")
    # Both test CAs are named "Battery Test CA": a DN names, it does not authenticate.
    # Pin the CA (ca_fingerprints) when the server trusts CAs you do not control.
    assert (await lookup.lookup(make_request(tls=verified(other_pki, foreign)))).name


async def test_ca_pinning(pki, other_pki, alice_cert):
    pin = pki.ca_cert.fingerprint(__import__("cryptography").hazmat.primitives.hashes.SHA256())
    lookup = ClientCertificateLookup(ca_fingerprints=[pin.hex(":")])
    assert (await lookup.lookup(make_request(tls=verified(pki, alice_cert)))).name == "alice"
    _, _, foreign = other_pki.issue("mallory2", "alice")  # same name, other CA
    with pytest.raises(Denied, match="accepted CA"):
        await lookup.lookup(make_request(tls=verified(other_pki, foreign)))


async def test_users_restrict_and_enrich(pki, alice_cert):
    lookup = ClientCertificateLookup(
        users={"alice": Identity("alice", frozenset({"admin"}), {"tenant": "acme"})},
        groups_from_ou=True,
    )
    identity = await lookup.lookup(make_request(tls=verified(pki, alice_cert)))
    assert identity.groups == {"admin", "chat", "ops"}
    assert identity.attributes["tenant"] == "acme"
    assert EXPIRES_AT in identity.attributes
    _, _, bob = pki.issue("bob2", "bob")
    with pytest.raises(NotApplicable, match="not a known user"):
        await lookup.lookup(make_request(tls=verified(pki, bob)))


async def test_identify_callable(pki, alice_cert):
    async def identify(cert):
        return Identity(cert.emails[0].split("@")[0]) if cert.emails else None

    lookup = ClientCertificateLookup(identify=identify)
    assert (await lookup.lookup(make_request(tls=verified(pki, alice_cert)))).name == "alice"
    _, _, plain = pki.issue("carol", "carol")
    with pytest.raises(NotApplicable):
        await lookup.lookup(make_request(tls=verified(pki, plain)))
    with pytest.raises(ConfigurationError):
        ClientCertificateLookup(identify=identify, users={})


async def test_no_certificate_is_not_applicable():
    lookup = ClientCertificateLookup()
    with pytest.raises(NotApplicable):
        await lookup.lookup(make_request())
    with pytest.raises(NotApplicable):
        await lookup.lookup(make_request(tls=ClientTLS(version="1.3")))


async def test_garbage_is_denied(pki):
    lookup = ClientCertificateLookup()
    for tls in (
        ClientTLS(verified_chains=[["-----BEGIN CERTIFICATE-----\nAAAA\n"]]),
        ClientTLS(verified_chains=[["x" * 100_000]]),
        ClientTLS(verified_chains=[[]]),
    ):
        with pytest.raises(Denied):
            await lookup.lookup(make_request(tls=tls))


async def test_unverified_certificates_are_refused_by_default(pki, alice_cert):
    with pytest.raises(Denied, match="not verified by the server"):
        await ClientCertificateLookup().lookup(make_request(tls=unverified(pki, alice_cert)))


async def test_unverified_certificates_verified_with_trust_anchors(pki, other_pki, alice_cert):
    lookup = ClientCertificateLookup(trust_anchors=pki.ca_path)
    identity = await lookup.lookup(make_request(tls=unverified(pki, alice_cert)))
    assert identity.name == "alice"
    _, _, foreign = other_pki.issue("eve", "alice")
    with pytest.raises(Denied, match="does not verify"):
        await lookup.lookup(make_request(tls=unverified(other_pki, foreign)))
    # A self-signed "alice" is what an attacker would present.
    with pytest.raises(Denied, match="does not verify"):
        await lookup.lookup(make_request(tls=unverified(other_pki, other_pki.ca_cert)))
    later = ClientCertificateLookup(trust_anchors=pki.pem(pki.ca_cert), clock=lambda: 4_000_000_000)
    with pytest.raises(Denied, match="does not verify"):  # expired by then
        await later.lookup(make_request(tls=unverified(pki, alice_cert)))


async def test_allow_unverified_still_checks_validity(pki, alice_cert, caplog):
    with caplog.at_level("WARNING", logger="faststream_callout.batteries"):
        lookup = ClientCertificateLookup(allow_unverified=True)
    assert "allow_unverified=True" in caplog.text
    assert (await lookup.lookup(make_request(tls=unverified(pki, alice_cert)))).name == "alice"
    expired = ClientCertificateLookup(allow_unverified=True, clock=lambda: 4_000_000_000)
    with pytest.raises(Denied, match="expired"):
        await expired.lookup(make_request(tls=unverified(pki, alice_cert)))


def test_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError):
        ClientCertificateLookup(name_from=("serial",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot read"):
        ClientCertificateLookup(trust_anchors=tmp_path / "missing.pem")
    with pytest.raises(ConfigurationError, match="no certificate"):
        ClientCertificateLookup(trust_anchors=[])
    assert repr(ClientCertificateLookup()).startswith("ClientCertificateLookup(name_from=['cn']")
