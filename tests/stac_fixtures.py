"""Shared set-up of the STAC tests: the catalog, the running STAC API and a fixture model.

Built once per pytest process (both STAC test modules use it) and torn down at exit. The test
catalog is written from the real scenes in ``../shared`` by
:func:`xsensei.testing.stac_server.build_catalog`; the STAC API is ``stac-fastapi-static`` in a
uvicorn subprocess on 127.0.0.1.

The fixture model is a seeded, untrained PixelNet whose last 1x1 layer is fitted (logistic
regression on frozen random features, as in ``conftest.py``) to a simple brightness rule on the
two test band sets, so that masks hold several classes and equality checks mean something.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from xsensei.testing.stac_server import (
    L1_OFFSET,
    L1_SCALE,
    LANDSAT_BANDS,
    S2_BANDS,
    S2_OFFSET,
    S2_SCALE,
    S2_STAC11_NO_WAVELENGTH,
    ST_OFFSET,
    ST_SCALE,
    StacServer,
    TestCatalog,
    build_catalog,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
S2_10, S2_11, LANDSAT, FAULTY = (
    "sentinel-2-l1c", "sentinel-2-c1-l1c", "landsat-c2-l1", "sentinel-2-l1c-faulty",
)

needs_data = pytest.mark.skipif(
    not (SHARED / "data" / "real" / "eo-learn" / "REFERENCE_SCENES.npy").exists(),
    reason="needs ../shared/data/real",
)


@dataclass
class StacEnv:
    """The running test STAC API over the test catalog, and the fixture model checkpoint."""

    catalog: TestCatalog
    server: StacServer
    model: Path

    @property
    def url(self) -> str:
        return self.server.url


_ENV: StacEnv | None = None


def stac_env(tmp_path_factory: pytest.TempPathFactory) -> StacEnv:
    """Build the catalog, start the API and fit the model, once per test process."""
    global _ENV
    if _ENV is None:
        root = tmp_path_factory.mktemp("stac")
        catalog = build_catalog(root / "catalog", SHARED, faulty=True)
        server = StacServer(catalog.catalog).start()
        atexit.register(server.stop)
        model = fit_pixelnet(root / "pixelnet-stac.safetensors")
        _ENV = StacEnv(catalog, server, model)
    return _ENV


# --------------------------------------------------------------------------------------------
# band tables: what the direct (non-STAC) path needs to know about each collection


def keys_of(collection: str) -> list[str]:
    """Asset keys in the order xsensei stacks them (by wavelength)."""
    if collection == LANDSAT:
        bands = sorted(LANDSAT_BANDS, key=lambda b: b.center_um)
        return [b.key for b in bands]
    bands = sorted(S2_BANDS, key=lambda b: b.center_um)
    return [b.common_key if collection == S2_11 else b.key for b in bands]


def descriptors_of(collection: str) -> np.ndarray:
    """(N, 3) nm in :func:`keys_of` order, as the catalog's metadata (or catalogue) gives them."""
    from xsensei.sensors import get_sensor

    if collection == LANDSAT:
        return np.array([b.descriptor_nm for b in sorted(LANDSAT_BANDS,
                                                         key=lambda b: b.center_um)])
    rows = []
    for band in sorted(S2_BANDS, key=lambda b: b.center_um):
        if collection == S2_11 and band.common_key == S2_STAC11_NO_WAVELENGTH:
            info = get_sensor("sentinel-2a").band(band.key)
            rows.append((info.wl_min_nm, info.wl_center_nm, info.wl_max_nm))
        else:
            rows.append(band.descriptor_nm)
    return np.array(rows, dtype=np.float64)


def scale_offset_of(collection: str) -> tuple[list[float], list[float]]:
    """Per band DN scale and offset, :func:`keys_of` order."""
    if collection == LANDSAT:
        bands = sorted(LANDSAT_BANDS, key=lambda b: b.center_um)
        thermal = [b.center_um > 5 for b in bands]
        return ([ST_SCALE if t else L1_SCALE for t in thermal],
                [ST_OFFSET if t else L1_OFFSET for t in thermal])
    return [S2_SCALE] * len(S2_BANDS), [S2_OFFSET] * len(S2_BANDS)


