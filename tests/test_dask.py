"""The lazy path: chunk independence, graph hygiene, model caching, schedulers."""

from __future__ import annotations

import itertools
import pickle
import threading
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import xsensei
from xsensei.engine import runtime
from xsensei.engine.tiling import WindowSpec, window_starts
from xsensei.errors import InputError
from xsensei.nn.model import CloudMaskModel
from xsensei.nn.segmenters import PixelNet
from xsensei.weights.checkpoint import save_model

# --- helpers -------------------------------------------------------------------------------


def agreement(probs: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """How far ``probs`` is from ``ref`` (both (C, Y, X), no nodata): masks and probabilities."""
    assert probs.shape == ref.shape
    same = probs.argmax(axis=0) == ref.argmax(axis=0)
    diff = np.abs(probs.astype(np.float64) - ref)
    return {
        "identical": float(same.mean()),
        "n_differ": int((~same).sum()),
        "max_diff": float(diff.max()),
        "max_diff_where_differ": float(diff[:, ~same].max()) if (~same).any() else 0.0,
    }


def assert_close(stats: dict[str, float], *, identical: float = 0.999, tol: float = 1e-3):
    assert stats["identical"] >= identical, stats
    assert stats["max_diff_where_differ"] <= tol, stats
    assert stats["max_diff"] <= tol, stats


@pytest.fixture(scope="module")
def scene512() -> xr.DataArray:
    return xsensei.demo_scene(512, seed=0)


@pytest.fixture(scope="module")
def ref512(scene512, deeplab_ckpt, demo_desc) -> np.ndarray:
    """The numpy-path probabilities of the 512 px scene, default window (256) and overlap."""
    return xsensei.cloudmask(
        scene512.values, descriptors=demo_desc, model=deeplab_ckpt, output="probability"
    )


class CountingPixelNet(PixelNet):
    """A real segmenter that counts its forward passes (thread-safe)."""

    def __init__(self) -> None:
        super().__init__(in_channels=64, classes=4)
        self.calls = 0
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.calls += 1
        return super().forward(x)


# --- determinism (the acceptance test) ---------------------------------------------------------


@pytest.mark.slow
def test_mask_is_chunk_and_batch_independent_2048(deeplab_ckpt, demo_desc, capsys) -> None:
    """Default mask on a 2048 px scene: the same under any chunking, batch size, band order."""
    scene = xsensei.demo_scene(2048, seed=0)
    values = scene.values
    kwargs = {"model": deeplab_ckpt, "output": "probability"}
    timings: dict[str, float] = {}

    def run(name: str, fn) -> np.ndarray:
        start = time.perf_counter()
        out = np.asarray(fn())
        timings[name] = time.perf_counter() - start
        return out

    ref = run("numpy, batch 8", lambda: xsensei.cloudmask(values, descriptors=demo_desc, **kwargs))
    assert ref.shape == (4, 2048, 2048) and ref.dtype == np.float32
    mask = ref.argmax(axis=0)
    fractions = np.bincount(mask.ravel(), minlength=4) / mask.size
    rule = np.where(values.mean(axis=0) > 0.3, 1, np.where(values.mean(axis=0) < 0.06, 3, 0))
    rule_agreement = float((mask == rule).mean())
    # a meaningful, non-degenerate mask: the fixture model follows its training rule
    assert 0.05 < fractions[1] < 0.95, fractions
    assert rule_agreement > 0.9

    def lazy(chunks: dict[str, int]):
        return lambda: xsensei.cloudmask(scene.chunk(chunks), descriptors=demo_desc, **kwargs)

    perm = [3, 0, 5, 1, 4, 2]
    cases = {
        "chunks 512": lazy({"y": 512, "x": 512}),
        "chunks 1024": lazy({"y": 1024, "x": 1024}),
        "chunks 768 x 1280": lazy({"y": 768, "x": 1280}),
        "numpy, batch 1": lambda: xsensei.cloudmask(
            values, descriptors=demo_desc, batch_size=1, **kwargs
        ),
        "numpy, bands permuted": lambda: xsensei.cloudmask(
            values[perm], descriptors=demo_desc[perm], **kwargs
        ),
    }
    results = {name: agreement(run(name, fn), ref) for name, fn in cases.items()}

    lines = [
        "",
        f"determinism, 2048 x 2048 x 6, DeepLabv3+ fixture model, window 256 / overlap 64; "
        f"reference = numpy call, batch 8 ({timings['numpy, batch 8']:.1f} s); class fractions "
        + ", ".join(f"{f:.4f}" for f in fractions)
        + f"; agreement with the brightness rule {rule_agreement:.2%}",
    ]
    for name, st in results.items():
        lines.append(
            f"  {name:<22} identical {st['identical']:.6%} ({st['n_differ']} px differ), "
            f"max |dp| {st['max_diff']:.2e}, max |dp| where masks differ "
            f"{st['max_diff_where_differ']:.2e}  [{timings[name]:.1f} s]"
        )
    with capsys.disabled():
        print("\n".join(lines))
    for st in results.values():
        assert_close(st)


# --- graph building -------------------------------------------------------------------------


def test_building_the_graph_runs_no_model(demo_desc) -> None:
    """``meta=``/``chunks=`` are given: no forward pass (and no load) until compute."""
    torch.manual_seed(1)
    segmenter = CountingPixelNet()
    model = CloudMaskModel(segmenter=segmenter)
    scene = xsensei.demo_scene(256, seed=5).chunk({"y": 128, "x": 128})
    loads = runtime.LOAD_COUNT
    mask = xsensei.cloudmask(scene, descriptors=demo_desc, model=model, window=64, overlap=16)
    probs = xsensei.cloudmask(
        scene, descriptors=demo_desc, model=model, window=64, overlap=16, output="probability"
    )
    assert segmenter.calls == 0
    assert runtime.LOAD_COUNT == loads
    assert mask.dtype == np.uint8 and mask.data._meta.dtype == np.uint8
    assert mask.data.chunks == ((128, 128), (128, 128))
    assert probs.dtype == np.float32 and probs.data.chunks == ((4,), (128, 128), (128, 128))
    assert probs.dims == ("class", "y", "x")

    out = mask.compute(scheduler="threads")
    spec = WindowSpec(size=64, overlap=16)
    expected = sum(
        -(
            -len(window_starts(y, y + 128, 256, spec))
            * len(window_starts(x, x + 128, 256, spec))
            // 4
        )  # batches of 4 windows (the default batch_size) per chunk
        for y, x in itertools.product((0, 128), repeat=2)
    )
    assert expected == 12  # 9 windows per chunk: 3 batches
    assert segmenter.calls == expected
    assert np.isin(out.values, [0, 1, 2, 3]).all()


# zarr v3 warns about the band names' string dtype and consolidated metadata
def test_two_masks_in_one_graph_keep_their_own_keys(deeplab_ckpt, pixelnet_ckpt, demo_desc):
    """Regression: the engine named its output layer verbatim, so masks computed together
    (``dask.compute(a, b)``, ``xr.merge``) shared keys and both got the blocks of one."""
    scene = xsensei.demo_scene(256, seed=12).chunk({"y": 256, "x": 256})
    kwargs = {"descriptors": demo_desc, "output": "probability"}
    a = xsensei.cloudmask(scene, model=deeplab_ckpt, **kwargs)
    b = xsensei.cloudmask(scene, model=pixelnet_ckpt, **kwargs)
    assert a.data.name != b.data.name
    together = dask.compute(a.data, b.data, scheduler="threads")
    alone = [a.values, b.values]
    assert np.abs(alone[0] - alone[1]).max() > 0.01  # two different models
    for t, s in zip(together, alone, strict=True):
        np.testing.assert_array_equal(t, s)
    # the same mask built twice is the same graph (dask deduplicates it)
    again = xsensei.cloudmask(scene, model=deeplab_ckpt, **kwargs)
    assert again.data.name == a.data.name


@pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")
def test_weights_never_travel_inside_the_graph(tmp_path, deeplab_ckpt, demo_desc) -> None:
    store = tmp_path / "scene.zarr"
    scene = xsensei.demo_scene(512, seed=0).chunk({"y": 128, "x": 128})
    scene.to_dataset(name="reflectance").to_zarr(store)
    lazy = xr.open_zarr(store)["reflectance"]
    mask = xsensei.cloudmask(
        lazy, descriptors=demo_desc, model=str(deeplab_ckpt), window=64, overlap=16
    )
    assert mask.data.npartitions == 16
    graph = dict(mask.data.__dask_graph__())
    graph_bytes = len(pickle.dumps(graph))
    weights_bytes = Path(deeplab_ckpt).stat().st_size
    print(f"graph {graph_bytes} B for 16 chunks, weights {weights_bytes} B")
    assert weights_bytes > 5_000_000
    assert graph_bytes < 200_000
    assert weights_bytes / graph_bytes > 50


def test_model_is_loaded_once_per_process(tmp_path, demo_desc) -> None:
    torch.manual_seed(2)  # a checkpoint no other test loaded: its first load must count
    path = save_model(CloudMaskModel("pixelnet"), tmp_path / "fresh.safetensors")
    scene = xsensei.demo_scene(512, seed=6).chunk({"y": 128, "x": 128})
    before = runtime.LOAD_COUNT
    mask = xsensei.cloudmask(scene, descriptors=demo_desc, model=path)
    assert mask.data.npartitions == 16
    assert runtime.LOAD_COUNT == before
    with dask.config.set(scheduler="threads", num_workers=4):
        first = mask.values
        assert runtime.LOAD_COUNT == before + 1
        again = xsensei.cloudmask(scene, descriptors=demo_desc, model=path).values
    assert runtime.LOAD_COUNT == before + 1
    np.testing.assert_array_equal(first, again)


# --- chunk shapes ------------------------------------------------------------------------------


def test_chunks_smaller_than_the_halo_are_merged(scene512, ref512, demo_desc, deeplab_ckpt):
    lazy = scene512.chunk({"y": 100, "x": 100})
    probs = xsensei.cloudmask(lazy, descriptors=demo_desc, model=deeplab_ckpt, output="probability")
    assert probs.shape == (4, 512, 512)
    assert all(min(c) >= 256 for c in probs.data.chunks[1:])
    assert_close(agreement(probs.values, ref512), identical=1.0, tol=1e-5)


def test_band_dim_split_over_chunks(scene512, ref512, demo_desc, deeplab_ckpt) -> None:
    lazy = scene512.chunk({"band": 2, "y": 512, "x": 512})
    assert lazy.data.numblocks[0] == 3
    probs = xsensei.cloudmask(lazy, descriptors=demo_desc, model=deeplab_ckpt, output="probability")
    assert_close(agreement(probs.values, ref512), identical=1.0, tol=1e-5)


def test_per_pixel_model_under_chunks(scene512, demo_desc, pixelnet_ckpt) -> None:
    ref = xsensei.cloudmask(scene512.values, descriptors=demo_desc, model=pixelnet_ckpt)
    lazy = scene512.chunk({"y": 100, "x": 200})
    mask = xsensei.cloudmask(lazy, descriptors=demo_desc, model=pixelnet_ckpt)
    assert mask.data.chunks == lazy.data.chunks[1:]  # no halo, no rechunk
    np.testing.assert_array_equal(mask.values, ref)
    assert 0.2 < (ref == 1).mean() < 0.8


def test_window_not_a_multiple_of_the_output_stride(deeplab_ckpt, demo_desc) -> None:
    """Regression: DeepLabv3+ refuses sides that are not a multiple of 8; a 100 px window
    failed inside every task. Windows are now mirrored up to the multiple and cropped."""
    scene = xsensei.demo_scene(256, seed=13)
    kwargs = {
        "descriptors": demo_desc,
        "model": deeplab_ckpt,
        "window": 100,
        "output": "probability",
    }
    ref = xsensei.cloudmask(scene.values, **kwargs)
    lazy = xsensei.cloudmask(scene.chunk({"y": 128, "x": 128}), **kwargs)
    assert lazy.data.npartitions == 4  # halo 100 fits chunks of 128: no rechunk
    assert_close(agreement(lazy.values, ref), identical=1.0, tol=1e-4)


# --- resolution --------------------------------------------------------------------------------


def test_resolution_runs_coarse_and_returns_the_native_grid(deeplab_ckpt, demo_desc) -> None:
    scene = xsensei.demo_scene(512, seed=7)  # 30 m
    kwargs = {"descriptors": demo_desc, "model": deeplab_ckpt, "output": "probability"}
    outs = {
        c: xsensei.cloudmask(scene.chunk({"y": c, "x": c}), resolution=60, **kwargs)
        for c in (256, 384)
    }
    out = outs[256]
    assert out.shape == (4, 512, 512)
    np.testing.assert_array_equal(out.y.values, scene.y.values)
    np.testing.assert_array_equal(out.x.values, scene.x.values)
    assert out.rio.crs == scene.rio.crs
    assert out.rio.resolution() == scene.rio.resolution()
    fine = {c: o.values for c, o in outs.items()}

    coarse = np.nanmean(scene.values.reshape(6, 256, 2, 256, 2), axis=(2, 4))
    expected = xsensei.cloudmask(coarse, **kwargs)
    expected = expected.repeat(2, axis=1).repeat(2, axis=2)
    assert_close(agreement(fine[256], expected), identical=1.0, tol=1e-4)
    assert_close(agreement(fine[384], fine[256]), identical=1.0, tol=1e-4)
    # nearest-neighbour refinement: every 2x2 block is constant
    mask = fine[256].argmax(axis=0)
    assert (mask[::2, ::2] == mask[1::2, 1::2]).all()
    assert (mask[::2, ::2] == mask[::2, 1::2]).all()


def test_resume_refuses_a_mask_made_with_other_inference_settings(
    tmp_path: Path, pixelnet_ckpt, demo_desc
) -> None:
    """The mask records what else changes it (``attrs["inference"]``), so finishing a zarr job
    with another ``resolution=`` or window raises instead of mixing two masks in one cube."""
    from xsensei.io.zarr import ResumeMismatchError

    scene = xsensei.demo_scene(128, seed=3).chunk({"y": 64, "x": 64})  # 30 m
    kwargs = {"descriptors": demo_desc, "model": pixelnet_ckpt}
    native = xsensei.cloudmask(scene, **kwargs)
    coarse = xsensei.cloudmask(scene, resolution=60, **kwargs)
    windowed = xsensei.cloudmask(scene, window=64, overlap=16, **kwargs)
    assert native.attrs["inference"] == "per pixel; native grid; precision auto; partial fill"
    assert coarse.attrs["inference"] == (
        "per pixel; model grid 2x coarser; precision auto; partial fill")
    assert windowed.attrs["inference"].startswith("window 64 overlap 16 blend cosine; native grid")
    store = tmp_path / "mask.zarr"
    xsensei.to_zarr(native, store, progress=False)
    assert xsensei.to_zarr(native, store, resume=True, progress=False).chunks_skipped == 4
    for other in (coarse, windowed):
        with pytest.raises(ResumeMismatchError, match="inference: store has 'per pixel; native"):
            xsensei.to_zarr(other, store, resume=True, progress=False)
    np.testing.assert_array_equal(xr.open_zarr(store)["cloud_mask"].values, native.values)


def test_resolution_refuses_degrees_and_non_square_pixels(pixelnet_ckpt, demo_desc) -> None:
    """resolution= is metres and one factor for both axes: a grid in degrees (0.00027 deg ~
    30 m would be "coarsened" 222,222x) or of 10 x 30 m pixels is refused, not guessed."""
    scene = xsensei.demo_scene(64, seed=3)
    kwargs = {"descriptors": demo_desc, "model": pixelnet_ckpt, "resolution": 60}
    step = 0.00027
    geo = scene.assign_coords(y=45.0 - step * (np.arange(64) + 0.5),
                              x=11.0 + step * (np.arange(64) + 0.5)).rio.write_crs("EPSG:4326")
    with pytest.raises(InputError, match=r"metres, but the grid's CRS \(EPSG:4326\) is in "
                                         r"degrees.*reproject"):
        xsensei.cloudmask(geo, **kwargs)
    y0 = float(scene.y[0])
    tall = scene.assign_coords(y=y0 - 30.0 * np.arange(64), x=scene.x.values[0] + 10.0 *
                               np.arange(64))
    with pytest.raises(InputError, match=r"square pixels, but they are 10 x 30"):
        xsensei.cloudmask(tall, **kwargs)
    assert xsensei.cloudmask(geo, descriptors=demo_desc, model=pixelnet_ckpt).shape == (64, 64)


def test_resume_refuses_a_mask_of_other_scaling_or_wavelengths(
    tmp_path: Path, pixelnet_ckpt, demo_desc
) -> None:
    """A corrected offset, nodata or band description makes another mask: resume refuses it
    instead of keeping the chunks computed with the old one."""
    from xsensei.io.zarr import ResumeMismatchError

    scene = xsensei.demo_scene(128, seed=3)
    dn = ((scene + 0.1) / 1e-4).round().astype("uint16").chunk({"y": 64, "x": 64})
    kwargs = {"model": pixelnet_ckpt, "scale": 1e-4}
    first = xsensei.cloudmask(dn, descriptors=demo_desc, offset=0.0, **kwargs)  # forgot -0.1
    fixed = xsensei.cloudmask(dn, descriptors=demo_desc, offset=-0.1, **kwargs)
    assert first.attrs["input_scaling"] == "scale 0.0001 offset 0 (explicit); nodata none"
    assert fixed.attrs["input_scaling"] == "scale 0.0001 offset -0.1 (explicit); nodata none"
    assert (first.values != fixed.values).any()
    store = tmp_path / "mask.zarr"
    xsensei.to_zarr(first, store, progress=False)
    with pytest.raises(ResumeMismatchError, match="input_scaling: store has 'scale 0.0001 "
                                                  "offset 0 "):
        xsensei.to_zarr(fixed, store, resume=True, progress=False)
    nodata = xsensei.cloudmask(dn, descriptors=demo_desc, offset=0.0, nodata=0, **kwargs)
    with pytest.raises(ResumeMismatchError, match="input_scaling"):
        xsensei.to_zarr(nodata, store, resume=True, progress=False)
    shifted = np.asarray(demo_desc, dtype=float).copy()
    shifted[3] += 20.0  # NIR described 20 nm off
    moved = xsensei.cloudmask(dn, descriptors=shifted, offset=0.0, **kwargs)
    with pytest.raises(ResumeMismatchError, match="input_wavelengths_nm: store has"):
        xsensei.to_zarr(moved, store, resume=True, progress=False)
    np.testing.assert_array_equal(xr.open_zarr(store)["cloud_mask"].values, first.values)
    assert xsensei.to_zarr(first, store, resume=True, progress=False).chunks_skipped == 4


def test_resolution_says_when_it_cannot_honour_the_request(deeplab_ckpt, demo_desc) -> None:
    """xsensei only coarsens, by whole pixels: a finer or off-multiple request warns with the
    pixel size the model actually runs at; an impossible one raises."""
    scene = xsensei.demo_scene(128, seed=7).chunk({"y": 64, "x": 64})  # 30 m
    kwargs = {"descriptors": demo_desc, "model": deeplab_ckpt}
    native = xsensei.cloudmask(scene, **kwargs).values
    with pytest.warns(UserWarning, match=r"resolution=15 m is finer than the data's grid.*"
                                         r"runs at 30 m.*pass resolution=30"):
        fine = xsensei.cloudmask(scene, resolution=15, **kwargs)
    np.testing.assert_array_equal(fine.values, native)
    with pytest.warns(UserWarning, match=r"resolution=45 m is not a whole multiple.*runs at 60 m"):
        off = xsensei.cloudmask(scene, resolution=45, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = xsensei.cloudmask(scene, resolution=60, **kwargs)
        near = xsensei.cloudmask(scene, resolution=np.float32(31.0), **kwargs)  # within 10 %
    np.testing.assert_array_equal(off.values, exact.values)
    np.testing.assert_array_equal(near.values, native)
    for bad in (0, -30, float("nan"), "20 m"):
        with pytest.raises(InputError, match="resolution= must be a positive pixel size"):
            xsensei.cloudmask(scene, resolution=bad, **kwargs)


# --- input layouts ---------------------------------------------------------------------------


def test_time_band_y_x_gives_time_y_x(deeplab_ckpt, demo_desc) -> None:
    scenes = [xsensei.demo_scene(256, seed=s) for s in (8, 9)]
    cube = xr.concat(scenes, dim="time").assign_coords(
        time=np.array(["2024-01-01", "2024-01-17"], dtype="datetime64[ns]")
    )
    cube = cube.chunk({"time": 1, "y": 256, "x": 256})
    mask = xsensei.cloudmask(cube, descriptors=demo_desc, model=deeplab_ckpt)
    assert mask.dims == ("time", "y", "x")
    assert mask.shape == (2, 256, 256)
    np.testing.assert_array_equal(mask.time.values, cube.time.values)
    values = mask.values
    for t, scene in enumerate(scenes):
        alone = xsensei.cloudmask(scene.values, descriptors=demo_desc, model=deeplab_ckpt)
        np.testing.assert_array_equal(values[t], alone)
    assert not np.array_equal(values[0], values[1])


def test_dataset_of_bands_equals_dataarray(deeplab_ckpt, demo_desc) -> None:
    scene = xsensei.demo_scene(256, seed=10)
    bare = scene.drop_vars(["center_wavelength", "full_width_half_max"])
    ds = xr.Dataset({str(b): bare.sel(band=b, drop=True) for b in scene.band.values})
    assert list(ds.data_vars) == list(scene.band.values)
    from_ds = xsensei.cloudmask(
        ds.chunk({"y": 256, "x": 256}), descriptors=demo_desc, model=deeplab_ckpt
    )
    from_da = xsensei.cloudmask(scene, descriptors=demo_desc, model=deeplab_ckpt)
    assert from_ds.dims == ("y", "x") and from_ds.dtype == np.uint8
    np.testing.assert_array_equal(from_ds.values, from_da.values)
    assert from_ds.rio.crs == scene.rio.crs


# --- distributed ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port 8787", "ignore:Consolidated metadata")
def test_distributed_equals_threaded(tmp_path, deeplab_ckpt, demo_desc, capsys) -> None:
    """A (time, y, x) cube written to zarr by 2 worker processes equals the threaded one."""
    distributed = pytest.importorskip("distributed")
    cube = xr.concat([xsensei.demo_scene(256, seed=s) for s in (11, 14)], dim="time")
    cube = cube.assign_coords(time=np.array(["2024-03-01", "2024-03-06"], "datetime64[ns]"))
    cube = cube.chunk({"time": 1, "y": 128, "x": 128})
    mask = xsensei.cloudmask(
        cube, descriptors=demo_desc, model=str(deeplab_ckpt), window=64, overlap=16
    )
    assert mask.data.numblocks == (2, 2, 2)
    threaded = mask.compute(scheduler="threads").values
    reports = {"threads": xsensei.to_zarr(mask, tmp_path / "threads.zarr", scheduler="threads")}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        )
    with cluster, distributed.Client(cluster) as client:
        start = time.perf_counter()
        reports["distributed"] = xsensei.to_zarr(
            mask, tmp_path / "distributed.zarr", scheduler=client
        )
        elapsed = time.perf_counter() - start
        loads = client.run(getattr, runtime, "LOAD_COUNT")  # each worker's own counter

    stored = {
        name: xr.open_zarr(tmp_path / f"{name}.zarr", decode_coords="all")
        for name in ("threads", "distributed")
    }
    arrays = {name: ds[mask.name].values for name, ds in stored.items()}
    with capsys.disabled():
        print(
            f"\ndistributed: 2 worker processes wrote the zarr cube in {elapsed:.1f} s, model "
            f"loads per worker {sorted(loads.values())}, stored pixels identical to the "
            f"threaded store: {float((arrays['distributed'] == arrays['threads']).mean()):.6%}"
        )
    assert all(r.chunks_written == 8 for r in reports.values())
    # each worker that ran tasks loaded the weights exactly once (both do, in practice)
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1
    assert arrays["threads"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["threads"], threaded)
    np.testing.assert_array_equal(arrays["distributed"], arrays["threads"])
    np.testing.assert_array_equal(
        stored["distributed"]["cloud_fraction"].values, stored["threads"]["cloud_fraction"].values
    )
    assert 0.05 < float(stored["threads"]["cloud_fraction"].values.min()) < 0.95
