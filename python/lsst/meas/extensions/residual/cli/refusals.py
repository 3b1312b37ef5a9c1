"""The machine's refusals, as the libraries that meet them pass them on.

A full disk, a quota, a file-size limit, a read-only or failing disk,
permissions, a memory limit: none is a bug of this program or a fault of the
data, and the command line reports each in one line (a batch ``run`` stops
on a refused write, and records a scene refused memory as failed), where it
would otherwise call them internal errors. The libraries wrap them:
astropy's FITS writer raises a new `OSError` without the errno, numpy's
``tofile`` underneath keeps only the byte counts, torch's writer raises a
`RuntimeError`; these functions read the refusal through such wrappers.
"""

from __future__ import annotations

__all__ = ["refused_write", "refused_memory", "machine_refusal"]

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

# The system's errors that mean the machine refused a write (or a read: permissions): reported,
# not called bugs.
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
)
# numpy's ``tofile`` (astropy's FITS writer) reports a write the system cut short with the byte
# counts alone, no errno: "393216 requested and 260704 written".
_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")


def _chain(err: BaseException) -> list[BaseException]:
    """``err``, then its ``__cause__`` or ``__context__``, and so on."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def refused_write(err: BaseException, target: str | os.PathLike | None = None) -> str | None:
    """What the machine said if ``err``, raised while writing ``target``, is its refusal (a full
    disk, a quota, a file-size limit, a read-only or failing disk, permissions); None if it is the
    program's error.

    The system's error is the first `OSError` of the chain (`_chain`) that has an errno:
    writers wrap it, astropy's FITS writer in a new OSError without one, torch's in a
    `RuntimeError` (when it writes to a Python file). Where no error of the chain has an errno,
    a write the system cut short (numpy's ``tofile``, which the FITS writer uses) is still the
    machine's: only the byte counts are left of ENOSPC, EDQUOT or EFBIG there.
    """
    chain = _chain(err)
    numbered = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    if numbered:
        system = numbered[0]
        if system.errno not in _WRITE_ERRNOS:
            return None
        return str(err) if system is err else f"{system.strerror or system}: {err}"
    short = next(
        (found for e in reversed(chain) if isinstance(e, OSError) and (found := _SHORT_WRITE.search(str(e)))),
        None,
    )
    if short is None:
        return None
    free = ""
    if target is not None:
        folder = Path(target)
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        with contextlib.suppress(OSError):
            free = f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free there"
    return f"a write was cut short: {short.group(0)}{free}; a full disk, a quota or a file-size limit"


def refused_memory(err: BaseException) -> str | None:
    """What the machine said if ``err`` is its refusal of memory (a `MemoryError` in the chain, as
    numpy raises under ``ulimit -v``); None otherwise.

    A memory limit of the batch system's kind (a cgroup) kills the process instead: a batch
    ``run`` reruns such a scene alone (``worker died``).
    """
    refusal = next((e for e in _chain(err) if isinstance(e, MemoryError)), None)
    if refusal is None:
        return None
    try:
        import resource
    except ImportError:  # not POSIX: no such limits to name
        resource = None
    limits = []
    for name, option in (("RLIMIT_AS", "-v"), ("RLIMIT_DATA", "-d")) if resource is not None else ():
        soft = resource.getrlimit(getattr(resource, name))[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(f"{soft / 1e9:.1f} GB (ulimit {option})")
    where = f"; this process may use at most {' and '.join(limits)}" if limits else ""
    return f"out of memory: {refusal or type(refusal).__name__}{where}"


def machine_refusal(err: BaseException) -> str | None:
    """`refused_write` or `refused_memory` of ``err``: what the machine said, or None for a bug."""
    return refused_memory(err) or refused_write(err)
