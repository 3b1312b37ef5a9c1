"""The demo pipeline through ``pipetask run`` on a tiny repository: empty patch, interruption, resumption."""

from __future__ import annotations

import pytest
from _tasks_helpers import make_repo, make_tiny_package
from lsst.meas.extensions.residual.tasks.demo import INPUT_RUN, MODEL_RUN, OUTPUT, run_pipeline
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
    root, skymap = repo
    # An interrupted run: only the first pass got done.
    run_pipeline(root, pipeline=f"{package_file('pipelines/demo.yaml')}#firstPass", echo=False)
    before = _refs(root, FIRST_PASS + SECOND)
    for name in FIRST_PASS:
        # Patch 1 has no data: NoWorkFound, not a failure; patch 0 is done.
        assert {patch for patch, _, _ in before[name]} == {0}
    assert not any(before[name] for name in SECOND)

    process = run_pipeline(root, echo=False)  # resumes OUTPUT
    assert "--extend-run" in process.args and "--skip-existing-in" in process.args
    after = _refs(root, FIRST_PASS + SECOND)
    for name in FIRST_PASS:
        assert after[name] == before[name]  # the same datasets, not recomputed
    for name in SECOND:
        assert {patch for patch, _, _ in after[name]} == {0}
    runs = {run for name in after for _, _, run in after[name]}
    assert len(runs) == 1  # one output run, extended

    from lsst.daf.butler import Butler

    with Butler.from_config(str(root), collections=[OUTPUT]) as butler:
        data_id = {"skymap": skymap.name, "tract": 0, "patch": 0}
        catalog = butler.get("object_residual_deblend", data_id)
        new = butler.get("object_residual_detection", data_id)
        assert set(catalog["found_by"]) == {"first_pass", "residual"}
        assert (catalog["found_by"] == "residual").sum() == len(new)
        chain = butler.collections.get_info(OUTPUT).children
        assert chain[1:] == (INPUT_RUN, MODEL_RUN)

    # Once more: nothing left to do, nothing written.
    run_pipeline(root, echo=False)
    assert _refs(root, FIRST_PASS + SECOND) == after

    # --fresh: a new output run in front of the chain; the old one stays.
    (old_run,) = runs
    run_pipeline(root, fresh=True, echo=False)
    fresh = _refs(root, SECOND)
    assert {run for _, _, run in fresh["object_residual_detection"]} != {old_run}
    with Butler.from_config(str(root)) as butler:
        assert butler.find_dataset("object_residual_detection", data_id, collections=[old_run]) is not None
