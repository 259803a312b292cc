"""xsensei.engine.output: flags, attrs, coords and CRS of wrapped engine arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine

import xsensei
from xsensei.engine.output import NODATA, mask_attrs, wrap_output
from xsensei.errors import InputError

# rioxarray (not xsensei) still multiplies Affine objects with `*` when recomputing transforms
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 4500000.0)
FOUR = ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]


def stackstac_like(nt: int = 2, ny: int = 20, nx: int = 30) -> xr.DataArray:
    """(time, band, y, x) reflectance with stackstac's band coords, item coords and attrs."""
    times = np.array(["2024-06-01T15:40", "2024-06-04T15:50"], "datetime64[ns]")[:nt]
    img = xr.DataArray(
        da.random.random((nt, 3, ny, nx), chunks=(1, 3, 10, 10)).astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": ["B04", "B03", "B02"],
            "y": TRANSFORM.f + TRANSFORM.e * (np.arange(ny) + 0.5),
            "x": TRANSFORM.c + TRANSFORM.a * (np.arange(nx) + 0.5),
            "common_name": ("band", np.array(["red", "green", "blue"], dtype=object)),
            "center_wavelength": ("band", [0.665, 0.56, 0.49]),
            "id": ("time", np.array(["S2B_18TWL_1", "S2A_18TWL_2"], dtype=object)[:nt]),
            "eo:cloud_cover": ("time", [12.5, 80.1][:nt]),
            "epsg": 32618,
        },
        attrs={"spec": "RasterSpec(epsg=32618, ...)", "scale_factor": 1e-4, "units": "DN"},
    )
    return img.rio.write_crs("EPSG:32618").rio.write_transform(TRANSFORM)


@pytest.mark.parametrize(
    ("classes", "values", "meanings"),
    [
        (FOUR, [0, 1, 2, 3, 255], "clear thick_cloud thin_cloud cloud_shadow nodata"),
        (["clear", "cloud"], [0, 1, 255], "clear cloud nodata"),
        (["clear", "cloud", "cloud_shadow"], [0, 1, 3, 255], "clear cloud cloud_shadow nodata"),
        (["cloud_shadow", "clear", "cloud"], [0, 1, 3, 255], "clear cloud cloud_shadow nodata"),
    ],
)
def test_mask_attrs_cf_flags(classes, values, meanings):
    attrs = mask_attrs(classes, "sensei-v2", "2.1.0")
    assert attrs["flag_values"].dtype == np.uint8
    assert attrs["flag_values"].tolist() == values
    assert attrs["flag_meanings"] == meanings
    assert attrs["model"] == "sensei-v2" and attrs["model_version"] == "2.1.0"
    assert attrs["xsensei_version"] == xsensei.__version__
    assert attrs["long_name"] == "cloud mask"
    assert NODATA == 255


def test_mask_attrs_rejects_unknown_or_clashing_classes():
    with pytest.raises(ValueError, match=r"unknown class 'haze'.*thin_cloud"):
        mask_attrs(["clear", "haze"], "m", "1")
    with pytest.raises(ValueError, match="both map to mask value 1"):
        mask_attrs(["clear", "cloud", "thick_cloud"], "m", "1")
    with pytest.raises(TypeError, match="sequence of class names"):
        mask_attrs("clear", "m", "1")


def test_wrap_mask_keeps_grid_crs_and_item_coords_but_not_band_metadata():
    img = stackstac_like()

    def explode(block):
        raise AssertionError("wrap_output must not compute the mask")

    data = da.zeros((2, 20, 30), chunks=(1, 10, 10), dtype=np.uint8).map_blocks(
        explode, dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8)
    )
    mask = wrap_output(
        data, img, kind="mask", classes=FOUR, model_name="sensei", model_version="1.0"
    )
    assert mask.name == "cloud_mask"
    assert mask.dims == ("time", "y", "x")
    assert mask.dtype == np.uint8
    assert isinstance(mask.data, da.Array) and mask.data.name == data.name  # lazy, same graph
    assert set(mask.coords) == {"time", "y", "x", "id", "eo:cloud_cover", "epsg", "spatial_ref"}
    for dim in ("time", "y", "x"):
        np.testing.assert_array_equal(mask[dim].values, img[dim].values)
    assert mask.rio.crs == img.rio.crs
    assert mask.rio.transform() == TRANSFORM
    assert mask.rio.nodata == 255
    assert mask.attrs["_FillValue"] == 255 and "_FillValue" not in mask.encoding
    assert mask.encoding.get("grid_mapping") == "spatial_ref"
    assert set(mask.attrs) == {
        "long_name",
        "flag_values",
        "flag_meanings",
        "model",
        "model_version",
        "xsensei_version",
        "_FillValue",
    }


