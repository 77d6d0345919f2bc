"""Dishka providers: the library's defaults and a one-line way to supply a policy."""

from __future__ import annotations

from collections.abc import Callable

from dishka import Provider, Scope, provide

from faststream_callout.core.keyring import Keyring
from faststream_callout.core.pipeline import CalloutPipeline, CalloutSettings
from faststream_callout.core.policy import IdentityLookup, PermissionBuilder
from faststream_callout.core.signing import SigningKeys
from faststream_callout.core.throttle import MemoryThrottle, Throttle

__all__ = ["CalloutProvider", "PolicyProvider"]


class CalloutProvider(Provider):
    """Provides the pipeline (APP scope), default settings and an in-memory throttle.

    The pipeline depends on :class:`SigningKeys`, :class:`IdentityLookup` and
    :class:`PermissionBuilder`, which you provide (there is no safe default for
    keys or policy), so a missing one fails when the container is built, not
    on the first login. Ports are APP-scoped: hold pools and clients in them
    and open per-request resources inside ``lookup``/``build``.

    The pipeline reads its keys from a :class:`Keyring`: by default the keyring
    of the one callout account whose ``SigningKeys`` you provide. For several
    callout accounts or key rotation provide a ``Keyring`` instead (it replaces
    the default, like settings: ``override=True`` under strict validation).
    """

    scope = Scope.APP

    @provide
    def settings(self) -> CalloutSettings:
        """Default settings; override with ``provide(..., override=True)``."""
        return CalloutSettings()

    @provide
    def throttle(self) -> Throttle:
        """Brute-force and flood protection with counts in memory (``ThrottlePolicy`` defaults).

        Provide ``MemoryThrottle(ThrottlePolicy(...))`` for other numbers, a
        ``Throttle`` over a shared store to share counts between instances, or
        ``NoThrottle()`` to turn it off.
        """
        return MemoryThrottle()

    @provide
    def keyring(self, keys: SigningKeys) -> Keyring:
        """The keys of the one callout account provided; provide a Keyring to replace it."""
        return Keyring(keys)

    @provide
    def pipeline(
        self,
        keys: Keyring,
        lookup: IdentityLookup,
        permissions: PermissionBuilder,
        settings: CalloutSettings,
        throttle: Throttle,
    ) -> CalloutPipeline:
        """Build the pipeline once per container."""
        return CalloutPipeline(keys, lookup, permissions, settings, throttle=throttle)


class PolicyProvider(Provider):
    """Provides ready-made policy objects (APP scope), e.g. per environment.

    Example:
        ``PolicyProvider(keys=SigningKeys(issuer), lookup=MyLookup(), permissions=MyRules())``

    Pass only what you want to provide; with ``override=True`` the given
    objects replace earlier providers (required under ``STRICT_VALIDATION``).
    ``keys`` may be a :class:`Keyring` (several callout accounts, rotation):
    it replaces :class:`CalloutProvider`'s default keyring.

    """

    def __init__(
        self,
        *,
        keys: SigningKeys | Keyring | None = None,
        lookup: IdentityLookup | None = None,
        permissions: PermissionBuilder | None = None,
        settings: CalloutSettings | None = None,
        throttle: Throttle | None = None,
        override: bool = False,
    ) -> None:
        super().__init__(scope=Scope.APP)
        provided: list[tuple[str, type, object | None]] = [
            ("keys", Keyring if isinstance(keys, Keyring) else SigningKeys, keys),
            ("lookup", IdentityLookup, lookup),
            ("permissions", PermissionBuilder, permissions),
            ("settings", CalloutSettings, settings),
            ("throttle", Throttle, throttle),
        ]
        for name, interface, value in provided:
            if value is None:
                continue
            # Catch swapped arguments and classes passed for instances now, not at
            # every login. The protocols are runtime-checkable (method names only).
            if isinstance(value, type) or not isinstance(value, interface):
                raise TypeError(
                    f"PolicyProvider({name}=...) needs an instance of {interface.__name__}, "
                    f"got {value!r}"
                )
            self.provide(_constant(value, name), provides=interface, override=override)


def _constant(value: object, name: str) -> Callable[[], object]:
    def factory() -> object:
        return value

    # Dishka names factories in its errors: say which argument this was.
    factory.__qualname__ = factory.__name__ = f"PolicyProvider.{name}"
    return factory
