"""Input scale (DN -> TOA reflectance) and thermal units, checked against real products."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xsensei.band_metadata import resolve_bands
from xsensei.errors import InputError
from xsensei.radiometry import (
    DEFAULT_BT_RANGE_K,
    ScaleSpec,
    brightness_temperature,
    check_reflectance_scale,
    landsat_scale_from_mtl,
    landsat_toa_from_mtl,
    looks_like_dn,
    looks_like_percent,
    normalise_brightness_temperature,
    read_landsat_mtl,
    read_sentinel2_mtd,
    scale_from_metadata,
    to_model_units,
)

rioxarray = pytest.importorskip("rioxarray")

pytestmark = pytest.mark.filterwarnings(
    # rioxarray 0.19 + affine 3: third-party noise on every open_rasterio
    "ignore:Use `@` matmul:PendingDeprecationWarning"
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UKIS = SHARED / "data" / "real" / "ukis-pysat"
RIO_CLOUDMASK = SHARED / "data" / "real" / "landsat8-rio-cloudmask"

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12"]  # fmt: skip
S2_PB04 = "S2B_MSIL1C_20220615T101559_N0400_R065_T32UPC_20220615T122549"
S2_PB0209 = "S2B_MSIL1C_20200406T101559_N0209_R065_T32UPC_20200406T130159"
LANDSAT = {
    "LC08_L1TP_193024_20200509_20200509_01_RT": (
        ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"], "landsat-8"
    ),
    "LE07_L1TP_193024_20100420_20161215_01_T1": (
        ["B1", "B2", "B3", "B4", "B5", "B6_VCID_1", "B6_VCID_2", "B7"], "landsat-7"
    ),
    "LT05_L1TP_193024_20050516_20161127_01_T1": (
        ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], "landsat-5"
    ),
}  # fmt: skip


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def open_band_stack(path: Path, names: list[str]) -> xr.DataArray:
    da = rioxarray.open_rasterio(need(path), mask_and_scale=False)
    return da.assign_coords(band=names)


def toa(stem: str) -> np.ndarray:
    return rioxarray.open_rasterio(need(UKIS / f"{stem}_toa.tif")).values.astype(np.float64)


def simple(names: list[str], values: np.ndarray, **attrs: object) -> xr.DataArray:
    return xr.DataArray(values, dims=("band", "y", "x"), coords={"band": names}, attrs=dict(attrs))


# ------------------------------------------------------------------- Sentinel-2 baselines


def test_read_sentinel2_mtd_baseline_04() -> None:
    meta = read_sentinel2_mtd(need(UKIS / f"{S2_PB04}_MTD.xml"))
    assert meta["processing_baseline"] == "04.00"
    assert meta["QUANTIFICATION_VALUE"] == 10000.0
    assert meta["platform"] == "sentinel-2b"
    assert meta["RADIO_ADD_OFFSET"] == dict.fromkeys(S2_BANDS, -1000.0)


def test_sentinel2_baseline_04_real_crop_matches_expected_toa() -> None:
    da = open_band_stack(UKIS / f"{S2_PB04}.tif", S2_BANDS)
    da.attrs.update(read_sentinel2_mtd(UKIS / f"{S2_PB04}_MTD.xml"))
    assert da.dtype == np.uint16
    res = resolve_bands(da)  # sensor from the MTD's platform attr
    assert res.sensor == "sentinel-2b"
    spec = scale_from_metadata(da, res)
    assert spec is not None
    assert spec.source == "sentinel-2 baseline 04.00"
    np.testing.assert_allclose(spec.scale, 1e-4)
    np.testing.assert_allclose(spec.offset, -0.1)
    check_reflectance_scale(da.values, res, spec)
    out = to_model_units(da.values, res, spec)
    assert out.dtype == np.float32
    expected = toa(S2_PB04)
    err = np.abs(out - expected).max()
    assert err < 1e-6, err
    # ignoring the 04.00 offset would be 0.1 off everywhere: the bug this guards against
    assert np.abs(da.values * 1e-4 - expected).min() > 0.099


def test_sentinel2_baseline_0209_real_crop_has_no_offset() -> None:
    da = open_band_stack(UKIS / f"{S2_PB0209}.tif", S2_BANDS)
    da.attrs.update(read_sentinel2_mtd(UKIS / f"{S2_PB0209}_MTD.xml"))
    res = resolve_bands(da)
    spec = scale_from_metadata(da, res)
    assert spec is not None
    np.testing.assert_allclose(spec.offset, 0.0)
    err = np.abs(to_model_units(da.values, res, spec) - toa(S2_PB0209)).max()
    assert err < 1e-6, err


def test_sentinel2_baseline_from_stackstac_coord_with_float_dn() -> None:
    """Planetary Computer + stackstac: float64 raw DN, ``s2:processing_baseline`` per time."""
    dn = rioxarray.open_rasterio(need(UKIS / f"{S2_PB04}.tif")).values[[1, 2, 3, 7]]
    da = xr.DataArray(
        dn[None].astype(np.float64),
        dims=("time", "band", "y", "x"),
        coords={
            "band": ["B02", "B03", "B04", "B08"],
            "platform": ("time", ["Sentinel-2B"]),
            "s2:processing_baseline": ("time", ["04.00"]),
        },
    )
    res = resolve_bands(da)
    sample = da.isel(time=0).values
    # float data without a sample are taken as decoded; the check then catches the DN
    assert scale_from_metadata(da, res) is None
    with pytest.raises(InputError, match="digital numbers"):
        check_reflectance_scale(sample, res, None)
    spec = scale_from_metadata(da, res, sample=sample)
    assert spec is not None
    np.testing.assert_allclose(spec.offset, -0.1)
    expected = toa(S2_PB04)[[1, 2, 3, 7]]
    assert np.abs(to_model_units(sample, res, spec) - expected).max() < 1e-6


def test_mixed_processing_baselines_raise() -> None:
    da = xr.DataArray(
        np.ones((2, 1, 2, 2), dtype="uint16"),
        dims=("time", "band", "y", "x"),
        coords={"band": ["B04"], "s2:processing_baseline": ("time", ["03.01", "04.00"])},
    )
    res = resolve_bands(da, sensor="sentinel-2a")
    with pytest.raises(InputError, match=r"mixed Sentinel-2 processing baselines \[3.01, 4.0\]"):
        scale_from_metadata(da, res)


def test_boa_add_offset_scalar_l2a() -> None:
    da = simple(["B04", "B08"], np.full((2, 2, 2), 1500, "uint16"), BOA_ADD_OFFSET=-1000)
    res = resolve_bands(da, sensor="S2A")
    spec = scale_from_metadata(da, res)
    assert spec is not None
    np.testing.assert_allclose(to_model_units(da.values, res, spec), 0.05, atol=1e-7)


# ----------------------------------------------------------------------- Landsat MTL


@pytest.mark.parametrize("stem", list(LANDSAT))
def test_landsat_mtl_scaling_matches_expected_toa(stem: str) -> None:
    names, sensor = LANDSAT[stem]
    mtl = need(UKIS / f"{stem}_MTL.txt")
    da = open_band_stack(UKIS / f"{stem}.tif", names)
    res = resolve_bands(da, sensor=sensor)
    assert res.names == tuple(names)
    spec = landsat_scale_from_mtl(mtl, res.names)
    check_reflectance_scale(da.values, res, spec)
    out = to_model_units(da.values, res, spec)
    expected = toa(stem)
    thermal = np.asarray(res.is_thermal)
    # reflective bands: sun-angle-corrected TOA reflectance
    refl_err = np.abs(out[~thermal] - expected[~thermal]).max()
    assert refl_err < 1e-5, refl_err
    # thermal bands: the expected BT (K), normalised with the catalogue range (or the default)
    for i in np.flatnonzero(thermal):
        t = res.thermal[i]
        assert t is not None and t.k1 is not None
        lo, hi = (t.bt_min_k, t.bt_max_k) if t.bt_min_k is not None else DEFAULT_BT_RANGE_K
        want = normalise_brightness_temperature(expected[i], lo, hi)
        assert np.abs(out[i] - want).max() < 1e-4
    # the standalone helper reproduces the expected values band by band (K for thermal)
    for i, name in enumerate(names):
        got = landsat_toa_from_mtl(da.values[i], mtl, name)
        assert np.abs(got - expected[i]).max() < 1e-4


def test_read_landsat_mtl() -> None:
    meta = read_landsat_mtl(need(UKIS / "LC08_L1TP_193024_20200509_20200509_01_RT_MTL.txt"))
    assert meta["SPACECRAFT_ID"] == "LANDSAT_8"
    assert float(meta["RADIOMETRIC_RESCALING.REFLECTANCE_MULT_BAND_4"]) == 2e-5
    with pytest.raises(InputError, match="no rescaling coefficients for band 'B8A'"):
        landsat_scale_from_mtl(meta, ["B8A"])


# ------------------------------------------------------------- STAC / CF metadata scales


def test_raster_bands_attrs_on_integer_dataarray() -> None:
    values = np.full((3, 2, 2), 12000, dtype="uint16")
    da = simple(
        ["SR_B4", "SR_B5", "QA"],
        values,
        **{"raster:bands": [
            {"scale": 2.75e-05, "offset": -0.2},
            {"scale": 2.75e-05, "offset": -0.2},
            {"nodata": 1},
        ]},
    )  # fmt: skip
    with pytest.warns(UserWarning, match="'QA'"):
        res = resolve_bands(da, sensor="landsat-8")
    spec = scale_from_metadata(da, res)
    assert spec is not None and spec.source == "raster:bands"
    assert len(spec) == 2
    sample = values[list(res.indices)]
    check_reflectance_scale(sample, res, spec)
    np.testing.assert_allclose(to_model_units(sample, res, spec), 0.13, atol=1e-6)


def test_stackstac_raster_bands_coord_is_already_applied_to_floats() -> None:
    entries = np.empty(2, dtype=object)
    entries[:] = [{"scale": 1e-4, "offset": -0.1}, {"scale": 1e-4, "offset": -0.1}]
    da = xr.DataArray(
        np.full((2, 2, 2), 0.2),
        dims=("band", "y", "x"),
        coords={"band": ["red", "nir"], "raster:bands": ("band", entries)},
    )
    res = resolve_bands(da, sensor="sentinel-2a")
    assert scale_from_metadata(da, res, sample=da.values) is None  # rescale=True default
    dn = np.full((2, 2, 2), 3000.0)  # rescale=False: raw DN as float64
    spec = scale_from_metadata(da.copy(data=dn), res, sample=dn)
    assert spec is not None
    np.testing.assert_allclose(to_model_units(dn, res, spec), 0.2, atol=1e-6)


def test_stac_11_raster_scale_per_variable_in_dataset() -> None:
    dims = ("y", "x")
    ds = xr.Dataset(
        {
            "red": (dims, np.full((2, 2), 3000, "uint16"), {"raster:scale": 1e-4}),
            "nir": (dims, np.full((2, 2), 4000, "uint16"), {"raster:scale": 1e-4,
                                                             "raster:offset": -0.1}),
        }
    )  # fmt: skip
    res = resolve_bands(ds, sensor="sentinel-2b")
    spec = scale_from_metadata(ds, res)
    assert spec is not None
    np.testing.assert_allclose(spec.offset, [0.0, -0.1])
    block = np.stack([ds[v].values for v in res.names])
    np.testing.assert_allclose(to_model_units(block, res, spec)[:, 0, 0], [0.3, 0.3], atol=1e-6)


def test_cf_scale_factor_only_for_packed_integers() -> None:
    da = simple(["B04"], np.full((1, 2, 2), 2500, "int16"), scale_factor=1e-4, add_offset=0.0)
    res = resolve_bands(da, sensor="S2B")
    spec = scale_from_metadata(da, res)
    assert spec is not None and spec.source == "scale_factor/add_offset"
    # rioxarray mask_and_scale=True has applied it already: float data are left alone
    decoded = da.astype("float32") * 1e-4
    decoded.attrs = dict(da.attrs)
    assert scale_from_metadata(decoded, res) is None
    # rioxarray always writes scale_factor=1 / add_offset=0: that is no scale
    plain = simple(["B04"], np.ones((1, 2, 2), "uint16"), scale_factor=1.0, add_offset=0.0)
    assert scale_from_metadata(plain, res) is None


def test_explicit_scale_forms() -> None:
    da = simple(["B4", "B5", "B10"], np.ones((3, 2, 2), "uint16"))
    res = resolve_bands(da, sensor="landsat-8")
    spec = scale_from_metadata(da, res, scale=2.75e-05, offset=-0.2)
    assert spec is not None
    # a scalar is the reflective DN convention: thermal bands keep their own values
    np.testing.assert_allclose(spec.scale, [2.75e-05, 2.75e-05, 1.0])
    np.testing.assert_allclose(spec.offset, [-0.2, -0.2, 0.0])
    spec = scale_from_metadata(da, res, scale=[1e-4, 2e-4, 0.00341802], offset={"B10": 149.0})
    assert spec is not None
    np.testing.assert_allclose(spec.offset, [0.0, 0.0, 149.0])
    with pytest.raises(InputError, match="scale= has 2 values"):
        scale_from_metadata(da, res, scale=[1.0, 2.0])
    with pytest.raises(InputError, match="unknown band"):
        scale_from_metadata(da, res, offset={"B99": 1.0})


# --------------------------------------------------------------------------- checks


def test_looks_like_dn_and_percent() -> None:
    rng = np.random.default_rng(0)
    refl = rng.uniform(0, 0.6, 1000)
    assert looks_like_dn(np.array([0, 1, 2], dtype="uint8"))
    assert not looks_like_dn(refl)
    assert looks_like_dn(refl * 10000)
    refl_nan = refl.copy()
    refl_nan[:100] = np.nan
    assert not looks_like_dn(refl_nan)
    assert not looks_like_dn(np.full(5, np.nan))
    assert looks_like_percent(refl * 100)
    assert not looks_like_percent(refl)
    assert not looks_like_percent(refl * 10000)


def test_check_dn_without_scale_names_the_fix() -> None:
    da = open_band_stack(UKIS / f"{S2_PB04}.tif", S2_BANDS)
    res = resolve_bands(da, sensor="sentinel-2b")
    with pytest.raises(
        InputError,
        match=r"digital numbers \(median 2315, max 4819\); pass scale=0\.0001 .*"
        r"scale=2\.75e-05, offset=-0\.2 \(Landsat C2 L2\)",
    ):
        check_reflectance_scale(da.values, res, None)


def test_check_percent_reflectance() -> None:
    values = np.random.default_rng(1).uniform(2, 60, (2, 8, 8))
    da = simple(["B04", "B08"], values)
    res = resolve_bands(da, sensor="S2A")
    with pytest.raises(InputError, match=r"reflectance in percent.*scale=0.01"):
        check_reflectance_scale(values, res, None)
    check_reflectance_scale(values / 100, res, None)


def test_check_scale_applied_twice() -> None:
    values = np.random.default_rng(2).uniform(0.02, 0.5, (2, 8, 8))
    res = resolve_bands(simple(["B04", "B08"], values), sensor="S2A")
    spec = ScaleSpec(np.full(2, 1e-4), np.full(2, -0.1), source="raster:bands")
    with pytest.raises(InputError, match=r"raster:bands.*look like reflectance already"):
        check_reflectance_scale(values, res, spec)
    with pytest.raises(InputError, match="still look like digital numbers"):
        check_reflectance_scale(values * 1e8, res, spec)


def test_check_thermal_dn_and_ambiguous_units() -> None:
    da = simple(["B4", "B10"], np.ones((2, 4, 4)))
    res = resolve_bands(da, sensor="landsat-8")
    sample = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 44000.0)])
    with pytest.raises(InputError, match="thermal band 'B10' looks like digital numbers"):
        check_reflectance_scale(sample, res, None)
    sample[1] = np.linspace(5.0, 12.0, 16).reshape(4, 4)
    with pytest.raises(InputError, match=r"radiance .* or degrees Celsius; pass thermal_units="):
        check_reflectance_scale(sample, res, None)
    check_reflectance_scale(sample, res, None, thermal_units=[None, "radiance"])


# ------------------------------------------------------------------- to_model_units


def test_rio_cloudmask_celsius_thermal_to_normalised_bt() -> None:
    files = sorted(RIO_CLOUDMASK.glob("LC8*_B*_toa.tif"))
    if not files:
        pytest.skip("shared/ real data not available")
    names = [re.search(r"_(B\d+)_toa", f.name).group(1) for f in files]  # type: ignore[union-attr]
    da = xr.concat([rioxarray.open_rasterio(f) for f in files], dim="band")
    da = da.assign_coords(band=names)
    res = resolve_bands(da, sensor="landsat-8")
    # the engine's pattern: scale and checks once on a coarse whole-scene sample ...
    sample = da.values[list(res.indices), ::8, ::8]
    spec = scale_from_metadata(da, res, sample=sample)
    assert spec is None  # float TOA reflectance + degC: nothing to scale
    check_reflectance_scale(sample, res, spec)  # cloud tops < 0 degC: clearly not radiance
    # ... a warm cloud-free window alone (5-16 degC) could be radiance just as well
    window = da.isel(x=slice(200, 264), y=slice(150, 214))
    block = window.values[list(res.indices)]
    with pytest.raises(InputError, match="could be radiance"):
        check_reflectance_scale(block, res, spec)
    check_reflectance_scale(block, res, spec, thermal_units="celsius")
    # ... then the per-block transform
    out = to_model_units(block, res, spec)
    for i in np.flatnonzero(np.asarray(res.is_thermal)):
        t = res.thermal[i]
        assert t is not None and t.bt_min_k is not None and t.bt_max_k is not None
        want = (block[i].astype(np.float64) + 273.15 - t.bt_min_k) / (t.bt_max_k - t.bt_min_k)
        np.testing.assert_allclose(out[i], want, rtol=1e-6, atol=1e-6)
    refl = ~np.asarray(res.is_thermal)
    np.testing.assert_array_equal(out[refl], block[refl])


def test_thermal_units_and_chunk_independence() -> None:
    da = simple(["B4", "B10"], np.ones((2, 2, 3)))
    res = resolve_bands(da, sensor="landsat-8")
    kelvin = np.array([[250.0, 290.0, 310.0], [273.15, 300.0, np.nan]])
    block = np.stack([np.full((2, 3), 0.1), kelvin])
    want = (kelvin - 132.0) / (249.0 - 132.0)
    auto = to_model_units(block, res, None)
    np.testing.assert_allclose(auto[1], want, rtol=1e-6)
    assert np.isnan(auto[1, 1, 2])
    celsius = block.copy()
    celsius[1] -= 273.15
    np.testing.assert_allclose(to_model_units(celsius, res, None)[1], want, rtol=1e-5)
    np.testing.assert_allclose(
        to_model_units(celsius, res, None, thermal_units="celsius")[1], want, rtol=1e-5
    )
    radiance = block.copy()
    radiance[1] = 774.89 / np.expm1(1321.08 / kelvin)
    np.testing.assert_allclose(brightness_temperature(radiance[1], 774.89, 1321.08), kelvin)
    got = to_model_units(radiance, res, None, thermal_units=["auto", "radiance"])
    np.testing.assert_allclose(got[1], want, rtol=1e-5)
    # the per-pixel rule gives the same values whatever the chunking
    halves = np.concatenate(
        [to_model_units(block[:, :, :1], res, None), to_model_units(block[:, :, 1:], res, None)],
        axis=2,
    )
    np.testing.assert_array_equal(halves, auto)
    assert block[1, 0, 0] == 250.0  # input untouched
    with pytest.raises(InputError, match="thermal_units 'fahrenheit' not understood"):
        to_model_units(block, res, None, thermal_units="fahrenheit")


def test_thermal_band_without_catalogue_range_uses_default() -> None:
    da = xr.DataArray(
        np.ones((1, 2, 2)),
        dims=("band", "y", "x"),
        coords={"band": ["tir"], "wavelength": ("band", [11.0]), "fwhm": ("band", [1.0])},
    )
    res = resolve_bands(da)
    assert res.thermal == (None,)
    out = to_model_units(np.full((1, 2, 2), 300.0), res, None)
    lo, hi = DEFAULT_BT_RANGE_K
    np.testing.assert_allclose(out, (300.0 - lo) / (hi - lo), rtol=1e-6)
    with pytest.raises(InputError, match="radiance needs K1/K2"):
        to_model_units(np.full((1, 2, 2), 9.0), res, None, thermal_units="radiance")


def test_to_model_units_in_dask_blocks_matches_numpy() -> None:
    da_mod = pytest.importorskip("dask.array")
    dn = rioxarray.open_rasterio(need(UKIS / f"{S2_PB04}.tif")).values
    da = simple(S2_BANDS, dn, processing_baseline="04.00")
    res = resolve_bands(da, sensor="sentinel-2b")
    spec = scale_from_metadata(da, res)
    lazy = da_mod.from_array(dn, chunks=(13, 3, 4)).map_blocks(
        to_model_units, res, spec, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    np.testing.assert_array_equal(lazy.compute(), to_model_units(dn, res, spec))


def test_block_band_count_must_match() -> None:
    res = resolve_bands(simple(["B04"], np.ones((1, 2, 2))), sensor="S2A")
    with pytest.raises(InputError, match="1 kept bands on axis 0, got shape \\(2, 2, 2\\)"):
        to_model_units(np.ones((2, 2, 2)), res, None)
