"""An existing FastStream app, an order service, with auth callout added in a few lines.

The app as it was: its broker subscribes to ``orders.created`` and publishes
``orders.confirmed``; the handler gets its ``OrderBook`` from Dishka
(``setup_dishka(container, app)`` of dishka-faststream). The lines marked "auth callout"
add the callout: its providers in the same container, and
``AuthCallout(container).attach(app)``, which runs the callout on a connection of its
own, started before the app's broker logs in (through the callout) and stopped after it.

    faststream-callout dev examples.orders_app:app   # a local nats-server, fresh keys
    faststream run examples.orders_app:app --log-level info   # against your nats-server

Environment: ``NATS_URL``; the callout's ``CALLOUT_USER`` / ``CALLOUT_PASSWORD`` (an
``auth_users`` login of the callout account) and ``CALLOUT_ISSUER_SEED`` (``SA...``);
``ORDERS_USERS``, the users table (default examples/orders_users.toml, where the app
broker's own login ``orders-service`` is too); ``ORDERS_PASSWORD``, that login's password
(the demo's by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dishka import FromDishka, Provider, Scope, make_async_container, provide
from dishka_faststream import FastStreamProvider, setup_dishka
from faststream import FastStream
from faststream.nats import NatsBroker, NatsRouter
from faststream.security import SASLPlaintext
from pydantic import BaseModel

from faststream_callout import (
    AuthCallout,
    CalloutProvider,
    IdentityLookup,
    PermissionBuilder,
    SigningKeys,
    signing_keys_from_env,
)
from faststream_callout.batteries import PermissionSet, RoleBasedPermissions, StaticTable

USERS = Path(__file__).with_name("orders_users.toml")

# -- the app, as it was ------------------------------------------------------------------


class Order(BaseModel):
    id: int
    item: str


class OrderBook:
    def __init__(self) -> None:
        self.orders: list[Order] = []

    def add(self, order: Order) -> int:
        self.orders.append(order)
        return len(self.orders)


class Orders(Provider):
    scope = Scope.APP
    book = provide(OrderBook)


def orders_router() -> NatsRouter:
    router = NatsRouter()

    @router.subscriber("orders.created")
    @router.publisher("orders.confirmed")
    async def confirm(order: Order, book: FromDishka[OrderBook]) -> dict[str, object]:
        return {"id": order.id, "status": "confirmed", "position": book.add(order)}

    return router


def orders_broker() -> NatsBroker:
    broker = NatsBroker(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        # A user of the table: once the callout runs, this login goes through it too.
        security=SASLPlaintext(
            username="orders-service",
            password=os.environ.get("ORDERS_PASSWORD", "orders-service-secret"),
        ),
    )
    broker.include_router(orders_router())
    return broker


# -- auth callout: who may connect, and what they may do ---------------------------------

ROLES = RoleBasedPermissions(
    {
        "customer": PermissionSet(pub=["orders.created"], sub=["orders.confirmed"]),
        "viewer": PermissionSet(sub=["orders.confirmed"]),
        "service": PermissionSet(pub=["orders.>"], sub=["orders.>", "_INBOX.>"]),
    },
    account="APP",
    default_ttl=3600,
)


class CalloutPolicy(Provider):
    """Built when the app starts: a missing seed or users file stops the start, named."""

    scope = Scope.APP

    @provide
    def keys(self) -> SigningKeys:
        return signing_keys_from_env()  # CALLOUT_ISSUER_SEED

    @provide
    def lookup(self) -> Iterator[IdentityLookup]:
        table = StaticTable.from_file(os.environ.get("ORDERS_USERS", USERS))
        yield table
        table.close()  # when the container closes: after the callout stopped

    @provide
    def permissions(self) -> PermissionBuilder:
        return ROLES


def create_app() -> FastStream:
    container = make_async_container(
        Orders(),
        FastStreamProvider(),
        CalloutProvider(),  # auth callout
        CalloutPolicy(),  # auth callout
    )
    app = FastStream(orders_broker())
    setup_dishka(container, app, auto_inject=True, finalize_container=True)
    AuthCallout(container).attach(app)  # auth callout
    return app


app = create_app()
