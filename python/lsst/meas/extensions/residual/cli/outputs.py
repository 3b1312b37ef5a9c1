"""Outputs of the commands: checked before any work, replaced whole or not at all.

A command that writes a folder (``deblend``, ``find``, ``evaluate``, ``run``)
uses `OutputFolder`; one that writes a single file (``simulate``,
``detect-peaks``) uses `OutputFile`. Both follow the same three steps:

1. Construct the object first, before any work. It refuses (`OutputError`,
   one line) a target of the wrong kind (a file where a folder is wanted, or
   the reverse), a target holding outputs without ``overwrite``, and a place
   the command could not write to. Writability is tried, not asked: a probe
   file is created and removed (``os.access`` says yes to root everywhere).
2. Do the work, then write every output inside ``with target.staging() as
   staged:``, into a temporary folder beside the target (same file system,
   so the final move is a rename).
3. When the ``with`` block ends without error, the outputs replace the target
   at once: the old folder is renamed aside, the new one renamed in, the old
   one deleted (a single file is moved with `os.replace`). An exception or a
   ``KeyboardInterrupt`` inside the block deletes the temporary folder and
   leaves the target as it was (a full disk or a failing write is reported as
   `OutputWriteError`, also where a writer kept no errno of it:
   `refusals.refused_write`;
   any other exception goes on as it was raised).

Before the move, `OutputFolder` writes ``summary.json`` last: the summary the
command filled in, plus ``outputs``, the SHA-256 of every other file in the
folder (`check_output_folder` verifies them). The new folder holds only what
the command wrote this time, so an output it skipped (``--no-plot``) cannot
survive from an earlier run.

A batch (``run`` on many scenes) writes into `BatchFolder` instead: each
item's sub-folder is an `OutputFolder` of its own, moved into the batch
folder as soon as that item is done, and the batch's ``summary.json`` is
rewritten as items end, so that a batch killed outright (a cluster's
time limit, say) keeps what it finished and says so (``complete``: false).
Run again with ``skip_existing``, it keeps the sub-folders that still match
their manifests and the inputs and settings they were made from, and does
the rest. A batch holds its folder locked while it runs, so that a second
batch into the same folder (a job submitted again while the first still
runs) is refused instead of removing the first one's temporary folders.

Examples
--------
How ``run`` uses it::

    folder = OutputFolder(args.out, overwrite=args.overwrite, output_names=RUN_OUTPUTS)
    result = run_chain(...)  # minutes of work, after the check
    with folder.staging() as staged:
        catalog.write(staged / "catalog.fits")
        ...
        staged.summary.update(counts)
    print(f"Wrote {', '.join(folder.written)} in {folder.path}.")
"""

from __future__ import annotations

__all__ = [
    "SUMMARY_NAME",
    "OutputFolder",
    "OutputFile",
    "StagedOutputs",
    "BatchFolder",
    "check_output_folder",
    "file_sha256",
    "matching_outputs",
]

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputError, OutputWriteError, ResidualDetectronError
from .refusals import refused_write

try:
    import fcntl
except ImportError:  # not POSIX: batches are not locked
    fcntl = None

_log = logging.getLogger(__name__)

#: Name of the summary file `OutputFolder` writes last into every output folder.
SUMMARY_NAME = "summary.json"

#: Prefix of the file that checks a folder can be written, where it must have a name.
WRITE_PROBE_PREFIX = ".write-probe-"


