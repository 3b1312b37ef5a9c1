"""Entry point of ``residual-detectron``: one command, a subcommand per job.

Each subcommand lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``main(args)``. Modules import their heavy
dependencies (torch, the Butler) inside ``main`` so ``--help`` stays fast.

Errors: the package's own errors (`errors.ResidualDetectronError` and its
subclasses: bad input, bad parameters, unusable outputs) are reported as one
line, ``residual-detectron CMD: error: ...``, exit status 2. Anything else is
a bug: it is reported as an internal error with its traceback, exit status 1.
Ctrl-C exits with status 130; commands move their outputs into place only
when they are complete (`outputs`), so an interrupted one replaces nothing.
"""

from __future__ import annotations

__all__ = ["main", "build_parser", "CommandError", "input_files"]

import argparse
import contextlib
import importlib
import logging
import sys
import traceback
from collections.abc import Iterator

from ..errors import MissingInputError, ResidualDetectronError

# Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = (
    "simulate",
    "import_images",
    "inject",
    "detect_peaks",
    "deblend",
    "train",
    "find",
    "evaluate",
    "run",
    "demo",
)


#: The command line's log format (also that of the processes a command spawns).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class CommandError(ResidualDetectronError):
    """A user error a subcommand reports without a traceback."""


@contextlib.contextmanager
def input_files() -> Iterator[None]:
    """Report a builtin `FileNotFoundError` raised in the block as a one-line `MissingInputError`.

    For calls that open only files the user named (e.g. a model package) in
    code that raises the builtin error; keep the block to those calls.
    """
    try:
        yield
    except FileNotFoundError as err:
        if isinstance(err, ResidualDetectronError):
            raise
        raise MissingInputError(str(err)) from err


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
    """Run ``residual-detectron`` with ``argv`` (default: `sys.argv`).

    Returns
    -------
    status : `int`
        0 on success, 2 for a reported error, 1 for an internal error, 130
        when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    prog = f"{parser.prog} {args.command}"
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except ResidualDetectronError as err:
        message = " ".join(str(err).split("\n"))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Exception:
        print(f"{prog}: internal error (a bug; please report it):", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
