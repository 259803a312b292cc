"""``xsensei.cloudmask`` as users call it: malformed inputs and new-user acceptance runs.

Models are the seeded fixture checkpoints of ``conftest.py`` (``pixelnet_ckpt`` is per-pixel and
fast; ``deeplab_ckpt`` only where windows and halos matter). No trained weights ship yet, so
every call passes ``model=``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray
import xarray as xr

import xsensei
from xsensei.demo import DEMO_WAVELENGTHS_NM, demo_scene
from xsensei.errors import CheckpointError, DescriptorError, InputError

# rioxarray (not xsensei) still multiplies Affine objects with `*`
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LANDSAT_DIR = SHARED / "data" / "real" / "landsat8-rio-cloudmask"
LANDSAT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")


@pytest.fixture(scope="module")
def scene() -> xr.DataArray:
    """64 x 64 six-band float reflectance with wavelength coords (um) and a CRS."""
    return demo_scene(size=64)


@pytest.fixture(scope="module")
def pixelnet(pixelnet_ckpt: Path) -> str:
    return str(pixelnet_ckpt)


@pytest.fixture(scope="module")
def deeplab(deeplab_ckpt: Path) -> str:
    return str(deeplab_ckpt)


def _no_wavelengths(scene: xr.DataArray) -> xr.DataArray:
    return scene.drop_vars(["center_wavelength", "full_width_half_max"])


# =============================================================================================
# 1. malformed inputs: error type and message, or the correct result


def test_no_wavelengths_and_no_sensor(scene, pixelnet):
    """rioxarray-style integer band labels, no wavelength coords, no sensor."""
    bare = xr.DataArray(scene.values, dims=("band", "y", "x"), coords={"band": [1, 2, 3, 4, 5, 6]})
    with pytest.raises(DescriptorError, match="could not find wavelengths for any band") as info:
        xsensei.cloudmask(bare, model=pixelnet)
    msg = str(info.value)
    assert "'1'" in msg and "'6'" in msg  # names the bands
    assert "no sensor was given" in msg
    for fix in ("descriptors=", "sensor=", "center_wavelength"):
        assert fix in msg


def test_band_names_without_sensor(scene, pixelnet):
    with pytest.raises(DescriptorError, match="'blue'.*'swir22'.*pass sensor="):
        xsensei.cloudmask(_no_wavelengths(scene), model=pixelnet)


def test_band_names_with_sensor_resolve(scene, pixelnet):
    mask = xsensei.cloudmask(_no_wavelengths(scene), sensor="landsat-8", model=pixelnet)
    assert mask.dtype == np.uint8 and mask.shape == (64, 64)


def test_wavelength_coords_in_metres(scene, pixelnet):
    metres = scene.assign_coords(center_wavelength=scene.center_wavelength * 1e-6)
    with pytest.raises(
        DescriptorError, match="band 'blue': centre wavelength 4.82e-07 .*neither a plausible"
    ):
        xsensei.cloudmask(metres, model=pixelnet)


def test_wavelength_coords_scaled_by_1e7(scene, pixelnet):
    wrong = scene.assign_coords(center_wavelength=scene.center_wavelength * 1e7)
    with pytest.raises(DescriptorError, match=r"band 'blue'.*4\.82e\+06.*100-20000 nm"):
        xsensei.cloudmask(wrong, model=pixelnet)


def test_wavelength_units_attr_unsupported(scene, pixelnet):
    coord = scene.center_wavelength.assign_attrs(units="angstrom")
    with pytest.raises(DescriptorError, match="unsupported wavelength units 'angstrom'"):
        xsensei.cloudmask(scene.assign_coords(center_wavelength=coord), model=pixelnet)


def test_uint16_dn_without_scale_refused_at_call(scene, pixelnet):
    dn = (scene * 10000).astype("uint16")
    with pytest.raises(InputError, match=r"integer data \(uint16\) without a scale.*scale=0\.0001"):
        xsensei.cloudmask(dn, model=pixelnet)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"precision": "fp64"}, r"precision must be one of .*'bf16'.*got 'fp64'"),
        ({"device": "tpu"}, r"device must be 'auto' or a torch device .*got 'tpu'"),
        ({"partial": "any"}, r"partial must be 'fill' or 'nodata', got 'any'"),
        ({"batch_size": 0}, r"batch_size must be a whole number >= 1, got 0"),
        ({"torch_threads": 0}, r"torch_threads must be None .* got 0"),
        ({"nodata": "0"}, r"nodata must be a number .* got '0'"),
        ({"scale": 0}, r"scale is 0 for band\(s\) at position\(s\) \[0, 1, 2, 3, 4, 5\]"),
    ],
)
def test_bad_inference_options_are_refused_at_call(scene, pixelnet, option, message):
    """Not hours later inside a task on a cluster: the lazy call itself raises."""
    with pytest.raises(ValueError, match=message):
        xsensei.cloudmask(scene.chunk({"x": 8}), model=pixelnet, **option)
    with pytest.raises(ValueError, match=message):
        xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM, model=pixelnet, **option)


def test_uint16_dn_with_scale_matches_reflectance(scene, pixelnet):
    dn = (scene * 10000).round().astype("uint16")
    from_dn = xsensei.cloudmask(dn, scale=1e-4, model=pixelnet, output="probability")
    refl = xsensei.cloudmask(dn.astype("float32") * 1e-4, model=pixelnet, output="probability")
    np.testing.assert_allclose(from_dn.values, refl.values, atol=1e-5)


def test_numpy_dn_with_scale_and_offset_match_reflectance(scene, pixelnet):
    """The numpy path honours scale=/offset= as DataArrays do (it used to drop them and then
    ask for them); nodata and all-zero fill are found on the digital numbers."""
    refl = scene.values
    ref = xsensei.cloudmask(refl, DEMO_WAVELENGTHS_NM, model=pixelnet, output="probability")
    dn = (np.round(refl * 10000) + 1000).astype("uint16")  # Sentinel-2 baseline >= 04.00
    dn[:, :4] = 0  # fill border (rows 0-3)
    dn[:, 4:6] = 65535  # declared nodata (rows 4-5)
    got = xsensei.cloudmask(dn, DEMO_WAVELENGTHS_NM, model=pixelnet, scale=1e-4, offset=-0.1,
                            nodata=65535, output="probability")
    assert np.isnan(got[:, :6]).all() and not np.isnan(got[:, 6:]).any()
    np.testing.assert_allclose(got[:, 6:], ref[:, 6:], atol=2e-3)
    per_band = xsensei.cloudmask(dn, DEMO_WAVELENGTHS_NM, model=pixelnet, scale=[1e-4] * 6,
                                 offset=-0.1, nodata=65535, output="probability")
    np.testing.assert_array_equal(per_band, got)
    with pytest.raises(InputError, match="mapping needs band names"):
        xsensei.cloudmask(dn, DEMO_WAVELENGTHS_NM, model=pixelnet, scale={"B02": 1e-4})
    with pytest.raises(InputError, match=r"scale= has 5 values; expected a scalar or 6"):
        xsensei.cloudmask(dn, DEMO_WAVELENGTHS_NM, model=pixelnet, scale=[1e-4] * 5)


def test_nodata_written_encoded_and_per_variable_nodata_are_honoured(scene, pixelnet):
    """rioxarray write_nodata(encoded=True) on integers, and an odc-stac-like Dataset whose
    variables keep their own nodata (blue 0, the others 65535)."""
    dn = ((scene + 0.1) / 1e-4).round().astype("uint16")
    dn[:, 8:16] = 65535
    kwargs = {"model": pixelnet, "scale": 1e-4, "offset": -0.1}
    encoded = dn.rio.write_nodata(65535, encoded=True)
    mask = xsensei.cloudmask(encoded, **kwargs).values
    assert (mask[8:16] == 255).all() and (mask[16:] != 255).all()
    ds = dn.drop_vars(["center_wavelength", "full_width_half_max"]).to_dataset(dim="band")
    for name in ds.data_vars:
        ds[name].attrs["nodata"] = 65535
    ds["blue"].attrs["nodata"] = 0
    ds["blue"][8:16] = 0
    got = ds.sensei.cloudmask(sensor="landsat-8", **kwargs)
    assert got.attrs["input_scaling"].endswith("nodata [0 65535 65535 65535 65535 65535]")
    assert (got.values[8:16] == 255).all() and (got.values[16:] != 255).all()


def test_options_a_numpy_array_cannot_honour_are_refused(scene, pixelnet):
    """resolution=, sensor= and band_dim= used to be dropped silently for numpy input; and a
    DataArray without x/y coords has no pixel size (its positions are not metres)."""
    for kwargs, names in (({"resolution": 60}, "resolution="),
                          ({"sensor": "landsat-8", "resolution": -5},
                           "sensor= and resolution=")):
        with pytest.raises(InputError, match=rf"^{names} need"):
            xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM, model=pixelnet, **kwargs)
    bare = scene.drop_vars(["x", "y", "spatial_ref"], errors="ignore")
    with pytest.raises(InputError, match="known pixel size: x/y coords or a CRS transform"):
        xsensei.cloudmask(bare, model=pixelnet, resolution=60)


def test_numpy_descriptors_in_micrometres_as_for_dataarrays(scene, pixelnet):
    nm = xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM, model=pixelnet)
    um = xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM / 1000, model=pixelnet)
    np.testing.assert_array_equal(um, nm)
    with pytest.raises(DescriptorError, match="neither a plausible micrometre nor nanometre"):
        xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM / 1e6, model=pixelnet)


def test_uint16_dn_nodata_becomes_255(scene, pixelnet):
    dn = (scene * 10000).astype("uint16").where(scene.x > scene.x[9], 0).astype("uint16")
    mask = xsensei.cloudmask(dn, scale=1e-4, nodata=0, model=pixelnet).values
    assert (mask[:, :10] == 255).all()
    assert (mask[:, 10:] != 255).all()


def test_float_dn_values_error_at_compute_with_hint(scene, pixelnet):
    dn_like = (scene * 10000).round().chunk({"y": 32, "x": 32})  # e.g. 1500.0
    mask = xsensei.cloudmask(dn_like, model=pixelnet)  # lazy: nothing is read yet
    with pytest.raises(InputError, match="digital numbers.*pass scale=.*scale=0.0001"):
        mask.compute()


def test_percent_reflectance_error_suggests_scale_001(scene, pixelnet):
    """0-100 % reflectance must not be told to use scale=0.0001 (that gives 0-0.01)."""
    mask = xsensei.cloudmask((scene * 100).chunk(), model=pixelnet)
    with pytest.raises(InputError, match=r"percent.*scale=0\.01\b"):
        mask.compute()


@pytest.mark.parametrize("scale, offset", [(1e-4, 0.0), (1e-4, -0.1), (2.75e-5, -0.2)])
def test_scale_applied_to_decoded_reflectance_is_refused(scene, pixelnet, scale, offset):
    """stackstac rescale=True / rioxarray mask_and_scale=True data are reflectance already: a
    second scale would make every pixel ~0 or negative, an all-clear mask without a word."""
    mask = xsensei.cloudmask(scene.chunk({"y": 32}), model=pixelnet, scale=scale, offset=offset)
    with pytest.raises(InputError, match=r"reflectance already.*applied twice.*scale=1"):
        mask.compute()
    # the same scale on the digital numbers it belongs to is fine, dark blocks included
    dn = ((scene - offset) / scale).round().astype("float32")
    dn[:, :32] = (0.001 - offset) / scale  # a very dark half (0.1 % reflectance)
    ok = xsensei.cloudmask(dn.chunk({"y": 32}), model=pixelnet, scale=scale, offset=offset)
    assert set(np.unique(ok.values)) <= {0, 1, 2, 3}


@pytest.mark.parametrize("meta", ["raster:bands", "scale_factor/add_offset",
                                  "sentinel-2 baseline"])
def test_float_dn_with_unapplied_metadata_names_the_scale_to_pass(scene, pixelnet, meta):
    """stackstac rescale=False / a cast to float: DN in float with scale metadata. Float data
    are taken as decoded, so the error names the metadata's scale and offset; passing them
    gives the reflectance mask."""
    dn = ((scene + 0.1) / 1e-4).round().astype("float64")
    if meta == "raster:bands":
        dn = dn.assign_coords({"raster:bands": ("band", [{"scale": 1e-4, "offset": -0.1}] * 6)})
    elif meta == "scale_factor/add_offset":
        dn = dn.assign_attrs(scale_factor=1e-4, add_offset=-0.1)
    else:
        dn = dn.assign_attrs(processing_baseline="05.09")
    with pytest.raises(InputError, match=r"scale metadata was not applied.*pass scale=0.0001, "
                                         r"offset=-0.1 \(from "):
        xsensei.cloudmask(dn.chunk({"y": 32}), model=pixelnet).compute()
    fixed = xsensei.cloudmask(dn, model=pixelnet, scale=1e-4, offset=-0.1, output="probability")
    refl = xsensei.cloudmask(scene, model=pixelnet, output="probability")
    np.testing.assert_allclose(fixed.values, refl.values, atol=2e-3)  # DN rounding: 5e-5


def _landsat_l2_with_thermal(scene: xr.DataArray) -> xr.DataArray:
    """Landsat C2 L2 digital numbers: SR bands (2.75e-5, -0.2) and ST_B10 (0.00341802, 149)."""
    plain = scene.drop_vars(["center_wavelength", "full_width_half_max"])
    sr = ((plain + 0.2) / 2.75e-5).round().astype("uint16")
    kelvin = xr.full_like(plain.isel(band=0), 295.0) - 40 * (plain.sel(band="blue") > 0.3)
    st = ((kelvin - 149.0) / 0.00341802).round().astype("uint16").expand_dims(band=["lwir11"])
    stack = xr.concat([sr, st], "band")
    return stack.assign_coords(band=["blue", "green", "red", "nir08", "swir16", "swir22",
                                     "lwir11"])


def test_thermal_band_left_as_dn_by_a_scalar_scale_is_refused(scene, pixelnet):
    stack = _landsat_l2_with_thermal(scene)
    good = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet,
                                  scale=[2.75e-5] * 6 + [0.00341802], offset=[-0.2] * 6 + [149.0])
    assert set(np.unique(good.values)) <= {0, 1, 2, 3}
    bad = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet, scale=2.75e-5, offset=-0.2)
    with pytest.raises(InputError, match=r"thermal band 'lwir11' looks like digital numbers"
                                         r".*per-band scale= and offset="):
        bad.compute()


@pytest.mark.parametrize("n_bands", [1, 2])
def test_fewer_than_three_bands(scene, pixelnet, n_bands):
    with pytest.raises(InputError, match=f"{n_bands} usable band.*at least 3"):
        xsensei.cloudmask(scene.isel(band=slice(0, n_bands)), model=pixelnet)


def test_three_bands_after_dropping_is_still_checked(scene, pixelnet):
    """Two spectral bands + one without wavelengths: the count is of usable bands."""
    two = scene.isel(band=[0, 1, 2]).copy()
    two = two.assign_coords(center_wavelength=("band", [0.482, 0.562, np.nan]))
    with pytest.warns(UserWarning, match="'red'"):
        with pytest.raises(InputError, match="2 usable band.*dropped for lacking wavelengths"):
            xsensei.cloudmask(two, model=pixelnet)


def test_all_nan_scene_is_all_nodata(scene, pixelnet):
    nan = xr.full_like(scene, np.nan)
    mask = xsensei.cloudmask(nan, model=pixelnet)
    assert mask.dtype == np.uint8
    assert (mask.values == 255).all()
    prob = xsensei.cloudmask(nan, model=pixelnet, output="probability")
    assert np.isnan(prob.values).all()


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_inf_values_are_nodata(scene, pixelnet, value):
    bad = scene.where(scene.x > scene.x[9], value)  # all bands inf in the first 10 columns
    mask = xsensei.cloudmask(bad.chunk({"x": 32}), model=pixelnet).values
    assert (mask[:, :10] == 255).all()
    assert (mask[:, 10:] != 255).all()


def test_wrong_spatial_dim_names(scene, pixelnet):
    with pytest.raises(InputError, match=r"no spatial dims.*'rows', 'cols'.*rename"):
        xsensei.cloudmask(scene.rename(y="rows", x="cols"), model=pixelnet)


def test_no_band_dim(scene, pixelnet):
    with pytest.raises(InputError, match=r"no band dimension 'band'.*\('y', 'x'\).*band_dim="):
        xsensei.cloudmask(scene.isel(band=0), model=pixelnet)


def test_band_dim_by_another_name(scene, pixelnet):
    spectral = scene.rename(band="channel")
    with pytest.raises(InputError, match=r"no band dimension 'band'.*'channel'"):
        xsensei.cloudmask(spectral, model=pixelnet)
    mask = xsensei.cloudmask(spectral, band_dim="channel", model=pixelnet)
    np.testing.assert_array_equal(mask.values, xsensei.cloudmask(scene, model=pixelnet).values)


def test_five_dims(scene, pixelnet):
    five = scene.expand_dims(time=2, member=2)
    with pytest.raises(InputError, match=r"\(time, band, y, x\).*\['time', 'member'\]"):
        xsensei.cloudmask(five, model=pixelnet)


def test_leading_dim_not_named_time(scene, pixelnet):
    """A (date, band, y, x) stack works like (time, band, y, x) and keeps its dim name."""
    flipped = scene.copy(data=scene.values[:, ::-1])
    stack = xr.concat([scene, flipped], dim="date").assign_coords(date=[10, 20])
    mask = xsensei.cloudmask(stack, model=pixelnet)
    assert mask.dims == ("date", "y", "x")
    np.testing.assert_array_equal(mask.values[0], xsensei.cloudmask(scene, model=pixelnet).values)


def test_lat_lon_dims(scene, pixelnet):
    """``spatial_dims`` accepts lat/lon, so the whole call must."""
    mask = xsensei.cloudmask(scene.rename(y="lat", x="lon"), model=pixelnet)
    assert mask.dims == ("lat", "lon")
    np.testing.assert_array_equal(mask.values, xsensei.cloudmask(scene, model=pixelnet).values)


def test_band_dim_split_over_dask_chunks_same_result(scene, pixelnet):
    one = xsensei.cloudmask(scene.chunk({"band": -1}), model=pixelnet, output="probability")
    split = xsensei.cloudmask(scene.chunk({"band": 1}), model=pixelnet, output="probability")
    np.testing.assert_array_equal(split.values, one.values)
    # spatial chunks too: per-pixel models see other block shapes (float rounding only)
    tiles = scene.chunk({"band": 1, "y": 24, "x": 40})
    many = xsensei.cloudmask(tiles, model=pixelnet, output="probability")
    np.testing.assert_allclose(many.values, one.values, atol=1e-4)
    np.testing.assert_array_equal(
        xsensei.cloudmask(tiles, model=pixelnet).values,
        xsensei.cloudmask(scene, model=pixelnet).values,
    )


def test_halo_bigger_than_chunks_same_result(deeplab):
    """Chunks of 64 under a 256 px DeepLab window (halo 256) give the one-chunk result."""
    scene = demo_scene(size=256)
    one = xsensei.cloudmask(scene, model=deeplab, output="probability").values
    small = xsensei.cloudmask(scene.chunk({"y": 64, "x": 64}), model=deeplab, output="probability")
    np.testing.assert_array_equal(small.values, one)


@pytest.mark.slow
def test_halo_bigger_than_chunks_several_chunks_same_result(deeplab):
    """512 px in chunks of 64: merged into 2 x 2 chunks of 256 with a 256 halo."""
    scene = demo_scene(size=512)
    one = xsensei.cloudmask(scene, model=deeplab, output="probability").values
    small = xsensei.cloudmask(scene.chunk({"y": 64, "x": 64}), model=deeplab, output="probability")
    assert len(small.data.chunks[-1]) > 1
    np.testing.assert_array_equal(small.values, one)


def test_scene_smaller_than_window(deeplab):
    """A 100 x 100 scene under a 256 px window: mirrored like the numpy path, no Dask error."""
    scene = demo_scene(size=100)
    desc = scene.sensei.bands().wavelengths_nm
    expected = xsensei.cloudmask(scene.values, desc, model=deeplab)
    mask = xsensei.cloudmask(scene, model=deeplab)
    np.testing.assert_array_equal(mask.values, expected)


def test_to_zarr_refuses_existing_store_and_leaves_it(scene, pixelnet, tmp_path):
    store = tmp_path / "mask.zarr"
    mask = xsensei.cloudmask(scene.chunk({"y": 32, "x": 32}), model=pixelnet)
    xsensei.to_zarr(mask, store)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.rglob("*") if p.is_file()}
    assert before

    other = xsensei.cloudmask(xr.full_like(scene, np.nan), model=pixelnet)
    with pytest.raises(FileExistsError, match=re.escape(str(store))) as info:
        xsensei.to_zarr(other, store)
    assert "overwrite=True" in str(info.value) and "resume=True" in str(info.value)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.rglob("*") if p.is_file()}
    assert after == before
    reopened = xr.open_zarr(store, decode_coords="all")["cloud_mask"]
    np.testing.assert_array_equal(reopened.values, mask.values)


def test_to_cog_refuses_existing_file(scene, pixelnet, tmp_path):
    path = tmp_path / "mask.tif"
    path.write_bytes(b"not mine")
    with pytest.raises(FileExistsError, match=re.escape(str(path))):
        xsensei.to_cog(xsensei.cloudmask(scene, model=pixelnet), path)
    assert path.read_bytes() == b"not mine"


def test_numpy_array_without_descriptors(scene, pixelnet):
    with pytest.raises(InputError, match="numpy array carries no wavelengths.*descriptors="):
        xsensei.cloudmask(scene.values, model=pixelnet)


def test_numpy_descriptors_wrong_shape(scene, pixelnet):
    with pytest.raises(InputError, match=r"N = 6 bands, got shape \(5, 3\)"):
        xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM[:5], model=pixelnet)
    with pytest.raises(InputError, match=r"got shape \(6,\)"):
        xsensei.cloudmask(scene.values, DEMO_WAVELENGTHS_NM[:, 1], model=pixelnet)


def test_numpy_wrong_ndim(scene, pixelnet):
    with pytest.raises(InputError, match=r"expected a \(band, y, x\) array, got shape \(1, 6,"):
        xsensei.cloudmask(scene.values[None], DEMO_WAVELENGTHS_NM, model=pixelnet)


def test_numpy_with_descriptors_matches_xarray(scene, pixelnet):
    desc = scene.sensei.bands().wavelengths_nm  # centre -/+ FWHM / 2 of the coords
    arr = xsensei.cloudmask(scene.values, desc, model=pixelnet)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, xsensei.cloudmask(scene, model=pixelnet).values)


def test_dataarray_descriptors_wrong_shape(scene, pixelnet):
    with pytest.raises(DescriptorError, match=r"shape \(5, 3\), expected \(6, 3\).*'blue'"):
        xsensei.cloudmask(scene, DEMO_WAVELENGTHS_NM[:5], model=pixelnet)


def test_descriptor_min_above_centre_names_band(scene, pixelnet):
    desc = DEMO_WAVELENGTHS_NM.copy()
    desc[2, 0] = 700.0  # red: min 700 > centre 655
    with pytest.raises(DescriptorError, match=r"band 'red'.*\[700, 655, 673\].*out of order"):
        xsensei.cloudmask(scene, desc, model=pixelnet)
    with pytest.raises(DescriptorError, match=r"band 2 \[700, 655, 673\].*out of order"):
        xsensei.cloudmask(scene.values, desc, model=pixelnet)


def test_unknown_sensor_suggests_names(scene, pixelnet):
    with pytest.raises(
        DescriptorError,
        match=r"Unknown sensor 'sentinal-2a'\. Did you mean: "
        r"sentinel-2a.*descriptors=",
    ):
        xsensei.cloudmask(_no_wavelengths(scene), sensor="sentinal-2a", model=pixelnet)


def test_unknown_model_name(scene):
    with pytest.raises(CheckpointError, match=r"unknown model 'bogus'.*available: .*\.safetensors"):
        xsensei.cloudmask(scene, model="bogus")


def test_missing_checkpoint_path(scene, tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=f"no checkpoint file at {re.escape(str(path))}"):
        xsensei.cloudmask(scene, model=path)


def test_default_and_fast_aliases_name_the_packaged_models():
    """``model=`` defaults to "default"; both aliases resolve to shipped, trained weights."""
    from xsensei.weights.checkpoint import packaged_models, read_metadata, resolve_model_path

    shipped = packaged_models()
    assert resolve_model_path("default") == shipped["sensei-deeplab"]
    assert resolve_model_path("fast") == shipped["sensei-pixelnet"]
    assert read_metadata(resolve_model_path("default"))["trained"] is True
    with pytest.raises(CheckpointError, match=r"available: .*default.*fast"):
        resolve_model_path("defualt")


def test_non_spectral_band_dropped_with_one_warning(scene, pixelnet):
    scl = scene.isel(band=[0]).assign_coords(
        band=["SCL"], center_wavelength=("band", [np.nan]), full_width_half_max=("band", [np.nan])
    )
    with_scl = xr.concat([scene, scl * 0 + 4.0], dim="band")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = xsensei.cloudmask(with_scl, model=pixelnet)
    user = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(user) == 1, [str(w.message) for w in user]
    assert "'SCL'" in str(user[0].message) and "dropping" in str(user[0].message)
    np.testing.assert_array_equal(mask.values, xsensei.cloudmask(scene, model=pixelnet).values)


def test_bogus_output(scene, pixelnet):
    with pytest.raises(
        ValueError, match="output must be 'mask', 'probability' or 'binary', got 'bogus'"
    ):
        xsensei.cloudmask(scene, model=pixelnet, output="bogus")


def test_dataset_without_band_variables(scene, pixelnet):
    ds = xr.Dataset({"qa": ("time", [1, 2])}, coords={"y": scene.y, "x": scene.x, "time": [0, 1]})
    with pytest.raises(InputError, match=r"Dataset has no band variables.*\['qa'\]"):
        xsensei.cloudmask(ds, model=pixelnet)
    with pytest.raises(InputError, match=r"no spatial dims found: dims are \('time',\)"):
        xsensei.cloudmask(xr.Dataset({"qa": ("time", [1, 2])}), model=pixelnet)


def test_dataset_of_bands_matches_dataarray(scene, pixelnet):
    ds = _no_wavelengths(scene).to_dataset("band")
    mask = xsensei.cloudmask(ds, sensor="landsat-8", model=pixelnet)
    expected = xsensei.cloudmask(_no_wavelengths(scene), sensor="landsat-8", model=pixelnet)
    np.testing.assert_array_equal(mask.values, expected.values)


def test_not_an_array(scene, pixelnet):
    with pytest.raises(
        InputError, match="expected an xarray DataArray/Dataset or numpy array, got <class 'list'>"
    ):
        xsensei.cloudmask(scene.values.tolist(), DEMO_WAVELENGTHS_NM, model=pixelnet)


def test_scale_with_wrong_length(scene, pixelnet):
    dn = (scene * 10000).astype("uint16")
    with pytest.raises(InputError, match=r"scale= has 2 values; expected a scalar, 6"):
        xsensei.cloudmask(dn, scale=[1e-4, 1e-4], model=pixelnet)


# =============================================================================================
# 2. acceptance: as a new user would


def _stackstac_like(n_time: int = 2, size: int = 96) -> tuple[xr.DataArray, list[int]]:
    """What ``stackstac.stack`` returns for Sentinel-2 L2A with SCL (float, rescaled).

    Band chunks of 1, object wavelength coords in um with None for SCL, per-item coords on
    time, an ``epsg`` coord and an unserialisable ``attrs["spec"]``. The second item counts how
    many blocks were read (to prove nothing is computed while building the graph).
    """
    scenes = [demo_scene(size=size, seed=s).values for s in range(n_time)]
    scl = np.full((1, size, size), 4.0, np.float32)
    values = np.stack([np.concatenate([v, scl]) for v in scenes])
    reads: list[int] = []

    def read(block: np.ndarray) -> np.ndarray:
        if block.size:  # not Dask's meta inference on an empty array
            reads.append(1)
        return block

    data = da.from_array(values, chunks=(1, 1, 64, 64)).map_blocks(read, dtype=np.float32)
    ref = demo_scene(size=size)
    names = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
    obj = np.array  # stackstac's coords are object arrays when an asset lacks eo:bands
    arr = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.date_range("2024-06-01", periods=n_time, freq="5D"),
            "id": ("time", [f"S2B_33UUP_2024060{i}_0_L2A" for i in range(n_time)]),
            "eo:cloud_cover": ("time", np.linspace(5.0, 60.0, n_time)),
            "band": names,
            "y": ref.y.values,
            "x": ref.x.values,
            "title": ("band", [f"Band {n}" for n in names]),
            "common_name": (
                "band",
                obj(["blue", "green", "red", "nir", "swir16", "swir22", None], dtype=object),
            ),
            "center_wavelength": (
                "band",
                obj([0.49, 0.56, 0.665, 0.842, 1.61, 2.19, None], dtype=object),
            ),
            "full_width_half_max": (
                "band",
                obj([0.098, 0.045, 0.038, 0.145, 0.143, 0.242, None], dtype=object),
            ),
            "epsg": 32633,
        },
        attrs={"spec": object(), "crs": "epsg:32633", "resolution": 30.0},
        name="stackstac-3c1d2a",
    )
    return arr.rio.write_crs("EPSG:32633"), reads


def test_stackstac_shaped_input_without_extra_arguments(pixelnet, tmp_path):
    arr, reads = _stackstac_like()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = arr.sensei.cloudmask(model=pixelnet)
    user = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(user) == 1 and "'SCL'" in user[0], user
    assert reads == []  # lazy: no block read (and no model run) while building the graph

    assert isinstance(mask.data, da.Array)
    assert mask.dims == ("time", "y", "x") and mask.dtype == np.uint8
    assert mask.data.chunks[0] == (1, 1)
    assert mask.rio.crs.to_epsg() == 32633
    assert mask.rio.transform() == arr.rio.transform()
    assert mask.rio.nodata == 255
    assert list(mask.attrs["flag_values"]) == [0, 1, 2, 3, 255]
    assert mask.attrs["flag_meanings"] == "clear thick_cloud thin_cloud cloud_shadow nodata"
    assert mask.attrs["model"] == "pixelnet"
    assert "spec" not in mask.attrs
    for spectral in ("band", "center_wavelength", "common_name", "title"):
        assert spectral not in mask.coords
    assert list(mask["id"].values) == list(arr["id"].values)

    values = mask.values
    assert set(np.unique(values)) <= {0, 1, 2, 3}  # no nodata in a full scene
    assert len(np.unique(values)) > 1

    report = xsensei.to_zarr(mask, tmp_path / "series.zarr")
    assert report.chunks_written == report.chunks_total
    back = xr.open_zarr(tmp_path / "series.zarr", decode_coords="all")
    assert back["cloud_mask"].dtype == np.uint8
    assert back["cloud_mask"].rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(back["cloud_mask"].values, values)
    assert back["cloud_fraction"].shape == (2,)


def test_time_series_equals_each_time_step_alone(pixelnet, deeplab):
    arr, _ = _stackstac_like(n_time=3, size=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SCL dropped
        series = arr.sensei.cloudmask(model=pixelnet).values
        for t in range(3):
            alone = arr.isel(time=t).sensei.cloudmask(model=pixelnet, batch_size=1).values
            np.testing.assert_array_equal(series[t], alone)
        # a windowed model too: time steps must not leak into each other's batches
        kw = {"model": deeplab, "window": 64, "output": "probability"}
        series = arr.chunk({"time": 3}).sensei.cloudmask(**kw).values
        for t in range(3):
            alone = arr.isel(time=t).sensei.cloudmask(**kw, batch_size=1).values
            np.testing.assert_allclose(series[t], alone, atol=1e-5)


def _open_landsat(chunks: int = 256) -> tuple[xr.DataArray, rasterio.Affine]:
    if not LANDSAT_DIR.is_dir():
        pytest.skip(f"real Landsat 8 test scene not found at {LANDSAT_DIR}")
    arrays = []
    for name in LANDSAT_BANDS:
        path = LANDSAT_DIR / f"LC80130312015295LGN00_{name}_toa.tif"
        arrays.append(rioxarray.open_rasterio(path, chunks={"x": chunks, "y": chunks}))
    with rasterio.open(LANDSAT_DIR / "LC80130312015295LGN00_B1_toa.tif") as src:
        transform = src.transform
    stack = xr.concat(arrays, dim="band").assign_coords(band=list(LANDSAT_BANDS))
    return stack, transform


def test_real_landsat8_geotiffs_to_cog(pixelnet, tmp_path):
    stack, transform = _open_landsat()

    bands = stack.sensei.bands(sensor="landsat-8")
    assert bands.names == LANDSAT_BANDS and bands.dropped == ()
    assert bands.kinds == ("reflective",) * 8 + ("thermal", "thermal")
    assert all(src == "catalogue:landsat-8" for src in bands.sources)
    assert bands.wavelengths_nm[7, 1] == pytest.approx(1373.5, abs=5)  # B9 cirrus

    mask = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet)  # thermal in degC
    assert isinstance(mask.data, da.Array)
    path = xsensei.to_cog(mask, tmp_path / "landsat-mask.tif")
    with rasterio.open(path) as cog:
        assert cog.crs.to_epsg() == 32618
        assert cog.transform == transform
        assert (cog.height, cog.width) == (458, 508)
        assert cog.count == 1 and cog.dtypes == ("uint8",)
        assert cog.nodata == 255
        written = cog.read(1)
    assert set(np.unique(written)) <= {0, 1, 2, 3, 255}
    np.testing.assert_array_equal(written, mask.values)


def test_real_landsat8_nodata_border(pixelnet):
    """The 0-valued border (reflective 0, thermal NaN) is nodata once ``nodata=0`` is given."""
    stack, _ = _open_landsat()
    mask = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet, nodata=0).values
    raw = stack.values
    empty = ((raw == 0) | np.isnan(raw)).all(axis=0)
    assert empty.sum() > 20000
    np.testing.assert_array_equal(mask == 255, empty)


def test_real_landsat8_zero_border_is_nodata_by_default(pixelnet):
    """Without ``nodata=``, a pixel whose reflective bands are all exactly 0 is still fill."""
    stack, _ = _open_landsat()
    mask = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet).values
    border = (stack.values[:8] == 0).all(axis=0)
    assert (mask[border] == 255).all()


@pytest.fixture(scope="module")
def pixelnet_no_thermal(pixelnet_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The pixelnet fixture's weights, saved with ``"thermal_bands": "ignore"``."""
    from xsensei.weights.checkpoint import load_model, save_model

    path = tmp_path_factory.mktemp("policy") / "pixelnet-no-thermal.safetensors"
    return str(save_model(load_model(pixelnet_ckpt), path, inference={"thermal_bands": "ignore"}))


