"""The demo pipeline through ``pipetask run`` on a tiny repository: empty patch, interruption, resumption.

Interruptions are made deterministic: a run of the ``firstPass`` subset only,
and a fresh run restricted by a data query to one patch, stand for runs that
stopped after a known set of quanta.
"""

from __future__ import annotations

import pytest
from _tasks_helpers import make_repo, make_tiny_package
from lsst.meas.extensions.residual.tasks.demo import (
    INPUT_RUN,
    MODEL_RUN,
    OUTPUT,
    latest_output_collections,
    latest_output_run,
    missing_outputs,
    run_pipeline,
)
from lsst.meas.extensions.residual.tasks.paths import package_file

FIRST_PASS = (
    "object_detection_merged",
    "object_detection_footprints",
    "object_deblend",
    "object_scarlet_models",
)
SECOND = (
    "object_residual_detection",
    "object_residual_footprints",
    "object_residual_deblend",
    "object_residual_scarlet_models",
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipetask")
    package = make_tiny_package(tmp / "tiny.zip")
    butler, skymap = make_repo(tmp / "repo", package, patches=2, empty_patches=(1,))
    return tmp / "repo", skymap


def _refs(root, names):
    from lsst.daf.butler import Butler, MissingDatasetTypeError

    with Butler.from_config(str(root)) as butler:
        found = {}
        for name in names:
            try:
                refs = butler.query_datasets(name, collections=[OUTPUT], explain=False)
            except MissingDatasetTypeError:
                refs = []
            found[name] = {(ref.dataId["patch"], ref.id, ref.run) for ref in refs}
        return found


@pytest.mark.slow
def test_interrupted_run_is_resumed_and_a_fresh_run_keeps_the_old_one(repo):
    from lsst.daf.butler import Butler

    root, skymap = repo
    data_id = {"skymap": skymap.name, "tract": 0, "patch": 0}
    # An interrupted run: only the first pass got done.
    run_pipeline(root, pipeline=f"{package_file('pipelines/demo.yaml')}#firstPass", echo=False)
    before = _refs(root, FIRST_PASS + SECOND)
    for name in FIRST_PASS:
        # Patch 1 has no data: NoWorkFound, not a failure; patch 0 is done.
        assert {patch for patch, _, _ in before[name]} == {0}
    assert not any(before[name] for name in SECOND)

    process = run_pipeline(root, echo=False)  # resumes OUTPUT's newest run
    with Butler.from_config(str(root)) as butler:
        (old_run,) = {run for name in before for _, _, run in before[name]}
        assert latest_output_run(butler) == old_run
    resumed = process.args[process.args.index("--skip-existing-in") + 1]
    assert "--extend-run" in process.args and resumed == old_run  # that run, not the whole chain
    after = _refs(root, FIRST_PASS + SECOND)
    for name in FIRST_PASS:
        assert after[name] == before[name]  # the same datasets, not recomputed
    for name in SECOND:
        assert {patch for patch, _, _ in after[name]} == {0}
    assert {run for name in after for _, _, run in after[name]} == {old_run}  # one output run, extended

    with Butler.from_config(str(root), collections=[OUTPUT]) as butler:
        catalog = butler.get("object_residual_deblend", data_id)
        new = butler.get("object_residual_detection", data_id)
        assert set(catalog["found_by"]) == {"first_pass", "residual"}
        assert (catalog["found_by"] == "residual").sum() == len(new)
        chain = butler.collections.get_info(OUTPUT).children
        assert chain[1:] == (INPUT_RUN, MODEL_RUN)

    # Once more: nothing left to do, nothing written.
    run_pipeline(root, echo=False)
    assert _refs(root, FIRST_PASS + SECOND) == after

    # An interrupted --fresh: the new run got only patch 1's quanta (no data there).
    run_pipeline(root, fresh=True, extra_args=("-d", "patch = 1"), echo=False)
    with Butler.from_config(str(root)) as butler:
        new_run = latest_output_run(butler)
        assert new_run != old_run
        assert latest_output_collections(butler) == [new_run, INPUT_RUN, MODEL_RUN]
        assert set(missing_outputs(butler, new_run, [data_id])[0]) == set(FIRST_PASS + SECOND)
        # The chain still finds patch 0's outputs, in the old run: what a resume must not count.
        assert butler.find_dataset("object_residual_deblend", data_id, collections=[OUTPUT]).run == old_run

    # A plain run completes the new run, although the old one has every output.
    run_pipeline(root, echo=False)
    completed = _refs(root, FIRST_PASS + SECOND)
    for name in FIRST_PASS + SECOND:
        assert {(patch, run) for patch, _, run in completed[name]} == {(0, new_run)}, name
    with Butler.from_config(str(root)) as butler:
        assert missing_outputs(butler, new_run, [data_id]) == {}
        # The old run is kept as it was.
        assert butler.find_dataset("object_residual_detection", data_id, collections=[old_run]) is not None
        assert butler.collections.get_info(OUTPUT).children[:2] == (new_run, old_run)


@pytest.mark.slow
def test_a_patch_without_u_runs_through_pipetask_with_a_package_taking_band_subsets(tmp_path):
    from lsst.daf.butler import Butler

    package = make_tiny_package(tmp_path / "subsets.zip", recipe="residual+model+bad", band_subsets=True)
    bands = ("g", "r", "i", "z", "y")
    _, skymap = make_repo(tmp_path / "repo", package, patches=1, bands=bands)
    run_pipeline(tmp_path / "repo", echo=False)
    with Butler.from_config(str(tmp_path / "repo"), collections=[OUTPUT]) as butler:
        data_id = {"skymap": skymap.name, "tract": 0, "patch": 0}
        catalog = butler.get("object_residual_deblend", data_id)
        fluxes = {
            name[: -len("_flux")] for name in catalog.colnames if name.endswith("_flux") and len(name) == 6
        }
        assert fluxes == set(bands)  # g..y, no u
        assert (catalog["found_by"] == "residual").sum() == len(
            butler.get("object_residual_detection", data_id)
        )
