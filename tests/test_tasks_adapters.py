"""Adapters of the tasks: sky map, ids, coadd readers (lsst-images, afw fakes, legacy files), model frames."""

from __future__ import annotations

import numpy as np
import pytest
from _tasks_helpers import write_afw_masked_image
from astropy.table import Table
from astropy.wcs import WCS
from lsst.meas.extensions.residual.chain import (
    IdMap,
    PatchPlacement,
    detections_from_catalog,
    detections_to_catalog,
    first_pass_sources,
    parent_ids,
    source_ids,
    unpack_ids,
)
from lsst.meas.extensions.residual.scene import SceneFormatError
from lsst.meas.extensions.residual.tasks.coadds import (
    CoaddPlane,
    EmptyPatchError,
    assemble_patch,
    label_array,
    label_image,
    read_coadd_plane,
    read_legacy_coadd_file,
    scene_to_cell_coadds,
)
from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

SKYMAP = DemoSkyMap(patch_size=96, patch_nx=2, patch_ny=2)


@pytest.fixture(scope="module")
def coadds(small_scene):
    return scene_to_cell_coadds(small_scene, SKYMAP, 3)


# --- sky map ------------------------------------------------------------------------------------


def test_skymap_patches_tile_the_tract_and_regions_contain_their_centres():
    from lsst.sphgeom import LonLat, UnitVector3d

    assert SKYMAP.tract_shape == (192, 192)
    geometry = SKYMAP.patch(3)
    assert (geometry.cell_x, geometry.cell_y, geometry.x0, geometry.y0) == (1, 1, 96, 96)
    for patch in SKYMAP.patches():
        ra, dec = SKYMAP.pixel_to_sky(np.array([patch.x0 + 47.5]), np.array([patch.y0 + 47.5]))
        centre = UnitVector3d(LonLat.fromDegrees(float(ra[0]), float(dec[0])))
        assert SKYMAP.patch_region(patch.id).contains(centre)
        others = [p for p in SKYMAP.patches() if p.id != patch.id]
        assert not any(SKYMAP.patch_region(o.id).contains(centre) for o in others)
    with pytest.raises(ValueError, match="patches 0..3"):
        SKYMAP.patch(4)
    records = SKYMAP.dimension_records()
    assert len(records["patch"]) == 4 and records["skymap"][0]["patch_nx_max"] == 2
    # Another geometry must not pass for this one.
    assert DemoSkyMap(patch_size=64).hash != DemoSkyMap(patch_size=96).hash


# --- ids --------------------------------------------------------------------------------------------


def test_ids_pack_tract_patch_and_kind_and_unpack():
    local = np.array([0, 1, 2, 2**31 - 1])
    sources = source_ids(local, 5, 17)
    parents = parent_ids(local, 5, 17)
    assert sources[0] == parents[0] == 0
    assert len(set(sources[1:]) | set(parents[1:])) == 6  # no source id equals a parent id
    np.testing.assert_array_equal(unpack_ids(sources, 5, 17, "source"), local)
    np.testing.assert_array_equal(unpack_ids(parents, 5, 17, "parent"), local)
    with pytest.raises(ValueError, match="not source ids of tract 5 patch 18"):
        unpack_ids(sources, 5, 18, "source")
    with pytest.raises(ValueError, match="Local ids"):
        source_ids(np.array([2**31]), 0, 0)


def test_id_map_keeps_own_ids_and_numbers_foreign_ones():
    own = source_ids(np.array([3, 7]), 1, 2)
    id_map = IdMap(1, 2, sources=own, parents=parent_ids(np.array([1]), 1, 2))
    np.testing.assert_array_equal(id_map.local_sources(own), [3, 7])
    assert id_map.max_local_source == 7
    np.testing.assert_array_equal(id_map.global_sources([3, 8]), [own[0], source_ids(np.array([8]), 1, 2)[0]])
    drp = IdMap(1, 2, sources=[9_000_000_000_000_123, 9_000_000_000_000_001], parents=[9_000_000_000_000_000])
    np.testing.assert_array_equal(drp.local_sources([9_000_000_000_000_001, 9_000_000_000_000_123]), [1, 2])
    assert drp.global_parents(drp.local_parents([9_000_000_000_000_000]))[0] == 9_000_000_000_000_000
    with pytest.raises(KeyError, match="not known"):
        drp.local_sources([42])
    with pytest.raises(ValueError, match="both as a source and as a parent"):
        IdMap(0, 0, sources=[5], parents=[5])


