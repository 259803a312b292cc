"""A real STAC API on 127.0.0.1 over a small catalog built from real imagery, for tests and demos.

:func:`build_catalog` writes Cloud-Optimised GeoTIFFs and a static STAC catalog (items with
absolute asset paths) from the real scenes in ``shared/data/real``:

- ``sentinel-2-l1c``: the five eo-learn Sentinel-2 L1C dates (13 bands, 101 x 100 px at 10 m,
  EPSG:32633) as STAC 1.0 items, Planetary-Computer style: asset keys ``B01``..``B12``/``B8A``,
  ``eo:bands`` (micrometres) and ``raster:bands`` (scale 0.0001, offset -0.1: DN carry the
  +1000 offset of processing baseline >= 04.00), ``proj:epsg``; plus ``visual`` (a 3-band TCI),
  ``thumbnail`` and ``granule-metadata`` assets that must not be stacked.
- ``sentinel-2-c1-l1c``: the same files as STAC 1.1 items, Earth-Search style: common-name keys
  (``blue``, ``nir08``, ``rededge1``...), ``bands`` with ``eo:center_wavelength``,
  ``eo:full_width_half_max``, ``raster:scale``, ``raster:offset``, ``proj:code``; a ``blue-jp2``
  duplicate, ``visual`` and ``thumbnail``. ``nir09`` carries no wavelength, so xsensei must fall
  back to its sensor catalogue for it.
- ``landsat-c2-l1``: the rio-cloudmask Landsat 8 scene (458 x 508 px at 120 m, EPSG:32618) as a
  STAC 1.0 item, USGS style: ``coastal``..``swir22``, ``cirrus`` (TOA reflectance encoded as
  uint16 with scale 2e-5, offset -0.1), ``lwir11``/``lwir12`` (brightness temperature, kelvin,
  scale 0.00341802, offset 149); plus ``pan`` (absent file), ``qa_pixel``, ``mtl.txt`` and
  ``thumbnail``, none of which may be stacked.
- ``sentinel-2-l1c-faulty`` (optional): like ``sentinel-2-l1c`` over its own copies of the files
  in 16 x 16 px tiles, for tests that break a tile of an asset and repair it.

The dates of the eo-learn scenes are not recorded upstream; the items take the first five
timestamps of its TestEOPatch. Values are the real top-of-atmosphere reflectance, only encoded.

:class:`StacServer` runs ``stac-fastapi-static`` (uvicorn) over such a catalog in a subprocess on
a free port. ``python -m xsensei.testing.stac_server --shared ../shared --dir /tmp/cat`` builds a
catalog and serves it until interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "L1_OFFSET",
    "L1_SCALE",
    "LANDSAT_BANDS",
    "S2_BANDS",
    "S2_OFFSET",
    "S2_SCALE",
    "ST_OFFSET",
    "ST_SCALE",
    "BandDef",
    "StacServer",
    "TestCatalog",
    "build_catalog",
]

S2_SCALE, S2_OFFSET = 1e-4, -0.1
L1_SCALE, L1_OFFSET = 2e-5, -0.1
ST_SCALE, ST_OFFSET = 0.00341802, 149.0

S2_EPSG = 32633
S2_TRANSFORM = (10.0, 0.0, 465180.0, 0.0, -10.0, 5080260.0)
S2_COLLECTIONS = ("sentinel-2-l1c", "sentinel-2-c1-l1c")
S2_FAULTY = "sentinel-2-l1c-faulty"
LANDSAT_COLLECTION = "landsat-c2-l1"
#: Tile size of the faulty collection's COGs (tests corrupt single tiles).
FAULTY_BLOCK = 16
#: The STAC 1.1 collection leaves this asset without wavelengths (catalogue fallback).
S2_STAC11_NO_WAVELENGTH = "nir09"


@dataclass(frozen=True)
class BandDef:
    """One spectral band as the test catalog describes it (wavelengths in micrometres)."""

    key: str  # B01-style (Planetary Computer) or the USGS key for Landsat
    common_key: str  # Earth Search asset key
    common_name: str
    center_um: float
    fwhm_um: float
    source: str = ""  # file (Landsat) or index into the eo-learn array (as str)

    @property
    def descriptor_nm(self) -> tuple[float, float, float]:
        """(min, centre, max) nm, as xsensei derives it from centre and FWHM."""
        c, f = self.center_um * 1000.0, self.fwhm_um * 1000.0
        return (c - f / 2, c, c + f / 2)


#: In the eo-learn array's order (B8A after B08); values as on the Planetary Computer.
S2_BANDS: tuple[BandDef, ...] = (
    BandDef("B01", "coastal", "coastal", 0.443, 0.027, "0"),
    BandDef("B02", "blue", "blue", 0.490, 0.098, "1"),
    BandDef("B03", "green", "green", 0.560, 0.045, "2"),
    BandDef("B04", "red", "red", 0.665, 0.038, "3"),
    BandDef("B05", "rededge1", "rededge", 0.704, 0.019, "4"),
    BandDef("B06", "rededge2", "rededge", 0.740, 0.018, "5"),
    BandDef("B07", "rededge3", "rededge", 0.783, 0.028, "6"),
    BandDef("B08", "nir", "nir", 0.842, 0.145, "7"),
    BandDef("B8A", "nir08", "nir08", 0.865, 0.033, "8"),
    BandDef("B09", "nir09", "nir09", 0.945, 0.026, "9"),
    BandDef("B10", "cirrus", "cirrus", 1.375, 0.075, "10"),
    BandDef("B11", "swir16", "swir16", 1.610, 0.143, "11"),
    BandDef("B12", "swir22", "swir22", 2.190, 0.242, "12"),
)

#: Landsat 8 bands of the rio-cloudmask scene (USGS asset keys and eo:bands values).
LANDSAT_BANDS: tuple[BandDef, ...] = (
    BandDef("coastal", "coastal", "coastal", 0.44, 0.02, "B1"),
    BandDef("blue", "blue", "blue", 0.48, 0.06, "B2"),
    BandDef("green", "green", "green", 0.56, 0.06, "B3"),
    BandDef("red", "red", "red", 0.65, 0.04, "B4"),
    BandDef("nir08", "nir08", "nir08", 0.86, 0.03, "B5"),
    BandDef("swir16", "swir16", "swir16", 1.60, 0.08, "B6"),
    BandDef("swir22", "swir22", "swir22", 2.20, 0.20, "B7"),
    BandDef("cirrus", "cirrus", "cirrus", 1.37, 0.02, "B9"),
    BandDef("lwir11", "lwir11", "lwir11", 10.90, 0.80, "B10"),
    BandDef("lwir12", "lwir12", "lwir12", 12.00, 1.00, "B11"),
)
LANDSAT_SCENE = "LC80130312015295LGN00"
LANDSAT_ITEM = "LC08_L1TP_013031_20151022_20200908_02_T1"
LANDSAT_DATETIME = "2015-10-22T15:37:26Z"


@dataclass
class TestCatalog:
    """What :func:`build_catalog` wrote: paths, collections and their items in time order."""

    root: Path
    catalog: Path
    items: dict[str, list[str]] = field(default_factory=dict)
    datetimes: dict[str, list[str]] = field(default_factory=dict)
    files: dict[tuple[str, str, str], Path] = field(default_factory=dict)

    __test__ = False  # not a pytest class

    def asset_path(self, collection: str, item: str, key: str) -> Path:
        """The COG behind ``key`` of ``item`` in ``collection``."""
        return self.files[(collection, item, key)]


# --------------------------------------------------------------------------------------------
# catalog building


def _write_cog(path: Path, data: np.ndarray, epsg: int, transform: Sequence[float],
               nodata: float | None, blocksize: int = 256) -> None:
    import rasterio
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data if data.ndim == 3 else data[None]
    profile = {
        "driver": "COG",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": Affine(*transform),
        "compress": "deflate",
        "blocksize": blocksize,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)


def _encode(values: np.ndarray, scale: float, offset: float, valid: np.ndarray) -> np.ndarray:
    dn = np.rint((values.astype(np.float64) - offset) / scale)
    dn = np.clip(np.nan_to_num(dn, nan=0.0), 1, 65535)
    return np.where(valid, dn, 0).astype(np.uint16)


def _lonlat_footprint(epsg: int, transform: Sequence[float], shape: tuple[int, int]) -> tuple[
    list[float], dict[str, Any]
]:
    from rasterio.warp import transform_bounds

    a, _, c, _, e, f = transform
    minx, maxx = c, c + a * shape[1]
    maxy, miny = f, f + e * shape[0]
    w, s, east, n = transform_bounds(f"EPSG:{epsg}", "EPSG:4326", minx, miny, maxx, maxy)
    bbox = [round(v, 7) for v in (w, s, east, n)]
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]],
            [bbox[0], bbox[1]]]
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def _proj_bbox(transform: Sequence[float], shape: tuple[int, int]) -> list[float]:
    a, _, c, _, e, f = transform
    return [c, f + e * shape[0], c + a * shape[1], f]


def _item_links(collection: str) -> list[dict[str, str]]:
    return [
        {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../collection.json", "type": "application/json"},
        {"rel": "collection", "href": "../collection.json", "type": "application/json"},
    ]


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


EXT_10 = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
]
EXT_11 = [
    "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
]
COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def _s2_asset_10(band: BandDef, href: Path, proj: dict[str, Any]) -> dict[str, Any]:
    return {
        "href": str(href),
        "type": COG,
        "title": f"Band {band.key[1:]} - {band.common_name}",
        "roles": ["data"],
        "gsd": 10.0,
        "eo:bands": [{
            "name": band.key,
            "common_name": band.common_name,
            "center_wavelength": band.center_um,
            "full_width_half_max": band.fwhm_um,
        }],
        "raster:bands": [{
            "data_type": "uint16", "nodata": 0, "scale": S2_SCALE, "offset": S2_OFFSET,
            "spatial_resolution": 10,
        }],
        **proj,
    }


def _s2_asset_11(band: BandDef, href: Path, proj: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": band.key,
        "eo:common_name": band.common_name,
        "eo:center_wavelength": band.center_um,
        "eo:full_width_half_max": band.fwhm_um,
        "nodata": 0,
        "data_type": "uint16",
        "raster:scale": S2_SCALE,
        "raster:offset": S2_OFFSET,
        "raster:spatial_resolution": 10,
    }
    if band.common_key == S2_STAC11_NO_WAVELENGTH:
        del entry["eo:center_wavelength"], entry["eo:full_width_half_max"]
    return {
        "href": str(href),
        "type": COG,
        "title": f"{band.common_name} ({band.key})",
        "roles": ["data", "reflectance"],
        "gsd": 10.0,
        "bands": [entry],
        **proj,
    }


def _build_s2(root: Path, shared: Path, cat: TestCatalog, faulty: bool) -> None:
    data_dir = shared / "data" / "real" / "eo-learn"
    scenes = np.load(data_dir / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13)
    stamps = json.loads((data_dir / "TestEOPatch_timestamps.json").read_text())[: len(scenes)]
    shape = (int(scenes.shape[1]), int(scenes.shape[2]))
    bbox, geometry = _lonlat_footprint(S2_EPSG, S2_TRANSFORM, shape)
    pbbox = _proj_bbox(S2_TRANSFORM, shape)
    collections = [*S2_COLLECTIONS, *([S2_FAULTY] if faulty else [])]
    for cid in collections:
        cat.items[cid], cat.datetimes[cid] = [], []
    for t, stamp in enumerate(stamps):
        day = stamp.replace("-", "").replace(":", "")
        item_id = f"S2A_MSIL1C_{day}_N0500_R122_T33TVM_{day}"
        dt = stamp + "Z"
        for src in ("s2", "s2-faulty") if faulty else ("s2",):
            folder = root / "cogs" / src / item_id
            block = FAULTY_BLOCK if src == "s2-faulty" else 256
            for band in S2_BANDS:
                refl = scenes[t, :, :, int(band.source)]
                dn = _encode(refl, S2_SCALE, S2_OFFSET, np.isfinite(refl))
                _write_cog(folder / f"{band.key}.tif", dn, S2_EPSG, S2_TRANSFORM, 0, block)
            rgb = scenes[t][:, :, [3, 2, 1]].transpose(2, 0, 1)
            tci = np.clip(rgb / 0.3 * 255, 1, 255).astype(np.uint8)
            _write_cog(folder / "TCI.tif", tci, S2_EPSG, S2_TRANSFORM, 0)
        common = {
            "datetime": dt,
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": 0.0,
            "s2:processing_baseline": "05.00",
            "s2:mgrs_tile": "33TVM",
        }
        for cid in collections:
            folder = root / "cogs" / ("s2-faulty" if cid == S2_FAULTY else "s2") / item_id
            stac11 = cid == "sentinel-2-c1-l1c"
            proj: dict[str, Any] = {"proj:shape": list(shape), "proj:transform": list(
                S2_TRANSFORM)}
            props = dict(common)
            if stac11:
                props["proj:code"] = f"EPSG:{S2_EPSG}"
                props["proj:bbox"] = pbbox
            else:
                props["proj:epsg"] = S2_EPSG
                props["proj:bbox"] = pbbox
            assets: dict[str, Any] = {}
            for band in S2_BANDS:
                href = folder / f"{band.key}.tif"
                if stac11:
                    assets[band.common_key] = _s2_asset_11(band, href, proj)
                    cat.files[(cid, item_id, band.common_key)] = href
                else:
                    assets[band.key] = _s2_asset_10(band, href, proj)
                    cat.files[(cid, item_id, band.key)] = href
            if stac11:
                jp2 = dict(assets["blue"], type="image/jp2",
                           href=str(folder / "B02.jp2"), title="blue (jp2)")
                assets["blue-jp2"] = jp2
            visual = {"href": str(folder / "TCI.tif"), "type": COG, "title": "True color image",
                      "roles": ["visual"], **proj}
            if stac11:
                visual["bands"] = [{"name": n, "eo:common_name": n} for n in ("red", "green",
                                                                               "blue")]
            else:
                visual["eo:bands"] = [{"name": n, "common_name": n} for n in ("red", "green",
                                                                               "blue")]
            assets["visual"] = visual
            assets["thumbnail"] = {"href": str(folder / "preview.jpg"), "type": "image/jpeg",
                                   "roles": ["thumbnail"]}
            if not stac11:
                assets["granule-metadata"] = {"href": str(folder / "MTD_TL.xml"),
                                              "type": "application/xml", "roles": ["metadata"]}
            item = {
                "type": "Feature",
                "stac_version": "1.1.0" if stac11 else "1.0.0",
                "stac_extensions": EXT_11 if stac11 else EXT_10,
                "id": item_id,
                "collection": cid,
                "bbox": bbox,
                "geometry": geometry,
                "properties": props,
                "assets": assets,
                "links": _item_links(cid),
            }
            _write_json(root / cid / item_id / f"{item_id}.json", item)
            cat.items[cid].append(item_id)
            cat.datetimes[cid].append(dt)
    for cid in collections:
        _write_collection(root, cid, cat.items[cid], bbox, cat.datetimes[cid],
                          "1.1.0" if cid == "sentinel-2-c1-l1c" else "1.0.0",
                          "Sentinel-2 L1C (test subset of real eo-learn scenes)")


def _build_landsat(root: Path, shared: Path, cat: TestCatalog) -> None:
    import rasterio

    src_dir = shared / "data" / "real" / "landsat8-rio-cloudmask"
    folder = root / "cogs" / "landsat" / LANDSAT_ITEM
    cid = LANDSAT_COLLECTION
    assets: dict[str, Any] = {}
    epsg, transform, shape = 0, (0.0,) * 6, (0, 0)
    for band in LANDSAT_BANDS:
        with rasterio.open(src_dir / f"{LANDSAT_SCENE}_{band.source}_toa.tif") as src:
            values = src.read(1)
            epsg = int(src.crs.to_epsg())
            transform = tuple(src.transform)[:6]
            shape = (src.height, src.width)
        thermal = band.center_um > 5
        if thermal:  # brightness temperature, degC in the source -> kelvin
            kelvin = values.astype(np.float64) + 273.15
            # the source's last row is exactly 0.0 degC where the reflective bands are fill:
            # a processing artefact, written as nodata like the rest of the border
            dn = _encode(kelvin, ST_SCALE, ST_OFFSET, np.isfinite(values) & (values != 0))
            raster = {"data_type": "uint16", "nodata": 0, "scale": ST_SCALE,
                      "offset": ST_OFFSET, "unit": "kelvin", "spatial_resolution": 120}
        else:  # TOA reflectance, 0 = outside the footprint
            dn = _encode(values, L1_SCALE, L1_OFFSET, values != 0)
            raster = {"data_type": "uint16", "nodata": 0, "scale": L1_SCALE,
                      "offset": L1_OFFSET, "spatial_resolution": 120}
        href = folder / f"{LANDSAT_ITEM}_{band.source}.TIF"
        _write_cog(href, dn, epsg, transform, 0)
        assets[band.key] = {
            "href": str(href),
            "type": COG,
            "title": f"{band.common_name} ({band.source})",
            "roles": ["data"],
            "eo:bands": [{"name": band.source, "common_name": band.common_name,
                          "center_wavelength": band.center_um,
                          "full_width_half_max": band.fwhm_um}],
            "raster:bands": [raster],
        }
        cat.files[(cid, LANDSAT_ITEM, band.key)] = href
    qa = np.zeros(shape, dtype=np.uint16)
    _write_cog(folder / f"{LANDSAT_ITEM}_QA_PIXEL.TIF", qa, epsg, transform, 1)
    assets["pan"] = {
        "href": str(folder / f"{LANDSAT_ITEM}_B8.TIF"), "type": COG, "roles": ["data"],
        "eo:bands": [{"name": "B8", "common_name": "pan", "center_wavelength": 0.59,
                      "full_width_half_max": 0.18}],
    }
    assets["qa_pixel"] = {"href": str(folder / f"{LANDSAT_ITEM}_QA_PIXEL.TIF"), "type": COG,
                          "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
                          "raster:bands": [{"data_type": "uint16", "nodata": 1}]}
    assets["mtl.txt"] = {"href": str(folder / f"{LANDSAT_ITEM}_MTL.txt"), "type": "text/plain",
                         "roles": ["metadata"]}
    assets["thumbnail"] = {"href": str(folder / "thumb_small.jpeg"), "type": "image/jpeg",
                           "roles": ["thumbnail"]}
    bbox, geometry = _lonlat_footprint(epsg, transform, shape)
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": EXT_10,
        "id": LANDSAT_ITEM,
        "collection": cid,
        "bbox": bbox,
        "geometry": geometry,
        "properties": {
            "datetime": LANDSAT_DATETIME,
            "platform": "LANDSAT_8",
            "instruments": ["oli", "tirs"],
            "eo:cloud_cover": 40.0,
            "proj:epsg": epsg,
            "proj:shape": list(shape),
            "proj:transform": list(transform),
            "landsat:wrs_path": "013",
            "landsat:wrs_row": "031",
        },
        "assets": assets,
        "links": _item_links(cid),
    }
    _write_json(root / cid / LANDSAT_ITEM / f"{LANDSAT_ITEM}.json", item)
    cat.items[cid] = [LANDSAT_ITEM]
    cat.datetimes[cid] = [LANDSAT_DATETIME]
    _write_collection(root, cid, [LANDSAT_ITEM], bbox, [LANDSAT_DATETIME], "1.0.0",
                      "Landsat 8 Collection 2 Level-1 (test: one real scene at 120 m)")


def _write_collection(root: Path, cid: str, items: list[str], bbox: list[float],
                      datetimes: list[str], version: str, title: str) -> None:
    links = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
    ] + [
        {"rel": "item", "href": f"./{i}/{i}.json", "type": "application/geo+json"}
        for i in items
    ]
    _write_json(root / cid / "collection.json", {
        "type": "Collection",
        "stac_version": version,
        "id": cid,
        "title": title,
        "description": f"{title}; built by xsensei.testing.stac_server for tests.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[min(datetimes), max(datetimes)]]},
        },
        "links": links,
    })


def build_catalog(root: str | os.PathLike[str], shared: str | os.PathLike[str], *,
                  faulty: bool = False) -> TestCatalog:
    """Write the COGs and the static catalog under ``root`` (see the module docstring).

    ``shared`` is the project's ``shared`` folder (``shared/data/real/...``); nothing is copied
    from it except the pixel values, re-encoded. ``faulty=True`` adds the
    ``sentinel-2-l1c-faulty`` collection over separate copies of the files.
    """
    root = Path(root).absolute()
    shared = Path(shared)
    root.mkdir(parents=True, exist_ok=True)
    cat = TestCatalog(root=root, catalog=root / "catalog.json")
    _build_s2(root, shared, cat, faulty)
    _build_landsat(root, shared, cat)
    _write_json(cat.catalog, {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "xsensei-test",
        "title": "xsensei test catalog",
        "description": "Real Sentinel-2 and Landsat 8 scenes re-encoded as COGs for tests.",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
        ] + [
            {"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"}
            for cid in cat.items
        ],
    })
    return cat


# --------------------------------------------------------------------------------------------
# the server


def _exit_with_parent() -> None:
    """End this server when the process that started it is gone (a killed test run)."""
    import threading

    parent = int(os.environ.get("XSENSEI_STAC_PARENT", "0"))
    if parent <= 0:
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # alive, another user's process
                pass

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def create_app() -> Any:
    """The ``stac-fastapi-static`` ASGI app for uvicorn (settings from the environment).

    stac-fastapi 5.x passes its CORS options to starlette positionally, which starlette >= 0.51
    misreads (``allow_private_network`` came in before ``expose_headers``); the CORS middleware
    is therefore re-declared with keywords. The middleware stack is built on the first request.
    """
    from stac_fastapi.static.api import Settings, make_api
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    _exit_with_parent()
    settings = Settings()
    app = make_api(settings).app
    fixed = []
    for mw in app.user_middleware:
        if getattr(mw.cls, "__name__", "") == "CORSMiddleware":
            mw = Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=list(settings.cors_methods),
                allow_headers=["Content-Type"],
                max_age=600,
            )
        fixed.append(mw)
    app.user_middleware = fixed
    return app


class StacServer:
    """``stac-fastapi-static`` over a static catalog, in a uvicorn subprocess on 127.0.0.1.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. The listening socket is
    bound here (port 0 picks a free one) and handed to uvicorn, so no other process can take
    the port in between. ``url`` is the API root for ``pystac_client.Client.open``.
    """

    def __init__(self, catalog: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int = 0, log_file: str | os.PathLike[str] | None = None) -> None:
        self.catalog = Path(catalog).absolute()
        self.host = host
        self.port = port
        self.log_file = Path(log_file) if log_file else self.catalog.parent / "stac-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> StacServer:
        try:
            import stac_fastapi.static  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as err:
            raise RuntimeError(
                "the local STAC API needs stac-fastapi-static and uvicorn: "
                "pip install 'xsensei[stac]'"
            ) from err
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self._sock = sock
        self.port = sock.getsockname()[1]
        env = dict(os.environ)
        env.update({
            "CATALOG_HREF": self.catalog.as_uri(),
            "LOG_LEVEL": "warning",
            "STAC_FASTAPI_TITLE": "xsensei test STAC API",
            "STAC_FASTAPI_LANDING_ID": "xsensei-test",
            "XSENSEI_STAC_PARENT": str(os.getpid()),
        })
        fd = sock.fileno()
        log = open(self.log_file, "ab")  # the subprocess keeps its own copy of the fd
        app = "xsensei.testing.stac_server:create_app"  # not __name__: may be "__main__"
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", app, "--fd", str(fd),
                 "--log-level", "warning", "--no-access-log"],
                env=env, pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        proc = self._proc
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"the STAC API server exited with code {proc.returncode}; see "
                    f"{self.log_file}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the STAC API server did not answer within {timeout:g} s; "
                                   f"see {self.log_file}:\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> StacServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xsensei.testing.stac_server",
        description="Build the xsensei test catalog from shared/ and serve it as a STAC API.",
    )
    parser.add_argument("--shared", required=True, help="the project's shared/ folder")
    parser.add_argument("--dir", required=True, help="where to write the COGs and catalog")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rebuild", action="store_true", help="delete --dir first")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    cat = build_catalog(root, args.shared)

    def stop_on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so that the server subprocess is stopped too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with StacServer(cat.catalog, port=args.port) as server:
        print(f"STAC API at {server.url} (collections: {', '.join(cat.items)}); Ctrl-C stops it",
              flush=True)
        try:
            while server._proc is not None and server._proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
