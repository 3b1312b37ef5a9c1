"""Where the package's pipeline and configuration files are.

The pipelines (``pipelines/*.yaml``), the Butler seed configuration
(``config/butler_seed.yaml``) and the BPS submit files (``bps/``) live at the
top of the package, as in every LSST Science Pipelines package. They are
found through ``$MEAS_EXTENSIONS_RESIDUAL_DIR`` (set by EUPS ``setup``, or by
hand) or, failing that, in the source tree this module was imported from (an
editable install, as ``make venv`` makes).
"""

from __future__ import annotations

__all__ = ["package_dir", "package_file", "PACKAGE_DIR_ENV"]

import os
from pathlib import Path

PACKAGE_DIR_ENV = "MEAS_EXTENSIONS_RESIDUAL_DIR"

# python/lsst/meas/extensions/residual/tasks/paths.py -> the package root.
_SOURCE_ROOT = Path(__file__).resolve().parents[6]


def package_dir() -> Path:
    """The package root (holding ``pipelines/`` and ``config/``).

    Raises
    ------
    FileNotFoundError
        If neither ``$MEAS_EXTENSIONS_RESIDUAL_DIR`` nor the source tree
        holds a ``pipelines`` directory.
    """
    candidates = []
    if os.environ.get(PACKAGE_DIR_ENV):
        candidates.append(Path(os.environ[PACKAGE_DIR_ENV]))
    candidates.append(_SOURCE_ROOT)
    for candidate in candidates:
        if (candidate / "pipelines").is_dir() and (candidate / "config").is_dir():
            return candidate
    raise FileNotFoundError(
        f"Cannot find the package's pipelines/ and config/ directories (looked in "
        f"{', '.join(str(c) for c in candidates)}). Install from a source checkout "
        f"(pip install -e .) or set {PACKAGE_DIR_ENV} to one."
    )


def package_file(relative: str) -> Path:
    """Path of a file under the package root, e.g. ``"pipelines/residual.yaml"``.

    Raises
    ------
    FileNotFoundError
        If it does not exist.
    """
    path = package_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (an incomplete checkout?).")
    return path