# --- coadds --------------------------------------------------------------------------------------


def test_cell_coadds_round_trip_to_the_scene_in_lsst_band_order(small_scene, coadds):
    shuffled = {band: read_coadd_plane(coadds[band]) for band in ("y", "g", "u", "z", "i", "r")}
    patch = assemble_patch(shuffled)
    assert patch.scene.bands == small_scene.bands
    np.testing.assert_array_equal(patch.scene.image, small_scene.image)
    np.testing.assert_array_equal(patch.scene.variance, small_scene.variance)
    np.testing.assert_allclose(patch.scene.psf, small_scene.psf, atol=1e-7)
    assert (patch.x0, patch.y0) == (96, 96)
    assert patch.scene.metadata["PIXSCALE"] == pytest.approx(SKYMAP.pixel_scale, rel=1e-5)  # from the WCS
    ra, dec = patch.placement(0, 3).sky(np.array([0.0]), np.array([0.0]))
    expected = SKYMAP.pixel_to_sky(np.array([96.0]), np.array([96.0]))
    np.testing.assert_allclose([ra[0], dec[0]], [expected[0][0], expected[1][0]], atol=1e-9)


@pytest.mark.parametrize(
    ("scale", "dec", "rotation"), [(0.262, 0.0, 0.0), (0.168, 60.0, 30.0), (0.2, -89.9, 10.0)]
)
def test_the_pixel_scale_of_a_patch_comes_from_its_wcs(scale, dec, rotation):
    from lsst.meas.extensions.residual.tasks.coadds import local_pixel_scale

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [359.99, dec]  # across RA = 0
    wcs.wcs.crpix = [50.0, 50.0]
    angle = np.radians(rotation)
    wcs.wcs.cd = scale / 3600.0 * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def pixel_to_sky(x, y):
        return wcs.all_pix2world(x, y, 0)

    assert local_pixel_scale(pixel_to_sky, 49.0, 49.0) == pytest.approx(scale, rel=1e-5)


def test_missing_unknown_and_out_of_order_bands_are_named(coadds):
    planes = {band: read_coadd_plane(coadds[band]) for band in ("g", "r", "i")}
    with pytest.raises(SceneFormatError, match="no coadd in band.*z"):
        assemble_patch(planes, ("g", "r", "i", "z"), what="tract 0 patch 3")
    with pytest.raises(ValueError, match="not in LSST wavelength order"):
        assemble_patch(planes, ("r", "g"))
    with pytest.raises(SceneFormatError, match=r"unknown band\(s\) \['w'\]"):
        assemble_patch({**planes, "w": planes["g"]})
    only_gr = assemble_patch(planes, ("g", "r"))
    assert only_gr.scene.bands == ("g", "r")


def test_planes_of_different_patches_do_not_stack(coadds):
    g = read_coadd_plane(coadds["g"])
    r = read_coadd_plane(coadds["r"])
    r.x0 += 1
    with pytest.raises(SceneFormatError, match="band r covers"):
        assemble_patch({"g": g, "r": r})


def test_masked_nan_and_empty_patches(coadds):
    planes = {band: read_coadd_plane(coadds[band]) for band in coadds}
    planes["r"].image[10:20, 10:20] = np.nan
    planes["i"].bad[30:40, 30:40] = True
    patch = assemble_patch(planes)
    good = patch.scene.good
    assert not good[2, 10:20, 10:20].any() and not good[3, 30:40, 30:40].any()
    assert np.isfinite(patch.scene.clean_image()).all()
    for plane in planes.values():
        plane.bad[:] = True
    with pytest.raises(EmptyPatchError, match="no usable pixel"):
        assemble_patch(planes, what="tract 0 patch 3")


