"""The project's own error types.

Every error that means "the input or the parameters are wrong" derives from
`InputError`; the command line reports those (and only those, with
`ResidualDetectronError`) as one-line messages. Anything else is a bug and is
shown with its traceback. `InputError` is also a `ValueError`, so code that
caught ``ValueError`` before keeps working.
"""

from __future__ import annotations

__all__ = [
    "ResidualDetectronError",
    "InputError",
    "MissingInputError",
    "ConfigError",
    "OutputError",
    "OutputWriteError",
    "WorkerDiedError",
]


class ResidualDetectronError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(ResidualDetectronError, ValueError):
    """Input data or parameters are invalid (the message names the problem)."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder the user named does not exist.

    Also a `FileNotFoundError`, so code that caught that before keeps working.
    """


class ConfigError(InputError):
    """A parameter set (a config model) was given invalid values."""


class OutputError(ResidualDetectronError):
    """An output location cannot be used (exists, not writable, holds other outputs)."""


class OutputWriteError(OutputError):
    """The machine refused to write the outputs: a full disk, a quota, a file-size limit, a
    read-only or failing disk, permissions. Not the data's fault: a batch stops on it, since
    every later item would fail the same way after its work."""


class WorkerDiedError(ResidualDetectronError, RuntimeError):
    """A job's worker process died while running it, also when the job ran alone
    (`~lsst.meas.extensions.residual.workers.ordered_map`): killed by the system, for its memory
    say, or a crash in compiled code."""
