"""Engine units: window grid, blend weights, block vs scene prediction, nodata, per-pixel models."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import xsensei
from xsensei.engine import runtime
from xsensei.engine.predict import (
    fill_missing_pixelwise,
    fill_missing_window,
    pad_scene,
    predict_block,
    predict_scene,
)
from xsensei.engine.tiling import WindowSpec, _ramp, blend_weights, window_starts
from xsensei.weights.checkpoint import read_metadata

# --- helpers -------------------------------------------------------------------------------


def spatial_runner(batch: np.ndarray) -> np.ndarray:
    """A deterministic stand-in model with spatial context, in pure numpy.

    Each output depends on the pixel, on the mean of the whole window and on the position in
    the window, so a misplaced window, a wrong halo or a wrong mirror changes the result.
    """
    _, _, h, w = batch.shape
    m = batch.mean(axis=1)  # (B, h, w)
    ctx = m.mean(axis=(1, 2), keepdims=True)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    logits = np.stack([4 * (m - ctx), 2 * ctx + yy * m, xx * (1 - m), batch[:, 0] - m], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class CountingRunner:
    """Wraps a runner and counts its calls and the windows it saw."""

    def __init__(self, runner=spatial_runner) -> None:
        self.runner = runner
        self.calls = 0
        self.windows = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.windows += batch.shape[0]
        return self.runner(batch)


def random_scene(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.8, size=(n, h, w)).astype(np.float32)


CPU = runtime.resolve_device("cpu")


def checkpoint_module(path: Path, desc: np.ndarray):
    """The runtime's cached, band-specialised module for a checkpoint (CPU, fp32)."""
    meta = read_metadata(path)
    ref = runtime.ModelRef(str(path), meta["sha256"], meta["name"], str(meta["version"]))
    return runtime.get_runner(ref, xsensei.encode_wavelengths(desc), CPU, "fp32")


def checkpoint_runner(path: Path, desc: np.ndarray):
    module = checkpoint_module(path, desc)
    return lambda batch: runtime.run_batch(module, batch, CPU, "fp32")


# --- tiling --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scene_len", "size", "overlap"),
    [(100, 32, 8), (97, 32, 0), (256, 64, 63), (20, 32, 8), (32, 32, 8), (1000, 256, 64)],
)
@pytest.mark.parametrize("chunk", [1, 17, 50, 64, 1000])
def test_window_starts_cover_every_pixel(scene_len, size, overlap, chunk) -> None:
    spec = WindowSpec(size=size, overlap=overlap)
    everything = window_starts(0, scene_len, scene_len, spec)
    assert everything[0] == 0
    assert np.diff(everything).tolist() == [spec.stride] * (len(everything) - 1)
    # the last window is the first to reach the scene end, so the grid covers the scene
    assert everything[-1] + size >= scene_len
    assert len(everything) == 1 or everything[-2] + size < scene_len
    for start in range(0, scene_len, chunk):
        stop = min(start + chunk, scene_len)
        starts = window_starts(start, stop, scene_len, spec)
        # exactly the scene windows that intersect the core, in grid order
        assert starts == [s for s in everything if s < stop and s + size > start]
        covered = np.zeros(stop - start, dtype=int)
        for s in starts:
            covered[max(s, start) - start : min(s + size, stop) - start] += 1
        assert covered.min() >= 1


