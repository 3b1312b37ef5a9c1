"""Entry point of ``residual-detectron``: one command, a subcommand per job.

Each subcommand lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``main(args)``. Modules import their heavy
dependencies (torch, the Butler) inside ``main`` so ``--help`` stays fast.
"""

from __future__ import annotations

__all__ = ["main", "build_parser", "CommandError"]

import argparse
import importlib
import logging
import sys

from ..scene import SceneFormatError

# Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = ("simulate", "detect_peaks", "deblend", "train", "find", "evaluate", "run", "demo")


class CommandError(Exception):
    """A user error a subcommand reports without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="residual-detectron",
        description="Find the sources the Scarlet deblender missed, with a Mask R-CNN on its residuals.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f".{name}", __package__)
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        result = args.handler(args)
    except (CommandError, SceneFormatError, FileNotFoundError, ValueError) as err:
        print(f"residual-detectron {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
