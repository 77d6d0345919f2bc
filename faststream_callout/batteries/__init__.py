"""Batteries: ready-made identity lookups and permission builders.

Enable one in a line, e.g.::

    PolicyProvider(
        lookup=StaticTable.from_file("users.toml"),
        permissions=RoleBasedPermissions({"chat": PermissionSet(pub=["chat.{user}.>"])},
                                         account="APP"),
    )

==================================  ======================================  =========
battery                             what it does                            extra
==================================  ======================================  =========
:class:`StaticTable`                users (argon2id/bcrypt) and tokens      ``table``
:class:`OIDCLookup`                 bearer JWT / OIDC access tokens (JWKS)  ``oidc``
:class:`NKeyLookup`                 nkey nonce signatures                   --
:class:`ClientCertificateLookup`    TLS client certificates                 ``tls``
:class:`FirstMatch`                 try lookups in order                    --
:class:`ByCredential`               choose a lookup by credential kind      --
:class:`RoleBasedPermissions`       roles -> permission sets, templates     --
:class:`Preset` and its functions   exact subjects for inboxes, JetStream,  --
                                    KV, Object Store, services
==================================  ======================================  =========

Batteries with an extra are imported on first use: ``import faststream_callout``
and this package work without them, and using one whose extra is missing
raises an ImportError naming the extra (``pip install faststream-callout[oidc]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faststream_callout._lazy import lazy_exports
from faststream_callout.batteries._common import EXPIRES_AT
from faststream_callout.batteries.compose import (
    CREDENTIAL_KINDS,
    ByCredential,
    CredentialKind,
    FirstMatch,
    NotApplicable,
    presented_credentials,
)
from faststream_callout.batteries.nkey import NKeyLookup
from faststream_callout.batteries.permissions import (
    RESERVED_PREFIXES,
    PermissionSet,
    RoleBasedPermissions,
    connection_types_of,
    safe_token,
)
from faststream_callout.batteries.presets import (
    Preset,
    inbox_prefix,
    jetstream_admin,
    jetstream_consumer,
    jetstream_publisher,
    kv_read,
    kv_read_write,
    kv_watch,
    kv_write,
    object_get,
    object_put,
    private_inbox,
    service_call,
    service_serve,
)

if TYPE_CHECKING:
    from faststream_callout.batteries.oidc import JWKSCache, OIDCLookup
    from faststream_callout.batteries.table import (
        StaticTable,
        TableToken,
        TableUser,
        hash_password,
        hash_token,
        new_token,
    )
    from faststream_callout.batteries.tls import ClientCertificate, ClientCertificateLookup

__all__ = [
    "CREDENTIAL_KINDS",
    "EXPIRES_AT",
    "RESERVED_PREFIXES",
    "ByCredential",
    "ClientCertificate",
    "ClientCertificateLookup",
    "CredentialKind",
    "FirstMatch",
    "JWKSCache",
    "NKeyLookup",
    "NotApplicable",
    "OIDCLookup",
    "PermissionSet",
    "Preset",
    "RoleBasedPermissions",
    "StaticTable",
    "TableToken",
    "TableUser",
    "connection_types_of",
    "hash_password",
    "hash_token",
    "inbox_prefix",
    "jetstream_admin",
    "jetstream_consumer",
    "jetstream_publisher",
    "kv_read",
    "kv_read_write",
    "kv_watch",
    "kv_write",
    "new_token",
    "object_get",
    "object_put",
    "presented_credentials",
    "private_inbox",
    "safe_token",
    "service_call",
    "service_serve",
]

_LAZY = {
    "StaticTable": "table",
    "TableToken": "table",
    "TableUser": "table",
    "hash_password": "table",
    "hash_token": "table",
    "new_token": "table",
    "OIDCLookup": "oidc",
    "JWKSCache": "oidc",
    "ClientCertificate": "tls",
    "ClientCertificateLookup": "tls",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