@pytest.mark.parametrize("blend", ["uniform", "linear", "cosine"])
@pytest.mark.parametrize(("size", "overlap"), [(8, 0), (32, 8), (64, 16), (64, 40), (256, 64)])
def test_weights_are_positive_and_bounded(blend, size, overlap) -> None:
    w = blend_weights(WindowSpec(size=size, overlap=overlap, blend=blend))
    assert w.shape == (size, size)
    assert w.dtype == np.float32
    assert w.min() > 0
    assert w.max() <= 1
    np.testing.assert_array_equal(w, w.T)  # the same ramp on both axes
    np.testing.assert_array_equal(w, w[::-1, ::-1])  # symmetric window
    if blend == "uniform" or overlap == 0:
        assert np.all(w == 1)
    elif 2 * overlap <= size:
        assert w[size // 2, size // 2] == 1  # flat top where windows do not overlap
        assert w[0, 0] < 0.01


@pytest.mark.parametrize("blend", ["linear", "cosine"])
@pytest.mark.parametrize(("size", "overlap"), [(32, 8), (64, 32), (256, 64), (10, 3)])
def test_ramps_of_neighbouring_windows_sum_to_one(blend, size, overlap) -> None:
    spec = WindowSpec(size=size, overlap=overlap, blend=blend)
    stride = spec.stride
    ramp = _ramp(size, overlap, blend)
    # 1-D: window 0 falling + window 1 rising over the shared pixels [stride, size)
    shared = np.arange(stride, size)
    np.testing.assert_allclose(ramp[shared] + ramp[shared - stride], 1.0, atol=1e-12)
    # 2-D: the four windows around a grid corner sum to 1 on their common square
    w = blend_weights(spec).astype(np.float64)
    total = np.zeros((stride + size, stride + size))
    for dy, dx in itertools.product((0, stride), repeat=2):
        total[dy : dy + size, dx : dx + size] += w
    np.testing.assert_allclose(total[stride:size, stride:size], 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 4}, "size must be >= 8"),
        ({"size": 32, "overlap": 32}, r"overlap must be in \[0, size\)"),
        ({"size": 32, "overlap": -1}, r"overlap must be in \[0, size\)"),
        ({"size": 32, "overlap": 8, "blend": "gauss"}, "blend must be"),
        ({"size": None, "blend": "nearest"}, "blend must be"),
        ({"size": 300.7}, "window size must be a whole number of pixels, got 300.7"),
        ({"size": 64, "overlap": 8.5}, "window overlap must be a whole number"),
        ({"size": True}, "window size must be a whole number"),
    ],
)
def test_window_spec_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        WindowSpec(**kwargs)


def test_window_spec_geometry() -> None:
    spec = WindowSpec(size=256, overlap=64)
    assert (spec.stride, spec.halo) == (192, 256)
    assert WindowSpec(size=None).halo == 0


# --- predict_block vs predict_scene -----------------------------------------------------------


@pytest.mark.parametrize("blend", ["uniform", "cosine"])
def test_blocks_cut_by_hand_equal_the_scene(blend) -> None:
    values = random_scene(4, 100, 130, seed=1)
    values[:, 40:44, 60:70] = np.nan  # some nodata, all bands
    values[2, 10:20, 100:120] = np.nan  # one band missing
    spec = WindowSpec(size=32, overlap=8, blend=blend)
    whole = predict_scene(values, spatial_runner, 4, spec, batch_size=3)
    assert whole.shape == (4, 100, 130)
    assert np.isnan(whole[:, 40:44, 60:70]).all()
    assert np.isfinite(whole[:, 10:20, 100:120]).all()

    halo = spec.halo
    padded = pad_scene(values, halo)  # scene coordinate s sits at padded index s + halo
    assembled = np.full_like(whole, -1.0)
    ys, xs = [0, 37, 80, 100], [0, 50, 51, 90, 130]
    for (y0, y1), (x0, x1) in itertools.product(itertools.pairwise(ys), itertools.pairwise(xs)):
        extra = 5  # blocks may carry more than the halo: origin tells where they sit
        by0, bx0 = max(y0 - halo - extra, -halo), max(x0 - halo - extra, -halo)
        block = padded[:, by0 + halo : y1 + 2 * halo, bx0 + halo : x1 + 2 * halo]
        assembled[:, y0:y1, x0:x1] = predict_block(
            block,
            (by0, bx0),
            ((y0, y1), (x0, x1)),
            (100, 130),
            spatial_runner,
            4,
            spec,
            batch_size=5,
        )
    np.testing.assert_array_equal(assembled, whole)


def test_block_without_halo_is_refused() -> None:
    values = random_scene(3, 64, 64)
    spec = WindowSpec(size=16, overlap=4)
    with pytest.raises(ValueError, match="lacks the 16-pixel halo"):
        predict_block(values, (0, 0), ((0, 32), (0, 32)), (64, 64), spatial_runner, 4, spec)


# --- nodata -----------------------------------------------------------------------------------