def test_no_data_mask_plane_marks_bad_pixels(coadds):
    coadd = coadds["g"]
    saved = coadd.mask.array.copy()
    try:
        flags = np.zeros((96, 96), dtype=bool)
        flags[5:9, 60:70] = True
        coadd.mask.set("NO_DATA", flags)
        plane = read_coadd_plane(coadd)
        np.testing.assert_array_equal(plane.bad, flags)
        assert not read_coadd_plane(coadd, bad_mask_planes=("SATURATED",)).bad.any()
    finally:
        coadd.mask.array = saved


def test_mask_planes_survive_the_coadds_and_the_bad_planes_are_the_tasks():
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene
    from lsst.meas.extensions.residual.simulation.artefacts import ArtefactConfig

    skymap = DemoSkyMap(patch_size=128, patch_nx=1, patch_ny=1)
    artefacts = ArtefactConfig(min_bright_stars=1, cosmic_ray_rate=200.0, cosmic_ray_masked_fraction=1.0)
    scene = simulate_scene(3, SimulationConfig(height=128, width=128, artefacts=artefacts))
    assert scene.plane("SAT").any() and scene.plane("CR").any()
    coadds = scene_to_cell_coadds(scene, skymap, 0)
    names = coadds["i"].mask.schema.names
    assert {"SATURATED", "COSMIC_RAY", "INTERPOLATED", "STREAK"} <= set(names)  # lsst-images' spelling
    planes = {band: read_coadd_plane(coadd) for band, coadd in coadds.items()}
    patch = assemble_patch(planes)
    np.testing.assert_array_equal(patch.scene.bad_mask(), scene.bad_mask())
    for name in ("SAT", "INTRP", "CR"):  # afw's spelling again in the core
        np.testing.assert_array_equal(patch.scene.plane(name), scene.plane(name))
    # A task that counts only NO_DATA as bad: SAT and CR pixels keep their weight, and no plane the
    # core counts as bad is carried where the task's planes are not set.
    planes = {band: read_coadd_plane(coadd, bad_mask_planes=("NO_DATA",)) for band, coadd in coadds.items()}
    only_no_data = assemble_patch(planes).scene
    np.testing.assert_array_equal(only_no_data.bad_mask(), scene.plane("NO_DATA"))
    assert not only_no_data.plane("SAT").any()
    np.testing.assert_array_equal(only_no_data.plane("INTRP"), scene.plane("INTRP"))


# --- afw (faithful fakes: the accessors afw.image.ExposureF offers) ----------------------------------


class _FakeArrayImage:
    def __init__(self, array):
        self.array = array


class _FakeMask(_FakeArrayImage):
    def __init__(self, array, planes):
        super().__init__(array)
        self._planes = planes

    def getMaskPlaneDict(self):
        return dict(self._planes)

    def getPlaneBitMask(self, names):
        bits = 0
        for name in names:
            bits |= 1 << self._planes[name]  # afw raises for an unknown plane, as this does
        return bits


class _FakeBox:
    def __init__(self, x0, y0, width, height):
        self._x0, self._y0, self._w, self._h = x0, y0, width, height

    def getMinX(self):
        return self._x0

    def getMinY(self):
        return self._y0

    def getCenter(self):
        return (self._x0 + (self._w - 1) / 2, self._y0 + (self._h - 1) / 2)


class _FakePsf:
    def __init__(self, kernel):
        self.kernel = kernel
        self.asked_at = None

    def computeKernelImage(self, point):
        self.asked_at = point
        return _FakeArrayImage(self.kernel)


class _FakeWcs:
    def __init__(self, wcs):
        self.wcs = wcs

    def pixelToSkyArray(self, x, y, degrees=False):
        assert degrees
        return self.wcs.wcs_pix2world(x, y, 0)


class _FakeExposure:
    def __init__(self, image, variance, mask, planes, psf, x0, y0, wcs):
        self.image = _FakeArrayImage(image)
        self.variance = _FakeArrayImage(variance)
        self.mask = _FakeMask(mask, planes)
        self._psf = psf
        self._box = _FakeBox(x0, y0, image.shape[1], image.shape[0])
        self._wcs = wcs

    def getMaskedImage(self):
        return self

    def getPsf(self):
        return self._psf

    def getBBox(self):
        return self._box

    def getWcs(self):
        return self._wcs


