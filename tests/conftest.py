"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_fixtures_dir() -> Path | None:
    """``../shared/fixtures`` beside the checkout (or $RESIDUAL_SHARED_FIXTURES)."""
    candidates = [os.environ.get("RESIDUAL_SHARED_FIXTURES"), REPO_ROOT.parent / "shared" / "fixtures"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    path = shared_fixtures_dir()
    if path is None:
        pytest.skip("../shared/fixtures not found beside the checkout (set RESIDUAL_SHARED_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def small_scene():
    """A 96x96 six-band 10-year scene with a few dozen sources (seed 11)."""
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    return simulate_scene(11, SimulationConfig(height=96, width=96))
