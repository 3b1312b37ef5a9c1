"""Parameters of the Scarlet-compatible deblender."""

from __future__ import annotations

__all__ = ["DeblendConfig"]

import dataclasses

_ISOLATED_MODES = ("fit", "footprint")


@dataclasses.dataclass
class DeblendConfig:
    """Parameters of `deblend`.

    Defaults follow LSST's ``ScarletDeblendConfig`` (meas_extensions_scarlet)
    where the two share a parameter; the LSST name is given in each field's
    documentation.
    """

    max_iter: int = 300
    """Maximum number of optimizer iterations per blend (``maxIter``)."""
    min_iter: int = 5
    """Iterations before the optimizer may stop (``minIter``)."""
    relative_error: float = 1e-3
    """Stop when the log-likelihood changes by less than this fraction of
    itself between two iterations (``relativeError``)."""
    resize_frequency: int = 3
    """Iterations between component box resizes (``resizeFrequency``)."""
    model_psf_sigma: float = 0.8
    """σ (pixels) of the circular Gaussian model-frame PSF (``modelPsfSigma``)."""
    model_psf_size: int = 15
    """Odd side of the model-frame PSF image (scarlet_lite's default 15)."""
    min_snr: float = 50.0
    """Sources whose peak S/N is below this get a PSF-like initial morphology
    when the detection image gives none; above ``2 * min_snr`` they get two
    components (``minSNR``)."""
    max_components: int = 2
    """Most components per source (1 or 2)."""
    background_thresh: float = 1.0
    """Sparsity: model pixels fainter than this many noise σ in every band
    are set to zero (``backgroundThresh``)."""
    initial_background_thresh: float = 1.0
    """Same, for the initial morphology (``initialBackgroundThresh``)."""
    disk_percentile: float = 25.0
    """Two-component split: the inner part of the initial morphology above
    this percentage of its peak goes to the first ("bulge") component."""
    component_padding: int = 5
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
    """Only the brightest peaks of a footprint are deblended; the others are
    flagged ``skipped`` (``maxNumberOfPeaks``; <= 0: unlimited)."""
    adaprox_morph_step: float = 1e-2
    """Proximal ADAM step of the morphology (its peak is normalised to 1)."""
    adaprox_spectrum_factor: float = 1e-2
    """Proximal ADAM step of a spectrum: this fraction of its mean, and at
    least a tenth of the band's noise RMS."""
    isolated: str = "fit"
    """Single-peak footprints: ``"fit"`` models them like any blend (one
    source, the usual constraints) so their residuals show what the detection
    missed; ``"footprint"`` is LSST's cheap way (``processSingles=False``):
    the model is the image inside the footprint, persisted as an
    ``isolated`` source with its span array, and its residual is zero."""
    conserve_flux: bool = True
    """Also measure fluxes by redistributing the image among the sources in
    proportion to their models, as meas_extensions_scarlet does."""
    show_progress: bool = True
    """Show a tqdm progress bar over blends."""

    def __post_init__(self) -> None:
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, not {self.max_iter}.")
        if self.min_iter < 0:
            raise ValueError(f"min_iter must be >= 0, not {self.min_iter}.")
        if not self.relative_error > 0:
            raise ValueError(f"relative_error must be positive, not {self.relative_error}.")
        if self.resize_frequency < 1:
            raise ValueError(f"resize_frequency must be >= 1, not {self.resize_frequency}.")
        if not self.model_psf_sigma > 0:
            raise ValueError(f"model_psf_sigma must be positive, not {self.model_psf_sigma}.")
        if self.model_psf_size < 3 or self.model_psf_size % 2 == 0:
            raise ValueError(f"model_psf_size must be odd and >= 3, not {self.model_psf_size}.")
        if self.max_components not in (1, 2):
            raise ValueError(f"max_components must be 1 or 2, not {self.max_components}.")
        if self.background_thresh < 0 or self.initial_background_thresh < 0:
            raise ValueError("background thresholds must be >= 0.")
        if not 0 < self.disk_percentile < 100:
            raise ValueError(f"disk_percentile must be in (0, 100), not {self.disk_percentile}.")
        if self.isolated not in _ISOLATED_MODES:
            raise ValueError(f"isolated must be one of {_ISOLATED_MODES}, not {self.isolated!r}.")
        if self.component_padding < 0:
            raise ValueError(f"component_padding must be >= 0, not {self.component_padding}.")
