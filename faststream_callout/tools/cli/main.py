"""The ``faststream-callout`` entry point: the parser, with each command's module loaded on use.

The commands are listed from :data:`COMMANDS`; only the module of the command
given is imported (for its arguments and its work), so ``keys`` never loads
FastStream and only ``doctor`` loads doctor.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

from faststream_callout.core.errors import ConfigurationError
from faststream_callout.tools.cli.common import PROG, CliError, err

__all__ = ["COMMANDS", "main"]

COMMANDS: Final = {
    "keys": "generate the issuer account key (and an xkey)",
    "config": "print the nats-server configuration for given public keys",
    "dev": "run your app against a local nats-server with fresh keys",
    "check": "log in to a nats-server and show the callout's decision",
    "doctor": "check a deployment: the service's login, permissions, keys and server config",
}
"""Command name -> its one-line help; each is the module ``faststream_callout.tools.cli.<name>``
with ``configure(parser)`` and ``run(args) -> exit status``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faststream-callout`` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(chosen=next((a for a in arguments if not a.startswith("-")), None))
    args = parser.parse_args(arguments)
    command: Callable[[argparse.Namespace], int] | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command(args)
    except (CliError, ConfigurationError) as exc:
        err(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="NATS auth callout services with FastStream: keys, server config, "
        "a local development server, and login checks.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        command = commands.add_parser(name, help=summary)
        if name == chosen:
            module = importlib.import_module(f"{__package__}.{name}")
            module.configure(command)
            command.set_defaults(command=module.run)
    return parser
