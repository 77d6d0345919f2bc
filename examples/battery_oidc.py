"""Battery: OIDC access tokens (bearer JWTs) verified against the issuer's JWKS.

Clients log in with the access token from your identity provider as their NATS
token (``nats.connect(token=access_token)``) or as the password of the user
``bearer``. Groups come from the token's ``groups`` claim (Keycloak:
``realm_access.roles``), and every grant expires with the token.

    uv run python examples/battery_oidc.py      # demo: a local "IdP", nats-server, logins
    faststream run examples.battery_oidc:create_app --factory   # against your server

Configuration (environment): ``NATS_URL``, ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``,
``CALLOUT_ISSUER_SEED``, ``OIDC_ISSUER`` (e.g. https://idp.example.com/realms/app;
the JWKS is discovered from it) and ``OIDC_AUDIENCE`` (the ``aud`` of your tokens).
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec
from dishka import make_async_container
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from jwt.algorithms import ECAlgorithm

from faststream_callout import CalloutProvider, KeyPair, PolicyProvider, SigningKeys, callout_router
from faststream_callout.batteries import OIDCLookup, PermissionSet, RoleBasedPermissions


def create_app() -> FastStream:
    tokens = OIDCLookup(
        issuer=os.environ["OIDC_ISSUER"],
        audience=os.environ.get("OIDC_AUDIENCE", "nats"),
        sources=("token", "password"),  # nats.connect(token=...) or user "bearer" + password
        password_user="bearer",
        groups_claims=("groups", "realm_access.roles"),
    )
    permissions = RoleBasedPermissions(
        {
            "chat": PermissionSet(pub=["chat.{user}.>"], sub=["chat.>", "_INBOX_{user}.>"]),
            "admin": PermissionSet(pub=[">"], sub=[">"], ttl=900),
        },
        account="APP",
        unsafe_values="escape",  # `sub` claims may hold dots (emails): percent-encode them
    )
    policy = PolicyProvider(
        keys=SigningKeys(KeyPair.from_seed(os.environ["CALLOUT_ISSUER_SEED"])),
        lookup=tokens,
        permissions=permissions,
    )
    container = make_async_container(CalloutProvider(), policy)
    broker = NatsBroker(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        security=SASLPlaintext(
            username=os.environ.get("CALLOUT_USER", "auth"),
            password=os.environ.get("CALLOUT_PASSWORD", ""),
        ),
    )
    broker.include_router(callout_router(container))
    # Fetch the keys at start-up, so the first logins do not wait for the IdP.
    return FastStream(broker, after_startup=[tokens.prefetch], after_shutdown=[container.close])


def _local_idp() -> tuple[str, object]:
    """A throwaway 'identity provider' on 127.0.0.1: discovery + JWKS, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"kid": "demo", "use": "sig"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            documents = {
                "/.well-known/openid-configuration": {"issuer": base, "jwks_uri": base + "/jwks"},
                "/jwks": {"keys": [jwk]},
            }
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", key


if __name__ == "__main__":
    import time

    import jwt
    from battery_demo import Login, run

    issuer, signing_key = _local_idp()
    os.environ.update(OIDC_ISSUER=issuer, OIDC_AUDIENCE="nats")

    def token(**claims: object) -> str:
        now = int(time.time())
        body = {"iss": issuer, "aud": "nats", "sub": "olivia", "iat": now, "exp": now + 300}
        body |= {"groups": ["chat"], **claims}
        return jwt.encode(body, signing_key, algorithm="ES256", headers={"kid": "demo"})

    raise SystemExit(
        run(
            create_app,
            [
                Login("token", allowed=True, options={"token": token()}),
                Login(
                    "bearer / token as password",
                    allowed=True,
                    options={"user": "bearer", "password": token()},
                ),
                Login(
                    "expired token",
                    allowed=False,
                    options={"token": token(exp=int(time.time()) - 60)},
                ),
                Login(
                    "token for another audience",
                    allowed=False,
                    options={"token": token(aud="other-app")},
                ),
                Login(
                    "token without a known role",
                    allowed=False,
                    options={"token": token(groups=["guest"])},
                ),
            ],
        )
    )
