"""The GPU machine's kit (device/): stripped libraries still load; run.sh refuses a missing kit."""

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _build_kit_module():
    spec = importlib.util.spec_from_file_location("build_kit", REPO_ROOT / "device" / "build_kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils' strip is not installed")
def test_a_slimmed_wheel_keeps_its_files_and_its_libraries_load(tmp_path):
    import markupsafe._speedups as speedups

    library = speedups.__file__
    wheel = tmp_path / "markupsafe-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(library, "markupsafe/" + library.rsplit("/", 1)[-1])
        archive.writestr("markupsafe/__init__.py", "")
        archive.writestr("markupsafe-0.dist-info/METADATA", "Name: markupsafe\n")
    slim = tmp_path / "slim.zip"
    _build_kit_module()._slim_copy(wheel, slim, tmp_path)
    with zipfile.ZipFile(wheel) as before, zipfile.ZipFile(slim) as after:
        assert after.namelist() == before.namelist()
        assert after.read("markupsafe-0.dist-info/METADATA") == before.read("markupsafe-0.dist-info/METADATA")
        name = next(n for n in before.namelist() if n.endswith(".so"))
        assert after.read(name)[:4] == b"\x7fELF" and len(after.read(name)) <= len(before.read(name))
        after.extractall(tmp_path / "site")
    # No site packages: the module can come only from the slimmed copy.
    loaded = subprocess.run(
        [sys.executable, "-S", "-c", "import markupsafe._speedups as m; print(m.__file__)"],
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith(str(tmp_path / "site"))


def test_run_script_refuses_to_start_without_the_kit(tmp_path):
    (tmp_path / "device").mkdir()
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "device" / "run.sh"), "cli", "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "device/kit/ is empty: run 'make device-kit'" in completed.stderr
    assert not (tmp_path / "out").exists()  # nothing made before the check (no scratch site either)