def test_afw_exposure_is_read_through_its_accessors(small_scene):
    planes = {"BAD": 0, "SAT": 1, "DETECTED": 5, "NO_DATA": 8}
    mask = np.zeros((96, 96), dtype=np.int32)
    mask[0:3, :] |= 1 << planes["NO_DATA"]
    mask[50, 50] |= 1 << planes["DETECTED"]  # not a bad plane
    psf = _FakePsf(
        small_scene.psf[2].astype(np.float64) * 1.0005
    )  # afw kernels are normalised up to round-off
    exposure = _FakeExposure(
        small_scene.image[2], small_scene.variance[2], mask, planes, psf, 96, 0, _FakeWcs(SKYMAP.wcs())
    )
    plane = read_coadd_plane(exposure, what="deep_coadd r")
    np.testing.assert_array_equal(plane.image, small_scene.image[2])
    assert plane.bad[0:3].all() and plane.bad.sum() == 3 * 96
    # Named planes are carried in the core's bits (which here are afw's own numbers).
    assert plane.planes[50, 50] == 1 << 5 and (plane.planes[0:3] == 1 << 8).all()
    assert abs(float(plane.psf.sum()) - 1) < 1e-6
    assert psf.asked_at == (96 + 47.5, 47.5)  # the PSF at the patch centre
    assert (plane.x0, plane.y0) == (96, 0)
    ra, dec = plane.pixel_to_sky(np.array([100.0]), np.array([3.0]))
    expected = SKYMAP.pixel_to_sky(np.array([100.0]), np.array([3.0]))
    np.testing.assert_allclose([ra[0], dec[0]], [expected[0][0], expected[1][0]])


def test_afw_psf_with_missing_cell_is_an_error(small_scene):
    kernel = small_scene.psf[0].astype(np.float64)
    kernel[0, 0] = np.nan
    exposure = _FakeExposure(
        small_scene.image[0],
        small_scene.variance[0],
        np.zeros((96, 96), np.int32),
        {"BAD": 0},
        _FakePsf(kernel),
        0,
        0,
        None,
    )
    with pytest.raises(SceneFormatError, match="deep_coadd u: PSF kernel image has non-finite"):
        read_coadd_plane(exposure, what="deep_coadd u")


def test_legacy_coadd_file_is_read_without_afw(tmp_path, small_scene):
    planes = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "NO_DATA": 8}
    mask = np.zeros((96, 96), dtype=np.int32)
    mask[40:44, 10:12] = 1 << planes["SAT"]
    path = tmp_path / "deep_coadd.fits"
    write_afw_masked_image(
        path, small_scene.image[1], small_scene.variance[1], mask, planes, 96, 96, SKYMAP.wcs()
    )
    plane = read_legacy_coadd_file(str(path))
    np.testing.assert_array_equal(plane.image, small_scene.image[1])
    assert (plane.x0, plane.y0) == (96, 96)
    assert plane.bad[40:44, 10:12].all() and plane.bad.sum() == 8
    assert plane.psf is None  # an afw PSF archive cannot be read without afw
    ra, dec = plane.pixel_to_sky(np.array([120.0]), np.array([130.0]))
    expected = SKYMAP.pixel_to_sky(np.array([120.0]), np.array([130.0]))
    np.testing.assert_allclose([ra[0], dec[0]], [expected[0][0], expected[1][0]], atol=1e-10)
    with pytest.raises(SceneFormatError, match="band g has no PSF"):
        assemble_patch({"g": plane})
    patch = assemble_patch({"g": plane}, psf_fallback={"g": small_scene.psf[1]})
    np.testing.assert_allclose(patch.scene.psf[0], small_scene.psf[1], atol=1e-7)


def test_unknown_coadd_type_is_refused():
    with pytest.raises(TypeError, match="cannot read a coadd of type ndarray"):
        read_coadd_plane(np.zeros((3, 3)))
    plane = CoaddPlane(np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2), bool), None, 0, 0, None)
    assert read_coadd_plane(plane) is plane


# --- catalogs --------------------------------------------------------------------------------------


