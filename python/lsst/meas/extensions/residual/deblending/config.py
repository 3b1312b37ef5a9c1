"""Parameters of the Scarlet-compatible deblender."""

from __future__ import annotations

__all__ = ["DeblendConfig"]

from typing import Literal

import numpy as np
import pydantic

from ..configs import StrictModel


class DeblendConfig(StrictModel):
    """Parameters of `deblend`.

    Defaults follow LSST's ``ScarletDeblendConfig`` (meas_extensions_scarlet)
    where the two share a parameter; the LSST name is given in each field's
    documentation. Build one from a mapping of options with
    ``DeblendConfig(**options)`` (a `pydantic.ValidationError` names each bad
    field) or `~lsst.meas.extensions.residual.configs.make_config` (a
    one-line `~lsst.meas.extensions.residual.errors.ConfigError`).
    """

    max_iter: int = pydantic.Field(default=300, ge=0)
    """Maximum number of optimizer iterations per blend (``maxIter``)."""
    min_iter: int = pydantic.Field(default=5, ge=0)
    """Iterations before the optimizer may stop (``minIter``)."""
    relative_error: float = pydantic.Field(default=1e-3, gt=0.0)
    """Stop when the log-likelihood changes by less than this fraction of
    itself between two iterations (``relativeError``)."""
    resize_frequency: int = pydantic.Field(default=3, ge=1)
    """Iterations between component box resizes (``resizeFrequency``)."""
    fit_precision: Literal["float32", "float64"] = "float32"
    """Precision of the fit's FFT convolutions (`BoxConvolver` ``transform_dtype``;
    the parameters and sums stay float64). Single precision is well below the
    noise and takes a third of the time on large blends; rendering stored
    models is double either way."""
    model_psf_sigma: float = pydantic.Field(default=0.8, gt=0.0)
    """σ (pixels) of the circular Gaussian model-frame PSF (``modelPsfSigma``)."""
    model_psf_size: int = pydantic.Field(default=15, ge=3)
    """Odd side of the model-frame PSF image (``modelPsfSize``; scarlet_lite's
    default 15, LSST's 11)."""
    min_snr: float = 50.0
    """Sources whose peak S/N is below this get a PSF-like initial morphology
    when the detection image gives none; above ``2 * min_snr`` they get two
    components (``minSNR``)."""
    max_components: int = pydantic.Field(default=2, ge=1, le=2)
    """Most components per source (1 or 2)."""
    background_thresh: float = pydantic.Field(default=1.0, ge=0.0)
    """Sparsity: model pixels fainter than this many noise σ in every band
    are set to zero (``backgroundThresh``)."""
    initial_background_thresh: float = pydantic.Field(default=1.0, ge=0.0)
    """Same, for the initial morphology (``initialBackgroundThresh``)."""
    disk_percentile: float = pydantic.Field(default=25.0, gt=0.0, lt=100.0)
    """Two-component split: the inner part of the initial morphology above
    this percentage of its peak goes to the first ("bulge") component."""
    component_padding: int = pydantic.Field(default=5, ge=0)
    """Pixels added around the significant region when a box is resized."""
    monotonic: bool = True
    """Project each morphology onto a monotonic profile from its peak (LSST:
    always on)."""
    spectrum_init: bool = True
    """Fit all spectra by linear least squares after initialisation
    (``setSpectra``)."""
    max_spectrum_cutoff: int = 1_000_000
    """Skip the spectrum fit when box pixels × sources exceeds this
    (``maxSpectrumCutoff``; <= 0: no limit)."""
    max_number_of_peaks: int = 600
    """Most peaks in one blend (``maxNumberOfPeaks``; <= 0: unlimited). As
    in meas_extensions_scarlet, a blend with more is not fitted at all
    (fitting only the brightest peaks leaves the others' light to them);
    with ``split_large_footprints`` its footprint is cut into sub-blends
    instead."""
    max_footprint_area: int = 2_000_000
    """Most pixels in the bounding box of one blend (``maxFootprintArea``,
    which LSST also measures on the bounding box; <= 0: unlimited)."""
    max_area_times_peaks: int = 1_000_000_000
    """Most bounding-box pixels × peaks of one blend, the measure of its
    fitting time and memory (``maxAreaTimesPeaks``; <= 0: unlimited)."""
    split_large_footprints: bool = True
    """A footprint beyond one of the three limits above is cut along the
    valleys of the detection image into independent sub-blends within them
    (`split_footprint`), instead of being skipped as LSST does; only a
    single peak's basin that is itself beyond a limit is then skipped.
    Footprints within the limits are one blend either way."""
    sub_blend_area_times_peaks: int = pydantic.Field(default=1_000_000, ge=0)
    """Size of the sub-blends a footprint beyond the limits is cut into:
    their basins merge while a sub-blend's bounding-box pixels × peaks stays
    within this (and within the three limits); 0: only as fine as the
    limits require. The default equals ``max_spectrum_cutoff``, so every
    sub-blend gets its spectra fitted at initialisation."""
    adaprox_morph_step: float = pydantic.Field(default=1e-2, gt=0.0)
    """Proximal ADAM step of the morphology (its peak is normalised to 1)."""
    adaprox_spectrum_factor: float = pydantic.Field(default=1e-2, gt=0.0)
    """Proximal ADAM step of a spectrum: this fraction of its mean, and at
    least a tenth of the band's noise RMS."""
    isolated: Literal["fit", "footprint"] = "fit"
    """Single-peak footprints: ``"fit"`` models them like any blend (one
    source, the usual constraints) so their residuals show what the detection
    missed; ``"footprint"`` is LSST's cheap way (``processSingles=False``):
    the model is the image inside the footprint, persisted as an
    ``isolated`` source with its span array, and its residual is zero."""
    second_pass_start: Literal["warm", "cold"] = "warm"
    """How the second pass starts a blend that gained sources: ``"warm"``
    starts its existing sources from their first-pass components and
    initialises only the new ones (and any without a fitted first-pass
    model); ``"cold"`` initialises every source from the image again, as the
    first pass did. Both stop on the same convergence rule."""
    second_pass_refit: Literal["blend", "local"] = "local"
    """Which sources of a warm-started blend are fitted again: ``"blend"``,
    all of them; ``"local"``, the new ones and those near them
    (``local_refit_radius``, ``local_refit_share``), on the window their
    boxes cover, the others held at their first-pass models (`local_refit`).
    Cold starts re-fit the whole blend either way."""
    local_refit_radius: float = pydantic.Field(default=10.0, ge=0.0)
    """Pixels from a new source's peak within which an existing source is
    fitted again with it (``second_pass_refit="local"``)."""
    local_refit_share: float = pydantic.Field(default=0.1, ge=0.0, le=1.0)
    """An existing source farther out is fitted again too if its first-pass
    model holds at least this share of the image at a new source's peak
    (``second_pass_refit="local"``): the light it took from the source the
    first pass missed."""
    local_refit_max_chi2: float = pydantic.Field(default=2.0, gt=0.0)
    """A blend whose reduced χ² (its own model, its footprint's pixels) is
    still above this after the local re-fit is then fitted whole, as with
    ``"blend"`` (``second_pass_refit="local"``): its first-pass fit had
    stopped far from the data, which re-fitting only around the new sources
    keeps."""
    warm_step_scale: float = pydantic.Field(default=0.3, gt=0.0, le=1.0)
    """Step sizes (``adaprox_morph_step``, ``adaprox_spectrum_factor``) of a
    warm-started source, as a fraction of a fresh one's. The optimizer's
    moments start afresh, so its first steps have the full step size in
    every pixel: from a converged start that throws the source off its
    optimum and costs the iterations to come back (1: no scaling)."""
    max_masked_fraction: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    """A source whose model inside its footprint lies more than this
    fraction on pixels without data in a band is ``mostly_masked`` there,
    and its fluxes in that band are NaN: they would be the model's
    extrapolation into pixels nothing constrains."""
    bright_star_zone_factor: float = pydantic.Field(default=8.0, gt=0.0)
    """Sources within this many equivalent radii of a region of saturated
    (SAT) pixels are flagged ``near_bright_star`` (`bright_star_zones`)."""
    bright_star_zone_min_radius: float = pydantic.Field(default=16.0, ge=0.0)
    """Smallest radius (pixels) of a bright star's zone."""
    conserve_flux: bool = True
    """Also measure fluxes by redistributing the image among the sources in
    proportion to their models, as meas_extensions_scarlet does."""
    show_progress: bool = True
    """Show a tqdm progress bar over blends."""

    @property
    def fit_transform_dtype(self) -> np.dtype:
        """``fit_precision`` as a numpy dtype."""
        return np.dtype(self.fit_precision)

    @pydantic.field_validator("model_psf_size")
    @classmethod
    def _odd_psf_size(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"must be odd, not {size}")
        return size
