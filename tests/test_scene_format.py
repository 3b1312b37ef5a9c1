"""Scene FITS format: round trip and validation."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from lsst.meas.extensions.residual.scene import Scene, SceneFormatError, read_scene, write_scene


def test_round_trip(small_scene, tmp_path):
    path = tmp_path / "scene.fits"
    write_scene(small_scene, path)
    scene = read_scene(path)
    assert scene.bands == small_scene.bands
    np.testing.assert_array_equal(scene.image, small_scene.image)
    np.testing.assert_array_equal(scene.variance, small_scene.variance)
    np.testing.assert_array_equal(scene.psf, small_scene.psf)
    assert scene.mask is None
    assert scene.metadata["SEED"] == small_scene.metadata["SEED"]
    assert scene.pixel_scale == pytest.approx(0.2)
    truth, original = scene.truth, small_scene.truth
    assert len(truth) == len(original)
    np.testing.assert_array_equal(truth.ids, original.ids)
    np.testing.assert_array_equal(truth.table["class"], original.table["class"])
    np.testing.assert_allclose(truth.table["flux"], original.table["flux"])
    for a, b in zip(truth.stamps, original.stamps, strict=True):
        np.testing.assert_array_equal(a, b)
    with fits.open(path) as hdul:
        assert hdul[0].header["BANDS"] == "u,g,r,i,z,y"
        assert [h.name for h in hdul][1:] == ["IMAGE", "VARIANCE", "PSF", "TRUTH", "TRUTH_STAMPS"]


def test_round_trip_with_mask_and_no_truth(small_scene, tmp_path):
    mask = np.zeros(small_scene.image.shape, dtype=np.int32)
    mask[:, 10:20, 5:9] = 4
    scene = Scene(small_scene.image, small_scene.variance, small_scene.psf, small_scene.bands, mask=mask)
    write_scene(scene, tmp_path / "s.fits")
    back = read_scene(tmp_path / "s.fits")
    np.testing.assert_array_equal(back.mask, mask)
    assert back.truth is None
    assert not back.good[:, 10:20, 5:9].any()


def test_nan_pixels_are_bad_not_propagated(small_scene):
    image = small_scene.image.copy()
    image[2, 30, 40] = np.nan
    scene = Scene(image, small_scene.variance, small_scene.psf, small_scene.bands)
    assert not scene.good[2, 30, 40]
    assert np.isfinite(scene.clean_image()).all()
    assert scene.weights()[2, 30, 40] == 0


def _with_negative_corner(psf):
    """``psf`` with a corner pixel at -2% of the peak (renormalised)."""
    changed = psf.astype(np.float64)
    changed[:, 0, 0] = -0.02 * changed.max(axis=(1, 2))
    return changed / changed.sum(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: dict(psf=s.psf * 2), "normalised"),
        (lambda s: dict(psf=s.psf[:5]), "PSF has 5 planes"),
        (lambda s: dict(bands=("g", "u", "r", "i", "z", "y")), "wavelength order"),
        (lambda s: dict(bands=("u", "g", "r", "i", "z")), "6 planes but 5 bands"),
        (lambda s: dict(variance=s.variance[:, :10]), "VARIANCE shape"),
        (lambda s: dict(variance=np.zeros_like(s.variance)), "Every pixel"),
        (lambda s: dict(psf=s.psf[:, :-1, :-1]), "K odd"),
        (lambda s: dict(psf=np.roll(s.psf, (2, 2), axis=(1, 2))), "off centre: its centroid"),
        (lambda s: dict(psf=_with_negative_corner(s.psf)), "negative pixels down to -0.0"),
        (lambda s: dict(bands=("u", "g", "r", "i", "z", "y", "")), "empty band name at position 7"),
        (lambda s: dict(truth=s.truth.band_subset([0, 1])), "truth has 2 band"),
    ],
)
def test_invalid_scene(small_scene, change, message):
    kwargs = dict(
        image=small_scene.image, variance=small_scene.variance, psf=small_scene.psf, bands=small_scene.bands
    )
    if "truth" in message:
        kwargs["truth"] = small_scene.truth
    kwargs.update(change(small_scene))
    with pytest.raises(SceneFormatError, match=message):
        Scene(**kwargs)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_scene(tmp_path / "missing.fits")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"this is not a FITS file" * 100)
    with pytest.raises(SceneFormatError, match="not a readable FITS"):
        read_scene(garbage)
    other = tmp_path / "other.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4)))]).writeto(other)
    with pytest.raises(SceneFormatError, match="missing extension"):
        read_scene(other)


def test_truncated_file(small_scene, tmp_path):
    path = tmp_path / "scene.fits"
    write_scene(small_scene, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SceneFormatError):
        read_scene(path)


def test_truth_can_be_left_unread(small_scene, tmp_path):
    # A scene read for processing only need not hold the truth's per-source stamps.
    path = tmp_path / "scene.fits"
    write_scene(small_scene, path)
    scene = read_scene(path, truth=False)
    assert scene.truth is None and read_scene(path).truth is not None
    np.testing.assert_array_equal(scene.image, small_scene.image)
    np.testing.assert_array_equal(scene.variance, small_scene.variance)
