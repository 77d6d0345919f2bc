"""TLS client certificates: the verified certificate's subject or SAN names the identity.

With ``tls { verify: true }`` nats-server checks client certificates against
its ``ca_file`` during the handshake and passes the verified chains to the
callout (``client_tls.verified_chains``, leaf first). :class:`ClientCertificateLookup`
reads the leaf and maps its common name or a subject alternative name (email,
DNS, URI) to an identity. Needs the ``tls`` extra
(``pip install faststream-callout[tls]``).

Unverified certificates (``client_tls.certs``, sent when the server does not
verify) prove only that the client holds *some* key: they are refused unless
``trust_anchors`` are given (the lookup then verifies the chain itself) or
``allow_unverified=True`` says you know what you are doing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from faststream_callout.batteries._common import EXPIRES_AT, extra_missing, logger, resolve
from faststream_callout.batteries.compose import NotApplicable
from faststream_callout.core.errors import ConfigurationError, Denied
from faststream_callout.core.policy import Identity
from faststream_callout.protocol.claims import AuthorizationRequest

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import verification
    from cryptography.x509.oid import NameOID
except ImportError as _error:
    raise extra_missing("tls", "faststream_callout.batteries.tls", _error) from _error

__all__ = ["CertificateIdentifier", "ClientCertificate", "ClientCertificateLookup", "NameSource"]

NameSource = Literal["cn", "email", "dns", "uri", "subject"]
CertificateIdentifier = Callable[
    ["ClientCertificate"], Identity | Awaitable[Identity | None] | None
]
_MAX_PEM_CHARS: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What the lookup read from the client's (leaf) certificate.

    Attributes:
        subject: the subject DN, RFC 4514 (``CN=alice,O=Example``).
        issuer: the issuer DN, RFC 4514.
        common_names: the subject's CN values.
        organizational_units: the subject's OU values.
        emails, dns_names, uris: subject alternative names.
        serial_number: the serial number.
        fingerprint: SHA-256 of the DER certificate, lower-case hex.
        not_after: Unix time the certificate expires.
        chain_fingerprints: SHA-256 fingerprints of the certificates above the
            leaf in the verified chains.
        verified: whether the chain was verified (by nats-server or by this lookup).
        certificate: the parsed leaf.

    """

    subject: str
    issuer: str
    common_names: tuple[str, ...]
    organizational_units: tuple[str, ...]
    emails: tuple[str, ...]
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    serial_number: int
    fingerprint: str
    not_after: float
    chain_fingerprints: frozenset[str]
    verified: bool
    certificate: x509.Certificate

    def name(self, sources: Sequence[NameSource]) -> str | None:
        """The first name found in ``sources`` order."""
        for source in sources:
            values: Sequence[str] = {
                "cn": self.common_names,
                "email": self.emails,
                "dns": self.dns_names,
                "uri": self.uris,
                "subject": (self.subject,),
            }[source]
            if values:
                return values[0]
        return None


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _load_pem(pem: str) -> x509.Certificate:
    if len(pem) > _MAX_PEM_CHARS:
        raise ValueError("certificate too large")
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def _describe(
    leaf: x509.Certificate, above: Iterable[x509.Certificate], *, verified: bool
) -> ClientCertificate:
    subject = leaf.subject
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    units = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    emails: list[str] = []
    dns: list[str] = []
    uris: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        emails = san.get_values_for_type(x509.RFC822Name)
        dns = san.get_values_for_type(x509.DNSName)
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return ClientCertificate(
        subject=subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        common_names=tuple(names),
        organizational_units=tuple(units),
        emails=tuple(emails),
        dns_names=tuple(dns),
        uris=tuple(uris),
        serial_number=leaf.serial_number,
        fingerprint=_fingerprint(leaf),
        not_after=leaf.not_valid_after_utc.timestamp(),
        chain_fingerprints=frozenset(_fingerprint(c) for c in above),
        verified=verified,
        certificate=leaf,
    )


