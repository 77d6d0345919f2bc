"""Strict grants on a real nats-server: a direction a grant leaves out is closed (issue 14, item 3).

nats-server leaves a direction the user JWT does not mention open to everything
once another one is set. A grant restricting only ``sub`` could publish to
``$JS.API.STREAM.DELETE.ORDERS``; one restricting only ``pub`` could subscribe to ``>``.
"""

from __future__ import annotations

from callout_env import CONFIG, CalloutEnv, run_in
from nats.aio.msg import Msg
from policies import Everyone, GrantByName

from faststream_callout import Grant, Permission
from faststream_callout.protocol.claims import ResponsePermission
from faststream_callout.testing import can_publish, can_subscribe

GRANTS = GrantByName(
    {
        "reader": Grant(account="APP", sub=Permission(allow=["chat.>"])),
        "writer": Grant(account="APP", pub=Permission(allow=["chat.>"])),
        "responder": Grant(
            account="APP", sub=Permission(allow=["svc.echo"]), resp=ResponsePermission(max=1)
        ),
        "open": Grant(account="APP", pub=Permission(allow=["svc.>"]), sub=Permission(allow=[">"])),
    }
)


@run_in(CONFIG)
async def test_a_direction_the_grant_leaves_out_is_closed(callout_env: CalloutEnv) -> None:
    async with callout_env.serve(Everyone(), GRANTS) as callout:
        reader = await callout.connect(user="reader", password="pw")
        assert not await can_publish(reader, "$JS.API.STREAM.DELETE.ORDERS")
        assert not await can_publish(reader, "chat.room")
        assert await can_subscribe(reader, "chat.>")

        writer = await callout.connect(user="writer", password="pw")
        assert not await can_subscribe(writer, ">")
        assert not await can_subscribe(writer, "_INBOX.>")
        assert await can_publish(writer, "chat.room")

        # resp alone still answers requests: the reply permission outranks the closed pub.
        responder = await callout.connect(user="responder", password="pw")
        # sub ">" written out: left open on purpose.
        asker = await callout.connect(user="open", password="pw")
        assert await can_subscribe(asker, "anything.at.all")

        async def echo(msg: Msg) -> None:
            await msg.respond(b"pong:" + msg.data)

        await responder.subscribe("svc.echo", cb=echo)
        await responder.flush()
        reply = await asker.request("svc.echo", b"ping", timeout=5)
        assert reply.data == b"pong:ping"
        assert not await can_publish(responder, "svc.other")
