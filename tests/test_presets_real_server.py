"""Permission presets on a real nats-server with JetStream: what they name works, the rest not.

One server for the module (config mode, JetStream, a websocket listener with cookie
options) and one callout service on it. Users log in with real nats-py clients; each
gets one preset, as a Grant (``Preset.grant``) or through RoleBasedPermissions
(``Preset.role``, templates expanded per identity). For each preset the operations it
names run end to end, and the neighbouring ones it does not name are refused with a
permissions violation the server reports for that subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
import nats
import nats.micro
import pytest
from callout_env import login, refused, service, user_info
from faststream.security import SASLPlaintext
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, KeyValueConfig
from policies import USER_INFO_SUBJECT, Passwords

from faststream_callout import (
    AuthorizationRequest,
    CalloutPipeline,
    Grant,
    Identity,
    KeyPair,
    SigningKeys,
)
from faststream_callout.batteries import (
    Preset,
    RoleBasedPermissions,
    inbox_prefix,
    jetstream_admin,
    jetstream_consumer,
    jetstream_publisher,
    kv_read,
    kv_read_write,
    kv_watch,
    object_get,
    object_put,
    private_inbox,
    service_call,
    service_serve,
)
from faststream_callout.testing import settle
from faststream_callout.testing.local_server import (
    CalloutServerConfig,
    LocalNatsServer,
    free_port,
)
from faststream_callout.testing.probes import can_publish, can_subscribe, watch
from faststream_callout.tools.natsconf.render import WebSocketListener

# nats-py's websocket transport passes aiohttp a float timeout, which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:parameter 'timeout':DeprecationWarning")

WEB_ORIGIN = "https://app.example"
WEB_TOKEN = "tok-web-0123456789"
DEADLINE = 10.0  # generous: the assertion is about a refusal, not about time

# Users whose grant is a Preset turned into a Grant.
GRANTS: dict[str, Preset] = {
    "owner": Preset(pub=(">",), sub=(">",), inbox="_INBOX"),
    "responder": private_inbox("responder", respond=True) + Preset(sub=("help.>",)),
    "mute": private_inbox("mute") + Preset(sub=("quiet.>",)),
    "publisher": private_inbox("publisher") + jetstream_publisher("ORDERS", ["orders.>"]),
    "pusher": private_inbox("pusher")
    + jetstream_consumer("ORDERS", "pushed", push=True, deliver_subject="deliver.orders"),
    "ops": private_inbox("ops") + jetstream_admin("SCRATCH"),
    "kv-reader": private_inbox("kv-reader") + kv_read("config"),
    "kv-watcher": private_inbox("kv-watcher") + kv_watch("config"),
    "obj-reader": private_inbox("obj-reader") + object_get("files"),
    "obj-writer": private_inbox("obj-writer") + object_put("files"),
    "echo-server": service_serve("echo", ["echo.say"]),
    "echo-client": private_inbox("echo-client") + service_call("echo", ["echo.say"]),
}

# Users whose grant comes from RoleBasedPermissions roles built from presets.
ROLES = RoleBasedPermissions(
    {
        "requester": (private_inbox("{user}") + Preset(pub=("help.>", "quiet.>"))).role(),
        "reader": (private_inbox("{user}") + jetstream_consumer("ORDERS", "worker")).role(),
        "ephemeral": (private_inbox("{user}") + jetstream_consumer("ORDERS", push=True)).role(),
        "pull-ephemeral": (private_inbox("{user}") + jetstream_consumer("ORDERS")).role(),
        "kv-own-keys": (private_inbox("{user}") + kv_read_write("config", "users.{user}.>")).role(),
        "browser": (
            private_inbox("{user}") + Preset(pub=(USER_INFO_SUBJECT,), sub=("chat.public",))
        ).role(connection_types=["WEBSOCKET"]),
    },
    account="APP",
    roles_of=lambda identity: {
        "alice": ["requester", "kv-own-keys"],
        "bob": ["requester", "kv-own-keys"],
        "forgetful": ["requester"],
        "reader": ["reader"],
        "ephemeral": ["ephemeral"],
        "puller": ["pull-ephemeral"],
        "webuser": ["browser"],
        "carol": ["browser"],
    }.get(identity.name, []),
)


class PresetPermissions:
    """A Grant from GRANTS by name, else what ROLES say."""

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        preset = GRANTS.get(identity.name)
        if preset is not None:
            return preset.grant("APP", ttl=600)
        return ROLES.build(identity, request)


@dataclass
class World:
    config: CalloutServerConfig
    server: LocalNatsServer
    admin: Client

    @property
    def url(self) -> str:
        return self.config.url

    async def client(self, name: str, **options: Any) -> Client:
        """``name`` logged in through the callout, with its private inbox prefix."""
        options.setdefault("inbox_prefix", inbox_prefix(name))
        nc = await login(self.url, user=name, password=f"{name}-pw", name=name, **options)
        watch(nc)
        return nc


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(
        issuer=issuer.public_key,
        jetstream=True,
        websocket=WebSocketListener(
            port=free_port(),
            user_cookie="nats_user",
            pass_cookie="nats_pass",
            token_cookie="nats_token",
            allowed_origins=(WEB_ORIGIN,),
        ),
    )
    lookup = Passwords(tokens={WEB_TOKEN: "webuser"})
    pipeline = CalloutPipeline(SigningKeys(issuer), lookup, PresetPermissions())
    security = SASLPlaintext(username=config.auth_user, password=config.auth_password)
    with LocalNatsServer.from_config(config, jetstream=True) as server:
        async with service(config.url, security, pipeline):
            admin = await login(config.url, user="owner", password="owner-pw")
            try:
                await _set_up(admin)
                yield World(config, server, admin)
            finally:
                await admin.close()
        assert server.is_running(), server.log()[-2000:]


async def _set_up(admin: Client) -> None:
    js = admin.jetstream()
    await js.add_stream(name="ORDERS", subjects=["orders.>"])
    await js.add_stream(name="AUDIT", subjects=["audit.>"])
    for number in range(3):
        await js.publish(f"orders.{number}", f"order {number}".encode())
        await js.publish(f"audit.{number}", b"secret")
    await js.add_consumer("ORDERS", ConsumerConfig(durable_name="worker", ack_wait=30))
    await js.add_consumer("AUDIT", ConsumerConfig(durable_name="auditor"))
    await js.add_consumer(
        "ORDERS", ConsumerConfig(durable_name="pushed", deliver_subject="deliver.orders")
    )
    # Direct gets (nats-py's default is without): key-prefix reads need them.
    config = await js.create_key_value(KeyValueConfig(bucket="config", direct=True))
    await config.put("color", b"blue")
    await config.put("users.alice.name", b"Alice")
    await config.put("users.bob.name", b"Bob")
    secrets = await js.create_key_value(bucket="secrets")
    await secrets.put("root", b"hunter2")
    files = await js.create_object_store("files")
    await files.put("hello.txt", b"hello, world")
    await js.create_object_store("private")


async def refusal(
    nc: Client, operation: Awaitable[object], subject: str, *, prefix: bool = False
) -> str:
    """Wait until nats-server reports a permissions violation naming ``subject`` to ``nc``.

    ``operation`` (a client call, of ``nc`` or of another client) runs meanwhile: a
    refused request gets no reply and would wait for its timeout, so it is cancelled
    once the server's answer, the violation, arrived. Fails if it completes first.
    ``prefix``: the violation's subject starts with ``subject`` (a random tail).
    """
    # nats-py lower-cases the server's error text.
    needle = (f'"{subject}' if prefix else f'"{subject}"').lower()
    violations = watch(nc)
    mark = len(violations.seen)
    task = asyncio.ensure_future(operation)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    try:
        while loop.time() < deadline:
            await settle(nc, timeout=DEADLINE)
            found = [v for v in violations.seen[mark:] if needle in v.lower()]
            if found:
                return found[0]
            if task.done():
                outcome = task.exception() or task.result()
                pytest.fail(f"no violation for {subject!r}; the operation ended: {outcome!r}")
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    pytest.fail(f"no violation for {subject!r} within {DEADLINE}s: {violations.seen[mark:]}")


@contextlib.asynccontextmanager
async def logged_in(world: World, name: str, **options: Any) -> AsyncIterator[Client]:
    nc = await world.client(name, **options)
    try:
        yield nc
    finally:
        await nc.close()


# -- private inboxes -----------------------------------------------------------------------


async def test_private_inboxes_keep_replies_apart(world: World) -> None:
    async with (
        logged_in(world, "responder") as responder,
        logged_in(world, "mute") as mute,
        logged_in(world, "alice") as alice,
        logged_in(world, "bob") as bob,
    ):

        async def answer(msg: Any) -> None:
            await msg.respond(b"answer for " + msg.data)

        await responder.subscribe("help.>", cb=answer)
        await mute.subscribe("quiet.>", cb=answer)
        await settle(responder)
        await settle(mute)

        # Request/reply through the private inbox, answered thanks to respond=True.
        reply = await alice.request("help.me", b"alice", timeout=DEADLINE)
        assert reply.data == b"answer for alice"
        assert reply.subject.startswith("_INBOX_alice.")

        # Bob cannot read alice's replies, nor everyone's.
        for subject in ("_INBOX_alice.>", "_INBOX_alice.x", "_INBOX.>", ">"):
            assert not await can_subscribe(bob, subject), subject
        assert await can_subscribe(bob, "_INBOX_bob.>")

        # A responder without respond=True may not publish into alice's inbox.
        asking = alice.request("quiet.please", b"x", timeout=DEADLINE)
        await refusal(mute, asking, "_INBOX_alice.", prefix=True)

    # A client that keeps nats-py's default inbox prefix cannot get replies at all.
    async with logged_in(world, "forgetful", inbox_prefix="_INBOX") as forgetful:
        asking = forgetful.request("help.me", b"", timeout=DEADLINE)
        await refusal(forgetful, asking, "_INBOX.", prefix=True)


# -- JetStream ---------------------------------------------------------------------------


async def test_jetstream_publisher_publishes_with_acks_and_nothing_else(world: World) -> None:
    async with logged_in(world, "publisher") as nc:
        js = nc.jetstream()
        ack = await js.publish("orders.new", b"1", timeout=DEADLINE)
        assert ack.stream == "ORDERS"
        assert (await js.stream_info("ORDERS")).config.name == "ORDERS"
        await refusal(nc, js.publish("audit.x", b"1", timeout=DEADLINE), "audit.x")
        await refusal(nc, js.stream_info("AUDIT"), "$JS.API.STREAM.INFO.AUDIT")
        await refusal(nc, js.delete_stream("ORDERS"), "$JS.API.STREAM.DELETE.ORDERS")
        await refusal(nc, js.purge_stream("ORDERS"), "$JS.API.STREAM.PURGE.ORDERS")


async def _acked(world: World, stream: str, consumer: str) -> int:
    """The stream sequence the consumer's acknowledgements reached."""
    info = await world.admin.jetstream().consumer_info(stream, consumer)
    return info.ack_floor.stream_seq if info.ack_floor else 0


