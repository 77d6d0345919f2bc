"""The package's shape: layers whose imports only point down, and a one-screen public face."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import faststream_callout

PACKAGE = Path(faststream_callout.__file__).parent

# protocol <- core <- integration (and batteries) <- tooling (testing, tools)
LAYERS: dict[str, int] = {
    "protocol": 0,
    "core": 1,
    "integration": 2,
    "batteries": 2,
    "testing": 3,
    "tools": 3,
}
# What each layer may import from outside the package, besides the standard library.
PURE_FORBIDDEN = ("asyncio", "faststream", "dishka", "nats")

PUBLIC_NAMES = {
    "AuthCallout",
    "AuthorizationRequest",
    "CalloutError",
    "CalloutPipeline",
    "CalloutProvider",
    "CalloutSettings",
    "ConfigurationError",
    "Denied",
    "Drop",
    "Grant",
    "Identity",
    "IdentityLookup",
    "KeyPair",
    "NotApplicable",
    "Permission",
    "PermissionBuilder",
    "PolicyProvider",
    "ResponsePermission",
    "Signer",
    "SigningKeys",
    "XKeyPair",
    "callout_router",
    "signing_keys_from_env",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((".".join(("faststream_callout", *parts)), path))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module imported by ``path``, with the line (TYPE_CHECKING imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            # ``from faststream_callout.tools import doctor`` imports a module
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_every_module_belongs_to_a_layer() -> None:
    top_level = {
        "faststream_callout.__init__",
        "faststream_callout.__main__",
        "faststream_callout._lazy",
    }
    orphans = [m for m, _ in _modules() if m not in top_level and _layer(m) is None]
    assert orphans == []


def test_imports_point_down_only() -> None:
    upward = []
    for module, path in _modules():
        own = _layer(module)
        if own is None:
            continue
        for imported, line in _imports(path):
            if not imported.startswith("faststream_callout."):
                continue
            target = _layer(imported)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert upward == []


def test_protocol_layer_is_pure() -> None:
    impure = []
    for module, path in _modules():
        if _layer(module) != 0:
            continue
        for imported, line in _imports(path):
            if imported.split(".")[0] in PURE_FORBIDDEN:
                impure.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert impure == []


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    # The check above must be able to fail: an upward import in a protocol module is found.
    bad = tmp_path / "bad.py"
    bad.write_text("from faststream_callout.integration.router import callout_router\n")
    assert _layer("faststream_callout.protocol.bad") == 0
    assert [_layer(m) for m, _ in _imports(bad) if m.startswith("faststream_callout.")] == [2, 2]


def test_public_names() -> None:
    assert set(faststream_callout.__all__) == PUBLIC_NAMES
    assert len(faststream_callout.__all__) <= 25
    for name in faststream_callout.__all__:
        assert getattr(faststream_callout, name).__module__.startswith("faststream_callout.")
    # ("@py_..." names come from pytest's assertion rewriting of the plugin package)
    exported = {name for name in dir(faststream_callout) if not name.startswith(("_", "@"))}
    layers = {name for name in exported if name in LAYERS}
    assert exported - layers == PUBLIC_NAMES


@pytest.mark.parametrize("subpackage", ["protocol", "core", "integration", "batteries", "testing"])
def test_subpackage_exports_resolve(subpackage: str) -> None:
    module = __import__(f"faststream_callout.{subpackage}", fromlist=["__all__"])
    for name in module.__all__:
        if subpackage == "batteries" and name in {"OIDCLookup", "JWKSCache"}:
            continue  # optional extras are tested in their own files
        assert getattr(module, name) is not None, name


_PROBE = """
import json, sys
import faststream.nats, dishka, nats, msgspec, nacl
before = set(sys.modules)
import faststream_callout
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_import_loads_no_tooling() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True
    ).stdout
    loaded = json.loads(out)
    ours = [m for m in loaded if m.startswith("faststream_callout")]
    assert ours, "the probe must see the package load"
    heavy = [
        m
        for m in loaded
        if m.startswith(("faststream_callout.tools", "faststream_callout.testing"))
        or m
        in {"argparse", "faststream_callout.batteries", "faststream_callout.integration.sessions"}
    ]
    assert heavy == []
