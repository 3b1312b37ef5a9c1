"""Building blocks of the deblender: PSFs, convolutions, monotonicity, symmetry, adaprox.

The turn-before monotonicity projection (whole-array sweeps to the fixed
point) is kept here as the reference of the compiled single pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.deblending.adaprox import AdaproxState
from lsst.meas.extensions.residual.deblending.convolution import BoxConvolver, same_fft_shape
from lsst.meas.extensions.residual.deblending.initialization import symmetrize
from lsst.meas.extensions.residual.deblending.monotonicity import _OFFSETS, Monotonicity, refine_peak
from lsst.meas.extensions.residual.deblending.psf import difference_kernels, integrated_gaussian_psf
from scipy.signal import convolve, fftconvolve


def _gaussian(size, sigma, dx=0.0, dy=0.0):
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    image = np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2 * sigma**2))
    return image / image.sum()


def test_model_psf_is_normalised_centred_and_has_the_right_width():
    psf = integrated_gaussian_psf(0.8, 15)
    assert psf.shape == (15, 15)
    assert psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (7, 7)
    np.testing.assert_allclose(psf, psf.T)
    y, x = np.mgrid[-7:8, -7:8]
    # Pixel integration adds 1/12 px² to the variance of a Gaussian.
    assert np.sqrt((psf * x**2).sum()) == pytest.approx(np.sqrt(0.8**2 + 1 / 12), rel=1e-3)
    with pytest.raises(ValueError, match="odd"):
        integrated_gaussian_psf(0.8, 14)


def test_difference_kernel_carries_the_model_psf_to_each_observed_psf():
    model = integrated_gaussian_psf(0.8, 15)
    observed = np.stack([_gaussian(25, 1.6, 0.2, -0.1), _gaussian(25, 2.3)])
    kernels = difference_kernels(observed, model)
    assert kernels.shape == (2, 25, 25)
    for band in range(2):
        back = fftconvolve(model, kernels[band], mode="full")[7:-7, 7:-7]
        np.testing.assert_allclose(back, observed[band], atol=1e-8)
    with pytest.raises(ValueError, match="non-finite"):
        difference_kernels(np.full((1, 25, 25), np.nan), model)


def test_box_convolver_matches_direct_convolution_and_its_adjoint_is_exact():
    rng = np.random.default_rng(3)
    kernels = rng.normal(size=(3, 9, 9))
    cube = rng.normal(size=(3, 17, 23))
    other = rng.normal(size=(3, 17, 23))
    convolver = BoxConvolver(kernels, (17, 23))
    direct = np.stack([fftconvolve(cube[b], kernels[b], mode="same") for b in range(3)])
    np.testing.assert_allclose(convolver.convolve(cube), direct, atol=1e-10)
    full = np.stack([fftconvolve(cube[b], kernels[b], mode="full") for b in range(3)])
    np.testing.assert_allclose(convolver.convolve_full(cube), full, atol=1e-10)
    # <A x, y> == <x, A^T y>
    assert np.sum(convolver.convolve(cube) * other) == pytest.approx(np.sum(cube * convolver.adjoint(other)))
    # Leading axes broadcast (one stack of cubes per component).
    stacked = convolver.convolve(np.stack([cube, other]))
    np.testing.assert_allclose(stacked[1], convolver.convolve(other), atol=1e-12)


@pytest.mark.parametrize("shape", [(17, 23), (130, 111)])
def test_single_precision_transforms_agree_with_double_to_round_off_and_return_float64(shape):
    """``transform_dtype=float32`` (the fit's default, ``DeblendConfig.fit_precision``)."""
    rng = np.random.default_rng(shape[0])
    kernels = difference_kernels(
        np.stack([_gaussian(21, s) for s in (1.6, 1.9)]), integrated_gaussian_psf(0.8, 15)
    )
    # A bright source on a faint background: the error is relative to the cube, not to each pixel.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    source = np.exp(-((yy - shape[0] / 3) ** 2 + (xx - shape[1] / 2) ** 2) / 8.0)
    cube = rng.normal(size=(2, *shape)) + 1e4 * source
    double = BoxConvolver(kernels, shape)
    single = BoxConvolver(kernels, shape, transform_dtype=np.float32)
    assert single.transform_dtype == np.float32 and double.transform_dtype == np.float64
    rms = np.sqrt(np.mean(cube**2))
    for method in ("convolve", "adjoint"):
        reference, result = getattr(double, method)(cube), getattr(single, method)(cube)
        assert result.dtype == np.float64 and result.shape == reference.shape
        error = np.abs(result - reference).max() / rms
        assert 0 < error < 1e-5, (method, error)  # single precision, not double: but near its epsilon
    stack = rng.normal(size=(3, *shape))
    # All bands from one transform of the stack: each the stack broadcast over the bands, convolved.
    broadcast = double.convolve(np.repeat(stack[:, None], 2, axis=1))
    bands = list(zip(single.convolve_bands(stack), double.convolve_bands(stack), strict=True))
    assert len(bands) == 2
    for band, (in_single, in_double) in enumerate(bands):
        np.testing.assert_allclose(in_double, broadcast[:, band], rtol=0, atol=1e-12)
        np.testing.assert_allclose(in_single, in_double, rtol=0, atol=1e-5)
    # Rendering stays double whatever the fit uses.
    np.testing.assert_array_equal(single.convolve_full(cube), double.convolve_full(cube))
    with pytest.raises(ValueError, match="float64 or float32"):
        BoxConvolver(kernels, shape, transform_dtype=np.float16)


def _largest_prime_factor(n: int) -> int:
    factor, largest = 2, 1
    while n > 1:
        while n % factor == 0:
            n //= factor
            largest = factor
        factor += 1
    return largest


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (3, 2), (16, 45), (27, 26), (52, 9)])
def test_fast_padded_sizes_give_the_direct_convolution_and_an_exact_adjoint(shape):
    """Transforms of 2/3/5-smooth size >= box + K // 2 (the kernel folded when the box is narrower)."""
    rng = np.random.default_rng(sum(shape))
    kernels = rng.normal(size=(2, 31, 31))
    cube, other = rng.normal(size=(2, 2, *shape))
    convolver = BoxConvolver(kernels, shape)
    assert convolver.fft_shape == same_fft_shape(shape, (31, 31))
    for size, box in zip(convolver.fft_shape, shape, strict=True):
        assert size >= box + 15 and _largest_prime_factor(size) <= 5
    assert np.prod(convolver.fft_shape) < np.prod([s + 30 for s in shape])  # smaller than H + K - 1
    direct = np.stack([convolve(cube[b], kernels[b], mode="same", method="direct") for b in range(2)])
    scale = np.abs(direct).max()
    np.testing.assert_allclose(convolver.convolve(cube), direct, rtol=0, atol=1e-12 * scale)
    full = np.stack([convolve(cube[b], kernels[b], mode="full", method="direct") for b in range(2)])
    np.testing.assert_allclose(convolver.convolve_full(cube), full, rtol=0, atol=1e-12 * scale)
    # The adjoint is the direct correlation with each kernel (a convolution with the mirrored kernel).
    correlated = np.stack(
        [convolve(other[b], kernels[b, ::-1, ::-1], mode="same", method="direct") for b in range(2)]
    )
    np.testing.assert_allclose(convolver.adjoint(other), correlated, rtol=0, atol=1e-12 * scale)


