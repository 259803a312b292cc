"""STAC -> zarr against a real STAC API (stac-fastapi-static on 127.0.0.1) over real imagery.

The catalog (see :mod:`xsensei.testing.stac_server`) holds the eo-learn Sentinel-2 L1C scenes
as STAC 1.0 (``B01``.., ``eo:bands``, ``raster:bands``, ``proj:epsg``) and STAC 1.1 items
(common names, ``bands``, ``proj:code``) and a Landsat 8 scene (USGS keys, thermal in K).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from stac_fixtures import (
    LANDSAT,
    S2_10,
    S2_11,
    StacEnv,
    descriptors_of,
    direct_mask,
    keys_of,
    needs_data,
    scale_offset_of,
    stac_env,
)

import xsensei  # noqa: F401  (registers .sensei)
from xsensei.io.stac import StacApiError, StacMetadataError, search, select_assets, stack_items
from xsensei.stac_job import stac_to_zarr

pytestmark = needs_data
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> StacEnv:
    return stac_env(tmp_path_factory)


def _source(env: StacEnv, collection: str, item: str, key: str) -> Any:
    return rasterio.open(env.catalog.asset_path(collection, item, key))


def _datetimes(env: StacEnv, collection: str) -> np.ndarray:
    return np.array([s.rstrip("Z") for s in env.catalog.datetimes[collection]],
                    dtype="datetime64[ns]")


# --------------------------------------------------------------------------------------------
# asset selection on items shaped like the real catalogs' (no server needed)


def _cog(**fields: Any) -> dict[str, Any]:
    return {"href": "https://example.com/x.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"], **fields}


def _eo(name: str, common: str | None, centre: float, fwhm: float) -> dict[str, Any]:
    band: dict[str, Any] = {"name": name, "center_wavelength": centre,
                            "full_width_half_max": fwhm}
    if common:
        band["common_name"] = common
    return {"eo:bands": [band]}


S2 = [("B01", "coastal", 0.443, 0.027), ("B02", "blue", 0.49, 0.098),
      ("B03", "green", 0.56, 0.045), ("B04", "red", 0.665, 0.038),
      ("B05", "rededge", 0.704, 0.019), ("B06", "rededge", 0.74, 0.018),
      ("B07", "rededge", 0.783, 0.028), ("B08", "nir", 0.842, 0.145),
      ("B09", "nir09", 0.945, 0.026), ("B11", "swir16", 1.61, 0.143),
      ("B12", "swir22", 2.19, 0.242), ("B8A", "nir08", 0.865, 0.033)]
ES_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
           "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
           "B11": "swir16", "B12": "swir22"}


def _pc_s2_l2a() -> dict[str, Any]:
    assets = {k: _cog(**_eo(k, c, w, f)) for k, c, w, f in S2}  # B8A last, as on PC
    assets.update({
        "AOT": _cog(), "SCL": _cog(), "WVP": _cog(),
        "visual": _cog(**{"eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]}),
        "preview": {"href": "p.png", "type": "image/png", "roles": ["overview"]},
        "safe-manifest": {"href": "m.xml", "type": "application/xml", "roles": ["metadata"]},
        "tilejson": {"href": "t.json", "type": "application/json", "roles": ["tiles"]},
    })
    return {"id": "pc", "collection": "sentinel-2-l2a", "assets": assets,
            "properties": {"platform": "Sentinel-2A", "s2:processing_baseline": "05.09"}}


def _es_s2_l2a() -> dict[str, Any]:
    assets = {}
    for k, c, w, f in S2:
        key = ES_KEYS[k]
        band = {**_eo(key, c, w, f), "raster:bands": [{"scale": 1e-4, "offset": -0.1}]}
        assets[key] = _cog(**band)
        assets[f"{key}-jp2"] = {**band, "href": f"s3://x/{k}.jp2", "type": "image/jp2",
                                "roles": ["data"]}
    assets.update({"scl": _cog(), "aot": _cog(), "wvp": _cog(), "visual": _cog(
        **{"eo:bands": [{"name": "red"}, {"name": "green"}, {"name": "blue"}]}),
        "thumbnail": {"href": "t.jpg", "type": "image/jpeg", "roles": ["thumbnail"]},
        "granule_metadata": {"href": "g.xml", "type": "application/xml", "roles": ["metadata"]}})
    return {"id": "es", "collection": "sentinel-2-l2a", "assets": assets,
            "properties": {"platform": "sentinel-2b", "proj:code": "EPSG:32633"}}


def _landsat_l2() -> dict[str, Any]:
    sr = {"raster:bands": [{"scale": 2.75e-05, "offset": -0.2, "data_type": "uint16"}]}
    assets = {k: _cog(**_eo(n, k, w, f), **sr) for k, n, w, f in [
        ("coastal", "OLI_B1", 0.44, 0.02), ("blue", "OLI_B2", 0.48, 0.06),
        ("green", "OLI_B3", 0.56, 0.06), ("red", "OLI_B4", 0.65, 0.04),
        ("nir08", "OLI_B5", 0.87, 0.03), ("swir16", "OLI_B6", 1.61, 0.09),
        ("swir22", "OLI_B7", 2.2, 0.19)]}
    assets["lwir11"] = _cog(**_eo("TIRS_B10", "lwir11", 10.9, 0.59), **{"raster:bands": [
        {"scale": 0.00341802, "offset": 149.0, "unit": "kelvin", "data_type": "uint16"}]})
    for key in ("qa", "atran", "cdist", "drad", "emis", "emsd", "trad", "urad", "qa_pixel",
                "qa_radsat", "qa_aerosol"):
        assets[key] = _cog(**{"raster:bands": [{"unit": "watt/steradian/square_meter/micrometer"}]})
    assets["ang"] = {"href": "a.txt", "type": "text/plain", "roles": ["metadata"]}
    assets["mtl.txt"] = {"href": "m.txt", "type": "text/plain", "roles": ["metadata"]}
    return {"id": "l2", "collection": "landsat-c2-l2", "assets": assets,
            "properties": {"platform": "landsat-9"}}


def _usgs_l1() -> dict[str, Any]:
    refl = {"raster:bands": [{"scale": 2e-5, "offset": -0.1, "data_type": "uint16"}]}
    assets = {k: _cog(**_eo(b, k, w, f), **refl) for k, b, w, f in [
        ("coastal", "B1", 0.44, 0.02), ("blue", "B2", 0.48, 0.06), ("green", "B3", 0.56, 0.06),
        ("red", "B4", 0.65, 0.04), ("nir08", "B5", 0.86, 0.03), ("swir16", "B6", 1.6, 0.08),
        ("swir22", "B7", 2.2, 0.2), ("pan", "B8", 0.59, 0.18), ("cirrus", "B9", 1.37, 0.02)]}
    radiance = {"raster:bands": [{"unit": "watt/steradian/square_meter/micrometer",
                                  "scale": 3.342e-4, "offset": 0.1}]}
    assets["lwir11"] = _cog(**_eo("B10", "lwir11", 10.9, 0.8), **radiance)
    assets["lwir12"] = _cog(**_eo("B11", "lwir12", 12.0, 1.0), **radiance)
    assets["MTL.txt"] = {"href": "m.txt", "type": "text/plain", "roles": ["metadata"]}
    assets["qa_pixel"] = _cog(roles=["cloud", "cloud-shadow", "snow-ice"])
    return {"id": "l1", "collection": "landsat-c2-l1", "assets": assets,
            "properties": {"platform": "LANDSAT_8"}}


def _old_landsat_names() -> dict[str, Any]:
    """SR_B*/ST_B10 keys without eo:bands: wavelengths come from the sensor catalogue."""
    assets = {f"SR_B{i}": _cog() for i in range(1, 8)}
    assets["ST_B10"] = _cog(**{"raster:bands": [{"unit": "K", "scale": 0.00341802,
                                                 "offset": 149.0}]})
    assets["QA_PIXEL"] = _cog()
    return {"id": "old", "collection": "landsat-c2l2-sr", "assets": assets,
            "properties": {"platform": "LANDSAT_8"}}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (_pc_s2_l2a, ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                      "B11", "B12"]),
        (_es_s2_l2a, ["coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3",
                      "nir", "nir08", "nir09", "swir16", "swir22"]),
        (_landsat_l2, ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22",
                       "lwir11"]),
        (_usgs_l1, ["coastal", "blue", "green", "red", "nir08", "cirrus", "swir16", "swir22"]),
        (_old_landsat_names, ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7",
                              "ST_B10"]),
    ],
    ids=["pc-s2-l2a", "earth-search-s2-l2a", "landsat-c2-l2", "usgs-landsat-c2-l1",
         "landsat-sr-st-keys"],
)
def test_select_assets_per_collection_and_naming(item: Any, expected: list[str]) -> None:
    """Spectral assets only (no QA/SCL/AOT/visual/metadata/pan/jp2 copies/radiance thermal),
    ordered by wavelength (B8A after B08) for both naming conventions."""
    assert select_assets(item()) == expected


# --------------------------------------------------------------------------------------------
# search and stack through the running API


def test_search_through_the_api(env: StacEnv) -> None:
    from pystac_client import Client

    items = search(env.url, S2_10)
    assert [i.id for i in items] == env.catalog.items[S2_10]  # sorted by datetime
    some = search(Client.open(env.url), [S2_11], datetime="2015-07-31/2015-08-30")
    assert [i.datetime.strftime("%m-%d") for i in some] == ["07-31", "08-20", "08-30"]
    assert [i.id for i in search(env.url, LANDSAT, bbox=[-72.5, 40.8, -72.2, 41.0])] == \
        env.catalog.items[LANDSAT]
    with pytest.raises(StacMetadataError, match=r"no collection 'sentinel-2-l9'.*available"):
        search(env.url, "sentinel-2-l9")
    with pytest.raises(StacMetadataError, match="found no items"):
        search(env.url, S2_10, bbox=[0.0, 0.0, 0.1, 0.1])
    with pytest.raises(StacApiError, match="answered HTTP 400"):
        search(env.url, S2_10, bbox=[0.0, 0.0, 0.1])


@pytest.mark.parametrize("collection", [S2_10, S2_11, LANDSAT])
def test_stack_matches_the_source_files(env: StacEnv, collection: str, tmp_path: Path) -> None:
    """Grid, CRS, values (DN * scale + offset, nodata NaN), band order, descriptors from STAC
    1.0 / 1.1 metadata (catalogue for the band without), and a plain ``to_zarr`` round trip."""
    items = search(env.url, collection)
    arr = stack_items(items, chunks=64)
    keys = keys_of(collection)
    assert arr.dims == ("time", "band", "y", "x") and arr.dtype == np.float32
    assert list(arr["band"].values) == keys
    np.testing.assert_array_equal(arr["time"].values, _datetimes(env, collection))
    assert list(arr["id"].values) == env.catalog.items[collection]

    first = env.catalog.items[collection][0]
    with _source(env, collection, first, keys[0]) as src:
        assert arr.rio.crs == src.crs
        assert arr.rio.transform() == src.transform
        assert arr.shape[-2:] == src.shape

    values = arr.compute(scheduler="threads").values
    scale, offset = scale_offset_of(collection)
    for t in sorted({0, len(items) - 1}):  # first and last item
        item = env.catalog.items[collection][t]
        for b, key in enumerate(keys):
            with _source(env, collection, item, key) as src:
                dn = src.read(1)
            expected = dn.astype(np.float32) * np.float32(scale[b]) + np.float32(offset[b])
            expected[dn == 0] = np.nan
            np.testing.assert_array_equal(values[t, b], expected, err_msg=f"{item} {key}")

    resolved = arr.sensei.bands()
    np.testing.assert_allclose(resolved.wavelengths_nm, descriptors_of(collection))
    for key, source in zip(resolved.names, resolved.sources, strict=True):
        fallback = collection == S2_11 and key == "nir09"
        assert source.startswith("catalogue") if fallback else source == "coords:stackstac"

    store = tmp_path / "stack.zarr"
    arr.isel(time=slice(0, 2)).to_dataset().to_zarr(store, consolidated=False)
    back = xr.open_zarr(store, decode_coords="all", consolidated=False)["reflectance"]
    assert back.rio.crs == arr.rio.crs and back.rio.transform() == arr.rio.transform()
    assert "spec" not in back.attrs
    np.testing.assert_array_equal(back.values, values[:2])


def test_stack_bbox_and_resolution_stay_on_the_source_grid(env: StacEnv) -> None:
    from rasterio.warp import transform_bounds

    items = search(env.url, S2_10)
    with _source(env, S2_10, items[0].id, "B02") as src:
        transform, crs, full = src.transform, src.crs, src.read(1)
    # a box that cuts pixels in half: the grid still snaps outward to whole source pixels
    box = transform_bounds(crs, "EPSG:4326", 465403.0, 5079555.0, 465786.0, 5079901.0)
    arr = stack_items(items, bbox=box, chunks=32)
    t = arr.rio.transform()
    assert (t.a, t.e) == (transform.a, transform.e)
    col, row = (t.c - transform.c) / transform.a, (t.f - transform.f) / transform.e
    assert col == int(col) and row == int(row)
    window = full[int(row): int(row) + arr.sizes["y"], int(col): int(col) + arr.sizes["x"]]
    got = arr.sel(band="B02").isel(time=0).compute(scheduler="threads").values
    np.testing.assert_array_equal(got, window.astype(np.float32) * np.float32(1e-4)
                                  + np.float32(-0.1))
    assert arr.sizes["x"] * 10 >= 465786 - 465403 and arr.sizes["y"] * 10 >= 5079901 - 5079555

    coarse = stack_items(items, resolution=20, chunks=32)
    assert coarse.rio.resolution() == (20.0, -20.0)
    assert coarse.rio.transform().c % 20 == transform.c % 20


# --------------------------------------------------------------------------------------------
# the job on a LocalCluster(processes=True)


@pytest.mark.slow
@pytest.mark.parametrize("collection", [S2_10, S2_11, LANDSAT])
def test_cube_on_a_cluster_equals_the_direct_accessor_result(
    env: StacEnv, client: Any, collection: str, tmp_path: Path
) -> None:
    out = tmp_path / "cube.zarr"
    report = stac_to_zarr(out, api=env.url, collection=collection, model=env.model, chunks=64,
                          scheduler=client, progress=False)
    assert report.chunks_written == report.chunks_total and report.chunks_skipped == 0
    assert report.assets == tuple(keys_of(collection))

    cube = xr.open_zarr(out, decode_coords="all")
    mask = cube["cloud_mask"]
    expected = direct_mask(env.catalog, collection, env.model)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.values, expected)
    assert len(np.unique(expected)) >= 2  # the fixture model is not constant

    with _source(env, collection, env.catalog.items[collection][0], keys_of(collection)[0]) as s:
        assert mask.rio.crs == s.crs
        assert mask.rio.transform() == s.transform
    np.testing.assert_array_equal(mask["time"].values, _datetimes(env, collection))
    assert list(mask["id"].values) == env.catalog.items[collection]
    assert mask.attrs["flag_meanings"].split()[-1] == "nodata"
    assert list(mask.attrs["flag_values"])[-1] == 255

    valid = expected != 255
    cloudy = np.isin(expected, (1, 2)) & valid
    fraction = cloudy.sum((1, 2)) / np.maximum(valid.sum((1, 2)), 1)
    np.testing.assert_allclose(cube["cloud_fraction"].values, fraction, rtol=1e-6)


@pytest.mark.slow
def test_cli_writes_a_cube_a_new_user_can_open(env: StacEnv, client: Any,
                                              tmp_path: Path) -> None:
    """``xsensei stac`` (here ``python -m xsensei.stac_job``) against the local API, clipped to
    a bbox and a period, on the cluster given by its address."""
    from rasterio.warp import transform_bounds

    out = tmp_path / "cli.zarr"
    bbox = transform_bounds("EPSG:32633", "EPSG:4326", 465400.0, 5079500.0, 465900.0,
                            5080000.0)
    cmd = [sys.executable, "-m", "xsensei.stac_job", "--api", env.url, "--collection", S2_11,
           "--bbox", ",".join(f"{v:.6f}" for v in bbox), "--datetime", "2015-07-20/2015-09-01",
           "--out", str(out), "--model", str(env.model), "--chunks", "32", "--precision", "fp32",
           "--scheduler", client.scheduler.address]
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "3 item(s)" in proc.stdout
    assert "progress: http" in proc.stdout  # the dashboard link on a cluster

    cube = xr.open_zarr(out, decode_coords="all")
    mask = cube["cloud_mask"]
    assert mask.rio.crs.to_epsg() == 32633
    assert [str(t)[:10] for t in mask["time"].values] == ["2015-07-31", "2015-08-20",
                                                          "2015-08-30"]
    assert mask.attrs["flag_meanings"] == "clear thick_cloud thin_cloud cloud_shadow nodata"
    assert "precision fp32" in mask.attrs["inference"]  # --precision reached cloudmask()
    assert cube["cloud_fraction"].dims == ("time",)
    t = mask.rio.transform()
    assert (t.a, t.c % 10, t.f % 10) == (10.0, 0.0, 0.0)
    full = direct_mask(env.catalog, S2_11, env.model)[1:4]
    col, row = int((t.c - 465180) / 10), int((5080260 - t.f) / 10)
    np.testing.assert_array_equal(
        mask.values, full[:, row: row + mask.sizes["y"], col: col + mask.sizes["x"]]
    )