def test_model_that_ignores_thermal_bands_is_given_none(pixelnet, pixelnet_no_thermal):
    """A checkpoint whose thermal policy is "ignore" masks a Landsat 8 stack with B10/B11 as
    the same weights mask it without them; its lazy graph does not even read them."""
    stack, _ = _open_landsat()
    ignoring = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet_no_thermal)
    reflective = stack.isel(band=slice(0, 8)).sensei.cloudmask(sensor="landsat-8",
                                                               model=pixelnet)
    using_lazy = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet)
    assert using_lazy.attrs["input_bands"].endswith("B9 B10 B11")
    using = using_lazy.values
    np.testing.assert_array_equal(ignoring.values, reflective.values)
    assert ignoring.attrs["input_bands"] == "B1 B2 B3 B4 B5 B6 B7 B9"  # says what was read
    assert not np.array_equal(ignoring.values, using)  # the thermal bands matter to the model
    # the B10/B11 files are not read: the culled graph opens 8 band files, not 10
    assert _files_read(ignoring) == _files_read(reflective) == 8
    assert _files_read(using_lazy) == 10


def test_mapping_scale_may_name_the_thermal_band_a_model_leaves_out(scene, pixelnet,
                                                                     pixelnet_no_thermal):
    """One Landsat C2 L2 scale mapping serves both models, whichever bands each reads."""
    stack = _landsat_l2_with_thermal(scene)
    scale = {**{b: 2.75e-5 for b in ("blue", "green", "red", "nir08", "swir16", "swir22")},
             "lwir11": 0.00341802}
    offset = {**dict.fromkeys(scale, -0.2), "lwir11": 149.0}
    for model in (pixelnet, pixelnet_no_thermal):
        mask = stack.sensei.cloudmask(sensor="landsat-8", model=model, scale=scale,
                                      offset=offset)
        assert set(np.unique(mask.values)) <= {0, 1, 2, 3}
    with pytest.raises(InputError, match=r"names unknown band\(s\) \['B10'\]; the bands are "
                                         r"\['blue', .*'lwir11'\]"):
        stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet_no_thermal,
                               scale={**scale, "B10": 1.0}, offset=offset)