def _sweep_monotonic(image, peak, operator):
    """Reference: the turn-before projection, sweeps of ``m <- min(x, W m)`` to the fixed point."""
    h, w = image.shape
    peak = refine_peak(image, peak, operator.fit_radius)
    weights = operator.weights((h, w), peak)
    target = np.asarray(image, dtype=np.float64)
    current = target.copy()
    padded = np.zeros((h + 2, w + 2))
    for _ in range(h * h + w * w):
        padded[1:-1, 1:-1] = current
        reference = weights[0] * padded[0:h, 0:w]
        for k, (dy, dx) in enumerate(_OFFSETS[1:], start=1):
            reference += weights[k] * padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        reference[peak] = np.inf
        updated = np.minimum(target, reference)
        if np.array_equal(updated, current):
            break
        current = updated
    return current


def _galaxy_morphology(rng, h, w, peak):
    """An elliptical exponential profile at ``peak`` with a brighter-or-fainter neighbour and noise."""
    yy, xx = np.mgrid[:h, :w].astype(float)
    angle, axis_ratio, scale = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0), rng.uniform(1.5, 8.0)

    def profile(cy, cx):
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        return np.exp(-np.hypot(u, v / axis_ratio) / scale)

    neighbour = rng.uniform(0, h), rng.uniform(0, w)
    image = profile(*peak) + rng.uniform(0.2, 1.5) * profile(*neighbour)
    return image + rng.uniform(0.001, 0.05) * rng.normal(size=(h, w))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_monotonicity_equals_the_turn_before_sweeps(seed):
    """Random and galaxy-like morphologies, peaks anywhere (edges and corners too), boxes up to 90 px."""
    rng = np.random.default_rng(100 + seed)
    operator = Monotonicity(size=11)  # grows on demand
    for trial in range(8):
        h, w = (int(v) for v in rng.integers(1, 90 if trial == 0 else 40, size=2))
        peak = (int(rng.integers(0, h)), int(rng.integers(0, w)))
        if trial % 4 == 1:  # on the box edge
            peak = (0, peak[1]) if trial % 8 == 1 else (peak[0], w - 1)
        image = rng.normal(size=(h, w)) if trial % 2 else _galaxy_morphology(rng, h, w, peak)
        # The centre handed over is off by one pixel at times: both refine it the same way.
        center = (min(peak[0] + int(rng.integers(0, 2)), h - 1), peak[1])
        expected = _sweep_monotonic(image, center, operator)
        result = operator(image, center)
        assert result.dtype == np.float64 and result.shape == image.shape
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-13)


