"""STAC items -> a lazy ``(time, band, y, x)`` reflectance DataArray ready for cloud masking.

:func:`search` runs a STAC API item search (pystac-client); :func:`stack_items` stacks items from
a search, an ``ItemCollection`` or a plain list (pystac Items or dicts) with stackstac, fixing what
stackstac leaves to its users (see ``shared/design/ECOSYSTEM-NOTES.md``):

- **Assets**: only single-band spectral rasters are stacked (:func:`select_assets`): Sentinel-2
  L1C/L2A and Landsat Collection 2 L1/L2 in both naming conventions (``B01``..``B12``/``B8A``,
  ``SR_B4``/``ST_B10`` and common names such as ``blue``, ``nir08``, ``rededge1``). Quality,
  scene-classification, atmosphere, visual (TCI), metadata and preview assets, panchromatic bands,
  JPEG 2000 duplicates of a COG and thermal bands that are not temperatures (radiance DN) are left
  out. Bands are ordered by wavelength (B8A after B08).
- **Grid**: ``epsg`` comes from ``proj:epsg`` or ``proj:code`` (STAC 1.1), the resolution from the
  finest asset, and the bounds are the union of the footprints (intersected with ``bbox``) snapped
  outward to the source pixel grid, so an item on one grid is read without resampling and keeps
  its transform exactly; ``xy_coords="center"`` as in rioxarray.
- **Scale**: DN -> reflectance (or kelvin) with each asset's ``raster:bands`` ``scale``/``offset``
  (STAC 1.0) or ``bands`` ``raster:scale``/``raster:offset`` (STAC 1.1), per item, in float32;
  Sentinel-2 items without them get ``1e-4`` and, from processing baseline 04.00, ``-0.1``.
  ``nodata`` (file or STAC) becomes NaN. Unreadable assets raise instead of turning into NaN.
- **Descriptors**: ``center_wavelength``/``full_width_half_max`` band coords (micrometres) from
  ``eo:bands`` or STAC 1.1 ``bands`` (``eo:center_wavelength``, ``eo:full_width_half_max``); NaN
  where the item has none, which :func:`xsensei.band_metadata.resolve_bands` then fills from the
  sensor catalogue (``platform`` coord + band name / common name).
- **Serialisable**: no ``attrs["spec"]``, no object coords: the result writes with
  ``xarray.Dataset.to_zarr`` as is, and carries its CRS in ``spatial_ref``.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from xsensei.errors import XSenseiError

__all__ = [
    "AssetBand",
    "StacApiError",
    "StacAssetError",
    "StacError",
    "StacMetadataError",
    "asset_hrefs",
    "describe_asset",
    "explain_read_error",
    "search",
    "select_assets",
    "stack_items",
]


class StacError(XSenseiError):
    """Base class of the STAC errors below."""


class StacApiError(StacError, ConnectionError):
    """The STAC API cannot be reached or answered with an error."""


class StacAssetError(StacError, OSError):
    """An asset could not be read; the message names the item and the asset."""

    def __init__(self, message: str, item: str = "", asset: str = "", href: str = "") -> None:
        super().__init__(message)
        self.item, self.asset, self.href = item, asset, href


class StacMetadataError(StacError, ValueError):
    """The items lack what stacking needs (no spectral assets, no CRS, no scale, no items)."""


#: Media types of rasters stackstac can read (a missing type is judged by the href's suffix).
_RASTER_TYPES = ("image/tiff", "image/x.geotiff", "image/vnd.stac.geotiff", "image/jp2")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
#: Asset roles that are never spectral bands.
_DENY_ROLES = frozenset({
    "thumbnail", "overview", "metadata", "visual", "cloud", "cloud-shadow", "snow-ice",
    "water-mask", "land-water", "saturation", "data-mask", "quality", "iso-19139", "tilejson",
})
#: Asset keys that are never spectral bands (lower case; Sentinel-2 and Landsat C2, PC / ES).
_DENY_KEYS = frozenset({
    "visual", "tci", "scl", "aot", "wvp", "snw", "cld", "thumbnail", "preview", "overview",
    "rendered_preview", "tilejson", "granule-metadata", "granule_metadata", "tileinfo_metadata",
    "product-metadata", "product_metadata", "datastrip-metadata", "safe-manifest",
    "inspire-metadata",
    "qa", "qa_pixel", "qa_radsat", "qa_aerosol", "sr_qa_aerosol", "st_qa", "atran", "cdist", "drad",
    "emis", "emsd", "trad", "urad", "st_atran", "st_cdist", "st_drad", "st_emis", "st_emsd",
    "st_trad", "st_urad", "ang", "mtl.txt", "mtl.json", "mtl.xml", "reduced_resolution_browse",
})
#: Common names of bands xsensei does not stack (broad, and at another resolution).
_DENY_COMMON = frozenset({"pan"})
#: A band whose centre exceeds this (um) is thermal: kept only as a temperature.
_THERMAL_UM = 3.0
_TEMPERATURE_UNITS = frozenset({"k", "kelvin", "degk", "c", "celsius", "degc", "deg_c", "°c"})
_INTEGER_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                            "uint64"})


@dataclass(frozen=True)
class AssetBand:
    """What an item says about one spectral asset (wavelengths in micrometres, None if unknown)."""

    key: str
    name: str | None
    common_name: str | None
    center_um: float | None
    fwhm_um: float | None
    scale: float | None
    offset: float | None
    nodata: float | None
    unit: str | None
    data_type: str | None
    href: str

    @property
    def is_thermal(self) -> bool:
        return self.center_um is not None and self.center_um > _THERMAL_UM


# --------------------------------------------------------------------------------------------
# search


def _api_error(url: str, err: BaseException) -> StacError:
    import requests
    from pystac_client.exceptions import APIError

    if not isinstance(err, APIError | requests.RequestException | OSError):
        return StacError(f"the search of {url} failed: {type(err).__name__}: {err}")
    status = getattr(err, "status_code", None)
    if status is not None:
        text = " ".join(str(err).split())[:500]
        return StacApiError(
            f"the STAC API at {url} answered HTTP {status}: {text}. Check the collection, bbox "
            "and datetime; nothing was read or written"
        )
    return StacApiError(
        f"cannot reach the STAC API at {url}: {type(err).__name__}: {err}. Check the URL, the "
        "network (a proxy?) and that the server is up; nothing was read or written"
    )


def search(
    api: str | Any,
    collections: str | Sequence[str],
    *,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    limit: int = 100,
    modifier: Any = None,
) -> list[Any]:
    """Items of a STAC API search (pystac-client), sorted by datetime then id.

    ``api`` is the API root URL or an open ``pystac_client.Client``; ``bbox`` is
    ``(west, south, east, north)`` in degrees, ``datetime`` an RFC 3339 interval such as
    ``"2023-06-01/2023-06-30"``; ``modifier`` signs hrefs (``planetary_computer.sign_inplace``).
    Raises :class:`StacApiError` when the API cannot be reached, :class:`StacMetadataError`
    when nothing matches (naming the available collections when the one asked for is absent).
    """
    from pystac_client import Client

    colls = [collections] if isinstance(collections, str) else list(collections)
    url = api if isinstance(api, str) else str(getattr(api, "self_href", api))
    try:
        client = Client.open(api, modifier=modifier) if isinstance(api, str) else api
        found = client.search(
            collections=colls, bbox=list(bbox) if bbox is not None else None,
            datetime=datetime, query=dict(query) if query else None, max_items=max_items,
            limit=limit,
        )
        items = list(found.items())
    except StacError:
        raise
    except Exception as err:  # requests / urllib3 connection errors, pystac_client.APIError
        raise _api_error(url, err) from err
    if not items:
        hint = ""
        try:
            known = sorted(c.id for c in client.get_collections())
            missing = [c for c in colls if c not in known]
            if missing:
                hint = f"; no collection {', '.join(map(repr, missing))} (available: {known})"
        except Exception:  # listing collections is only a hint
            pass
        raise StacMetadataError(
            f"the search of {url} found no items in {colls} for bbox={list(bbox or [])} "
            f"datetime={datetime!r}{hint}"
        )
    return sorted(items, key=_sort_key)


def _sort_key(item: Any) -> tuple[str, str]:
    if isinstance(item, Mapping):
        return (_item_datetime(item), str(item.get("id", "")))
    props = getattr(item, "properties", {}) or {}
    return (str(props.get("datetime") or props.get("start_datetime") or ""), str(item.id))


# --------------------------------------------------------------------------------------------
# item metadata (STAC 1.0 and 1.1)


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"expected a STAC item (pystac.Item or dict), got {type(item).__name__}")
    return to_dict(transform_hrefs=False)


def _item_datetime(item: Mapping[str, Any]) -> str:
    props = item.get("properties", {})
    return str(props.get("datetime") or props.get("start_datetime") or "")


def _epsg_of(obj: Mapping[str, Any]) -> int | None:
    """``proj:epsg`` (STAC 1.0) or ``proj:code`` ``"EPSG:n"`` (projection extension v2)."""
    epsg = obj.get("proj:epsg")
    if epsg is not None:
        return int(epsg)
    code = obj.get("proj:code")
    if isinstance(code, str):
        m = re.fullmatch(r"\s*EPSG:(\d+)\s*", code, flags=re.IGNORECASE)
        if m:
            return int(m.group(1))
    return None


_FIELDS_11 = {
    "name": "name",
    "eo:common_name": "common_name",
    "eo:center_wavelength": "center_wavelength",
    "eo:full_width_half_max": "full_width_half_max",
    "raster:scale": "scale",
    "raster:offset": "offset",
    "nodata": "nodata",
    "data_type": "data_type",
    "unit": "unit",
}


def _band_entry(asset: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The asset's one band as STAC 1.0 field names, merged from STAC 1.1 ``bands`` (or fields on
    the asset itself), ``eo:bands`` and ``raster:bands``; and how many bands it declares."""
    eo = asset.get("eo:bands") or []
    raster = asset.get("raster:bands") or []
    bands11 = asset.get("bands") or []
    count = max(len(eo), len(raster), len(bands11), 1)
    out: dict[str, Any] = {}
    sources: list[tuple[Mapping[str, Any], Mapping[str, str]]] = []
    if len(bands11) == 1 and isinstance(bands11[0], Mapping):
        sources.append((bands11[0], _FIELDS_11))
    sources.append((asset, {k: v for k, v in _FIELDS_11.items() if k != "name"}))
    if len(eo) == 1 and isinstance(eo[0], Mapping):
        sources.append((eo[0], {k: k for k in ("name", "common_name", "center_wavelength",
                                                "full_width_half_max")}))
    if len(raster) == 1 and isinstance(raster[0], Mapping):
        sources.append((raster[0], {k: k for k in ("scale", "offset", "nodata", "data_type",
                                                   "unit")}))
    for src, fields in sources:
        for key, name in fields.items():
            if src.get(key) is not None:
                out.setdefault(name, src[key])
    return out, count