async def test_a_pull_consumer_reads_and_acks_a_durable_it_may_not_change(world: World) -> None:
    async with logged_in(world, "reader") as nc:
        js = nc.jetstream()
        sub = await js.pull_subscribe("orders.>", durable="worker", stream="ORDERS")
        (msg,) = await sub.fetch(1, timeout=DEADLINE)
        assert msg.subject.startswith("orders.")
        await msg.ack_sync(timeout=DEADLINE)
        assert await _acked(world, "ORDERS", "worker") >= msg.metadata.sequence.stream
        await refusal(nc, js.delete_stream("ORDERS"), "$JS.API.STREAM.DELETE.ORDERS")
        await refusal(
            nc, js.delete_consumer("ORDERS", "worker"), "$JS.API.CONSUMER.DELETE.ORDERS.worker"
        )
        # Another stream, another consumer of this stream, a consumer of its own.
        await refusal(
            nc,
            js.pull_subscribe("audit.>", durable="auditor", stream="AUDIT"),
            "$JS.API.CONSUMER.INFO.AUDIT.auditor",
        )
        await refusal(
            nc,
            js.pull_subscribe("orders.>", durable="pushed", stream="ORDERS"),
            "$JS.API.CONSUMER.INFO.ORDERS.pushed",
        )
        await refusal(
            nc,
            js.add_consumer("ORDERS", ConsumerConfig(durable_name="mine")),
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.mine",
        )