def _files_read(lazy: xr.DataArray) -> int:
    """Distinct rioxarray file layers the computation of ``lazy`` depends on."""
    from dask.core import flatten
    from dask.optimization import cull

    graph = dict(lazy.data.__dask_graph__())
    culled, _ = cull(graph, list(flatten(lazy.data.__dask_keys__())))
    names = {k[0] if isinstance(k, tuple) else k for k in culled}
    return sum(str(n).startswith("open_rasterio") for n in names)


def test_thermal_policy_on_numpy_input_and_its_limits(pixelnet, pixelnet_no_thermal):
    values = demo_scene(96, seed=4).values
    wl = DEMO_WAVELENGTHS_NM.copy()
    thermal = np.array([[10600.0, 10900.0, 11200.0]])
    bt = np.full((1, 96, 96), 0.4, dtype=np.float32)  # normalised brightness temperature
    bt[:, :40] = 0.9
    with_t = np.concatenate([values, bt]), np.concatenate([wl, thermal])
    np.testing.assert_array_equal(xsensei.cloudmask(*with_t, model=pixelnet_no_thermal),
                                  xsensei.cloudmask(values, wl, model=pixelnet))
    # too few reflective bands left without the thermal one: the model gets them all
    few = np.concatenate([values[:2], bt]), np.concatenate([wl[:2], thermal])
    np.testing.assert_array_equal(xsensei.cloudmask(*few, model=pixelnet_no_thermal),
                                  xsensei.cloudmask(*few, model=pixelnet))


def test_unknown_thermal_policy_is_refused(pixelnet_ckpt, tmp_path):
    from xsensei.weights.checkpoint import load_model, save_model

    with pytest.raises(CheckpointError, match=r"thermal_bands.*'use', 'ignore'.*'sometimes'"):
        save_model(load_model(pixelnet_ckpt), tmp_path / "m.safetensors",
                   inference={"thermal_bands": "sometimes"})
    assert not (tmp_path / "m.safetensors").exists()


def test_landsat_cog_dask_threads_and_sync_agree(pixelnet):
    stack, _ = _open_landsat(chunks=128)
    sub = stack.isel(y=slice(100, 356), x=slice(100, 356))
    mask = sub.sensei.cloudmask(sensor="landsat-8", model=pixelnet)
    with dask.config.set(scheduler="sync"):
        sync = mask.values
    np.testing.assert_array_equal(mask.compute(scheduler="threads").values, sync)