def _sensor_for(props: Mapping[str, Any], collection: str | None) -> Any:
    from xsensei.sensors import find_sensor

    for value in (props.get("platform"), props.get("constellation"), collection):
        if isinstance(value, str) and value:
            info = find_sensor(value)
            if info is None and value.lower().startswith("sentinel-2"):
                info = find_sensor("sentinel-2a")
            if info is not None:
                return info
    return None


def _catalogue_band(sensor: Any, names: Iterable[str | None]) -> Any:
    if sensor is None:
        return None
    for name in names:
        if name:
            band = sensor.find_band(name)
            if band is not None:
                return band
    return None


def _is_raster(asset: Mapping[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    if media:
        return media.startswith(_RASTER_TYPES)
    return str(asset.get("href", "")).lower().endswith(_RASTER_SUFFIXES)


def describe_asset(
    key: str, asset: Mapping[str, Any], item: Mapping[str, Any]
) -> tuple[AssetBand | None, str]:
    """The asset as a spectral band, or ``(None, reason)`` when it is not one to stack."""
    roles = {str(r).lower() for r in asset.get("roles") or []}
    lkey = key.lower()
    if not _is_raster(asset):
        return None, "not a raster"
    if lkey in _DENY_KEYS or roles & _DENY_ROLES:
        return None, "not a spectral band"
    entry, count = _band_entry(asset)
    if count > 1:
        return None, f"{count}-band asset"
    props = item.get("properties", {})
    sensor = _sensor_for(props, item.get("collection"))
    names = [key, entry.get("name"), entry.get("common_name")]
    cat = _catalogue_band(sensor, names)
    common = entry.get("common_name") or (getattr(cat, "common_name", None) if cat else None)
    if str(common or "").lower() in _DENY_COMMON:
        return None, "panchromatic"
    centre = _float(entry.get("center_wavelength"))
    if centre is None and cat is None:
        return None, "no wavelength"
    band = AssetBand(
        key=key,
        name=entry.get("name"),
        common_name=common,
        center_um=centre if centre is not None else float(cat.wl_center_nm) / 1000.0,
        fwhm_um=_float(entry.get("full_width_half_max")) if centre is not None else None,
        scale=_float(entry.get("scale")),
        offset=_float(entry.get("offset")),
        nodata=_float(entry.get("nodata")),
        unit=entry.get("unit"),
        data_type=entry.get("data_type"),
        href=str(asset.get("href", "")),
    )
    if band.is_thermal and str(band.unit or "").strip().lower() not in _TEMPERATURE_UNITS:
        return None, _THERMAL_REASON
    return band, ""


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _wavelength_known(item: Mapping[str, Any], key: str) -> bool:
    entry, _ = _band_entry(item["assets"][key])
    return _float(entry.get("center_wavelength")) is not None


def select_assets(item: Any) -> list[str]:
    """Keys of the item's spectral assets to stack, ordered by wavelength.

    Of two assets of the same band (a COG and its ``-jp2`` copy, or ``B04`` and ``red`` in one
    item) the COG / first one is kept.
    """
    d = _as_dict(item)
    bands: list[AssetBand] = []
    for key, asset in d.get("assets", {}).items():
        band, _ = describe_asset(key, asset, d)
        if band is not None:
            bands.append(band)

    def is_jp2(b: AssetBand) -> bool:
        return b.key.lower().endswith("-jp2") or b.href.lower().endswith(".jp2")

    def same_band(a: AssetBand, b: AssetBand) -> bool:
        return (a.center_um is not None and b.center_um is not None
                and abs(a.center_um - b.center_um) < 1e-6 and a.fwhm_um == b.fwhm_um)

    kept: list[AssetBand] = []
    for band in sorted(bands, key=is_jp2):  # stable: COGs first, then the item's order
        if not any(same_band(k, band) for k in kept):
            kept.append(band)
    kept.sort(key=lambda b: (b.center_um if b.center_um is not None else math.inf, b.key))
    return [b.key for b in kept]


# --------------------------------------------------------------------------------------------
# stacking


_THERMAL_REASON = "thermal band not in kelvin/celsius (radiance or DN)"


def _common_assets(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    per_item = [select_assets(d) for d in dicts]
    thermal = [k for k, a in dicts[0].get("assets", {}).items()
               if describe_asset(k, a, dicts[0])[1] == _THERMAL_REASON]
    if thermal:
        warnings.warn(
            f"thermal asset(s) {thermal} left out: their unit is not a temperature (kelvin or "
            "celsius), and radiance or DN cannot be turned into brightness temperature here",
            UserWarning, stacklevel=3,
        )
    first = per_item[0]
    common = [k for k in first if all(k in keys for keys in per_item[1:])]
    dropped = sorted({k for keys in per_item for k in keys} - set(common))
    if dropped:
        warnings.warn(
            f"asset(s) {dropped} are not in every item; stacking only {common}",
            UserWarning, stacklevel=3,
        )
    return common


def _asset_geometry(item: Mapping[str, Any], asset: Mapping[str, Any]) -> dict[str, Any]:
    props = item.get("properties", {})
    return {
        "epsg": _epsg_of(asset) or _epsg_of(props),
        "transform": asset.get("proj:transform") or props.get("proj:transform"),
        "shape": asset.get("proj:shape") or props.get("proj:shape"),
        "bbox": asset.get("proj:bbox") or props.get("proj:bbox"),
    }


def _footprint(geo: Mapping[str, Any], item: Mapping[str, Any], epsg: int) -> tuple[float, ...]:
    """The asset's bounds in ``epsg`` (exact from proj fields, else the item's lon/lat bbox)."""
    from rasterio.warp import transform_bounds

    if geo["epsg"] == epsg:
        if geo["transform"] is not None and geo["shape"] is not None:
            a, _, c, _, e, f = (float(v) for v in list(geo["transform"])[:6])
            h, w = (int(v) for v in geo["shape"])
            xs, ys = (c, c + a * w), (f, f + e * h)
            return (min(xs), min(ys), max(xs), max(ys))
        if geo["bbox"] is not None:
            return tuple(float(v) for v in geo["bbox"])
    bbox = item.get("bbox")
    if bbox is None:
        raise StacMetadataError(f"item {item.get('id')!r} has neither proj:* fields nor a bbox")
    return tuple(transform_bounds("EPSG:4326", f"EPSG:{epsg}", *bbox[:2], *bbox[-2:]))


@dataclass(frozen=True)
class _Grid:
    epsg: int
    resolution: float
    bounds: tuple[float, float, float, float]

    @property
    def shape(self) -> tuple[int, int]:
        minx, miny, maxx, maxy = self.bounds
        return (round((maxy - miny) / self.resolution), round((maxx - minx) / self.resolution))


def _snap(value: float, origin: float, res: float, up: bool) -> float:
    steps = (value - origin) / res
    steps = math.ceil(steps - 1e-6) if up else math.floor(steps + 1e-6)
    return origin + steps * res


def _grid(
    dicts: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    epsg: int | None,
    resolution: float | None,
    bbox: Sequence[float] | None,
    bounds: Sequence[float] | None,
) -> _Grid:
    from rasterio.warp import transform_bounds

    geos = [(d, _asset_geometry(d, d["assets"][k])) for d in dicts for k in keys]
    if epsg is None:
        counts = Counter(g["epsg"] for _, g in geos if g["epsg"] is not None)
        if not counts:
            raise StacMetadataError(
                "the items carry no CRS (proj:epsg / proj:code); pass epsg="
            )
        epsg = counts.most_common(1)[0][0]
        if len(counts) > 1:
            warnings.warn(
                f"items are in several CRSs {sorted(counts)}; reprojecting all to EPSG:{epsg}",
                UserWarning, stacklevel=3,
            )
    native = [
        (abs(float(g["transform"][0])), float(g["transform"][2]), float(g["transform"][5]))
        for _, g in geos if g["epsg"] == epsg and g["transform"] is not None
    ]
    res = resolution
    if res is None:
        if not native:
            raise StacMetadataError(
                f"no asset has a proj:transform in EPSG:{epsg}, so the pixel size is unknown; "
                "pass resolution= (metres)"
            )
        res = min(n[0] for n in native)
    res = float(res)
    ref = min(native, key=lambda n: n[0], default=(res, 0.0, 0.0))
    ox, oy = ref[1] % res, ref[2] % res
    if bounds is not None:
        minx, miny, maxx, maxy = (float(v) for v in bounds)
    else:
        boxes = np.array([_footprint(g, d, epsg) for d, g in geos])
        minx, miny = boxes[:, 0].min(), boxes[:, 1].min()
        maxx, maxy = boxes[:, 2].max(), boxes[:, 3].max()
        if bbox is not None:
            bx = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *bbox)
            minx, miny = max(minx, bx[0]), max(miny, bx[1])
            maxx, maxy = min(maxx, bx[2]), min(maxy, bx[3])
            if minx >= maxx or miny >= maxy:
                raise StacMetadataError(f"bbox {list(bbox)} does not overlap the items")
    snapped = (
        _snap(minx, ox, res, up=False), _snap(miny, oy, res, up=False),
        _snap(maxx, ox, res, up=True), _snap(maxy, oy, res, up=True),
    )
    return _Grid(int(epsg), res, snapped)


def _s2_default_scale(item: Mapping[str, Any]) -> tuple[float, float] | None:
    props = item.get("properties", {})
    ident = " ".join(str(props.get(k, "")) for k in ("platform", "constellation"))
    ident += " " + str(item.get("collection", ""))
    if "sentinel-2" not in ident.lower() and "sentinel2" not in ident.lower():
        return None
    baseline = props.get("s2:processing_baseline")
    try:
        value = float(str(baseline).strip().lstrip("N"))
    except ValueError:
        value = None
    return (1e-4, -0.1 if value is not None and value >= 4.0 else 0.0)


def _scales(
    dicts: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(time, band) scale and offset (float32), (band,) STAC nodata (NaN: none), sources."""
    n_t, n_b = len(dicts), len(keys)
    scale = np.ones((n_t, n_b), dtype=np.float32)
    offset = np.zeros((n_t, n_b), dtype=np.float32)
    nodata = np.full(n_b, np.nan, dtype=np.float32)
    sources: set[str] = set()
    for t, d in enumerate(dicts):
        for b, key in enumerate(keys):
            band, _ = describe_asset(key, d["assets"][key], d)
            assert band is not None
            if band.nodata is not None:
                nodata[b] = band.nodata
            if band.scale is not None or band.offset is not None:
                scale[t, b] = 1.0 if band.scale is None else band.scale
                offset[t, b] = 0.0 if band.offset is None else band.offset
                sources.add("raster:bands" if "raster:bands" in d["assets"][key] else
                            "bands raster:scale/raster:offset")
                continue
            default = _s2_default_scale(d)
            if default is not None and not band.is_thermal:
                scale[t, b], offset[t, b] = default
                sources.add("sentinel-2 processing baseline")
                continue
            if band.data_type in _INTEGER_TYPES:
                raise StacMetadataError(
                    f"asset {key!r} of item {d.get('id')!r} holds {band.data_type} digital "
                    "numbers but no raster scale/offset; xsensei cannot turn it into "
                    "reflectance. Stack the assets that have a scale (assets=...) or convert "
                    "the product first"
                )
    return scale, offset, nodata, sorted(sources)


def _time_coords(dicts: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, np.ndarray]]:
    coords: dict[str, tuple[str, np.ndarray]] = {
        "id": ("time", np.array([str(d["id"]) for d in dicts], dtype=object)),
    }
    str_props = ("collection", "platform", "constellation", "s2:processing_baseline",
                 "s2:mgrs_tile", "landsat:wrs_path", "landsat:wrs_row")
    for key in str_props:
        values = [d.get(key) if key == "collection" else d.get("properties", {}).get(key)
                  for d in dicts]
        if any(v is not None for v in values):
            coords[key] = ("time", np.array(["" if v is None else str(v) for v in values],
                                            dtype=object))
    for key in ("eo:cloud_cover", "view:sun_elevation", "view:sun_azimuth"):
        nums = [_float(d.get("properties", {}).get(key)) for d in dicts]
        if any(v is not None for v in nums):
            coords[key] = ("time", np.array([np.nan if v is None else v for v in nums]))
    return coords


def stack_items(
    items: Iterable[Any],
    *,
    assets: Sequence[str] | None = None,
    epsg: int | None = None,
    resolution: float | None = None,
    bbox: Sequence[float] | None = None,
    bounds: Sequence[float] | None = None,
    chunks: int = 1024,
    resampling: str = "nearest",
) -> xr.DataArray:
    """Lazy ``(time, band, y, x)`` float32 reflectance of STAC items (see the module docstring).

    ``items``: pystac Items (a search result, an ``ItemCollection``) or item dicts; one time
    step per item, in datetime order. ``assets`` overrides :func:`select_assets` (the spectral
    assets common to all items). ``epsg``, ``resolution`` (metres) and ``bounds`` (in ``epsg``)
    override the grid; ``bbox`` (degrees) clips it. ``chunks`` is the spatial chunk size; each
    chunk holds all bands of one item.
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import stackstac
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    dicts = [_normalise(_as_dict(it)) for it in items]
    if not dicts:
        raise StacMetadataError("no STAC items to stack")
    dicts.sort(key=lambda d: (_item_datetime(d), d["id"]))
    keys = list(assets) if assets is not None else _common_assets(dicts)
    for d in dicts:
        for key in keys:
            if key not in d.get("assets", {}):
                raise StacMetadataError(f"item {d['id']!r} has no asset {key!r}")
            band, reason = describe_asset(key, d["assets"][key], d)
            if band is None:
                raise StacMetadataError(
                    f"asset {key!r} of item {d['id']!r} cannot be stacked: {reason}"
                )
    if not keys:
        raise StacMetadataError(
            f"no spectral assets found in item {dicts[0]['id']!r} (assets: "
            f"{sorted(dicts[0].get('assets', {}))}); pass assets= to choose them"
        )
    grid = _grid(dicts, keys, epsg, resolution, bbox, bounds)
    scale, offset, nodata, sources = _scales(dicts, keys)

    with warnings.catch_warnings():
        # stackstac and rioxarray still use Affine's deprecated ``*`` operator
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        raw = _stackstac(stackstac, dicts, keys, grid, Resampling, resampling, chunks)
    if raw.shape[-2:] != grid.shape:  # stackstac rounds like GDAL; the grid is exact
        raise StacMetadataError(f"unexpected stack shape {raw.shape}, expected {grid.shape}")
    data = raw.data
    if np.isfinite(nodata).any():
        data = _mask_values(data, nodata)
    if not (scale == scale[:1]).all() or not (offset == offset[:1]).all():
        data = data * scale[:, :, None, None] + offset[:, :, None, None]
    elif not ((scale == 1).all() and (offset == 0).all()):
        data = data * scale[0][None, :, None, None] + offset[0][None, :, None, None]

    bands = [describe_asset(k, dicts[0]["assets"][k], dicts[0])[0] for k in keys]
    centre = np.array([np.nan if not _wavelength_known(dicts[0], k) or b is None or
                       b.center_um is None else b.center_um for k, b in zip(keys, bands,
                                                                          strict=True)])
    fwhm = np.array([np.nan if b is None or b.fwhm_um is None else b.fwhm_um for b in bands])
    coords: dict[str, Any] = {
        "time": raw["time"].values,
        "band": np.array(keys, dtype=object),
        "y": raw["y"].values,
        "x": raw["x"].values,
        "common_name": ("band", np.array([(b.common_name or "") if b else "" for b in bands],
                                         dtype=object)),
        "center_wavelength": ("band", centre, {"units": "um"}),
        "full_width_half_max": ("band", fwhm, {"units": "um"}),
    }
    coords.update(_time_coords(dicts))
    attrs: dict[str, Any] = {
        "long_name": "reflectance (brightness temperature in K for thermal bands)",
        "rescaled_from": ", ".join(sources) or "none (values as stored)",
        "resolution": grid.resolution,
        "source": "STAC via xsensei.io.stac.stack_items",
    }
    if "platform" not in coords and "constellation" not in coords:
        sensor = _sensor_for(dicts[0].get("properties", {}), dicts[0].get("collection"))
        if sensor is not None:  # lets resolve_bands use the catalogue for unnamed wavelengths
            attrs["sensor"] = str(sensor.name)
    out = xr.DataArray(
        data, dims=("time", "band", "y", "x"), coords=coords, name="reflectance", attrs=attrs,
    )
    minx, _, _, maxy = grid.bounds
    res = grid.resolution
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        out = out.rio.write_crs(grid.epsg)
        out = out.rio.write_transform(Affine(res, 0.0, minx, 0.0, -res, maxy))
    out.encoding = {}
    return out


def _stackstac(stackstac: Any, dicts: list[dict[str, Any]], keys: list[str], grid: _Grid,
               resampling_enum: Any, resampling: str, chunks: int) -> xr.DataArray:
    return stackstac.stack(
        dicts,
        assets=keys,
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,
        resampling=getattr(resampling_enum, resampling),
        chunksize=(1, -1, int(chunks), int(chunks)),
        dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan),  # a Python nan fails stackstac's can_cast on numpy 2
        rescale=False,  # stackstac's rescale needs float64 on numpy 2; done here in float32
        sortby_date=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        errors_as_nodata=(),  # its default turns HTTP 404s into silent NaN
    )


def _mask_values(data: Any, nodata: np.ndarray) -> Any:
    import dask.array as da

    nod = nodata[None, :, None, None]
    return da.where(data == nod, np.float32(np.nan), data)


def _normalise(d: dict[str, Any]) -> dict[str, Any]:
    """A copy with ``proj:epsg`` set from ``proj:code`` (stackstac reads only the former)."""
    d = copy.deepcopy(d)
    props = d.setdefault("properties", {})
    epsg = _epsg_of(props)
    if epsg is not None:
        props["proj:epsg"] = epsg
    for asset in d.get("assets", {}).values():
        epsg = _epsg_of(asset)
        if epsg is not None:
            asset["proj:epsg"] = epsg
    return d


# --------------------------------------------------------------------------------------------
# errors


def asset_hrefs(items: Iterable[Any], assets: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``href -> (item id, asset key)`` for the given assets of the items."""
    out: dict[str, tuple[str, str]] = {}
    for it in items:
        d = _as_dict(it)
        for key in assets:
            asset = d.get("assets", {}).get(key)
            if asset is not None:
                out[str(asset["href"])] = (str(d["id"]), key)
    return out


def explain_read_error(
    err: BaseException, hrefs: Mapping[str, tuple[str, str]]
) -> StacAssetError | None:
    """A :class:`StacAssetError` naming the item and asset whose href appears in ``err``."""
    seen: set[int] = set()
    exc: BaseException | None = err
    texts: list[str] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    text = "\n".join(texts)
    for href in sorted(hrefs, key=len, reverse=True):
        if href and href in text:
            item, asset = hrefs[href]
            first = texts[0].splitlines()[0] if texts[0] else type(err).__name__
            return StacAssetError(
                f"cannot read asset {asset!r} of item {item!r} ({href}): {first}",
                item=item, asset=asset, href=href,
            )
    return None