def test_detections_round_trip_through_the_butler_catalog(small_scene, coadds):
    from lsst.meas.extensions.residual.detection import detect_peaks

    patch = assemble_patch({b: read_coadd_plane(c) for b, c in coadds.items()})
    detections = detect_peaks(small_scene)
    assert len(detections.peaks) > 0
    catalog = detections_to_catalog(detections, patch.placement(0, 3))
    assert {"id", "footprint_id", "x", "y", "ra", "dec", "r_psf_flux"} <= set(catalog.colnames)
    np.testing.assert_array_equal(catalog["x"], np.asarray(detections.peaks["x"]) + 96)
    labels, x0, y0 = label_array(label_image(detections.footprints, patch))
    assert (x0, y0) == (96, 96)
    back = detections_from_catalog(catalog, labels, PatchPlacement(0, 3, x0, y0))
    np.testing.assert_array_equal(back.footprints, detections.footprints)
    for column in ("id", "footprint_id", "x", "y"):
        np.testing.assert_array_equal(back.peaks[column], detections.peaks[column])
    np.testing.assert_allclose(back.peaks["psf_flux"], detections.peaks["psf_flux"])
    with pytest.raises(SceneFormatError, match="not source ids of tract 0 patch 2"):
        detections_from_catalog(catalog, labels, PatchPlacement(0, 2, x0, y0))


def test_first_pass_sources_reads_embedded_and_drp_catalogs():
    embedded = Table({"id": [11, 12], "parent": [1, 1], "x": [3.0, 4.0], "y": [5.0, 6.0]})
    ids, parents, x, y = first_pass_sources(embedded)
    np.testing.assert_array_equal(ids, [11, 12])
    drp = Table(
        {
            "id": [1, 11, 12, 13],
            "parent": [0, 1, 1, 0],
            "deblend_nChild": [2, 0, 0, 0],
            "deblend_peak_center_x": [0, 10, 20, 30],
            "deblend_peak_center_y": [0, 1, 2, 3],
        }
    )
    ids, parents, x, y = first_pass_sources(drp)
    np.testing.assert_array_equal(ids, [11, 12, 13])  # the parent row is not a source
    np.testing.assert_array_equal(x, [10, 20, 30])
    with pytest.raises(SceneFormatError, match="neither"):
        first_pass_sources(Table({"id": [1], "ra": [0.0]}))


def test_wcs_fixture_is_tan():
    assert isinstance(SKYMAP.wcs(), WCS) and SKYMAP.wcs().wcs.ctype[0] == "RA---TAN"


# --- read_drp_inputs with afw and meas_extensions_scarlet "importable" ---------------------------


class _FakeHandle:
    def __init__(self, obj):
        self.obj = obj

    def get(self):
        return self.obj


class _FakeSourceCatalog:
    def __init__(self, table):
        self.table = table

    def asAstropy(self):
        return self.table


class _FakeLsstScarletModelData:
    def __init__(self, data):
        self.data = data

    def as_dict(self):
        return self.data


def test_read_drp_inputs_goes_through_afw_and_scarlet_apis_when_importable(monkeypatch, small_scene):
    import sys
    import types

    from lsst.meas.extensions.residual.deblending import ScarletModelData
    from lsst.meas.extensions.residual.tasks.residual_detection import read_drp_inputs

    for name in ("lsst.afw", "lsst.afw.image", "lsst.meas.extensions.scarlet"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    exposure = _FakeExposure(
        small_scene.image[0],
        small_scene.variance[0],
        np.zeros((96, 96), np.int32),
        {"BAD": 0},
        _FakePsf(small_scene.psf[0].astype(np.float64)),
        0,
        0,
        None,
    )
    table = Table({"id": [1], "parent": [0], "deblend_peak_center_x": [3.0], "deblend_peak_center_y": [4.0]})
    models = ScarletModelData(metadata={"bands": ("u",), "psf": small_scene.psf[:1]})
    coadds, catalog, model_data = read_drp_inputs(
        {"u": _FakeHandle(exposure)},
        _FakeHandle(_FakeSourceCatalog(table)),
        _FakeHandle(_FakeLsstScarletModelData(models.as_dict())),
    )
    assert coadds["u"] is exposure  # read later through its afw accessors
    assert catalog is table
    assert model_data.bands == ("u",)
    np.testing.assert_allclose(model_data.metadata["psf"], small_scene.psf[:1])
