"""Entry point of ``residual-detectron``: one command, a subcommand per job.

Each subcommand lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``main(args)``. Modules import their heavy
dependencies (torch, the Butler) inside ``main`` so ``--help`` stays fast.

Errors: the package's own errors (`errors.ResidualDetectronError` and its
subclasses: bad input, bad parameters, unusable outputs) are reported as one
line, ``residual-detectron CMD: error: ...``, exit status 2. Anything else is
a bug: it is reported as an internal error with its traceback, exit status 1,
except the machine's refusals (a full disk, a quota, a read-only file system,
permissions, a memory limit: `refusals`), reported as one line with status 2.
Ctrl-C exits with status 130; commands move their outputs into place only
when they are complete (`outputs`), so an interrupted one replaces nothing.
SIGTERM (a batch system's time limit or ``scancel``, a plain ``kill``) is
handled the same way, as `Terminated` (a `KeyboardInterrupt`), with exit
status 143: without that the process would end at once, leaving its
temporary outputs, its worker processes running on, and a batch's summary
up to a few seconds behind (`outputs.BatchFolder`). A second SIGTERM while
it cleans up is ignored; the SIGKILL a batch system sends later is not.
"""

from __future__ import annotations

__all__ = ["main", "build_parser", "CommandError", "Terminated", "input_files"]

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from ..errors import MissingInputError, ResidualDetectronError
from .refusals import machine_refusal

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


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM: raised where it is, so that it cleans up as after Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    # Once: a second SIGTERM must not cut short the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `Terminated` in the block (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        when interrupted (Ctrl-C), 143 when terminated (SIGTERM).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    prog = f"{parser.prog} {args.command}"
    try:
        with _sigterm_raises():
            result = args.handler(args)
    except Terminated:
        print(f"{prog}: terminated (SIGTERM).", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except ResidualDetectronError as err:
        message = " ".join(str(err).split("\n"))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:
        # The machine's refusal met outside an output folder's staging (a training run's
        # checkpoints, an unreadable input, a memory limit) is not a bug either.
        reason = machine_refusal(err)
        if reason is None:
            print(f"{prog}: internal error (a bug; please report it):", file=sys.stderr)
            traceback.print_exc()
            return 1
        print(f"{prog}: error: {reason}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
