"""``faststream-callout keys``: generate the issuer account key (and an xkey)."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from faststream_callout.core import env
from faststream_callout.protocol.nkeys import KeyPair
from faststream_callout.protocol.xkeys import XKeyPair
from faststream_callout.tools.cli.common import PROG, CliError, out

__all__ = ["configure", "run", "write_secret"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's description and arguments."""
    parser.description = (
        "Generate the auth callout issuer (an account nkey) and, with --xkey, a "
        "curve key. Seeds are written to files only the owner can read (0600); the public "
        "keys are printed. Seeds are never printed unless --show-seeds is given."
    )
    parser.add_argument("--out", metavar="DIR", default=".", help="where to write the seed files")
    parser.add_argument("--xkey", action="store_true", help="also generate an xkey (encryption)")
    parser.add_argument("--force", action="store_true", help="overwrite existing seed files")
    parser.add_argument(
        "--show-seeds", action="store_true", help="also print the seeds (secret!) as env lines"
    )


def run(args: argparse.Namespace) -> int:
    """Write the seed files, print the public keys and the next steps."""
    out_dir = Path(args.out)
    issuer = KeyPair.create_account()
    xkey = XKeyPair.generate() if args.xkey else None
    files = {out_dir / "issuer.seed": issuer.seed}
    if xkey is not None:
        files[out_dir / "xkey.seed"] = xkey.seed
    existing = [str(path) for path in files if path.exists()]
    if existing and not args.force:
        raise CliError(f"refusing to overwrite {', '.join(existing)}; use --force to replace")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, seed in files.items():
        write_secret(path, seed + "\n", overwrite=args.force)

    issuer_file, xkey_file = out_dir / "issuer.seed", out_dir / "xkey.seed"
    out(f"issuer  {issuer.public_key}   auth_callout.issuer; seed in {issuer_file} (0600)")
    if xkey is not None:
        out(f"xkey    {xkey.public_key}   auth_callout.xkey; seed in {xkey_file} (0600)")
    if args.show_seeds:
        out("")
        out(f"{env.CALLOUT_ISSUER_SEED}={issuer.seed}")
        if xkey is not None:
            out(f"{env.CALLOUT_XKEY_SEED}={xkey.seed}")
    xkey_arg = f" --xkey {xkey.public_key}" if xkey else ""
    out("")
    out("next:")
    out(f"  {PROG} config --issuer {issuer.public_key}{xkey_arg} > nats-callout.conf")
    exports = f'{env.CALLOUT_ISSUER_SEED}="$(cat {issuer_file})"'
    if xkey is not None:
        exports += f' {env.CALLOUT_XKEY_SEED}="$(cat {xkey_file})"'
    out(f"  export {exports}")
    return 0


def write_secret(path: Path, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` to a new file only its owner can read (mode 0600).

    Without ``overwrite`` an existing file is an error. With it, the text goes to a
    fresh 0600 file that then replaces ``path``: an old file's looser mode never
    applies to the new secret.
    """
    target = path if not overwrite else path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} already exists; use --force to replace it") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        if overwrite:
            target.replace(path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
