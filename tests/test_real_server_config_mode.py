"""nats-server 2.15 (config mode) accepts what we sign, with real nats-py clients."""

from __future__ import annotations

import nats
import pytest
from nats.errors import Error as NatsError

pytestmark = pytest.mark.usefixtures("callout_service")


async def test_user_password_allowed(real_server):
    nc = await nats.connect(
        real_server.url, user="alice", password="alice-pw", allow_reconnect=False
    )
    try:
        assert nc.is_connected
        sub = await nc.subscribe("chat.alice.room")
        await nc.publish("chat.alice.room", b"hi")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hi"
    finally:
        await nc.close()


async def test_wrong_password_denied(real_server):
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(
            real_server.url,
            user="alice",
            password="wrong",
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
