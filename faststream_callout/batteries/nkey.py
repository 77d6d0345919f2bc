"""NKey challenge: the client proves it holds an nkey by signing the server's nonce.

nats-server passes ``connect_opts.nkey`` and ``connect_opts.sig`` to the
callout **unverified**; :class:`NKeyLookup` verifies the Ed25519 signature
over ``client_info.nonce`` (the nonce the server sent this connection, inside
the server-signed request, so a signature cannot be replayed on another
connection) and then looks the public key up.

nats-server only sends a nonce when nkey users are configured or in operator
mode. In config mode add one placeholder nkey user to any account so it does,
e.g. ``AUTH: { users: [ {user: auth, password: ...}, {nkey: U...} ] }`` with a
freshly generated key whose seed you discard (the callout still decides about
every login, that user included).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from faststream_callout.batteries._common import (
    attributes_of,
    check_keys,
    load_document,
    resolve,
    str_set,
)
from faststream_callout.batteries.compose import NotApplicable
from faststream_callout.core.errors import ConfigurationError, Denied
from faststream_callout.core.policy import Identity
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.nkeys import KeyKind, is_public_key, verify_signature

__all__ = ["NKeyLookup", "decode_signature"]

NKeyResolver = Callable[[str], Identity | Awaitable[Identity | None] | None]
_SIGNATURE_BYTES: Final = 64
_MAX_SIG_CHARS: Final = 256


def decode_signature(sig: str) -> bytes | None:
    """The raw bytes of a CONNECT ``sig``, or ``None`` if it is not a 64-byte signature.

    Go clients send base64url without padding, nats-py standard base64 with padding;
    nats-server accepts both, and so does this.
    """
    if not sig or len(sig) > _MAX_SIG_CHARS:
        return None
    text = sig.rstrip("=")
    alphabet = "-_" if ("-" in text or "_" in text) else "+/"
    if ("+" in text or "/" in text) and alphabet == "-_":
        return None  # mixed alphabets: not a signature any client makes
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=alphabet, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SIGNATURE_BYTES else None


class NKeyLookup:
    """An :class:`~faststream_callout.IdentityLookup` for clients logging in with an nkey.

    Example:
        ``NKeyLookup({"UDXU...": Identity("sensor-1", groups=frozenset({"telemetry"}))})``

    A client that sent no ``nkey`` raises :class:`NotApplicable`; a bad or
    missing signature is ``Denied``; a verified key this lookup does not know
    raises :class:`NotApplicable` (so :class:`FirstMatch` may ask another).

    Args:
        users: public user nkey (``U...``) -> identity, or a callable
            ``(public_key) -> Identity | None`` (sync or async) to look keys
            up elsewhere. It is only called for keys whose signature verified.

    """

    def __init__(self, users: Mapping[str, Identity] | NKeyResolver) -> None:
        if callable(users):
            self._resolve: NKeyResolver | None = users
            self._users: Mapping[str, Identity] = {}
        else:
            for key, identity in users.items():
                if not is_public_key(key, KeyKind.USER):
                    raise ConfigurationError(
                        "NKeyLookup keys must be public user nkeys (U...); "
                        f"the entry for {getattr(identity, 'name', '?')!r} is not"
                    )
                if not isinstance(identity, Identity):
                    raise ConfigurationError(f"the entry for {key} must be an Identity")
            self._resolve = None
            self._users = MappingProxyType(dict(users))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str = "nkeys") -> NKeyLookup:
        """Build from ``{"users": {name: {"nkey": "U...", "groups": [...], "attributes": {}}}}``."""
        check_keys(data, ("users",), source)
        table = data.get("users", {})
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [users] must be a table")
        users: dict[str, Identity] = {}
        for name, entry in table.items():
            where = f"{source}: users.{name}"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be a table")
            check_keys(entry, ("nkey", "groups", "attributes"), where)
            key = entry.get("nkey")
            if not isinstance(key, str) or not is_public_key(key, KeyKind.USER):
                raise ConfigurationError(f"{where}: nkey must be a public user nkey (U...)")
            if key in users:
                raise ConfigurationError(f"{where}: the nkey is already used by another user")
            users[key] = Identity(
                str(name),
                str_set(entry.get("groups"), where),
                MappingProxyType(attributes_of(entry.get("attributes"), where)),
            )
        return cls(users)

    @classmethod
    def from_file(cls, path: str | Path) -> NKeyLookup:
        """Load ``[users.<name>]`` tables with ``nkey``, ``groups``, ``attributes`` (TOML/JSON)."""
        return cls.from_mapping(load_document(path), source=str(path))

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Verify the nonce signature, then look the public key up."""
        opts = request.connect_opts
        public_key = opts.nkey
        if not public_key:
            raise NotApplicable("no nkey presented")
        if not is_public_key(public_key, KeyKind.USER):
            raise Denied("nkey is not a public user key")
        nonce = request.client_info.nonce
        if not nonce:
            raise Denied(
                "no server nonce to check the nkey signature against; configure an nkey "
                "user (a placeholder will do) so nats-server sends one"
            )
        signature = decode_signature(opts.sig)
        if signature is None:
            raise Denied("nkey signature missing or malformed")
        if not verify_signature(public_key, nonce.encode("utf-8"), signature):
            raise Denied("nkey signature does not verify")
        identity: Identity | None
        if self._resolve is not None:
            identity = await resolve(self._resolve(public_key))
        else:
            identity = self._users.get(public_key)
        if identity is None:
            raise NotApplicable("unknown nkey")
        if not isinstance(identity, Identity):
            raise TypeError(f"the nkey resolver returned {type(identity).__name__}, not Identity")
        if "nkey" not in identity.attributes:
            identity = Identity(
                identity.name,
                identity.groups,
                MappingProxyType({**identity.attributes, "nkey": public_key}),
            )
        return identity

    def __repr__(self) -> str:
        if self._resolve is not None:
            return f"NKeyLookup({self._resolve!r})"
        return f"NKeyLookup({len(self._users)} keys)"
