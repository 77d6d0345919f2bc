"""Helpers for the battery tests: requests, a JWKS server, certificates."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from faststream_callout import KeyPair
from faststream_callout.protocol.claims import (
    AUTH_REQUEST_TYPE,
    AuthorizationRequest,
    ClientInfo,
    ClientTLS,
    ConnectOptions,
)

# -- requests ------------------------------------------------------------------


def make_request(
    *,
    user: str = "",
    password: str = "",
    token: str = "",
    jwt: str = "",
    nkey: str = "",
    sig: str = "",
    nonce: str = "",
    host: str = "127.0.0.1",
    kind: str = "Client",
    client_type: str = "nats",
    tls: ClientTLS | None = None,
) -> AuthorizationRequest:
    """The ``nats`` part of a request as nats-server would send it."""
    return AuthorizationRequest(
        user_nkey=KeyPair.create_user().public_key,
        client_info=ClientInfo(
            host=host, id=1, user=nkey or user, kind=kind, type=client_type, nonce=nonce
        ),
        connect_opts=ConnectOptions(
            jwt=jwt, nkey=nkey, sig=sig, auth_token=token, user=user, password=password, protocol=1
        ),
        client_tls=tls,
        type=AUTH_REQUEST_TYPE,
        version=2,
    )


# -- a JWKS / discovery server on 127.0.0.1 ------------------------------------------


@dataclass
class JWKSServer:
    """Serves ``/jwks.json`` and ``/.well-known/openid-configuration`` from a thread."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    body: bytes | None = None  # overrides the JWKS document
    chunked: bool = False
    hits: dict[str, int] = field(default_factory=dict)
    issuer: str = ""
    redirect_to: str = "/jwks.json"  # where /moved points
    tls: ssl.SSLContext | None = None  # serve https with this server context
    _server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.base}/jwks.json"

    def start(self) -> JWKSServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if owner.delay:
                    time.sleep(owner.delay)
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps(
                        {"issuer": owner.issuer or owner.base, "jwks_uri": owner.jwks_uri}
                    ).encode()
                elif self.path == "/jwks.json":
                    if owner.status != 200:
                        self.send_response(owner.status)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = (
                        owner.body
                        if owner.body is not None
                        else json.dumps({"keys": owner.keys}).encode()
                    )
                elif self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", owner.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if owner.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(body), 100):
                        piece = body[start : start + 100]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that gave up (timeouts under test) are expected

        self._server = Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def jwks_server(**options: Any) -> Iterator[JWKSServer]:
    server = JWKSServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


# -- signing keys and tokens ----------------------------------------------------------


class Signer:
    """An asymmetric key, its JWK and tokens signed with it."""

    def __init__(self, kind: str = "RSA", kid: str = "k1", *, alg: str | None = None) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

        self.kid = kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
            self.alg = alg or "RS256"
        elif kind == "EC":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
            self.alg = alg or "ES256"
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
            self.alg = alg or "EdDSA"
        self.jwk.update(kid=kid, use="sig")

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        headers: dict[str, Any] | None = None,
        alg: str | None = None,
        kid: str | None = "",
        **extra: Any,
    ) -> str:
        import jwt

        body = dict(claims or {})
        body.update(extra)
        header = {"kid": self.kid if kid == "" else kid}
        if header["kid"] is None:
            del header["kid"]
        header.update(headers or {})
        return jwt.encode(body, self.private, algorithm=alg or self.alg, headers=header)


def claims(issuer: str, audience: str = "nats", *, lifetime: float = 300, **extra: Any) -> dict:
    now = int(time.time())
    base = {
        "iss": issuer,
        "aud": audience,
        "sub": "alice",
        "iat": now,
        "exp": now + int(lifetime),
    }
    base.update(extra)
    return base


# -- certificates ---------------------------------------------------------------------


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and client certificates."""

    directory: Path
    ca_key: Any = None
    ca_cert: Any = None

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = self._certificate(
            "Battery Test CA", self.ca_key.public_key(), ca=True, issuer_key=self.ca_key
        )
        self.write("ca.pem", self.pem(self.ca_cert))

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @staticmethod
    def pem(cert: Any) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.PEM)

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _certificate(
        self,
        common_name: str,
        public_key: Any,
        *,
        ca: bool = False,
        issuer_key: Any = None,
        issuer_cert: Any = None,
        sans: list[Any] | None = None,
        server: bool = False,
        units: tuple[str, ...] = (),
        lifetime: dt.timedelta = dt.timedelta(days=1),
    ) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
        subject = x509.Name(attributes)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key or self.ca_key, hashes.SHA256())

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        emails: tuple[str, ...] = (),
        units: tuple[str, ...] = (),
        server: bool = False,
        signer: Pki | None = None,
    ) -> tuple[Path, Path, Any]:
        """Write ``name.pem`` and ``name.key``; return their paths and the certificate."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        authority = signer or self
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[Any] = [x509.RFC822Name(e) for e in emails]
        if server:
            sans += [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
        elif not sans:
            sans = [x509.DNSName(f"{common_name}.clients.invalid")]
        cert = authority._certificate(
            common_name,
            key.public_key(),
            issuer_key=authority.ca_key,
            issuer_cert=authority.ca_cert,
            sans=sans,
            server=server,
            units=units,
        )
        cert_path = self.write(f"{name}.pem", self.pem(cert))
        key_path = self.write(
            f"{name}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return cert_path, key_path, cert

    def client_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        return context