def _load_anchors(
    anchors: str | Path | bytes | Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    if isinstance(anchors, bytes):
        return x509.load_pem_x509_certificates(anchors)
    if isinstance(anchors, str | Path):
        try:
            return x509.load_pem_x509_certificates(Path(anchors).read_bytes())
        except OSError as exc:
            raise ConfigurationError(f"{anchors}: cannot read ({exc.strerror or exc})") from None
    return list(anchors)


class ClientCertificateLookup:
    """An :class:`~faststream_callout.IdentityLookup` for TLS client certificates.

    By default the identity is named by the first of ``name_from`` found in
    the leaf certificate (default: the subject CN), with the OUs as groups
    when ``groups_from_ou``, and attributes ``expires_at`` (the certificate's
    ``notAfter``: grants do not outlive it), ``certificate_subject``,
    ``certificate_fingerprint``, ``email`` (the first email SAN, if any).
    ``users`` restricts and enriches this; ``identify`` replaces it.

    Example:
        ``ClientCertificateLookup(name_from=("email", "cn"), issuer="CN=Example Users CA")``

    Args:
        name_from: where the identity's name comes from, in order of preference:
            ``"cn"``, ``"email"``, ``"dns"``, ``"uri"`` (SANs) or ``"subject"``
            (the whole DN).
        users: name -> identity: only these names log in (others raise
            :class:`NotApplicable`), with the identity given here (its
            attributes are completed with the certificate's).
        identify: ``(ClientCertificate) -> Identity | None`` (sync or async):
            your own mapping; ``None`` means "not mine".
        issuer: accept only leaves issued by this DN (RFC 4514 string, e.g.
            ``"CN=Users CA,O=Example"``) or one of several. A DN names a CA, it
            does not authenticate it: if the server trusts CAs you do not
            control, pin yours with ``ca_fingerprints``.
        ca_fingerprints: accept only chains through one of these CA
            certificates (SHA-256 hex of the DER): pins the CA when the
            server trusts several.
        groups_from_ou: the subject's OU values become the identity's groups.
        trust_anchors: CA certificates (PEM file, PEM bytes or parsed) to verify
            ``client_tls.certs`` with when the server did not verify them.
        allow_unverified: accept unverified ``client_tls.certs`` as they are.
            Only behind a proxy that verified them: otherwise anyone can
            present any self-signed certificate.
        clock: Unix time, for verifying with ``trust_anchors``.

    """

    def __init__(
        self,
        *,
        name_from: Sequence[NameSource] = ("cn",),
        users: Mapping[str, Identity] | None = None,
        identify: CertificateIdentifier | None = None,
        issuer: str | Collection[str] | None = None,
        ca_fingerprints: Collection[str] | None = None,
        groups_from_ou: bool = False,
        trust_anchors: str | Path | bytes | Sequence[x509.Certificate] | None = None,
        allow_unverified: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(name_from, str):
            name_from = (name_from,)  # type: ignore[assignment]
        if not name_from or not set(name_from) <= {"cn", "email", "dns", "uri", "subject"}:
            raise ConfigurationError("name_from must list 'cn', 'email', 'dns', 'uri', 'subject'")
        if users is not None and identify is not None:
            raise ConfigurationError("give users or identify, not both")
        self.name_from = tuple(name_from)
        self.users = None if users is None else MappingProxyType(dict(users))
        self._identify = identify
        if issuer is None:
            self.issuers: frozenset[str] | None = None
        else:
            given = [issuer] if isinstance(issuer, str) else list(issuer)
            # Normalise through the parser so spacing and escaping do not matter.
            self.issuers = frozenset(_normalise_dn(dn) for dn in given)
        self.ca_fingerprints = (
            None
            if ca_fingerprints is None
            else frozenset(f.lower().replace(":", "") for f in ca_fingerprints)
        )
        self.groups_from_ou = groups_from_ou
        self._verifier_builder: verification.PolicyBuilder | None = None
        self._clock = clock
        if trust_anchors is not None:
            anchors = _load_anchors(trust_anchors)
            if not anchors:
                raise ConfigurationError("trust_anchors holds no certificate")
            self._verifier_builder = verification.PolicyBuilder().store(verification.Store(anchors))
        self.allow_unverified = allow_unverified
        if allow_unverified:
            logger.warning(
                "ClientCertificateLookup(allow_unverified=True): certificates nobody verified "
                "are accepted; only safe behind a proxy that verifies them"
            )

    def certificate(self, request: AuthorizationRequest) -> ClientCertificate:
        """The client's certificate as this lookup trusts it, or raise.

        Raises:
            NotApplicable: the client presented no certificate.
            Denied: the certificate is unverified (and may not be), malformed,
                or from the wrong issuer or CA.

        """
        tls = request.client_tls
        if tls is None or not (tls.verified_chains or tls.certs):
            raise NotApplicable("no client certificate presented")
        try:
            if tls.verified_chains:
                chains = [
                    [_load_pem(pem) for pem in chain] for chain in tls.verified_chains if chain
                ]
                if not chains:
                    raise Denied("empty verified certificate chain")
                leaf = chains[0][0]
                above = [c for chain in chains for c in chain[1:]]
                described = _describe(leaf, above, verified=True)
            else:
                described = self._unverified([_load_pem(pem) for pem in tls.certs])
        except ValueError:
            raise Denied("client certificate could not be parsed") from None
        if self.issuers is not None and _same_dn(described.issuer) not in self.issuers:
            raise Denied("client certificate is not from an accepted issuer")
        if self.ca_fingerprints is not None and not (
            described.chain_fingerprints & self.ca_fingerprints
        ):
            raise Denied("client certificate does not chain to an accepted CA")
        return described

    def _unverified(self, certificates: list[x509.Certificate]) -> ClientCertificate:
        leaf, intermediates = certificates[0], certificates[1:]
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC) if self._clock else None
        now = now or dt.datetime.now(dt.UTC)
        builder = self._verifier_builder
        if builder is not None:
            verifier = builder.time(now).build_client_verifier()
            try:
                verified = verifier.verify(leaf, intermediates)
            except verification.VerificationError:
                raise Denied(
                    "client certificate does not verify against the trust anchors"
                ) from None
            return _describe(leaf, verified.chain[1:], verified=True)
        if not self.allow_unverified:
            raise Denied(
                "client certificate was not verified by the server (enable tls verify, "
                "or give trust_anchors)"
            )
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise Denied("client certificate is expired or not yet valid")
        return _describe(leaf, intermediates, verified=False)

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Map the client's certificate to an identity."""
        described = self.certificate(request)
        if self._identify is not None:
            identity: Identity | None = await resolve(self._identify(described))
            if identity is None:
                raise NotApplicable("certificate not mapped to an identity")
            if not isinstance(identity, Identity):
                raise TypeError(f"identify returned {type(identity).__name__}, not Identity")
            return identity
        name = described.name(self.name_from)
        if not name:
            raise Denied("client certificate has no usable name")
        attributes: dict[str, object] = {
            EXPIRES_AT: described.not_after,
            "certificate_subject": described.subject,
            "certificate_fingerprint": described.fingerprint,
        }
        if described.emails:
            attributes["email"] = described.emails[0]
        groups = frozenset(described.organizational_units) if self.groups_from_ou else frozenset()
        if self.users is not None:
            known = self.users.get(name)
            if known is None:
                raise NotApplicable("certificate name is not a known user")
            return Identity(
                known.name,
                known.groups | groups,
                MappingProxyType({**attributes, **known.attributes}),
            )
        return Identity(name, groups, MappingProxyType(attributes))

    def __repr__(self) -> str:
        return (
            f"ClientCertificateLookup(name_from={list(self.name_from)!r}, "
            f"issuers={sorted(self.issuers) if self.issuers else None!r}, "
            f"allow_unverified={self.allow_unverified})"
        )


def _same_dn(dn: str) -> str:
    # A DN read from a certificate: compare in the same spelling as the configured ones.
    try:
        return x509.Name.from_rfc4514_string(dn).rfc4514_string()
    except ValueError:
        return dn


def _normalise_dn(dn: str) -> str:
    """An RFC 4514 DN in one canonical spelling (cryptography's), for comparisons."""
    try:
        return x509.Name.from_rfc4514_string(dn).rfc4514_string()
    except ValueError:
        raise ConfigurationError(f"issuer {dn!r} is not an RFC 4514 DN") from None
