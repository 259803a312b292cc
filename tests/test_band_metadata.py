"""Band wavelengths from the metadata real loaders give (stackstac, ENVI, odc-stac, rioxarray)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xsensei.band_metadata import ResolvedBands, band_variables, resolve_bands
from xsensei.errors import DescriptorError, InputError
from xsensei.sensors import get_sensor

pytestmark = pytest.mark.filterwarnings(
    # rioxarray 0.19 + affine 3: third-party noise on every open_rasterio
    "ignore:Use `@` matmul:PendingDeprecationWarning"
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RIO_CLOUDMASK = SHARED / "data" / "real" / "landsat8-rio-cloudmask"

S2_ASSETS = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]


def stackstac_like(platform: str = "sentinel-2b") -> xr.DataArray:
    """What stackstac 0.5 returns for Planetary Computer S2 L2A items with an SCL asset."""
    centre = np.array([0.49, 0.56, 0.665, 0.842, 1.61, 2.19, None], dtype=object)
    fwhm = np.array([0.098, 0.045, 0.038, 0.145, 0.143, 0.242, None], dtype=object)
    common = np.array(["blue", "green", "red", "nir", "swir16", "swir22", None], dtype=object)
    return xr.DataArray(
        np.zeros((2, 7, 3, 4), dtype="float64"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2023-06-01", "2023-06-04"], dtype="datetime64[ns]"),
            "band": S2_ASSETS,
            "common_name": ("band", common),
            "center_wavelength": ("band", centre),
            "full_width_half_max": ("band", fwhm),
            "title": ("band", [f"Band {b}" for b in S2_ASSETS]),
            "platform": ("time", np.array([platform, platform], dtype=object)),
            "epsg": 32632,
            "y": np.arange(3.0),
            "x": np.arange(4.0),
        },
        attrs={"crs": "epsg:32632", "resolution": 10.0},
    )


def test_stackstac_coords_in_micrometres() -> None:
    with pytest.warns(UserWarning, match=r"dropping band\(s\).*'SCL'") as rec:
        res = resolve_bands(stackstac_like())
    assert len([w for w in rec if issubclass(w.category, UserWarning)]) == 1
    assert isinstance(res, ResolvedBands)
    assert res.names == ("B02", "B03", "B04", "B08", "B11", "B12")
    assert res.indices == (0, 1, 2, 3, 4, 5)
    assert res.dropped == ("SCL",)
    assert res.sensor == "sentinel-2b"
    assert res.band_dim == "band"
    assert set(res.sources) == {"coords:stackstac"}
    assert res.kinds == ("reflective",) * 6
    np.testing.assert_allclose(res.wavelengths_nm[0], [441.0, 490.0, 539.0])
    np.testing.assert_allclose(res.wavelengths_nm[5], [2069.0, 2190.0, 2311.0])
    assert res.wavelengths_nm.dtype == np.float64
    assert not res.wavelengths_nm.flags.writeable


def test_stackstac_without_eo_bands_uses_platform_coord_and_catalogue() -> None:
    da = stackstac_like().drop_vars(["center_wavelength", "full_width_half_max"])
    with pytest.warns(UserWarning, match="SCL"):
        res = resolve_bands(da)
    cat = get_sensor("sentinel-2b")
    assert res.sources == ("catalogue:sentinel-2b",) * 6
    np.testing.assert_allclose(res.wavelengths_nm[2], cat.band("B04").wavelengths_nm)


def test_earth_search_common_names_with_sensor_argument() -> None:
    da = xr.DataArray(
        np.zeros((3, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["red", "nir08", "swir16"]},
    )
    res = resolve_bands(da, sensor="S2A")
    cat = get_sensor("sentinel-2a")
    np.testing.assert_allclose(res.wavelengths_nm[1], cat.band("B8A").wavelengths_nm)
    assert res.sensor == "sentinel-2a"


def test_envi_cube_nanometres_with_units_attr() -> None:
    wl = xr.DataArray([450.0, 550.0, 650.0, 11000.0], dims="band", attrs={"units": "Nanometers"})
    fwhm = xr.DataArray([10.0, 10.0, 12.0, 600.0], dims="band", attrs={"units": "Nanometers"})
    da = xr.DataArray(
        np.zeros((4, 2, 2), dtype="float32"),
        dims=("band", "y", "x"),
        coords={"band": [1, 2, 3, 4], "wavelength": wl, "fwhm": fwhm},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = resolve_bands(da)
    assert res.names == ("1", "2", "3", "4")
    assert res.sources == ("coords:envi",) * 4
    np.testing.assert_allclose(res.wavelengths_nm[1], [545.0, 550.0, 555.0])
    assert res.kinds[-1] == "thermal"
    assert res.thermal[-1] is None  # no sensor: no K1/K2 or BT range


@pytest.mark.parametrize("units", ["micrometers", "um", "µm"])
def test_envi_micrometre_units_attr(units: str) -> None:
    da = xr.DataArray(
        np.zeros((2, 2, 2)),
        dims=("band", "y", "x"),
        coords={
            "wavelength": ("band", [0.48, 0.86], {"units": units}),
            "fwhm": ("band", [0.06, 0.04], {"units": units}),
        },
    )
    res = resolve_bands(da)
    np.testing.assert_allclose(res.wavelengths_nm, [[450, 480, 510], [840, 860, 880]])


def test_wavelength_units_on_dataarray_attrs_and_band_dim_named_bands() -> None:
    da = xr.DataArray(
        np.zeros((2, 2, 2)),
        dims=("bands", "y", "x"),
        coords={"wavelength": ("bands", [0.65, 0.85])},
        attrs={"wavelength_units": "Micrometers"},
    )
    with pytest.warns(UserWarning, match="no bandwidth known"):
        res = resolve_bands(da)
    assert res.band_dim == "bands"
    np.testing.assert_allclose(res.wavelengths_nm[:, 1], [650.0, 850.0])


def test_centre_only_uses_catalogue_width_or_default_width() -> None:
    da = xr.DataArray(
        np.zeros((3, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["B4", "B5", "extra"], "wavelength": ("band", [655.0, 865.0, 940.0])},
    )
    with pytest.warns(UserWarning, match=r"'extra' \(assumed FWHM 20 nm\)"):
        res = resolve_bands(da, sensor="landsat-8")
    b4 = get_sensor("landsat-8").band("B4")
    np.testing.assert_allclose(res.wavelengths_nm[0], [b4.wl_min_nm, 655.0, b4.wl_max_nm])
    assert res.sources[0] == "coords:envi+catalogue:landsat-8"
    np.testing.assert_allclose(res.wavelengths_nm[2], [930.0, 940.0, 950.0])
    assert res.sources[2] == "coords:envi+default-width"


def test_hyperspectral_centres_get_width_capped_by_band_spacing() -> None:
    centres = np.arange(500.0, 560.0, 5.0)
    da = xr.DataArray(
        np.zeros((centres.size, 2, 2)),
        dims=("wavelength", "y", "x"),
        coords={"wavelength": centres},
    )
    with pytest.warns(UserWarning, match="no bandwidth known"):
        res = resolve_bands(da, band_dim="wavelength")
    widths = res.wavelengths_nm[:, 2] - res.wavelengths_nm[:, 0]
    np.testing.assert_allclose(widths, 5.0)


def test_odc_stac_dataset_with_sensor() -> None:
    coords = {"y": np.arange(3.0), "x": np.arange(2.0), "time": np.array(["2021-05-01"], "M8[ns]")}
    dims = ("time", "y", "x")
    ds = xr.Dataset(
        {
            name: (dims, np.zeros((1, 3, 2), dtype="uint16"))
            for name in ("red", "green", "blue", "nir")
        },
        coords=coords,
    )
    ds["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": "..."})
    assert band_variables(ds) == ["red", "green", "blue", "nir"]
    res = resolve_bands(ds, sensor="landsat-8")
    l8 = get_sensor("landsat-8")
    assert res.names == ("red", "green", "blue", "nir")
    assert res.band_dim is None
    np.testing.assert_allclose(res.wavelengths_nm[3], l8.band("B5").wavelengths_nm)
    np.testing.assert_allclose(res.wavelengths_nm[2], l8.band("B2").wavelengths_nm)
    assert res.sources == ("catalogue:landsat-8",) * 4


def test_dataset_variable_attrs_and_sensor_from_attrs() -> None:
    dims = ("y", "x")
    ds = xr.Dataset(
        {
            "b1": (dims, np.zeros((2, 2)), {"eo:center_wavelength": 0.665}),
            "b2": (dims, np.zeros((2, 2)), {"wavelength": 842.0, "fwhm": 115.0}),
            "B11": (dims, np.zeros((2, 2))),
        },
        attrs={"platform": "Sentinel-2A"},
    )
    res = resolve_bands(ds)
    assert res.sources == ("attrs+catalogue:sentinel-2a", "attrs", "catalogue:sentinel-2a")
    np.testing.assert_allclose(res.wavelengths_nm[1], [784.5, 842.0, 899.5])


def test_explicit_descriptors_array_mapping_and_precedence() -> None:
    da = stackstac_like()
    arr = np.full((7, 3), np.nan)
    arr[:6] = [[0.45, 0.49, 0.53], [540, 560, 580], [650, 665, 680], [780, 842, 900],
               [1.55, 1.61, 1.67], [2.1, 2.19, 2.28]]  # fmt: skip
    with pytest.warns(UserWarning, match="SCL"):
        res = resolve_bands(da, descriptors=arr)
    assert res.sources == ("descriptors",) * 6
    np.testing.assert_allclose(res.wavelengths_nm[0], [450.0, 490.0, 530.0])
    # a mapping overrides single bands; the others still come from the coords
    res = resolve_bands(da, descriptors={"B02": (0.48, 0.06), "SCL": 700.0})
    np.testing.assert_allclose(res.wavelengths_nm[0], [450.0, 480.0, 510.0])
    assert res.sources[0] == "descriptors"
    assert res.sources[1] == "coords:stackstac"
    assert res.names[-1] == "SCL"


def test_sensor_from_attrs_spacecraft_id_and_thermal_specs() -> None:
    da = xr.DataArray(
        np.zeros((3, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["B4", "B10", "B11"]},
        attrs={"spacecraft_id": "LANDSAT_8"},
    )
    res = resolve_bands(da)
    assert res.sensor == "landsat-8"
    assert res.kinds == ("reflective", "thermal", "thermal")
    spec = res.thermal[1]
    assert spec is not None
    assert (spec.k1, spec.k2, spec.bt_min_k, spec.bt_max_k) == (774.89, 1321.08, 132.0, 249.0)
    assert res.thermal[0] is None


def test_rioxarray_geotiffs_from_rio_cloudmask() -> None:
    rioxarray = pytest.importorskip("rioxarray")
    files = sorted(RIO_CLOUDMASK.glob("LC8*_B*_toa.tif"))
    if not files:
        pytest.skip("shared/ real data not available")
    names = [re.search(r"_(B\d+)_toa", f.name).group(1) for f in files]  # type: ignore[union-attr]
    arrays = [rioxarray.open_rasterio(f, chunks={"x": 256, "y": 256}) for f in files]
    assert all(a.coords["band"].values.tolist() == [1] for a in arrays)
    da = xr.concat(arrays, dim="band").assign_coords(band=names)
    res = resolve_bands(da, sensor="LC08")
    assert set(res.names) == {"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"}
    assert res.dropped == ()
    l8 = get_sensor("landsat-8")
    for name, wl, kind in zip(res.names, res.wavelengths_nm, res.kinds, strict=True):
        np.testing.assert_allclose(wl, l8.band(name).wavelengths_nm)
        assert kind == ("thermal" if name in ("B10", "B11") else "reflective")


def test_rioxarray_integer_bands_resolve_through_long_name() -> None:
    da = xr.DataArray(
        np.zeros((2, 2, 2), dtype="uint16"),
        dims=("band", "y", "x"),
        coords={"band": [1, 2]},
        attrs={"long_name": ("B04", "B08"), "platform": "sentinel-2a"},
    )
    res = resolve_bands(da)
    assert res.names == ("1", "2")
    np.testing.assert_allclose(res.wavelengths_nm[1], get_sensor("S2A").band("B08").wavelengths_nm)


# ------------------------------------------------------------------------------- errors


def test_error_no_wavelengths_and_no_sensor() -> None:
    da = xr.DataArray(np.zeros((2, 2, 2)), dims=("band", "y", "x"), coords={"band": ["a", "b"]})
    with pytest.raises(DescriptorError, match=r"'a', 'b'.*no sensor") as exc:
        resolve_bands(da)
    msg = str(exc.value)
    for fix in ("descriptors=", "sensor=", "center_wavelength", "full_width_half_max"):
        assert fix in msg


def test_error_unknown_sensor_suggests_names() -> None:
    da = xr.DataArray(np.zeros((1, 2, 2)), dims=("band", "y", "x"), coords={"band": ["B4"]})
    with pytest.raises(DescriptorError, match=r"Unknown sensor 'landsat-88'.*Did you mean"):
        resolve_bands(da, sensor="landsat-88")


def test_error_unknown_sensor_in_metadata_is_named() -> None:
    da = xr.DataArray(
        np.zeros((1, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["B4"]},
        attrs={"platform": "worldview-3"},
    )
    with pytest.raises(DescriptorError, match="'worldview-3' from the metadata is not in"):
        resolve_bands(da)


def test_error_wrong_units() -> None:
    da = stackstac_like()
    centre = da.coords["center_wavelength"].values.copy()
    centre[2] = 1e7
    da = da.assign_coords(center_wavelength=("band", centre))
    with pytest.raises(DescriptorError, match=r"band 'B04'.*1e\+07.*neither a plausible"):
        resolve_bands(da)


def test_error_units_attr_contradicts_values() -> None:
    da = xr.DataArray(
        np.zeros((1, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["x"], "wavelength": ("band", [0.665], {"units": "nm"})},
    )
    with pytest.raises(DescriptorError, match=r"band 'x'.*read as nm"):
        resolve_bands(da)
    da.coords["wavelength"].attrs["units"] = "furlongs"
    with pytest.raises(DescriptorError, match="unsupported wavelength units 'furlongs'"):
        resolve_bands(da)


def test_error_min_greater_than_max() -> None:
    da = stackstac_like()
    with pytest.raises(DescriptorError, match=r"band 'B03'.*out of order"):
        resolve_bands(da, descriptors={"B03": (590.0, 560.0, 530.0)})


def test_error_descriptor_shape_and_unknown_keys() -> None:
    da = stackstac_like()
    with pytest.raises(DescriptorError, match=r"shape \(6, 3\), expected \(7, 3\)"):
        resolve_bands(da, descriptors=np.ones((6, 3)))
    with pytest.raises(DescriptorError, match=r"unknown band.*'B8A'"):
        resolve_bands(da, descriptors={"B8A": (850.0, 865.0, 880.0)})


def test_error_all_bands_non_spectral() -> None:
    names = ["SCL", "AOT", "WVP", "visual"]
    da = xr.DataArray(
        np.zeros((4, 2, 2)),
        dims=("band", "y", "x"),
        coords={
            "band": names,
            "center_wavelength": ("band", np.array([None] * 4, dtype=object)),
            "platform": "sentinel-2a",
        },
    )
    with pytest.raises(DescriptorError, match=r"any band \('SCL', 'AOT', 'WVP', 'visual'\)"):
        resolve_bands(da)


def test_error_band_dim_missing() -> None:
    da = xr.DataArray(np.zeros((2, 2, 2)), dims=("channel", "y", "x"))
    with pytest.raises(InputError, match=r"dims \('channel', 'y', 'x'\).*band_dim="):
        resolve_bands(da)
    assert resolve_bands(da, band_dim="channel", descriptors=np.ones((2, 3)) * 500).names == (
        "0",
        "1",
    )


def test_error_explicit_band_below_300_nm() -> None:
    da = xr.DataArray(np.zeros((1, 2, 2)), dims=("band", "y", "x"), coords={"band": ["uv"]})
    with pytest.raises(DescriptorError, match=r"'uv'.*300 nm"):
        resolve_bands(da, descriptors={"uv": (280.0, 290.0, 300.0)})