def direct_stack(cat: TestCatalog, collection: str, chunks: int = 64) -> xr.DataArray:
    """(time, band, y, x) uint16 DN read straight from the COG files with rioxarray."""
    import rioxarray

    times = []
    for item in cat.items[collection]:
        bands = [
            rioxarray.open_rasterio(cat.asset_path(collection, item, key),
                                    chunks={"x": chunks, "y": chunks}).squeeze("band", drop=True)
            for key in keys_of(collection)
        ]
        times.append(xr.concat(bands, dim="band").assign_coords(band=keys_of(collection)))
    return xr.concat(times, dim="time")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread here, as Dask nanny workers do, and restore the count after.

    Float reductions (SEnSeI's band folding) round differently with another thread count, which
    flips the argmax of a few near-tie pixels; with equal counts results are bit-identical.
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def direct_mask(cat: TestCatalog, collection: str, model: Path) -> np.ndarray:
    """The accessor's mask of the same files, bands, wavelengths and scaling (threads)."""
    import xsensei  # noqa: F401  (registers .sensei)

    scale, offset = scale_offset_of(collection)
    mask = direct_stack(cat, collection).sensei.cloudmask(
        descriptors_of(collection), model=model, scale=scale, offset=offset,
        sensor="landsat-8" if collection == LANDSAT else "sentinel-2a", torch_threads=1,
    )
    with one_torch_thread():
        return np.asarray(mask.compute(scheduler="threads").values)


def done_count(store: Path) -> int:
    """Chunks recorded done in a store's manifest (one file per done chunk; 0 is never written).

    zarr's local store writes ``<chunk>.<uuid>.partial`` and renames it; a process killed in
    between leaves that file behind, and it is not a done chunk.
    """
    root = store / "_xsensei" / "done" / "c"
    if not root.exists():
        return 0
    return sum(not f.endswith(".partial") for _, _, files in os.walk(root) for f in files)


# --------------------------------------------------------------------------------------------
# the fixture model


def _model_inputs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(model-unit values (N, H, W), descriptors nm) samples of both test band sets."""
    import rasterio

    from xsensei.radiometry import normalise_brightness_temperature

    scenes = np.load(SHARED / "data" / "real" / "eo-learn" / "REFERENCE_SCENES.npy")
    order = [int(b.source) for b in sorted(S2_BANDS, key=lambda b: b.center_um)]
    samples = [(scenes[t][:, :, order].transpose(2, 0, 1)[:, ::2, ::2],
                descriptors_of(S2_10)) for t in range(len(scenes))]
    folder = SHARED / "data" / "real" / "landsat8-rio-cloudmask"
    planes = []
    for band in sorted(LANDSAT_BANDS, key=lambda b: b.center_um):
        with rasterio.open(folder / f"LC80130312015295LGN00_{band.source}_toa.tif") as src:
            values = src.read(1)[::4, ::4].astype(np.float64)
        if band.center_um > 5:
            lo, hi = (132.0, 249.0) if band.key == "lwir11" else (127.0, 239.0)
            values = normalise_brightness_temperature(values + 273.15, lo, hi)
        planes.append(values)
    landsat = np.stack(planes)
    valid = np.isfinite(landsat).all(0) & (landsat[0] > 0)
    landsat[:, ~valid] = 0.0
    samples.append((landsat, descriptors_of(LANDSAT)))
    return [(np.nan_to_num(x).astype(np.float32), d) for x, d in samples]


def fit_pixelnet(path: Path) -> Path:
    """A seeded PixelNet, last layer fitted: mean reflective > 0.2 cloud, < 0.1 shadow.

    The fit is ridge regression of one-hot labels on the standardised frozen features (closed
    form, no optimiser), which is enough for masks with several classes.
    """
    from xsensei.descriptors import encode_wavelengths
    from xsensei.nn.model import CloudMaskModel
    from xsensei.weights.checkpoint import save_model

    torch.manual_seed(0)
    model = CloudMaskModel("pixelnet").eval()
    head: nn.Conv2d = model.segmenter.net[-1]
    feats, labels = [], []
    for values, desc in _model_inputs():
        enc = torch.as_tensor(encode_wavelengths(desc), dtype=torch.float32)
        got: dict[str, Any] = {}

        def keep(module: nn.Module, inputs: Any, output: Any, got: dict[str, Any] = got) -> None:
            got["x"] = inputs[0].detach()

        hook = head.register_forward_hook(keep)
        with torch.no_grad():  # the full forward: for_bands fuses PixelNet's layers away
            model(torch.from_numpy(values)[None], enc[None])
        hook.remove()
        feats.append(got["x"][0].reshape(got["x"].shape[1], -1).T.double().numpy())
        reflective = values[desc[:, 1] < 3000].mean(0).reshape(-1)
        y = np.zeros(reflective.shape, dtype=np.int64)
        y[reflective > 0.2] = 1  # thick_cloud
        y[reflective < 0.1] = 3  # cloud_shadow
        labels.append(y)
    x, y = np.concatenate(feats), np.concatenate(labels)
    mu, sd = x.mean(0), x.std(0)
    sd = np.maximum(sd, 1e-2 * sd.max())
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    target = np.eye(head.out_channels)[y]
    coef = np.linalg.solve(z.T @ z + 1e-3 * np.eye(z.shape[1]), z.T @ target)  # (C + 1, K)
    w = coef[:-1].T / sd  # fold the standardisation into the head
    b = coef[-1] - w @ mu
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w)[:, :, None, None])
        head.bias.copy_(torch.from_numpy(b))
    return save_model(model, path, name="pixelnet-stac-fixture", trained=False, overwrite=True,
                      provenance={"data": "head fitted to a brightness rule; not a cloud mask"})