def test_all_nodata_windows_are_skipped() -> None:
    values = random_scene(3, 96, 96, seed=2)
    values[:, :60, :60] = np.nan
    spec = WindowSpec(size=32, overlap=8)  # windows at 0, 24, 48, 72 on each axis
    starts = window_starts(0, 96, 96, spec)
    assert starts == [0, 24, 48, 72]
    runner = CountingRunner()
    probs = predict_scene(values, runner, 4, spec, batch_size=5)
    # windows [0, 32) and [24, 56) on both axes hold only nodata: 4 of 16 are skipped; the
    # 12 others go in ceil(12 / 5) = 3 calls, each of 5 windows (the last one filled up)
    assert runner.calls == 3
    assert runner.windows == 3 * 5
    assert np.isnan(probs[:, :60, :60]).all()
    assert np.isfinite(probs[:, 60:, :]).all() and np.isfinite(probs[:, :, 60:]).all()
    np.testing.assert_allclose(probs[:, 60:, 60:].sum(axis=0), 1.0, atol=1e-5)

    empty = CountingRunner()
    out = predict_scene(np.full((3, 40, 40), np.nan, np.float32), empty, 4, spec)
    assert (empty.calls, empty.windows) == (0, 0)
    assert np.isnan(out).all()


def test_window_results_do_not_depend_on_their_batch() -> None:
    """A runner whose answer depends on the batch size (as CPU kernels do for a batch of
    one, by ~1e-6) still gives chunking-independent results: every call gets batch_size
    windows."""
    def size_sensitive(batch: np.ndarray) -> np.ndarray:
        return spatial_runner(batch) * np.float32(1 + 1e-3 * batch.shape[0])

    values = random_scene(3, 100, 100, seed=4)
    spec = WindowSpec(size=32, overlap=8)
    whole = predict_scene(values, size_sensitive, 4, spec, batch_size=3)
    core = ((40, 72), (8, 100))
    block = pad_scene(values, spec.halo)
    part = predict_block(block, (-spec.halo, -spec.halo), core, values.shape[1:],
                         size_sensitive, 4, spec, batch_size=3)
    np.testing.assert_array_equal(part, whole[:, 40:72, 8:100])


def test_fill_missing_window_uses_band_means() -> None:
    win = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    win[0, 0, 0] = np.nan
    win[1] = np.nan
    filled = fill_missing_window(win)
    band0 = np.nanmean(win[0])
    assert filled[0, 0, 0] == pytest.approx(band0)
    # a band missing everywhere takes the mean of the other bands' finite values
    assert np.all(filled[1] == pytest.approx(band0))
    np.testing.assert_array_equal(filled[0].ravel()[1:], win[0].ravel()[1:])
    assert np.isnan(win[1]).all()  # the input is not modified


def test_fill_missing_pixelwise_uses_the_pixels_other_bands() -> None:
    values = np.array([[[0.1, 0.2]], [[np.nan, 0.4]], [[0.3, np.nan]]], dtype=np.float32)
    filled = fill_missing_pixelwise(values)
    assert filled[1, 0, 0] == pytest.approx(0.2)  # mean of 0.1 and 0.3
    assert filled[2, 0, 1] == pytest.approx(0.3)  # mean of 0.2 and 0.4
    assert np.isfinite(filled).all()