async def test_a_pull_consumer_creates_ephemeral_consumers(world: World) -> None:
    async with logged_in(world, "puller") as nc:
        js = nc.jetstream()
        sub = await js.pull_subscribe("orders.>", stream="ORDERS")
        (msg,) = await sub.fetch(1, timeout=DEADLINE)
        await msg.ack_sync(timeout=DEADLINE)
        assert msg.metadata.sequence.stream >= 1
        await refusal(
            nc,
            js.pull_subscribe("audit.>", stream="AUDIT"),
            "$JS.API.CONSUMER.CREATE.AUDIT.",
            prefix=True,
        )
        await refusal(nc, js.delete_stream("ORDERS"), "$JS.API.STREAM.DELETE.ORDERS")


async def test_a_push_consumer_with_an_ephemeral_consumer_in_its_inbox(world: World) -> None:
    async with logged_in(world, "ephemeral") as nc:
        js = nc.jetstream()
        got: asyncio.Queue[Any] = asyncio.Queue()
        sub = await js.subscribe("orders.>", stream="ORDERS", cb=got.put, manual_ack=True)
        msg = await asyncio.wait_for(got.get(), DEADLINE)
        assert msg.subject.startswith("orders.")
        assert sub._sub.subject.startswith("_INBOX_ephemeral.")  # delivered to its inbox
        await msg.ack_sync(timeout=DEADLINE)
        await refusal(
            nc, js.subscribe("audit.>", stream="AUDIT", cb=got.put), "$JS.API.CONSUMER.CREATE.AUDIT"
        )


