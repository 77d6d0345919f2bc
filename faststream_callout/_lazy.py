"""Names a package exports but imports only on first use (PEP 562).

The packages above the core (integration, batteries, testing) export many names;
importing all their modules up front would load optional extras, nats-py helpers
and tooling that most programs never use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names found in its submodules.

    Args:
        package: the package's ``__name__``.
        where: exported name -> the submodule (relative to ``package``) defining it.
        exported: the package's ``__all__``.

    """
    names = sorted(exported)

    def __getattr__(name: str) -> Any:  # noqa: ANN401, N807 - a module attribute of any type
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module's __dir__
        return names

    return __getattr__, __dir__