@pytest.mark.parametrize("segmenter", ["deeplab", "pixelnet"])
def test_partial_nodata_fill_vs_nodata(segmenter, request, demo_desc) -> None:
    """One band NaN at some pixels: labelled under partial="fill", 255 under "nodata"."""
    ckpt = request.getfixturevalue(f"{segmenter}_ckpt")
    values = xsensei.demo_scene(64, seed=3).values.copy()
    values[4, 10:20, 30:40] = np.nan  # swir16 missing on a patch
    values[:, 50:52, 0:64] = np.nan  # all bands missing on two rows
    kwargs = {"descriptors": demo_desc, "model": ckpt, "window": 64, "overlap": 16}
    fill = xsensei.cloudmask(values, partial="fill", **kwargs)
    strict = xsensei.cloudmask(values, partial="nodata", **kwargs)
    assert fill.dtype == np.uint8 and fill.shape == (64, 64)
    assert np.isin(fill[10:20, 30:40], [0, 1, 2, 3]).all()
    assert (strict[10:20, 30:40] == 255).all()
    assert (fill[50:52] == 255).all() and (strict[50:52] == 255).all()
    others = np.ones((64, 64), bool)
    others[10:20, 30:40] = others[50:52] = False
    assert np.isin(fill[others], [0, 1, 2, 3]).all()
    assert (fill == 255).sum() == 2 * 64
    assert (strict == 255).sum() == 2 * 64 + 100
    np.testing.assert_array_equal(fill[others], strict[others])

    probs = xsensei.cloudmask(values, partial="fill", output="probability", **kwargs)
    assert probs.shape == (4, 64, 64) and probs.dtype == np.float32
    assert np.isnan(probs[:, 50:52]).all()
    np.testing.assert_allclose(probs[:, others].sum(axis=0), 1.0, atol=1e-5)
    # default classes are (clear, thick, thin, shadow) = mask values (0, 1, 2, 3), decided
    # cloud first (thick + thin vs clear + shadow), then the class within the group
    from xsensei.engine.dask import cloud_first_class

    decided = cloud_first_class(probs[:, others], (False, True, True, False))
    np.testing.assert_array_equal(decided, fill[others])


# --- per-pixel models ---------------------------------------------------------------------------


def test_per_pixel_model_equals_pixels_run_alone(pixelnet_ckpt, demo_desc) -> None:
    values = xsensei.demo_scene(64, seed=4).values[:, :24, :40].copy()
    values[1, 3, 5] = np.nan  # a partially missing pixel takes its other bands' mean
    values[:, 7, 9] = np.nan  # a fully missing pixel is nodata
    runner = checkpoint_runner(pixelnet_ckpt, demo_desc)
    counting = CountingRunner(runner)
    spec = WindowSpec(size=None)
    probs = predict_scene(values, counting, 4, spec)
    assert counting.calls == 1  # one pass over the block, no windows
    assert np.isnan(probs[:, 7, 9]).all()

    alone = np.full_like(probs, np.nan)
    for y, x in itertools.product(range(24), range(40)):
        pixel = values[:, y : y + 1, x : x + 1]
        if np.isfinite(pixel).any():
            alone[:, y, x] = runner(fill_missing_pixelwise(pixel)[None])[0, :, 0, 0]
    # equal up to float32 reduction order (a 1x1 image and a 24x40 one take other kernels)
    np.testing.assert_allclose(probs, alone, rtol=0, atol=1e-4, equal_nan=True)
    valid = np.isfinite(alone[0])
    np.testing.assert_array_equal(probs[:, valid].argmax(0), alone[:, valid].argmax(0))
    # a fully missing pixel changes none of its neighbours
    assert np.isfinite(probs[:, 6:9, 8:11]).sum() == 4 * 8

    # the public API picks the per-pixel path for a pixelnet checkpoint (no window given)
    api = xsensei.cloudmask(
        values, descriptors=demo_desc, model=pixelnet_ckpt, output="probability"
    )
    np.testing.assert_array_equal(api, probs)


# --- runtime ---------------------------------------------------------------------------------


def test_in_memory_model_changed_in_place_is_not_served_stale(demo_desc) -> None:
    """Regression: the runner cache was keyed by ``id(model)``, so a model trained further
    in place kept being run with SEnSeI folded from its old weights."""
    import copy

    import torch

    from xsensei.nn.model import CloudMaskModel

    torch.manual_seed(3)
    model = CloudMaskModel("pixelnet")
    values = xsensei.demo_scene(32, seed=5).values
    kwargs = {"descriptors": demo_desc, "output": "probability"}
    before = xsensei.cloudmask(values, model=model, **kwargs)
    with torch.no_grad():
        for p in model.sensei.parameters():
            p.mul_(1.5)
    after = xsensei.cloudmask(values, model=model, **kwargs)
    fresh = xsensei.cloudmask(values, model=copy.deepcopy(model), **kwargs)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, fresh)
    # unchanged weights: the same key, so the cached runner is reused
    assert runtime.register_memory_model(model) == runtime.register_memory_model(model)