async def test_a_push_consumer_bound_to_a_durable_with_a_deliver_subject(world: World) -> None:
    async with logged_in(world, "pusher") as nc:
        js = nc.jetstream()
        got: asyncio.Queue[Any] = asyncio.Queue()
        await js.subscribe(
            "orders.>", durable="pushed", stream="ORDERS", cb=got.put, manual_ack=True
        )
        msg = await asyncio.wait_for(got.get(), DEADLINE)
        await msg.ack_sync(timeout=DEADLINE)
        assert await _acked(world, "ORDERS", "pushed") >= 1
        assert not await can_subscribe(nc, "orders.>")  # only through the consumer
        await refusal(
            nc, js.delete_consumer("ORDERS", "pushed"), "$JS.API.CONSUMER.DELETE.ORDERS.pushed"
        )


async def test_a_stream_admin_manages_its_stream_only(world: World) -> None:
    async with logged_in(world, "ops") as nc:
        js = nc.jetstream()
        await js.add_stream(name="SCRATCH", subjects=["scratch.>"])
        await world.admin.jetstream().publish("scratch.1", b"x")
        await js.add_consumer("SCRATCH", ConsumerConfig(durable_name="c1"))
        assert [c.name for c in await js.consumers_info("SCRATCH")] == ["c1"]
        assert (await js.get_msg("SCRATCH", seq=1)).data == b"x"
        await js.purge_stream("SCRATCH")
        assert (await js.stream_info("SCRATCH")).state.messages == 0
        await js.delete_consumer("SCRATCH", "c1")
        await refusal(nc, js.delete_stream("ORDERS"), "$JS.API.STREAM.DELETE.ORDERS")
        await refusal(
            nc, js.add_stream(name="OTHER", subjects=["other.>"]), "$JS.API.STREAM.CREATE.OTHER"
        )
        assert not await can_publish(nc, "scratch.1")  # administering is not publishing
        assert await js.delete_stream("SCRATCH")


# -- Key/Value and Object Store --------------------------------------------------------------


async def test_kv_read_gets_keys_of_its_bucket_only(world: World) -> None:
    async with logged_in(world, "kv-reader") as nc:
        js = nc.jetstream()
        config = await js.key_value("config")
        assert (await config.get("color")).value == b"blue"
        assert (await config.get("color", revision=1)).value == b"blue"  # by revision too
        await refusal(nc, config.put("color", b"red"), "$KV.config.color")
        await refusal(nc, js.key_value("secrets"), "$JS.API.STREAM.INFO.KV_secrets")
        await refusal(nc, js.delete_key_value("config"), "$JS.API.STREAM.DELETE.KV_config")


async def test_kv_read_write_on_a_key_prefix_from_a_template(world: World) -> None:
    async with logged_in(world, "alice") as alice:
        config = await alice.jetstream().key_value("config")
        assert (await config.get("users.alice.name")).value == b"Alice"
        await config.put("users.alice.name", b"Alice L.")
        assert (await config.get("users.alice.name")).value == b"Alice L."
        await refusal(
            alice,
            config.get("users.bob.name"),
            "$JS.API.DIRECT.GET.KV_config.$KV.config.users.bob.name",
        )
        await refusal(alice, config.put("users.bob.name", b"Eve"), "$KV.config.users.bob.name")
        await refusal(alice, config.get("color"), "$JS.API.DIRECT.GET.KV_config.$KV.config.color")
        # Gets by revision name the key in the body, where permissions cannot look.
        await refusal(
            alice, config.get("users.alice.name", revision=1), "$JS.API.DIRECT.GET.KV_config"
        )
    bob_value = await (await world.admin.jetstream().key_value("config")).get("users.bob.name")
    assert bob_value.value == b"Bob"


async def test_kv_watch_sees_updates_of_its_bucket_only(world: World) -> None:
    async with logged_in(world, "kv-watcher") as nc:
        js = nc.jetstream()
        config = await js.key_value("config")
        watcher = await config.watch("color")
        first = await watcher.updates(timeout=DEADLINE)
        assert first is not None
        assert first.value == b"blue"
        owner_config = await world.admin.jetstream().key_value("config")
        await owner_config.put("color", b"green")
        update = None
        while update is None or update.value != b"green":
            update = await watcher.updates(timeout=DEADLINE)
        await watcher.stop()
        await owner_config.put("color", b"blue")
        await refusal(nc, config.get("color"), "$JS.API.DIRECT.GET.KV_config.$KV.config.color")
        await refusal(nc, _watch(nc, "secrets"), "$JS.API.STREAM.INFO.KV_secrets")


