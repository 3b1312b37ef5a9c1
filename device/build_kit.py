"""Build ``device/kit/``: the Python packages the GPU machine lacks, as zips to unpack there.

The device machine (``/work/.library/device``) runs the project under its
image's ``python3``, which holds torch, torchvision, numpy, scipy, numba and
matplotlib but none of the distributions in `MISSING`, and it can reach no
package index. This script downloads the wheels of those distributions, at
the versions this environment runs, from this machine's index, and writes
each as a zip under ``device/kit/`` with the debug sections of its shared
libraries stripped: GalSim's wheel is 56 MB, 199 MB of it unpacked a
library whose code is 5 MB, and the working tree and what it carries must
stay within 64 MiB together. ``device/run.sh`` unpacks the zips there.

Run it here (``make device-kit``) before a ``run`` that carries
``device/kit``.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "device" / "kit"
#: The device's limit on the working tree and the carried paths together (bytes).
TRANSFER_LIMIT = 64 * 2**20
#: Distributions the core imports (``train``, ``evaluate``, ``run``, the benchmarks of the network)
#: that the device image lacks (its package list in ``/work/.library/device/KINDS.md``, 2026-11-17).
MISSING = (
    "astropy",
    "astropy-iers-data",
    "pyerfa",
    "GalSim",
    "LSSTDESC.Coord",
    "photutils",
    "shapely",
    "sep",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
)
#: Wheel platforms the device's x86-64 Linux takes.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_28_x86_64",
)


def _download(requirements: list[str], into: Path) -> list[Path]:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", f"{sys.version_info.major}.{sys.version_info.minor}", *platforms]
        + ["--dest", str(into), *requirements],
        check=True,
    )
    return sorted(into.glob("*.whl"))


def _is_shared_library(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def _slim_copy(wheel: Path, out: Path, scratch: Path) -> None:
    """``wheel``'s members as a zip at ``out``, shared libraries without their debug sections."""
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            data = source.read(member)
            if _is_shared_library(member.filename):
                library = scratch / "library.so"
                library.write_bytes(data)
                subprocess.run(["strip", "--strip-debug", str(library)], check=True)
                data = library.read_bytes()
            info = zipfile.ZipInfo(member.filename, member.date_time)
            info.external_attr = member.external_attr
            target.writestr(info, data, zipfile.ZIP_DEFLATED)


def _tracked_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def main() -> int:
    requirements = [f"{name}=={importlib.metadata.version(name)}" for name in MISSING]
    shutil.rmtree(KIT, ignore_errors=True)
    KIT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = _download(requirements, Path(tmp))
        for wheel in wheels:
            _slim_copy(wheel, KIT / f"{wheel.stem}.zip", Path(tmp))
    (KIT / "requirements.txt").write_text("\n".join(requirements) + "\n")
    kit_bytes = sum(path.stat().st_size for path in KIT.iterdir())
    total = kit_bytes + _tracked_bytes()
    print(f"{KIT.relative_to(ROOT)}: {len(wheels)} packages, {kit_bytes / 2**20:.1f} MiB")
    limit = TRANSFER_LIMIT / 2**20
    print(f"with the tracked files: {total / 2**20:.1f} MiB of the {limit:.0f} MiB a run carries")
    if total > TRANSFER_LIMIT:
        print("error: too large to carry to the device machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