def test_cpu_convolutional_runners_are_channels_last(deeplab_ckpt, pixelnet_ckpt,
                                                      demo_desc) -> None:
    """On CPU a convolutional model runs in channels-last layout (faster through oneDNN) with
    the contiguous layout's probabilities; a model object handed over by the caller is not
    converted (a copy is), and the fused per-pixel net keeps its own layout."""
    import torch

    from xsensei.weights.checkpoint import load_model

    values = xsensei.demo_scene(64, seed=2).values
    kwargs = {"descriptors": demo_desc, "output": "probability"}
    runner = checkpoint_module(deeplab_ckpt, demo_desc)
    assert runner.channels_last
    conv = next(m for m in runner.modules()
                if isinstance(m, torch.nn.Conv2d) and max(m.kernel_size) > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    fast = xsensei.cloudmask(values, model=deeplab_ckpt, **kwargs)

    mine = load_model(deeplab_ckpt)  # as an object: converted as a copy only
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    via_object = xsensei.cloudmask(values, model=mine, **kwargs)
    for name, tensor in mine.state_dict().items():
        assert tensor.is_contiguous(), name
        assert torch.equal(tensor, before[name]), name
    np.testing.assert_allclose(via_object, fast, atol=1e-4)

    plain = load_model(deeplab_ckpt).for_bands(  # contiguous weights, NCHW input
        torch.as_tensor(xsensei.encode_wavelengths(demo_desc)))
    assert not getattr(plain, "channels_last", False)
    batch = random_scene(6, 64, 64)[None]
    np.testing.assert_allclose(runtime.run_batch(runner, batch, CPU, "fp32", 8),
                               runtime.run_batch(plain, batch, CPU, "fp32", 8), atol=1e-4)
    assert not getattr(checkpoint_module(pixelnet_ckpt, demo_desc), "channels_last", False)


def test_input_multiple_pads_windows_for_the_encoder(deeplab_ckpt, pixelnet_ckpt, demo_desc):
    deeplab = checkpoint_module(deeplab_ckpt, demo_desc)
    assert runtime.input_multiple(deeplab) == 8  # DeepLabv3+ at output stride 8
    assert runtime.input_multiple(checkpoint_module(pixelnet_ckpt, demo_desc)) == 1
    batch = random_scene(6, 50, 44)[None]
    probs = runtime.run_batch(deeplab, batch, CPU, "fp32", 8)
    assert probs.shape == (1, 4, 50, 44)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the same as running the mirrored 56 x 48 batch and cropping
    padded = np.pad(batch, ((0, 0), (0, 0), (0, 6), (0, 4)), mode="symmetric")
    full = runtime.run_batch(deeplab, padded, CPU, "fp32", 8)
    np.testing.assert_array_equal(probs, full[:, :, :50, :44])


def test_cloud_is_decided_before_the_class() -> None:
    """Thick + thin together beat clear: 'is it cloud?' is answered by its own probability."""
    from xsensei.engine.dask import cloud_first_class, first_argmax

    cloud = (False, True, True, False)  # clear, thick, thin, shadow
    pixels = np.array(
        [
            [0.40, 0.30, 0.30, 0.00],  # cloud 0.6 -> thick (first of the tied cloud classes)
            [0.40, 0.25, 0.35, 0.00],  # -> thin
            [0.50, 0.50, 0.00, 0.00],  # tie 0.5 / 0.5 -> not cloud
            [0.20, 0.10, 0.25, 0.45],  # not cloud 0.65 -> shadow
            [0.05, 0.90, 0.05, 0.00],  # plain cloud
            [np.nan] * 4,  # nodata: a not-cloud class, for the caller to mark
        ],
        dtype=np.float32,
    ).T.reshape(4, 2, 3)
    got = cloud_first_class(pixels, cloud)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.ravel(), [1, 2, 0, 3, 1, 0])
    assert first_argmax(pixels).ravel()[0] == 0  # what a plain argmax would have said
    # no cloud class (or only cloud classes): a plain argmax
    np.testing.assert_array_equal(cloud_first_class(pixels, (False,) * 4), first_argmax(pixels))
    np.testing.assert_array_equal(cloud_first_class(pixels, (True,) * 4), first_argmax(pixels))