async def _watch(nc: Client, bucket: str) -> None:
    kv = await nc.jetstream().key_value(bucket)
    await kv.watch(">")


async def test_object_get_reads_its_bucket_only(world: World) -> None:
    async with logged_in(world, "obj-reader") as nc:
        js = nc.jetstream()
        files = await js.object_store("files")
        assert (await files.get("hello.txt")).data == b"hello, world"
        await refusal(nc, files.put("new.txt", b"x"), "$O.files.C.", prefix=True)
        await refusal(nc, js.object_store("private"), "$JS.API.STREAM.INFO.OBJ_private")


async def test_object_put_writes_its_bucket_only(world: World) -> None:
    async with logged_in(world, "obj-writer") as nc:
        js = nc.jetstream()
        files = await js.object_store("files")
        await files.put("report.txt", b"v1")
        await files.put("report.txt", b"v2" * 1000)  # a replacement purges the old chunks
        mine = await (await world.admin.jetstream().object_store("files")).get("report.txt")
        assert mine.data == b"v2" * 1000
        await refusal(nc, js.object_store("private"), "$JS.API.STREAM.INFO.OBJ_private")
        await refusal(nc, files.get("hello.txt"), "$JS.API.STREAM.NAMES")


# -- services -----------------------------------------------------------------------------------


async def test_a_service_is_served_and_called_by_name(world: World) -> None:
    async with (
        logged_in(world, "echo-server") as server_nc,
        logged_in(world, "echo-client") as client,
    ):

        async def say(request: Any) -> None:
            await request.respond(b"echo: " + request.data)

        service_ = await nats.micro.add_service(server_nc, name="echo", version="1.0.0")
        await service_.add_endpoint(name="say", subject="echo.say", handler=say)
        await settle(server_nc)
        reply = await client.request("echo.say", b"hi", timeout=DEADLINE)
        assert reply.data == b"echo: hi"
        ping = json.loads((await client.request("$SRV.PING.echo", b"", timeout=DEADLINE)).data)
        assert (ping["name"], ping["id"]) == ("echo", service_.id)
        info = await client.request(f"$SRV.INFO.echo.{service_.id}", b"", timeout=DEADLINE)
        assert json.loads(info.data)["endpoints"][0]["subject"] == "echo.say"
        # Neighbours: another service, all services, a plain subscription, another endpoint.
        await refusal(client, client.request("admin.x", b"", timeout=DEADLINE), "admin.x")
        await refusal(client, client.request("$SRV.PING", b"", timeout=DEADLINE), "$SRV.PING")
        assert not await can_subscribe(server_nc, "echo.say")  # only in its queue group
        assert not await can_subscribe(server_nc, "other.say", queue="q")
        assert not await can_publish(server_nc, "echo.say")
        await service_.stop()


# -- browsers: credentials in websocket cookies ------------------------------------------------


async def _browser(
    world: World, cookie: str, *, origin: str = WEB_ORIGIN, **options: Any
) -> Client:
    return await login(
        world.config.websocket_url,
        ws_connection_headers={"Cookie": [cookie], "Origin": [origin]},
        **options,
    )


async def test_a_websocket_client_logs_in_with_cookies(world: World) -> None:
    nc = await _browser(world, f"nats_token={WEB_TOKEN}", inbox_prefix=inbox_prefix("webuser"))
    try:
        assert (await user_info(nc))["user"] == "webuser"
        assert await can_subscribe(nc, "chat.public")
        assert not await can_publish(nc, "chat.public")
    finally:
        await nc.close()
    nc = await _browser(
        world, "nats_user=carol; nats_pass=carol-pw", inbox_prefix=inbox_prefix("carol")
    )
    try:
        assert (await user_info(nc))["user"] == "carol"
    finally:
        await nc.close()
    # The browser role applies to websocket connections only; a page of another
    # origin does not get the browser's cookies through; wrong cookies are refused.
    await refused(world.url, token=WEB_TOKEN)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(
                world.config.websocket_url,
                headers={"Cookie": f"nats_token={WEB_TOKEN}", "Origin": "https://evil.example"},
            )
    assert caught.value.status == 403
    await refused(world.config.websocket_url, ws_connection_headers={"Cookie": ["nats_token=x"]})