def test_wrap_probability_and_binary():
    img = stackstac_like()
    prob = wrap_output(
        np.full((2, 3, 20, 30), 0.25, np.float64),
        img,
        kind="probability",
        classes=["clear", "cloud", "cloud_shadow"],
        model_name="m",
        model_version="1",
    )
    assert prob.name == "cloud_probability"
    assert prob.dims == ("time", "class", "y", "x")
    assert prob.dtype == np.float32
    assert prob["class"].values.tolist() == ["clear", "cloud", "cloud_shadow"]
    assert np.isnan(prob.rio.nodata)
    assert "flag_values" not in prob.attrs and prob.attrs["units"] == "1"

    binary = wrap_output(
        np.ones((2, 20, 30), bool),
        img,
        kind="binary",
        classes=FOUR,
        model_name="m",
        model_version="1",
        name="clouds",
    )
    assert binary.name == "clouds" and binary.dtype == np.uint8
    assert binary.attrs["flag_meanings"] == "not_cloud cloud nodata"
    assert binary.attrs["flag_values"].tolist() == [0, 1, 255]


def test_wrap_on_2d_template_and_odc_stac_dataset():
    img = stackstac_like(nt=1).isel(time=0)
    mask = wrap_output(
        np.zeros((20, 30), np.uint8),
        img,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    assert mask.dims == ("y", "x")
    assert "time" in mask.coords and mask["time"].ndim == 0  # the scene's date stays attached

    spectral = ["band", "common_name", "center_wavelength"]
    ds = xr.Dataset(  # odc-stac: one variable per band, no wavelengths
        {c: img.isel(band=i).drop_vars(spectral) for i, c in enumerate(["red", "green", "blue"])}
    )
    ds = ds.drop_attrs().rio.write_crs("EPSG:32618")
    mask = wrap_output(
        np.zeros((20, 30), np.uint8),
        ds,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    assert mask.rio.crs.to_epsg() == 32618
    assert mask.rio.transform() == TRANSFORM


def test_wrap_output_says_what_is_wrong():
    img = stackstac_like()
    with pytest.raises(InputError, match=r"shape \(20, 30\).*time=2, y=20, x=30"):
        wrap_output(
            np.zeros((20, 30), np.uint8),
            img,
            kind="mask",
            classes=FOUR,
            model_name="m",
            model_version="1",
        )
    with pytest.raises(InputError, match="must be uint8"):
        wrap_output(
            np.zeros((2, 20, 30), np.int64),
            img,
            kind="mask",
            classes=FOUR,
            model_name="m",
            model_version="1",
        )
    with pytest.raises(ValueError, match="kind must be one of"):
        wrap_output(
            np.zeros((2, 20, 30), np.uint8),
            img,
            kind="classes",
            classes=FOUR,
            model_name="m",
            model_version="1",
        )


def test_leading_dim_of_any_name_and_lat_lon_grids():
    img = stackstac_like().rename(time="date")
    mask = wrap_output(
        np.zeros((2, 20, 30), np.uint8),
        img,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    assert mask.dims == ("date", "y", "x") and "id" in mask.coords

    latlon = stackstac_like().isel(time=0).rename(y="lat", x="lon")
    mask = wrap_output(
        np.zeros((20, 30), np.uint8),
        latlon,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    assert mask.dims == ("lat", "lon")
    assert mask.rio.crs.to_epsg() == 32618 and mask.rio.transform() == TRANSFORM


def test_transform_follows_a_sliced_template():
    """A subset scene keeps a stale GeoTransform in spatial_ref; the mask must not inherit it."""
    img = stackstac_like().isel(y=slice(5, None), x=slice(7, None))
    mask = wrap_output(
        np.zeros((2, 15, 23), np.uint8),
        img,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    assert mask.rio.transform() == Affine(10.0, 0.0, 400030.0, 0.0, -10.0, 4499950.0)


def _corner_template(transform, ny: int = 20, nx: int = 30, shift: float = 0.0) -> xr.DataArray:
    """A (y, x) template whose coords are ``transform * (col + shift, row + shift)``, with the
    transform in ``attrs["transform"]`` as stackstac records it (no GeoTransform written)."""
    t = Affine(*list(transform)[:6])
    return xr.DataArray(
        np.zeros((ny, nx), np.float32),
        dims=("y", "x"),
        coords={
            "y": t.f + t.e * (np.arange(ny) + shift),
            "x": t.c + t.a * (np.arange(nx) + shift),
        },
        attrs={"transform": transform},
    ).rio.write_crs("EPSG:32618")


def _mask_on(template) -> xr.DataArray:
    return wrap_output(
        np.zeros(template.shape, np.uint8),
        template,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )


@pytest.mark.parametrize(
    "transform", [TRANSFORM, tuple(TRANSFORM)[:6], list(TRANSFORM)], ids=["Affine", "6", "9"]
)
def test_topleft_coords_keep_the_stack_coords_and_record_its_grid(transform, tmp_path):
    """stackstac's default xy_coords='topleft': coords are corners of attrs['transform']. The
    mask keeps them (it aligns with the stack), records the grid, and its COG sits on it."""
    import rasterio

    from xsensei.io.geotiff import to_cog

    template = _corner_template(transform)
    assert template.rio.transform().c == TRANSFORM.c - 5  # rioxarray alone: half a pixel off
    mask = _mask_on(template)
    np.testing.assert_array_equal(mask.x.values, template.x.values)
    np.testing.assert_array_equal(mask.y.values, template.y.values)
    assert xr.align(mask, template, join="exact")  # stack.where(mask == 0) lines up
    assert Affine(*mask.attrs["transform"]) == TRANSFORM
    with rasterio.open(to_cog(mask, tmp_path / "m.tif")) as src:
        assert src.transform == TRANSFORM
        assert "transform" not in src.tags()
    # a slice of the stack keeps the full stack's attrs: the slice's own origin
    sliced = _mask_on(template.isel(y=slice(5, None), x=slice(7, None)))
    assert Affine(*sliced.attrs["transform"]) == Affine(10.0, 0.0, 400030.0, 0.0, -10.0,
                                                        4499950.0)


@pytest.mark.parametrize(
    ("shift", "transform"),
    [
        (0.5, TRANSFORM),  # coords are the centres of attrs['transform']: nothing to change
        (0.3, TRANSFORM),  # neither corners nor centres: the coords decide, as before
        (0.0, Affine(20.0, 0.0, 399960.0, 0.0, -20.0, 4500000.0)),  # other pixel size
        (0.0, Affine(10.0, 2.0, 399960.0, 0.0, -10.0, 4500000.0)),  # rotated
        (0.0, "not an affine"),
    ],
)
def test_attrs_transform_is_used_only_for_matching_corner_coords(shift, transform):
    coords_grid = Affine(10.0, 0.0, 399960.0 + 10 * shift, 0.0, -10.0, 4500000.0 - 10 * shift)
    template = _corner_template(TRANSFORM, shift=shift).assign_attrs(transform=transform)
    mask = _mask_on(template)
    np.testing.assert_array_equal(mask.x.values, template.x.values)
    np.testing.assert_array_equal(mask.y.values, template.y.values)
    expected = Affine.translation(-5.0, 5.0) @ coords_grid  # coords read as centres
    assert mask.rio.transform().almost_equals(expected)
    assert "transform" not in mask.attrs


@pytest.mark.parametrize("xy_coords", ["topleft", "center"])
def test_real_stackstac_stack_gives_the_files_grid(tmp_path, xy_coords):
    """A plain stackstac stack of a GeoTIFF: the mask keeps the stack's coords and its COG
    sits on the file's grid."""
    stackstac = pytest.importorskip("stackstac")
    import rasterio

    from xsensei.io.geotiff import to_cog

    grid = Affine(30.0, 0.0, 500010.0, 0.0, -30.0, 5200010.0)
    path = tmp_path / "red.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=8, width=10, count=1, dtype="uint16",
        crs="EPSG:32633", transform=grid,
    ) as dst:
        dst.write(np.arange(80, dtype=np.uint16).reshape(1, 8, 10))
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "a", "geometry": None,
        "bbox": [15.0, 46.9, 15.01, 46.91], "links": [],
        "properties": {"datetime": "2023-06-02T10:00:00Z"},
        "assets": {"red": {"href": str(path), "type": "image/tiff", "proj:epsg": 32633,
                           "proj:transform": list(grid)[:6], "proj:shape": [8, 10]}},
    }
    stack = stackstac.stack([item], xy_coords=xy_coords, snap_bounds=False)
    assert tuple(stack.attrs["transform"])[:6] == tuple(grid)[:6]
    np.testing.assert_array_equal(stack.values[0, 0], np.arange(80).reshape(8, 10))
    mask = _mask_on(stack.isel(time=0, band=0, drop=True))
    np.testing.assert_array_equal(mask.x.values, stack.x.values)  # the stack's own coords
    np.testing.assert_array_equal(mask.y.values, stack.y.values)
    if xy_coords == "center":
        assert mask.rio.transform() == grid
    with rasterio.open(to_cog(mask, tmp_path / "mask.tif")) as src:
        assert src.transform == grid
        assert src.crs.to_epsg() == 32633
