"""Battery: TLS client certificates. nats-server verifies them, the callout maps them.

The server runs with ``tls { cert_file, key_file, ca_file, verify: true }``, so
every client (this service too) presents a certificate from ``ca_file``. The
callout maps the verified certificate's CN (or an email/DNS/URI SAN) to an
identity, here restricted to certificates of one CA.

    uv run python examples/battery_tls.py       # demo: generated CA, certificates, server
    faststream run examples.battery_tls:create_app --factory   # against your server

Configuration (environment): ``NATS_URL``, ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``,
``CALLOUT_ISSUER_SEED``, and for the service's own TLS connection ``CALLOUT_TLS_CA``,
``CALLOUT_TLS_CERT``, ``CALLOUT_TLS_KEY`` (PEM files).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from dishka import make_async_container
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import CalloutProvider, KeyPair, PolicyProvider, SigningKeys, callout_router
from faststream_callout.batteries import (
    ClientCertificateLookup,
    PermissionSet,
    RoleBasedPermissions,
)


def create_app() -> FastStream:
    certificates = ClientCertificateLookup(
        name_from=("cn",),
        groups_from_ou=True,  # OU=devices -> role "devices"
    )
    permissions = RoleBasedPermissions(
        {"devices": PermissionSet(pub=["devices.{user}.>"], sub=["devices.{user}.commands"])},
        account="APP",
    )
    policy = PolicyProvider(
        keys=SigningKeys(KeyPair.from_seed(os.environ["CALLOUT_ISSUER_SEED"])),
        lookup=certificates,
        permissions=permissions,
    )
    container = make_async_container(CalloutProvider(), policy)
    tls = ssl.create_default_context(cafile=os.environ["CALLOUT_TLS_CA"])
    tls.load_cert_chain(os.environ["CALLOUT_TLS_CERT"], os.environ["CALLOUT_TLS_KEY"])
    broker = NatsBroker(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        security=SASLPlaintext(
            username=os.environ.get("CALLOUT_USER", "auth"),
            password=os.environ.get("CALLOUT_PASSWORD", ""),
            ssl_context=tls,
        ),
    )
    broker.include_router(callout_router(container))
    return FastStream(broker, after_shutdown=[container.close])


def _pki(directory: str) -> dict[str, str]:
    """A throwaway CA with server, service and device certificates (demo only)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Demo Device CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": str(Path(directory) / "ca.pem")}
    Path(files["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, cn: str, ou: str | None, *, server: bool = False) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if ou:
            subject.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        san: list[x509.GeneralName] = [x509.DNSName("localhost" if server else f"{cn}.invalid")]
        if server:
            san.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files[name] = str(Path(directory) / f"{name}.pem")
        files[f"{name}-key"] = str(Path(directory) / f"{name}.key")
        Path(files[name]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(files[f"{name}-key"]).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    issue("server", "localhost", None, server=True)
    issue("service", "callout-service", None)
    issue("sensor", "sensor-7", "devices")
    issue("guest", "guest-1", "visitors")
    return files


if __name__ == "__main__":
    import tempfile

    from battery_demo import Login, run

    with tempfile.TemporaryDirectory() as directory:
        pki = _pki(directory)
        os.environ.update(
            CALLOUT_TLS_CA=pki["ca"],
            CALLOUT_TLS_CERT=pki["service"],
            CALLOUT_TLS_KEY=pki["service-key"],
        )

        def client(name: str) -> ssl.SSLContext:
            context = ssl.create_default_context(cafile=pki["ca"])
            context.load_cert_chain(pki[name], pki[f"{name}-key"])
            return context

        server_tls = (
            f'tls {{\n  cert_file: "{pki["server"]}"\n  key_file: "{pki["server-key"]}"\n'
            f'  ca_file: "{pki["ca"]}"\n  verify: true\n}}\n'
        )
        status = run(
            create_app,
            [
                Login("sensor-7 (OU=devices)", allowed=True, options={"tls": client("sensor")}),
                Login("guest-1 (OU=visitors)", allowed=False, options={"tls": client("guest")}),
            ],
            extra=server_tls,
        )
    raise SystemExit(status)
