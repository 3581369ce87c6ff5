"""The command line: one parser, one module per subcommand.

Subcommand modules expose ``add_parser(subparsers)`` and ``run(args) -> int``. Nothing here
imports torch or Qt at start-up, so ``kfstudio --help`` is instant; each command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order --help lists them.
COMMANDS = (
    "kfstudio.cli.factorize_cmd",
    "kfstudio.cli.add_brick_cmd",
    "kfstudio.cli.relate_cmd",
    "kfstudio.cli.assemble_cmd",
    "kfstudio.cli.evaluate_cmd",
    "kfstudio.cli.teacher_cmd",
    "kfstudio.cli.demo_cmd",
)


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line and exit code 2, like every other bad input (no usage dump)."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="kfstudio",
        description="KF Studio: factorize a pretrained network into a common module and task bricks, "
        "then snap bricks into custom networks. With no command, opens the studio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _version() -> str:
    from kfstudio import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a refused flag (already said in one line)
        return int(exc.code or 0)
    args.argv = list(argv)  # what the user typed, e.g. to print a runnable --resume command
    if args.command is None:
        from kfstudio.cli.demo_cmd import open_studio
        return open_studio(demo=None)
    from kfstudio.core.errors import KFError
    try:
        return int(args.run(args) or 0)
    except KFError as exc:
        print(f"kfstudio {args.command}: {exc}", file=sys.stderr)
        return 2