class StagedOutputs:
    """The temporary folder a command writes its outputs into, and its summary.

    Given by `OutputFolder.staging`; write files into ``staged / name`` (or
    under `path`) and fill in `summary`.

    Attributes
    ----------
    path : `pathlib.Path`
        The temporary folder (beside the target).
    summary : `dict`
        What ``summary.json`` will hold, besides ``outputs`` (set by the
        folder); JSON-serialisable values only. A ``summary.json`` a writer
        left in the folder is replaced: take what it holds into `summary`
        first if it matters.
    outputs : `dict` [`str`, `str`]
        After the ``with`` block: SHA-256 (hex) of each file but the summary,
        by path relative to the folder (POSIX separators).
    """

    def __init__(self, path: Path):
        self.path = path
        self.summary: dict[str, Any] = {}
        self.outputs: dict[str, str] = {}

    def __truediv__(self, name: str | os.PathLike) -> Path:
        return self.path / name

    def _write_summary(self) -> None:
        self.outputs = _manifest(self.path)
        summary = {**self.summary, "outputs": self.outputs}
        (self.path / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")


class OutputFolder:
    """An output folder, checked now and replaced whole when the outputs are complete.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The folder (``--out``). Symbolic links are followed: the folder they
        point to is replaced.
    overwrite : `bool`, optional
        Whether outputs already in the folder may be replaced.
    output_names : iterable of `str`, optional
        Names of the files the command writes. With ``overwrite``, a folder is
        replaced only if every entry in it is one of these, ``summary.json``
        or a file its ``summary.json`` lists: ``--overwrite`` replaces the
        whole folder, so it must not swallow files that no run wrote.
    option : `str`, optional
        How the user named the folder, for messages.

    Raises
    ------
    OutputError
        If ``path`` is an existing file; if it holds files and ``overwrite``
        is False (the message names them); if it holds files that are not
        outputs; or if its parent folder cannot be written.

    Notes
    -----
    Exceptions and Ctrl-C are handled (SIGTERM too, which the command line
    turns into an exception); a process killed outright (SIGKILL,
    power cut) may leave a ``.NAME.partial-*`` folder beside the target, and,
    if killed between the two renames of the move, the previous outputs in a
    ``.NAME.old-*`` folder there.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        output_names: Iterable[str] = (),
        option: str = "--out",
    ):
        self.path = Path(path).resolve()
        self.overwrite = overwrite
        self.output_names = frozenset(output_names) | {SUMMARY_NAME}
        self.option = option
        #: Names of the files written (``summary.json`` last), once `staging` has completed.
        self.written: list[str] = []
        self.check()

    def check(self) -> None:
        """Check the target again (`staging` does, in case it changed during the work).

        Raises
        ------
        OutputError
            As the constructor.
        """
        where = f"{self.option} {self.path}"
        if self.path.exists():
            if not self.path.is_dir():
                raise OutputError(
                    f"{where} is an existing file, not a folder; give a folder for the outputs."
                )
            entries = sorted(os.listdir(self.path))
            if entries and not self.overwrite:
                raise OutputError(
                    f"{where} already holds {_names(entries)}; pass --overwrite to replace them."
                )
            foreign = [name for name in entries if name not in self._previous_outputs()]
            if foreign:
                raise OutputError(
                    f"{where} holds {_names(foreign)}, which this command does not write; --overwrite "
                    "replaces the whole folder, so give a new folder or one with only earlier outputs."
                )
        _check_writable_parent(self.path, where)

    def _previous_outputs(self) -> set[str]:
        """Top-level names the folder's ``summary.json`` lists, and the command's output names."""
        names = set(self.output_names)
        try:
            listed = json.loads((self.path / SUMMARY_NAME).read_text()).get("outputs", {})
        except (OSError, ValueError, AttributeError):  # no summary, not JSON, or not a mapping
            return names
        if isinstance(listed, dict):
            names.update(str(name).split("/")[0] for name in listed)
        return names

    @contextlib.contextmanager
    def staging(self) -> Iterator[StagedOutputs]:
        """Write the outputs into a temporary folder; move it into place on success.

        Yields
        ------
        staged : `StagedOutputs`
            The temporary folder and the summary to fill in.

        Raises
        ------
        OutputError
            If the target changed during the work so that it may no longer be
            replaced, or the machine refused the writes (disk full, quota,
            read-only or failing disk, permissions); the target is then left
            as it was.
        """
        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = StagedOutputs(
            Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        )
        try:
            # mkdtemp makes the folder private (0700); give it the mode a plain mkdir would.
            staged.path.chmod(self.path.stat().st_mode & 0o7777 if self.path.exists() else _default_mode())
            with _write_errors(self.path):
                yield staged
                staged._write_summary()
                self._replace_with(staged.path)
        except BaseException:
            shutil.rmtree(staged.path, ignore_errors=True)
            raise
        self.written = [*staged.outputs, SUMMARY_NAME]

    def _replace_with(self, new: Path) -> None:
        if not self.path.exists():
            os.rename(new, self.path)
            return
        # A fresh empty folder to rename the old outputs onto (rename may replace an empty folder).
        old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
        os.rename(self.path, old)
        try:
            os.rename(new, self.path)
        except BaseException:
            os.rename(old, self.path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            _log.warning("Could not delete the previous outputs, moved to %s.", old)


class BatchFolder:
    """The output folder of a batch: one sub-folder per item, each moved in as soon as it is done.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The folder (``--out``).
    names : sequence of `str`
        The items' sub-folder names, in order.
    overwrite : `bool`, optional
        Whether earlier outputs in the folder may be replaced: they are
        removed when the batch starts (`start`).
    skip_existing : `bool`, optional
        Whether sub-folders an earlier batch completed may be kept
        (`reusable`); the other earlier outputs are removed as with
        ``overwrite``.
    option : `str`, optional
        How the user named the folder, for messages.

    Raises
    ------
    OutputError
        As `OutputFolder`: the target is a file, holds outputs and neither
        ``overwrite`` nor ``skip_existing`` is set (or holds files no batch
        wrote), or cannot be written.

    Notes
    -----
    The batch's ``summary.json`` is replaced at once each time (`update`,
    every few seconds): it lists every item with its status so far
    (``pending`` for those not done) and ``complete`` (false until
    `finish`). Only `finish` adds the
    ``outputs`` manifest of every file in the folder (`check_output_folder`).
    Temporary ``.NAME.partial-*`` folders of this batch's items, a
    temporary summary and write probes (``.write-probe-*``, of a file
    system without unnamed files) that a killed batch left are removed when
    the next one starts. A batch stopped by an exception, Ctrl-C or SIGTERM
    calls `stop` instead of `finish`.

    The folder is locked (``flock`` on the folder itself, so nothing is left
    in it) from the constructor, or from `start` if it did not exist yet,
    until `finish`, `stop` or `close` (or the end of a ``with`` block, or of
    the process, also one killed outright): another batch into it is
    refused, since each would take the other's temporary folders for a
    killed batch's and remove them. On a file system that does not lock
    (some NFS and Lustre mounts) a warning says so and the batch runs
    unguarded.
    """

    #: Fewest seconds between two writes of the summary by `update`.
    UPDATE_SECONDS = 5.0

    def __init__(
        self,
        path: str | os.PathLike,
        names,
        *,
        overwrite: bool = False,
        skip_existing: bool = False,
        option: str = "--out",
    ):
        self.path = Path(path).resolve()
        self.names = [str(name) for name in names]
        self._written: float | None = None  # when update last wrote the summary (time.monotonic)
        self.replace = overwrite or skip_existing
        self.skip_existing = skip_existing
        self._option = option
        self._where = f"{option} {self.path}"
        self._unlock = None  # releases the folder's lock (`_lock`)
        if self.path.is_dir():
            self._lock()
        try:
            self._check()
        except BaseException:
            self.close()  # a refused batch holds nothing
            raise

    def _check(self) -> None:
        if self.path.is_dir() and os.listdir(self.path) and not self.replace:
            raise OutputError(
                f"{self._where} already holds {_names(sorted(os.listdir(self.path)))}; pass --overwrite to "
                "replace them, or --skip-existing to keep the scenes an earlier batch completed."
            )
        # The items of an earlier batch (its summary's) too: what it left is this command's.
        items = {*self.names, *self._earlier_batch()}
        if self.path.is_dir():
            self._remove_leftovers(items)
        # Refuses a file, entries no batch wrote, and a place that cannot be written.
        OutputFolder(self.path, overwrite=True, output_names=items, option=self._option)

    def __enter__(self) -> BatchFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder for another batch (the process's end does too)."""
        if self._unlock is not None:
            self._unlock()
            self._unlock = None

    def _lock(self) -> None:
        """Lock the folder against another batch (`OutputError` if one holds it); once."""
        if self._unlock is not None or fcntl is None:
            return
        handle = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise OutputError(
                f"{self._where} is being written by another batch (residual-detectron run) now; wait "
                "for it to end, or give another folder."
            ) from None
        except OSError as err:
            os.close(handle)
            _log.warning(
                "Could not lock %s (%s): a second batch into it while this one runs is not refused "
                "on this file system.",
                self._where,
                err.strerror or err,
            )
            return
        # Released by `close`, or when this object is collected or the process ends.
        self._unlock = weakref.finalize(self, os.close, handle)

    def _earlier_batch(self) -> list[str]:
        """Sub-folders an earlier batch's ``summary.json`` names (also one that did not complete).

        Only plain names: the file may have been edited, and these name things to remove.
        """
        try:
            summary = json.loads((self.path / SUMMARY_NAME).read_text())
            names = [str(entry["folder"]) for entry in summary.get("scenes", [])]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            return []
        return [name for name in names if name not in ("", ".", "..") and Path(name).name == name]

    def start(self, summary: dict[str, Any], keep=()) -> None:
        """Make the folder, remove every earlier output but the sub-folders ``keep``, write ``summary``.

        ``keep``: names of sub-folders `reusable` accepted.
        """
        keep = set(keep)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        for entry in os.listdir(self.path):
            if entry not in keep and entry != SUMMARY_NAME:
                victim = self.path / entry
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                else:
                    victim.unlink()
        self.update(summary, force=True)

    def reusable(self, name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The summary of the item's sub-folder if ``skip_existing`` and it can be kept, else None.

        It can be kept if it matches its manifest (`check_output_folder`) and its ``inputs`` equal
        ``inputs`` (the digests of what it was made from).
        """
        return matching_outputs(self.path / name, inputs) if self.skip_existing else None

    def discard(self, name: str) -> None:
        """Remove an item's earlier outputs (the item failed in this batch)."""
        folder = self.path / name
        if folder.is_dir():
            shutil.rmtree(folder)

    def update(self, summary: dict[str, Any], *, force: bool = False) -> None:
        """Replace the batch's ``summary.json`` with ``summary`` (``complete`` false), at once.

        At most once in `UPDATE_SECONDS` unless ``force``: the summary of a batch of thousands of
        scenes is megabytes, and the sub-folders, not the summary, say what a killed batch finished.
        """
        now = time.monotonic()
        if force or self._written is None or now - self._written >= self.UPDATE_SECONDS:
            self._write({**summary, "complete": False})
            self._written = now

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the final ``summary.json``: ``summary``, ``complete`` true and the ``outputs`` manifest."""
        self._remove_leftovers(self.names)  # of items whose worker process was killed
        self._write({**summary, "complete": True, "outputs": _manifest(self.path)})
        self.close()

    def stop(self, summary: dict[str, Any]) -> bool:
        """The batch is stopped before its end: remove the temporary folders of its unfinished
        items and write ``summary`` (``complete`` false) now, whenever the last was written.

        Call it once no process writes items any more (the workers are stopped). It raises
        nothing of its own, so that the reason the batch stopped goes on: where the machine
        refuses the summary (a full disk) or the removals (a file system turned read-only), the
        earlier summary stays (the sub-folders say what is done) and a warning says so.

        Returns
        -------
        written : `bool`
            Whether ``summary.json`` is this summary.
        """
        try:
            self._remove_leftovers(self.names)
            self.update(summary, force=True)
        except (OutputWriteError, OSError) as err:
            _log.warning("The stopped batch's summary was not brought up to date: %s", err)
            return False
        finally:
            self.close()
        return True

    def _remove_leftovers(self, items: Iterable[str]) -> None:
        """Remove what a killed process of a batch leaves: a summary being written, a write probe,
        and the temporary folders (``.NAME.partial-*``) of the items ``items``."""
        for leftover in (*self.path.glob(f".{SUMMARY_NAME}.*"), *self.path.glob(f"{WRITE_PROBE_PREFIX}*")):
            leftover.unlink(missing_ok=True)
        for name in items:
            for leftover in self.path.glob(f".{glob.escape(name)}.partial-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def _write(self, summary: dict[str, Any]) -> None:
        with _write_errors(self.path):
            handle, temporary = tempfile.mkstemp(prefix=f".{SUMMARY_NAME}.", dir=self.path)
            try:
                with os.fdopen(handle, "w") as stream:
                    stream.write(json.dumps(summary, indent=2) + "\n")
                os.chmod(temporary, 0o666 & ~_umask())
                os.replace(temporary, self.path / SUMMARY_NAME)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
                raise


class OutputFile:
    """An output file, checked now and replaced at once when it is complete.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The file (``--out``). A symbolic link is followed.
    overwrite : `bool`, optional
        Whether an existing file may be replaced.
    option : `str`, optional
        How the user named the file, for messages.

    Raises
    ------
    OutputError
        If ``path`` is a folder; if it exists and ``overwrite`` is False; or
        if its folder cannot be written.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, option: str = "--out"):
        self.path = Path(path).resolve()
        self.overwrite = overwrite
        self.option = option
        self.check()

    def check(self) -> None:
        """Check the target again (`staging` does, in case it changed during the work).

        Raises
        ------
        OutputError
            As the constructor.
        """
        where = f"{self.option} {self.path}"
        if self.path.is_dir():
            raise OutputError(f"{where} is a folder; give a file name.")
        if self.path.exists() and not self.overwrite:
            raise OutputError(f"{where} exists; pass --overwrite to replace it.")
        _check_writable_parent(self.path, where)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """Write the file at a temporary path beside the target; move it into place on success.

        Yields
        ------
        path : `pathlib.Path`
            Where to write. Its name is the target's (writers that look at
            the extension see the right one); the file does not exist yet.

        Raises
        ------
        OutputError
            If the target changed during the work so that it may no longer be
            replaced, or the machine refused the writes (disk full, quota,
            read-only or failing disk, permissions); the target is then left
            as it was.
        """
        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        try:
            staged = folder / self.path.name
            with _write_errors(self.path):
                yield staged
                if not staged.is_file():
                    raise RuntimeError(f"Nothing was written to {staged} for {self.path}.")
                os.replace(staged, self.path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def check_output_folder(path: str | os.PathLike) -> dict[str, Any]:
    """Check an output folder against the ``outputs`` of its ``summary.json``.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        A folder written through `OutputFolder`.

    Returns
    -------
    summary : `dict`
        The content of ``summary.json``.

    Raises
    ------
    OutputError
        If ``summary.json`` is missing or has no ``outputs``, or a listed file
        is missing or differs, or the folder holds an unlisted file.
    """
    folder = Path(path)
    try:
        summary = json.loads((folder / SUMMARY_NAME).read_text())
    except (OSError, ValueError) as err:
        raise OutputError(f"{folder}: no readable {SUMMARY_NAME} ({err}).") from None
    listed = summary.get("outputs") if isinstance(summary, dict) else None
    if not isinstance(listed, dict):
        raise OutputError(f"{folder}/{SUMMARY_NAME} has no 'outputs' manifest.")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {SUMMARY_NAME}
    problems = []
    if missing := sorted(set(listed) - present):
        problems.append(f"missing {_names(missing)}")
    if extra := sorted(present - set(listed)):
        problems.append(f"not listed {_names(extra)}")
    if changed := sorted(n for n in set(listed) & present if file_sha256(folder / n) != listed[n]):
        problems.append(f"changed {_names(changed)}")
    if problems:
        raise OutputError(f"{folder} does not match its {SUMMARY_NAME}: {'; '.join(problems)}.")
    return summary


@contextlib.contextmanager
def _write_errors(target: Path) -> Iterator[None]:
    """Report the machine's refusals to write (`refused_write`) as `OutputWriteError`; others are bugs.

    Any exception is looked into, not only `OSError`: torch's writer passes a full disk on as a
    `RuntimeError`.
    """
    try:
        yield
    except ResidualDetectronError:  # already reported (an inner block's OutputWriteError, say)
        raise
    except Exception as err:
        reason = refused_write(err, target)
        if reason is None:
            raise
        raise OutputWriteError(
            f"writing the outputs failed ({reason}); {target} was left as it was."
        ) from err


def _check_writable_parent(path: Path, where: str) -> None:
    """Try to create a file where ``path``'s temporary copy will go (its nearest existing ancestor)."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{where}: {folder} is a file, not a folder.")
    try:
        # A file without a name where the file system allows it (O_TMPFILE), so that a process
        # killed here leaves nothing behind; elsewhere one named WRITE_PROBE_PREFIX*, removed at once.
        with tempfile.TemporaryFile(prefix=WRITE_PROBE_PREFIX, dir=folder):
            pass
    except OSError as err:
        error = OutputWriteError if refused_write(err) is not None else OutputError
        raise error(f"{where}: cannot write in {folder} ({err.strerror or err}).") from None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """Mode of a folder made by a plain ``mkdir`` under the current umask."""
    return 0o777 & ~_umask()


def matching_outputs(path: str | os.PathLike, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the output folder ``path`` if it matches its manifest (`check_output_folder`)
    and was made from ``inputs`` (its summary's ``inputs``); else None (also without a folder)."""
    folder = Path(path)
    if not (folder / SUMMARY_NAME).is_file():
        return None
    try:
        summary = check_output_folder(folder)
    except OutputError as err:
        _log.info("Not keeping %s: %s", folder, err)
        return None
    return summary if summary.get("inputs") == inputs else None


def _manifest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` but its summary, by POSIX path relative to it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / SUMMARY_NAME)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's content."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _names(names: list[str], shown: int = 8) -> str:
    """``a, b and c`` (at most ``shown`` names, then how many more)."""
    if len(names) > shown:
        return f"{', '.join(names[:shown])} and {len(names) - shown} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
