"""Battery: nkey logins. Clients sign the server's nonce with their nkey seed.

nats-server sends a nonce only when some nkey user is configured (or in
operator mode): add a placeholder nkey user, whose seed you throw away, to any
account, e.g. ``AUTH: { users: [ {user: auth, password: ...}, {nkey: U...} ] }``.

    uv run python examples/battery_nkey.py      # demo: local nats-server, fresh keys
    faststream run examples.battery_nkey:create_app --factory   # against your server

Configuration (environment): ``NATS_URL``, ``CALLOUT_USER`` / ``CALLOUT_PASSWORD``,
``CALLOUT_ISSUER_SEED`` and ``CALLOUT_NKEYS``, a TOML file::

    [users.sensor-1]
    nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
    groups = ["telemetry"]
"""

from __future__ import annotations

import os

from dishka import make_async_container
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext

from faststream_callout import CalloutProvider, KeyPair, PolicyProvider, SigningKeys, callout_router
from faststream_callout.batteries import NKeyLookup, PermissionSet, RoleBasedPermissions


def create_app() -> FastStream:
    policy = PolicyProvider(
        keys=SigningKeys(KeyPair.from_seed(os.environ["CALLOUT_ISSUER_SEED"])),
        lookup=NKeyLookup.from_file(os.environ["CALLOUT_NKEYS"]),
        permissions=RoleBasedPermissions(
            {"telemetry": PermissionSet(pub=["telemetry.{user}.>"], sub=["commands.{user}"])},
            account="APP",
        ),
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
    return FastStream(broker, after_shutdown=[container.close])


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    from battery_demo import Login, run

    sensor, stranger = KeyPair.create_user(), KeyPair.create_user()
    with tempfile.TemporaryDirectory() as directory:
        nkeys = Path(directory) / "nkeys.toml"
        nkeys.write_text(
            f'[users.sensor-1]\nnkey = "{sensor.public_key}"\ngroups = ["telemetry"]\n'
        )
        os.environ["CALLOUT_NKEYS"] = str(nkeys)
        status = run(
            create_app,
            [
                Login(
                    "sensor-1 (known nkey)", allowed=True, options={"nkeys_seed_str": sensor.seed}
                ),
                Login("unknown nkey", allowed=False, options={"nkeys_seed_str": stranger.seed}),
            ],
            nkey_placeholder=True,
        )
    raise SystemExit(status)