def test_compiled_monotonicity_on_a_fit_step_and_a_float32_detection_stamp():
    """As the fit calls it: a projected morphology after a gradient step; and float32 input."""
    rng = np.random.default_rng(7)
    operator = Monotonicity()
    morph = operator(_galaxy_morphology(rng, 48, 37, (20, 15)), (20, 15))
    stepped = morph - 0.01 * rng.normal(size=morph.shape)
    np.testing.assert_allclose(
        operator(stepped, (20, 15)), _sweep_monotonic(stepped, (20, 15), operator), atol=1e-13
    )
    stamp = _galaxy_morphology(rng, 25, 31, (12, 3)).astype(np.float32)
    before = stamp.copy()
    np.testing.assert_allclose(
        operator(stamp, (12, 3)), _sweep_monotonic(stamp, (12, 3), operator), atol=1e-13
    )
    np.testing.assert_array_equal(stamp, before)  # the input is not modified


def _sequential_monotonic(image, peak, operator):
    """Reference: scarlet's algorithm, one pixel at a time from the peak outward."""
    h, w = image.shape
    weights = operator.weights((h, w), peak)
    padded = np.zeros((h + 2, w + 2))
    padded[1:-1, 1:-1] = image
    yy, xx = np.mgrid[:h, :w]
    order = np.argsort(((yy - peak[0]) ** 2 + (xx - peak[1]) ** 2).ravel(), kind="stable")
    for index in order:
        y, x = divmod(int(index), w)
        if (y, x) == tuple(peak):
            continue
        reference = sum(
            weights[k, y, x] * padded[1 + y + dy, 1 + x + dx] for k, (dy, dx) in enumerate(_OFFSETS)
        )
        padded[1 + y, 1 + x] = min(padded[1 + y, 1 + x], reference)
    return padded[1:-1, 1:-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_monotonicity_equals_the_sequential_projection(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(6, 30, size=2)
    py, px = int(rng.integers(0, h)), int(rng.integers(0, w))
    yy, xx = np.mgrid[:h, :w]
    image = np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 30.0) + 0.3 * rng.normal(size=(h, w))
    image[py, px] = image.max() + 1.0  # unambiguous peak
    operator = Monotonicity(size=11)  # grows on demand
    result = operator(image, (py, px))
    np.testing.assert_allclose(result, _sequential_monotonic(image, (py, px), operator), atol=1e-12)
    assert np.all(result <= image + 1e-12)
    # A projection: applying it again changes nothing.
    np.testing.assert_allclose(operator(result, (py, px)), result, atol=1e-12)


def test_every_pixel_is_at_most_the_weighted_mean_of_its_inner_neighbours():
    rng = np.random.default_rng(5)
    image = rng.random((21, 17))
    image[10, 6] = 2.0
    operator = Monotonicity()
    result = operator(image, (10, 6))
    weights = operator.weights(result.shape, (10, 6))
    padded = np.pad(result, 1)
    reference = sum(
        weights[k] * padded[1 + dy : 1 + dy + 21, 1 + dx : 1 + dx + 17] for k, (dy, dx) in enumerate(_OFFSETS)
    )
    reference[10, 6] = np.inf
    assert np.all(result <= reference + 1e-12)
    assert result[10, 6] == 2.0
    # The input was far from monotonic, so the projection had work to do.
    assert np.sum(result < image - 1e-9) > 100


def test_refine_peak_moves_to_the_brightest_neighbour():
    image = np.zeros((5, 5))
    image[2, 3] = 1.0
    assert refine_peak(image, (2, 2)) == (2, 3)
    assert refine_peak(image, (2, 4)) == (2, 3)
    assert refine_peak(image, (0, 0)) == (0, 0)  # out of reach: stays (all zeros, first is kept)


def test_symmetrize_takes_the_minimum_with_the_mirror_pixel():
    rng = np.random.default_rng(0)
    image = rng.random((7, 9))
    result = symmetrize(image, (2, 3))
    assert result[2, 3] == image[2, 3]
    assert result[1, 5] == min(image[1, 5], image[3, 1])
    assert result[6, 0] == 0.0  # its mirror (-2, 6) is outside the box
    np.testing.assert_array_equal(result, symmetrize(result, (2, 3)))


def test_adaprox_converges_on_a_quadratic_and_damps_the_first_step():
    x = np.array([5.0, -3.0])
    damped = AdaproxState((2,)).step(0, x, 2 * x, 0.1)
    undamped = AdaproxState((2,)).step(1, x, 2 * x, 0.1)
    np.testing.assert_allclose(x - damped, (x - undamped) / 10)
    state = AdaproxState((2,))
    for iteration in range(300):
        x = state.step(iteration, x, 2 * x, 0.1)
    assert np.all(np.abs(x) < 1e-3)


def _numpy_step(component, iteration, grad):
    """Reference: the turn-before proximal ADAM step of a component, in numpy (AdaproxState.step)."""
    morph_grad = np.einsum("b,bhw->hw", component.spectrum, grad)
    spectrum_grad = np.einsum("bhw,hw->b", grad, component.morph)
    spectrum_step = np.maximum(
        component.noise_rms / 10.0, component.spectrum_factor * component.spectrum.mean()
    )
    spectrum = component._spectrum_adam.step(iteration, component.spectrum, spectrum_grad, spectrum_step)
    morph = component._morph_adam.step(iteration, component.morph, morph_grad, component.morph_step)
    spectrum[~(spectrum >= 1e-20)] = 1e-20
    peak = component.local_peak
    morph[~np.isfinite(morph)] = 0.0
    if component.monotonicity is not None:
        morph = component.monotonicity(morph, peak)
    morph[morph < float(np.min(component.bg_cut / spectrum))] = 0.0
    morph[morph < 0] = 0.0
    morph[peak] = max(morph[peak], 1e-20)
    if morph.max() > 0:
        morph /= morph.max()
    component.spectrum, component.morph = spectrum, morph


@pytest.mark.parametrize("monotonic", [True, False])
def test_compiled_proximal_step_follows_the_numpy_step(monotonic):
    """`FactorizedComponent.update` (`proximal_step`) against the numpy step over a fit's first 25 steps.

    The loss is the model-frame residual against a noisy two-source image, so that the steps
    clip pixels (sparsity, monotonicity) and shrink the spectrum in one band to its floor.
    """
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.deblending.component import FactorizedComponent
    from lsst.meas.extensions.residual.geometry import Box

    rng = np.random.default_rng(11)
    shape, peak = (23, 31), (9, 13)
    truth = _galaxy_morphology(rng, *shape, peak)
    true_spectrum = np.array([3.0, 8.0, 12.0, 10.0, 0.0, 5.0])
    target = true_spectrum[:, None, None] * truth[None] + 0.05 * rng.normal(size=(6, *shape))
    noise = np.full(6, 0.05)
    config = DeblendConfig()
    operator = Monotonicity() if monotonic else None
    start_morph = np.clip(truth + 0.2 * rng.normal(size=shape), 0, None)
    start_morph[peak] = 1.0
    components = [
        FactorizedComponent(
            np.full(6, 6.0), start_morph, Box(40, 50, *shape), (49, 63), noise, config, operator
        )
        for _ in range(2)
    ]
    compiled, reference = components
    clipped = 0
    for iteration in range(25):
        for component, step in ((compiled, compiled.update), (reference, None)):
            grad = component.model() - target
            if step is None:
                _numpy_step(component, iteration, grad)
            else:
                step(iteration, grad)
        np.testing.assert_allclose(compiled.spectrum, reference.spectrum, rtol=1e-9, atol=1e-25)
        np.testing.assert_allclose(compiled.morph, reference.morph, rtol=1e-9, atol=1e-14)
        for name in ("_spectrum_adam", "_morph_adam"):
            for moment in ("m", "v", "vhat"):
                np.testing.assert_allclose(
                    getattr(getattr(compiled, name), moment),
                    getattr(getattr(reference, name), moment),
                    rtol=1e-9,
                    atol=1e-25,
                )
        clipped += int(np.count_nonzero(compiled.morph == 0))
    assert compiled.spectrum[4] == 1e-20  # the empty band went to the floor
    assert clipped > 0 and compiled.morph.max() == 1.0


def test_convolvers_sharing_kernel_transforms_transform_each_shape_once_and_agree_with_their_own():
    from lsst.meas.extensions.residual.deblending.convolution import KernelTransforms

    rng = np.random.default_rng(5)
    kernels = rng.normal(size=(3, 9, 9))
    shared = KernelTransforms(kernels)
    # 17 and 18 rows (+ K // 2 = 21, 22) both pad to 24: one transform shape, made once.
    a, b = (BoxConvolver(kernels, shape, np.float32, shared) for shape in ((17, 20), (18, 19)))
    assert a.fft_shape == b.fft_shape
    cube = rng.normal(size=(3, 17, 20))
    own = BoxConvolver(kernels, (17, 20), np.float32)
    np.testing.assert_array_equal(a.convolve(cube), own.convolve(cube))
    np.testing.assert_array_equal(a.adjoint(cube), own.adjoint(cube))
    np.testing.assert_array_equal(a.convolve_full(cube), own.convolve_full(cube))
    b.convolve(rng.normal(size=(3, 18, 19)))
    assert a._kernel_fft is b._kernel_fft and not a._kernel_fft.flags.writeable
    # Precisions are kept apart; nothing is kept beyond max_bytes.
    double = BoxConvolver(kernels, (17, 20), np.float64, shared)
    assert double._kernel_fft.dtype == np.complex128 and a._kernel_fft.dtype == np.complex64
    none_kept = KernelTransforms(kernels, max_bytes=0)
    c, d = (BoxConvolver(kernels, (17, 20), np.float32, none_kept) for _ in range(2))
    assert c._kernel_fft is not d._kernel_fft
    np.testing.assert_array_equal(c._kernel_fft, d._kernel_fft)
    with pytest.raises(ValueError, match="other kernels"):
        BoxConvolver(kernels + 1.0, (17, 20), np.float32, shared)


def test_a_patch_render_shares_one_set_of_kernel_transforms_among_its_blends(monkeypatch):
    """Also when each blend carries its own copy of the PSFs (the kernels are cached by value)."""
    from lsst.meas.extensions.residual.deblending import (
        BlendData,
        FactorizedComponentData,
        HierarchicalBlendData,
        ScarletModelData,
        SourceData,
        render_model_data,
    )
    from lsst.meas.extensions.residual.deblending import render as render_module

    psf = np.stack([_gaussian(21, s) for s in (1.6, 1.9)]).astype(np.float32)
    model_psf = integrated_gaussian_psf(0.8, 15).astype(np.float32)
    blends = {}
    for k in range(6):
        component = FactorizedComponentData(
            origin=(10 + 30 * k, 12), peak=(14.0 + 30 * k, 16.0), spectrum=np.ones(2), morph=_gaussian(9, 1.5)
        )
        own_psfs = {"psf": psf.copy(), "model_psf": model_psf.copy()} if k % 2 else None
        child = BlendData(
            origin=(10 + 30 * k, 12), shape=(9, 9), sources={k: SourceData([component])}, metadata=own_psfs
        )
        blends[k + 1] = HierarchicalBlendData(children={k + 1: child})
    data = ScarletModelData(metadata={"model_psf": model_psf, "psf": psf, "bands": ("g", "r")}, blends=blends)
    made = []

    class Counted(render_module.KernelTransforms):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(render_module, "KernelTransforms", Counted)
    model = render_model_data(data, (200, 40))
    assert len(made) == 1
    # Each blend rendered as on its own.
    for k in range(6):
        alone = render_model_data(data, (200, 40), blend_ids=[k + 1])
        rows = slice(10 + 30 * k - 10, 10 + 30 * k + 19)
        np.testing.assert_allclose(model[:, rows], alone[:, rows], rtol=0, atol=1e-7)
    assert len(made) == 7


def test_disks_stamped_at_positions_equal_the_binary_dilation_of_those_pixels():
    from lsst.meas.extensions.residual.deblending.peaks import _disk, _disks_at
    from scipy import ndimage

    rng = np.random.default_rng(8)
    shape = (60, 45)
    ys = np.concatenate([rng.integers(0, shape[0], 40), [0, 59, 3]])  # some on and near the edges
    xs = np.concatenate([rng.integers(0, shape[1], 40), [0, 44, 44]])
    seeds = np.zeros(shape, dtype=bool)
    seeds[ys, xs] = True
    for radius in (1, 4, 7):
        expected = ndimage.binary_dilation(seeds, structure=_disk(radius))
        np.testing.assert_array_equal(_disks_at(shape, ys, xs, radius), expected)
