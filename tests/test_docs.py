"""Every fenced block of the documentation runs, or is checked, here.

The documentation is README.md, CONTRIBUTING.md and the site's pages (docs/**/*.md).
Blocks are found by parsing the Markdown: a page or section added later is picked up
without editing this file. The language (first word after the fence) decides:

- ``python``: each block a test, run on its own: a block a reader copies must run as
  it stands. A block whose first line is a comment saying ``# Continues the block
  above`` (and what it takes from it) runs in the namespace the python block above it
  on the same page left; chains may be longer. A test file (```` ```python
  test_policy.py ````, a name starting with ``test_``) is run as a script instead
  (``python test_policy.py``) and must exit 0. ``asyncio.run(main())`` and top-level
  ``await`` both work; ``test_*`` functions a block defines are called. Offline:
  connections and lookups other than the loopback fail. Generate keys at run time;
  get a server from ``faststream_callout.testing.local_server``.
- ``console``: every ``$ command`` runs (``bash -c``; ``uv run X`` runs ``X`` from this
  venv; a trailing ``\\`` continues the line; stdin is one line, ``readme-secret``). It
  must exit 0, or N with a trailing ``# exit status N``. The lines below it are its
  expected output, matched in order and loosely: words literally, a run of words
  holding a digit or ``...`` matches anything. A command that prints ``Ctrl-C to stop``
  then gets SIGINT (its whole process group, as from a terminal) and must exit 0.
  ``nats://127.0.0.1:4222`` is replaced by a local server running
  examples/table_service.py. Checked, not run: ``pip install`` / ``uv add`` (package and
  extras must be in pyproject.toml); ``pytest``, ``mypy``, ``ruff`` and ``mkdocs build``
  (must be what .ci/run runs); ``mkdocs serve`` (the site's build is a test below).
- ``toml`` / ``json``: parsed; library inputs load through the library (StaticTable,
  NKeyLookup, RoleBasedPermissions files, an account JWT's ``authorization`` section,
  an auth-error event matched by ServerFeedback).
- ``conf``: a complete nats-server configuration; ``nats-server -t`` must accept it.
- ``text``: diagrams and sample output, not run. A block without a known language fails.

A second word after the language (```` ```toml users.toml ````) names a file the block
is written to before any block runs, on every page (so a name has one text in all of
them); python blocks import it (``from policy import Policy``), as in a project.
Placeholder keys (``A...``, ``ABJH...``, ``U...SERVICE``, ``X...``) in commands, toml,
json and conf become generated public keys of that kind. Everything runs in a scratch
directory per page that mirrors the repository with symlinks: write new files only.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import ipaddress
import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from faststream_callout import Identity, KeyPair, XKeyPair
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.protocol.claims import AuthorizationRequest, ClientInfo, ServerId
from faststream_callout.protocol.nkeys import KeyKind, is_public_key
from faststream_callout.testing.local_server import check_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SITE = ROOT / "docs"
README_MAX_LINES = 250
CONTINUES = re.compile(r"#\s*continues the block above\b", re.IGNORECASE)
LANGUAGES = {"python", "console", "toml", "json", "conf", "text"}
READY = re.compile(r"Ctrl-C to stop")
SERVICE_URL = "nats://127.0.0.1:4222"
VENV_BIN = str(Path(sys.executable).parent)
COMMAND_TIMEOUT = 60.0
STDIN = "readme-secret\n"
NOT_COPIED = {".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", "__pycache__"}
PLACEHOLDER = re.compile(r"(?<![A-Za-z0-9])([AUXNO])([A-Z2-7]*)\.\.\.([A-Za-z0-9]*)")
MAKE_KEY: dict[str, Callable[[], str]] = {
    "A": lambda: KeyPair.create_account().public_key,
    "U": lambda: KeyPair.create_user().public_key,
    "N": lambda: KeyPair.create_server().public_key,
    "O": lambda: KeyPair.create_operator().public_key,
    "X": lambda: XKeyPair.generate().public_key,
}


# -- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the first code line
    lang: str
    filename: str  # second word of the info string, or ""
    heading: str
    index: int  # 1-based, among the blocks under the same heading
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc.stem}:{slug(self.heading)}-{self.index}-{self.lang or 'none'}"

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def parse_blocks(doc: Path) -> list[Block]:
    blocks: list[Block] = []
    heading, counts = "", {}
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            i += 1
            continue
        indent, mark = len(fence["indent"]), fence["fence"]
        words = fence["info"].split()
        body: list[str] = []
        i += 1
        start = i + 1
        while i < len(lines):
            closing = FENCE.match(lines[i])
            if (
                closing
                and closing["fence"][0] == mark[0]
                and len(closing["fence"]) >= len(mark)
                and not closing["info"].strip()
            ):
                break
            text = lines[i]  # inside a list item: drop the fence's indentation
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            i += 1
        i += 1
        counts[heading] = counts.get(heading, 0) + 1
        blocks.append(
            Block(
                doc=doc,
                line=start,
                lang=words[0].lower() if words else "",
                filename=words[1] if len(words) > 1 else "",
                heading=heading,
                index=counts[heading],
                code="\n".join(body) + "\n",
            )
        )
    return blocks


DOCS = [README, ROOT / "CONTRIBUTING.md", *sorted(SITE.rglob("*.md"))]
BLOCKS = [block for doc in DOCS for block in parse_blocks(doc)]
RUN = [block for block in BLOCKS if block.lang != "text"]
# Named files, by name: a page may use a file another page shows (`from policy import
# Policy`), so every page's scratch directory has them all.
NAMED = {block.filename: block for block in BLOCKS if block.filename}


def test_every_block_has_a_known_language() -> None:
    unknown = [f"{b.where} ({b.lang or 'no language'})" for b in BLOCKS if b.lang not in LANGUAGES]
    assert not unknown, f"label these blocks with one of {sorted(LANGUAGES)}: {unknown}"


def test_the_docs_have_runnable_blocks() -> None:
    # A parser that silently found nothing would pass every other test.
    langs = [b.lang for b in BLOCKS if b.doc.is_relative_to(SITE)]
    assert langs.count("python") >= 20, langs
    assert langs.count("console") >= 10, langs
    assert {b.lang for b in BLOCKS if b.doc == README} >= {"python", "console"}


def test_the_readme_fits_on_a_few_screens() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_a_named_file_has_one_text() -> None:
    # Pages share named files: two different texts under one name would make a page
    # run with a file its reader never saw.
    different = [
        f"{b.where} and {NAMED[b.filename].where}"
        for b in BLOCKS
        if b.filename and b.code != NAMED[b.filename].code
    ]
    assert not different, f"one name, two texts: {different}"


def test_continued_blocks_follow_a_python_block() -> None:
    wrong = []
    for doc in DOCS:
        python = [b for b in parse_blocks(doc) if b.lang == "python" and not is_test_file(b)]
        wrong += [b.where for b in python[:1] if continues(b)]
    assert not wrong, f"these blocks continue nothing (no python block above): {wrong}"


def test_the_environment_variables_are_explained_once() -> None:
    from faststream_callout.core import env
    from faststream_callout.testing.local_server import NATS_SERVER_ENV

    names = [getattr(env, n) for n in env.__all__ if n.isupper()] + [NATS_SERVER_ENV]
    table = [
        line
        for line in prose(SITE / "concepts.md").splitlines()
        if line.startswith("| `") and "_" in line
    ]
    unlisted = [name for name in names if not any(f"`{name}`" in row for row in table)]
    assert not unlisted, f"add to the table in docs/concepts.md: {unlisted}"
    # Other pages link to that table instead of explaining the variables again.
    again = [
        f"{doc.relative_to(ROOT)}: {line}"
        for doc in DOCS
        if doc != SITE / "concepts.md"
        for line in prose(doc).splitlines()
        if re.match(r"\|\s*`(NATS_URL|CALLOUT_)", line)
    ]
    assert not again, f"link to docs/concepts.md#environment-variables instead: {again}"


def test_the_cli_page_covers_every_command() -> None:
    from faststream_callout.tools.cli.main import COMMANDS

    page = SITE / "cli.md"
    headings = [h.split("`")[1].split()[0] for h in heading_texts_raw(page) if h.startswith("`")]
    assert headings == list(COMMANDS), headings
    numbers = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert f"has {numbers[len(COMMANDS)]} commands" in " ".join(prose(page).split())


def prose(doc: Path) -> str:
    """The document without its fenced blocks."""
    kept, fence = [], ""
    for line in doc.read_text().splitlines():
        found = FENCE.match(line)
        if found and (not fence or found["fence"].startswith(fence)):
            fence = "" if fence else found["fence"]
        elif not fence:
            kept.append(line)
    return "\n".join(kept)


def heading_texts_raw(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in prose(doc).splitlines() if re.match(r"#+ ", line)]


def heading_texts(doc: Path) -> list[str]:
    """Headings as rendered: markup and links reduced to their text."""
    found = []
    for raw in heading_texts_raw(doc):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)
        found.append(re.sub(r"[`*]", "", text))
    return found


def anchors(doc: Path) -> set[str]:
    """The heading anchors GitHub and the site (Python-Markdown's toc) both make.

    A link's anchor must work on GitHub, where README.md and docs/*.md are read too, and on
    the site: GitHub drops punctuation and turns each space into a hyphen, toc also
    folds runs of spaces and hyphens into one and numbers duplicates differently.
    """
    github: set[str] = set()
    site: set[str] = set()
    seen: dict[str, int] = {}
    for text in heading_texts(doc):
        anchor = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        github.add(anchor if count == 0 else f"{anchor}-{count}")
        site.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower()))
    return github & site


def test_links_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(doc)):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            where = f"{doc.relative_to(ROOT)}: {target}"
            if not linked.exists():
                broken.append(where)
            elif doc.is_relative_to(SITE) and not linked.is_relative_to(SITE):
                broken.append(f"{where} (the site has only docs/: name the file in code)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where} (no such heading, on GitHub and on the site)")
    assert not broken, broken


def test_the_site_builds_strictly_offline(tmp_path: Path) -> None:
    # A dead proxy: a plugin or theme that fetched anything (fonts, inventories) fails.
    dead = "http://127.0.0.1:9"
    env = {**environment(), "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        ["mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "core" / "index.html").exists()


# -- one scratch directory and namespace per document -------------------------------------


def substitute_keys(text: str, keys: dict[str, str] | None = None) -> str:
    keys = {} if keys is None else keys

    def key(match: re.Match[str]) -> str:
        if match[0] not in keys:
            keys[match[0]] = MAKE_KEY[match[1]]()
        return keys[match[0]]

    return PLACEHOLDER.sub(key, text)


@dataclass
class Session:
    doc: Path
    scratch: Path
    namespaces: dict[int, dict[str, Any]] = field(default_factory=dict)  # first line of a chain
    done: dict[int, str | None] = field(default_factory=dict)  # python block line -> failure
    service: Service | None = None

    @classmethod
    def create(cls, doc: Path, scratch: Path) -> Session:
        for entry in ROOT.iterdir():
            if entry.name not in NOT_COPIED:
                (scratch / entry.name).symlink_to(entry)
        for block in NAMED.values():  # named files exist before any block runs
            if block.filename:
                target = scratch / block.filename
                if target.is_symlink():
                    target.unlink()
                code = block.code if block.lang == "python" else substitute_keys(block.code)
                target.write_text(code)
        return cls(doc, scratch)

    def namespace(self, chain: list[Block]) -> dict[str, Any]:
        """The namespace a chain of continued blocks shares, fresh for its first block."""
        name = f"docs_{slug(self.doc.stem)}_{chain[0].line}"
        return self.namespaces.setdefault(chain[0].line, {"__name__": name})


class Service:
    """examples/table_service.py under `faststream-callout dev`, for SERVICE_URL."""

    def __init__(self, scratch: Path) -> None:
        self.process = spawn("faststream-callout dev examples.table_service:app", scratch)
        self.lines = Lines(self.process)
        output = self.lines.until(READY, timeout=COMMAND_TIMEOUT)
        found = re.search(r"nats-server (nats://\S+)", output)
        assert found, f"no URL in the output of faststream-callout dev:\n{output}"
        self.url = found[1]
        self.output = output

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.output += self.lines.rest(timeout=20)
        assert self.process.returncode == 0, self.output[-3000:]
        assert_stopped(self.output)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, Session]]:
    created: dict[Path, Session] = {}
    yield created
    for session in created.values():
        if session.service is not None:
            session.service.close()


@pytest.fixture
def session(
    sessions: dict[Path, Session], tmp_path_factory: pytest.TempPathFactory, request: Any
) -> Session:
    doc: Path = request.node.callspec.params["block"].doc
    if doc not in sessions:
        sessions[doc] = Session.create(doc, tmp_path_factory.mktemp(f"readme-{doc.stem}"))
    return sessions[doc]


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    check = {
        "python": run_python,
        "console": run_console,
        "toml": check_toml,
        "json": check_json,
        "conf": check_conf,
    }.get(block.lang)
    if check is None:
        pytest.fail(f"{block.where}: no check for language {block.lang!r}")
    check(block, session, monkeypatch)


# -- python ---------------------------------------------------------------------------------


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse connections and name lookups other than the loopback."""

    def local(host: object) -> bool:
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(str(host)).is_loopback
        except ValueError:
            return False

    def check(address: object) -> None:
        if isinstance(address, tuple) and not local(address[0]):
            raise OSError(f"README blocks run offline: no connection to {address[0]}")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not local(host.decode() if isinstance(host, bytes) else host):
            raise socket.gaierror(f"README blocks run offline: no lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def execute(block: Block, namespace: dict[str, Any]) -> None:
    # Padded so tracebacks point at the README's own lines.
    source = "\n" * (block.line - 1) + block.code
    code = compile(
        source, str(block.doc), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    before = dict(namespace)
    with warnings.catch_warnings():
        # TestNatsBroker reads its caller's source to guess `connect_only`; the README's
        # lines are no Python file, so it warns and uses the right default (False).
        warnings.filterwarnings("ignore", "\nError .* AST parsing", RuntimeWarning)
        result = eval(code, namespace)  # noqa: S307 - the README's own code
        if inspect.iscoroutine(result):
            asyncio.run(result)
        for name, value in list(namespace.items()):
            if name.startswith("test_") and callable(value) and before.get(name) is not value:
                outcome = value()
                if inspect.iscoroutine(outcome):
                    asyncio.run(outcome)


def is_test_file(block: Block) -> bool:
    return block.filename.startswith("test_")


def run_script(block: Block, session: Session) -> None:
    done = subprocess.run(
        [sys.executable, block.filename],
        cwd=session.scratch,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block.where}: `python {block.filename}` exited {done.returncode}:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


def run_python(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    if is_test_file(block):
        run_script(block, session)
        return
    offline(monkeypatch)
    monkeypatch.chdir(session.scratch)
    monkeypatch.syspath_prepend(str(session.scratch))  # named files import, as in a project
    chain = chain_of(block)
    namespace = session.namespace(chain)
    for previous in chain:  # in order, whatever order the tests run in
        if previous.line not in session.done:
            try:
                execute(previous, namespace)
            except Exception as exc:
                session.done[previous.line] = f"{type(exc).__name__}: {exc}"
                if previous is block:
                    raise
            else:
                session.done[previous.line] = None
        failure = session.done[previous.line]
        if failure is not None:
            if previous is block:  # it ran (and failed) as an earlier block of another test
                pytest.fail(f"{block.where}: {failure}")
            pytest.skip(f"the block it continues failed ({previous.where}): {failure}")


def continues(block: Block) -> bool:
    first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
    return bool(CONTINUES.match(first))


def chain_of(block: Block) -> list[Block]:
    """``block`` and the python blocks above it that it continues, first one first."""
    above = [
        b
        for b in parse_blocks(block.doc)
        if b.lang == "python" and not is_test_file(b) and b.line < block.line
    ]
    chain = [block]
    while continues(chain[0]) and above:
        chain.insert(0, above.pop())
    return chain


# -- console --------------------------------------------------------------------------------


@dataclass
class Command:
    line: str
    expected: list[str]
    status: int


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    continued = False
    for raw in block.code.splitlines():
        if continued:
            found[-1].line += " " + raw.strip().removesuffix("\\").strip()
            continued = raw.rstrip().endswith("\\")
        elif raw.startswith("$ "):
            text = raw[2:].strip()
            continued = text.endswith("\\")
            found.append(Command(text.removesuffix("\\").strip(), [], 0))
        elif found and raw.strip():
            found[-1].expected.append(raw)
    assert found, f"{block.where}: a console block without a `$ ` command"
    for command in found:
        status = re.search(r"#\s*exit status (\d+)\s*$", command.line)
        command.status = int(status[1]) if status else 0
    return found


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLOUT_", "NATS_URL"))}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"  # so a ready line is seen when it is printed
    env["COLUMNS"] = "80"  # help texts wrap as shown
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def spawn(command: str, cwd: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        ["bash", "-c", re.sub(r"\buv run ", "", command)],
        cwd=cwd,
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: SIGINT reaches all of it, as Ctrl-C
    )
    assert process.stdin is not None
    process.stdin.write(STDIN)
    process.stdin.close()
    return process


class Lines:
    """A process's output, read in a thread so waiting can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, pattern: re.Pattern[str] | None, *, timeout: float) -> str:
        """Output up to a line matching ``pattern`` (or the end); fails after ``timeout``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                os.killpg(self.process.pid, signal.SIGKILL)
                pytest.fail(f"no end after {timeout:.0f} s:\n{''.join(seen)[-3000:]}")
            if line is None:
                self.process.wait(timeout=timeout)
                return "".join(seen)
            seen.append(line)
            if pattern is not None and pattern.search(line):
                return "".join(seen)

    def rest(self, *, timeout: float) -> str:
        return self.until(None, timeout=timeout)


def assert_stopped(output: str) -> None:
    """nats-servers a command reported starting (``(pid N)``) must be gone by its end."""
    for pid in {int(p) for p in re.findall(r"nats-server \S+ \(pid (\d+)\)", output)}:
        cmdline = Path(f"/proc/{pid}/cmdline")
        deadline = time.monotonic() + 5
        while cmdline.exists() and b"nats-server" in cmdline.read_bytes():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"nats-server pid {pid} outlived the command that started it")
            time.sleep(0.05)


def run(command: str, cwd: Path) -> tuple[int, str]:
    process = spawn(command, cwd)
    lines = Lines(process)
    output = lines.until(READY, timeout=COMMAND_TIMEOUT)
    if process.poll() is None:  # a service that is up: stop it like Ctrl-C in a terminal
        os.killpg(process.pid, signal.SIGINT)
        output += lines.rest(timeout=20)
    assert_stopped(output)
    return process.returncode, output


def pattern(line: str) -> re.Pattern[str]:
    """Words literally; a run of words with a digit or `...` matches anything."""
    parts: list[str] = []
    for word in line.split():
        if "..." in word or any(c.isdigit() for c in word):
            if not parts or parts[-1] != ".*?":
                parts.append(".*?")
        else:
            parts.append(re.escape(word))
    return re.compile(r"\s+".join(parts))


def assert_output(expected: list[str], output: str, command: str) -> None:
    actual = [line.strip() for line in output.splitlines() if line.strip()]
    position = 0
    for line in expected:
        regex = pattern(line.strip())
        while position < len(actual) and not regex.fullmatch(actual[position]):
            position += 1
        assert position < len(actual), (
            f"`{command}`: expected a line like {line.strip()!r} (in this order) in:\n{output}"
        )
        position += 1


def ci_commands() -> set[str]:
    text = (ROOT / ".ci" / "run").read_text()
    runs = re.findall(r'^(?:\w+=\S+ )*"\$\{UV\[@\]\}" run (.+)$', text, re.MULTILINE)
    return {normal(run) for run in runs}


def normal(command: str) -> str:
    command = command.split(" #", 1)[0].strip()
    return " ".join(re.sub(r"^uv run ", "", command).split())


def check_install(command: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(pyproject.get("optional-dependencies", {}))
    words = shlex.split(command)[2:]
    assert words, command
    for word in words:
        if word.startswith("-"):
            continue
        requirement = Requirement(word)
        assert canonicalize_name(requirement.name) == canonicalize_name(pyproject["name"]), word
        assert requirement.extras <= extras, f"{word}: no such extra (have {sorted(extras)})"


def run_console(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    keys: dict[str, str] = {}
    for command in commands(block):
        line, expected = substitute_keys(command.line, keys), command.expected
        simple = normal(line)
        if simple.startswith(("pip install ", "uv add ")):
            check_install(simple)
            continue
        if simple.split()[0] in {"pytest", "mypy", "ruff"} or simple.startswith("mkdocs build"):
            # Running the suite from inside itself would recurse; CI runs these.
            assert simple in ci_commands(), f"`{line}` is not a command .ci/run runs"
            continue
        if simple.startswith("mkdocs serve"):  # serves until stopped; the site's build is a test
            assert (ROOT / "mkdocs.yml").exists()
            continue
        if SERVICE_URL in line:
            if session.service is None:
                session.service = Service(session.scratch)
            service = session.service
            line = line.replace(SERVICE_URL, service.url)
            expected = [e.replace(SERVICE_URL, service.url) for e in expected]
        status, output = run(line, session.scratch)
        assert status == command.status, f"`{line}` exited {status}:\n{output[-3000:]}"
        assert_output(expected, output, line)


# -- toml, json, conf -----------------------------------------------------------------------


def check_toml(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from faststream_callout.batteries import NKeyLookup, RoleBasedPermissions, StaticTable

    data = tomllib.loads(substitute_keys(block.code))
    source = block.where
    users = data.get("users", {})
    if "roles" in data:
        RoleBasedPermissions.from_mapping(data, source=source)
    elif isinstance(users, dict) and any("nkey" in entry for entry in users.values()):
        NKeyLookup.from_mapping(data, source=source)
    elif "users" in data or "tokens" in data:
        table = StaticTable.from_mapping(data, source=source)
        assert repr(table)


def check_json(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    text = substitute_keys(block.code)
    data = json.loads(text)
    event_type = data.get("type") if isinstance(data, dict) else None
    if event_type == "io.nats.server.advisory.v1.client_disconnect":
        check_auth_error_event(text, data)
    if isinstance(data, dict) and isinstance(data.get("authorization"), dict):
        check_authorization_section(data["authorization"])


def check_auth_error_event(text: str, event: dict[str, Any]) -> None:
    """ServerFeedback matches the event to the login we allowed on that connection."""
    from faststream_callout.integration.feedback import ServerFeedback

    feedback = ServerFeedback()
    request = AuthorizationRequest(
        server_id=ServerId(id=event["server"]["id"]),
        user_nkey=KeyPair.create_user().public_key,
        client_info=ClientInfo(id=event["client"]["id"]),
        type="authorization_request",
        version=2,
    )
    feedback(Decision(Outcome.ALLOWED, b"", "", request, Identity(event["client"]["user"])))
    refusal = feedback.handle_event(text)
    assert refusal is not None, "ServerFeedback did not match the documented event"
    assert refusal.reason == event["reason"]


def check_authorization_section(section: dict[str, Any]) -> None:
    from faststream_callout.protocol.operator import ExternalAuthorization

    unknown = set(section) - set(ExternalAuthorization.__struct_fields__)
    assert not unknown, f"not fields of an account JWT's authorization section: {unknown}"
    parsed = ExternalAuthorization(**section)
    assert all(is_public_key(u, KeyKind.USER) for u in parsed.auth_users)
    assert parsed.allowed_accounts == ["*"] or all(
        is_public_key(a, KeyKind.ACCOUNT) for a in parsed.allowed_accounts
    )
    assert not parsed.xkey or is_public_key(parsed.xkey, KeyKind.CURVE)


def check_conf(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    path = session.scratch / (block.filename or f"readme-{block.line}.conf")
    if path.is_symlink():
        path.unlink()
    path.write_text(substitute_keys(block.code))
    try:
        said = check_config(path)
    except ConfigurationError as exc:
        pytest.fail(f"{block.where}: {exc}")
    assert "is valid" in said


# -- the harness itself ---------------------------------------------------------------------


def test_harness_parses_fences_in_lists_and_tildes(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# A\n\n1. step\n\n   ```python\n   x = 1\n   if x:\n       y = 2\n   ```\n\n"
        "## B\n\n~~~console\n$ echo hi \\\n    there   # exit status 3\nhi there\n~~~\n"
    )
    first, second = parse_blocks(doc)
    assert (first.lang, first.heading, first.line) == ("python", "A", 6)
    assert first.code == "x = 1\nif x:\n    y = 2\n"
    (command,) = commands(second)
    assert command.line == "echo hi there   # exit status 3"
    assert (command.status, command.expected) == (3, ["hi there"])


def test_harness_runs_top_level_await_and_test_functions(tmp_path: Path) -> None:
    code = (
        "import asyncio\nx = await asyncio.sleep(0, result=5)\ncalls = []\n"
        "async def test_it():\n    calls.append(x)\n"
    )
    namespace: dict[str, Any] = {}
    execute(Block(tmp_path / "d.md", 1, "python", "", "", 1, code), namespace)
    assert namespace["calls"] == [5]


def test_harness_matches_output_loosely() -> None:
    line = pattern("expires      in 59m 59s (about 2026-11-29 05:41:12)")
    assert line.fullmatch("expires in 1h 00m 00s (about 2027-01-01 00:00:00)")
    assert not line.fullmatch("expires never")
    assert pattern("issuer  ABIJO3CC...WFHZH   auth_callout.issuer;").fullmatch(
        "issuer  AD3K   auth_callout.issuer;"
    )
    with pytest.raises(AssertionError, match="in this order"):
        assert_output(["second", "first"], "first\nsecond\n", "cmd")


def test_harness_chains_continued_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# A\n\n```python\nx = 1\n```\n\n```python\n# Continues the block above (x).\ny = x\n```\n"
        "\n```python\nz = 3\n```\n\n```python\n# continues the block above: z\nw = z\n```\n"
    )
    first, second, third, fourth = parse_blocks(doc)
    assert [b.line for b in chain_of(second)] == [first.line, second.line]
    assert [b.line for b in chain_of(third)] == [third.line]
    assert [b.line for b in chain_of(fourth)] == [third.line, fourth.line]


def test_harness_accepts_anchors_that_work_on_github_and_the_site(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n## `dev MODULE:APP`: a local server\n\n## one - two\n")
    assert anchors(doc) == {"doc", "dev-moduleapp-a-local-server"}
