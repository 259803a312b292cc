"""xsensei.io.geotiff.to_cog: real COGs read back through rasterio."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from xsensei.engine.output import wrap_output
from xsensei.errors import InputError
from xsensei.io.geotiff import to_cog

# rioxarray (not xsensei) still multiplies Affine objects with `*` when reading back
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CLASSES = ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]
TRANSFORM = Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 4400000.0)


def make_mask(nt: int | None = 2, ny: int = 600, nx: int = 520, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    shape = (ny, nx) if nt is None else (nt, ny, nx)
    values = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=shape)
    coords = {
        "y": TRANSFORM.f + TRANSFORM.e * (np.arange(ny) + 0.5),
        "x": TRANSFORM.c + TRANSFORM.a * (np.arange(nx) + 0.5),
    }
    dims: tuple[str, ...] = ("y", "x")
    if nt is not None:
        coords["time"] = np.array(["2024-03-01T10:30", "2024-03-06T10:30"], "datetime64[ns]")[:nt]
        dims = ("time", "y", "x")
    template = xr.DataArray(np.zeros(shape, np.float32), dims=dims, coords=coords)
    template = template.rio.write_crs("EPSG:32618").rio.write_transform(TRANSFORM)
    chunks = (256, 256) if nt is None else (1, 256, 256)
    return wrap_output(
        da.from_array(values, chunks=chunks),
        template,
        kind="mask",
        classes=CLASSES,
        model_name="sensei-test",
        model_version="1.0",
    )


def test_cog_keeps_crs_transform_dtype_nodata_and_flags(tmp_path):
    mask = make_mask(nt=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = to_cog(mask, tmp_path / "mask.tif")
    assert path == tmp_path / "mask.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]  # no temp or .aux.xml left
    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        assert src.crs == CRS.from_epsg(32618)
        assert src.transform == TRANSFORM
        assert src.dtypes == ("uint8",)
        assert src.nodata == 255
        assert src.count == 1
        assert src.profile["tiled"] and src.overviews(1)
        assert src.tags()["flag_meanings"] == "clear thick_cloud thin_cloud cloud_shadow nodata"
        assert src.tags()["flag_values"] == "0 1 2 3 255"
        assert src.tags()["model_version"] == "1.0"
        np.testing.assert_array_equal(src.read(1), mask.values)
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
    assert layout == "COG"


def test_overviews_never_invent_classes(tmp_path):
    path = to_cog(make_mask(nt=None), tmp_path / "mask.tif")
    with rasterio.open(path) as src:
        overview = src.read(1, out_shape=(src.height // 2, src.width // 2))
    assert set(np.unique(overview)) <= {0, 1, 2, 3, 255}


def test_time_series_gives_one_band_per_date(tmp_path):
    mask = make_mask(nt=2)
    path = to_cog(mask, tmp_path / "series.tif")
    with rasterio.open(path) as src:
        assert src.count == 2
        assert src.descriptions == ("2024-03-01T10:30:00", "2024-03-06T10:30:00")
        assert src.tags(2)["time"] == "2024-03-06T10:30:00"
        np.testing.assert_array_equal(src.read(), mask.values)
    reread = rioxarray.open_rasterio(path)  # what a rioxarray user does
    assert reread.dtype == np.uint8 and reread.rio.nodata == 255
    assert reread.rio.crs == mask.rio.crs


@pytest.mark.parametrize("names", [("lat", "lon"), ("latitude", "longitude")])
def test_lat_lon_dims_keep_crs_and_transform(tmp_path, names):
    """rioxarray finds only y/x and latitude/longitude itself; lat/lon masks must write too."""
    yx = make_mask(nt=2, ny=40, nx=30, seed=3)
    mask = yx.rename(y=names[0], x=names[1])
    assert mask.dims == ("time", *names)
    path = to_cog(mask, tmp_path / "mask.tif")
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_epsg(32618)
        assert src.transform == TRANSFORM
        assert (src.count, src.height, src.width) == (2, 40, 30)
        np.testing.assert_array_equal(src.read(), yx.values)
    # (x, y) order is transposed before writing: same file content
    flipped = to_cog(mask.isel(time=0).transpose(), tmp_path / "flipped.tif")
    with rasterio.open(flipped) as src:
        assert src.crs == CRS.from_epsg(32618) and src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), yx.values[0])


def test_refuses_to_overwrite_unless_told(tmp_path):
    path = to_cog(make_mask(nt=None, seed=1), tmp_path / "mask.tif")
    first = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True") as err:
        to_cog(make_mask(nt=None, seed=2), path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == first
    to_cog(make_mask(nt=None, seed=2), path, overwrite=True)
    assert path.read_bytes() != first


def test_refuses_4d_and_missing_crs(tmp_path):
    prob = wrap_output(
        np.zeros((2, 3, 20, 20), np.float32),
        make_mask(nt=2, ny=20, nx=20),
        kind="probability",
        classes=["clear", "cloud", "cloud_shadow"],
        model_name="m",
        model_version="1",
    )
    with pytest.raises(InputError, match=r"isel\(time=0\)"):
        to_cog(prob, tmp_path / "p.tif")
    with pytest.raises(InputError, match="no CRS"):
        to_cog(xr.DataArray(np.zeros((4, 4), np.uint8), dims=("y", "x")), tmp_path / "n.tif")
    assert list(tmp_path.iterdir()) == []
