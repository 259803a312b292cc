"""Resolve each band's [min, centre, max] wavelength (nm) from xarray metadata.

SEnSeI needs three wavelengths per band and nothing else, but every loader stores them
differently (see ``shared/design/ECOSYSTEM-NOTES.md``): stackstac puts ``center_wavelength`` /
``full_width_half_max`` coords in micrometres (object arrays with ``None`` for SCL, AOT, ...),
ENVI cubes carry ``wavelength`` / ``fwhm`` coords usually in nanometres, odc-stac and rioxarray
give no wavelengths at all. :func:`resolve_bands` tries, per band and in this order:

1. explicit ``descriptors=`` (an ``(N, 3)`` array, or a mapping band label -> triple / centre +
   FWHM / centre);
2. stackstac coords ``center_wavelength`` (+ ``full_width_half_max``) on the band dim;
3. ENVI-style coords ``wavelength`` (+ ``fwhm``) on the band dim;
4. per-band attrs (``wavelength``, ``center_wavelength``, ``eo:center_wavelength``, ``fwhm``, ...
   on a Dataset variable, or per-band lists / ``eo:bands`` on the DataArray);
5. the band's name (label, ``long_name``, then ``common_name``) looked up in the sensor catalogue,
   the sensor coming from ``sensor=`` or the object's ``platform`` / ``constellation`` /
   ``instrument`` / ``spacecraft_id`` / ``sensor`` attrs or a ``platform`` coord.

Units: a ``units`` attr (or ``wavelength_units``) is respected; without one a centre below 100 is
taken as micrometres, otherwise nanometres. A value that is plausible in neither unit raises
:class:`~xsensei.errors.DescriptorError` naming the band.

Width: with a centre and FWHM, ``min/max = centre -/+ FWHM / 2``. With a centre only, the
catalogue band's [min, max] is used when the sensor is known and the centre lies inside it (the
band of that name, else the sensor's band around that centre); otherwise a default FWHM
(:data:`DEFAULT_FWHM_NM`: 20 nm below 1000 nm, 60 nm up to 3000 nm, 1000 nm beyond) capped at
the distance to the nearest other band centre (so narrow hyperspectral bands do not overlap),
with one ``UserWarning`` naming those bands.

Bands that do not resolve (SCL, AOT, a quality band) are dropped with one ``UserWarning``; when
nothing resolves a :class:`DescriptorError` names the bands and lists the fixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xsensei._warnings import warn_user
from xsensei.errors import DescriptorError, InputError

if TYPE_CHECKING:
    import xarray as xr

    from xsensei.sensors import BandInfo, SensorInfo

__all__ = [
    "DEFAULT_FWHM_NM",
    "THERMAL_CENTRE_NM",
    "ResolvedBands",
    "ThermalSpec",
    "band_variables",
    "find_band_dim",
    "resolve_bands",
]

#: Centre wavelength (nm) above which a band is treated as thermal (brightness temperature).
THERMAL_CENTRE_NM = 3000.0

#: Default FWHM (nm) for bands known only by their centre: (upper centre bound, FWHM) pairs.
DEFAULT_FWHM_NM: tuple[tuple[float, float], ...] = (
    (1000.0, 20.0),
    (3000.0, 60.0),
    (math.inf, 1000.0),
)

#: Plausible wavelength range (nm) for a band centre; outside it the unit guess is wrong.
_PLAUSIBLE_NM = (100.0, 20000.0)
#: SEnSeI's encoding log10(nm - 300) - 2 is undefined at or below this wavelength.
_ENCODING_FLOOR_NM = 300.0

_NM_UNITS = {"nm", "nanometer", "nanometers", "nanometre", "nanometres"}
_UM_UNITS = {
    "um",
    "µm",
    "μm",
    "micrometer",
    "micrometers",
    "micrometre",
    "micrometres",
    "micron",
    "microns",
    "mum",
}
_NO_UNITS = {"", "unknown", "none", "n/a"}

_SPATIAL_DIMS = {"y", "x", "lat", "lon", "latitude", "longitude", "rows", "cols", "row", "col"}
_SENSOR_ATTRS = ("platform", "spacecraft_id", "spacecraft", "constellation", "sensor", "instrument")
_CENTRE_ATTRS = ("center_wavelength", "eo:center_wavelength", "centre_wavelength", "wavelength")
_FWHM_ATTRS = ("full_width_half_max", "eo:full_width_half_max", "fwhm", "bandwidth")
#: Common-name synonyms tried when the catalogue does not know a name (odc-stac, older STAC).
_SYNONYMS = {
    "nir": ("nir08", "nir"),
    "nir08": ("nir", "nir08"),
    "swir1": ("swir16",),
    "swir2": ("swir22",),
    "swir16": ("swir1",),
    "swir22": ("swir2",),
    "tir": ("lwir11", "lwir"),
    "thermal": ("lwir11", "lwir"),
    "lwir": ("lwir11",),
    "tir1": ("lwir11",),
    "tir2": ("lwir12",),
}


@dataclass(frozen=True)
class ThermalSpec:
    """Constants that turn a thermal band into SEnSeI's normalised brightness temperature."""

    k1: float | None
    k2: float | None
    bt_min_k: float | None
    bt_max_k: float | None


@dataclass(frozen=True, eq=False)
class ResolvedBands:
    """The kept bands, their wavelengths and where those came from (identity equality).

    ``indices`` are positions along the input's band dim (for a Dataset: positions in
    :func:`band_variables`); every per-band field is ordered like ``names``.
    """

    names: tuple[str, ...]
    indices: tuple[int, ...]
    wavelengths_nm: np.ndarray
    kinds: tuple[str, ...]
    thermal: tuple[ThermalSpec | None, ...]
    sources: tuple[str, ...]
    dropped: tuple[str, ...]
    sensor: str | None
    band_dim: str | None = None  # the DataArray's band dim; None for a Dataset

    def __post_init__(self) -> None:
        wl = np.array(self.wavelengths_nm, dtype=np.float64).reshape(-1, 3)
        wl.setflags(write=False)
        object.__setattr__(self, "wavelengths_nm", wl)
        n = len(self.names)
        for field in ("indices", "kinds", "thermal", "sources"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"ResolvedBands.{field} must have {n} entries")
        if wl.shape[0] != n:
            raise ValueError(f"ResolvedBands.wavelengths_nm must have shape ({n}, 3)")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_thermal(self) -> np.ndarray:
        """Boolean mask over the kept bands."""
        return np.array([k == "thermal" for k in self.kinds], dtype=bool)

    def subset(self, keep: Sequence[int]) -> ResolvedBands:
        """These bands restricted to positions ``keep`` (in this object's order)."""
        keep = [int(i) for i in keep]
        return ResolvedBands(
            names=tuple(self.names[i] for i in keep),
            indices=tuple(self.indices[i] for i in keep),
            wavelengths_nm=self.wavelengths_nm[keep],
            kinds=tuple(self.kinds[i] for i in keep),
            thermal=tuple(self.thermal[i] for i in keep),
            sources=tuple(self.sources[i] for i in keep),
            dropped=self.dropped,
            sensor=self.sensor,
            band_dim=self.band_dim,
        )


# --------------------------------------------------------------------------------------------
# small helpers


def _as_float(value: Any) -> float | None:
    """A finite float, or None for None / NaN / non-numeric metadata."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return None
        value = value[0]
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _parse_units(units: Any, where: str) -> str | None:
    """'nm', 'um' or None (no usable units attr)."""
    if units is None:
        return None
    text = str(units).strip().lower().replace(" ", "")
    if text in _NO_UNITS:
        return None
    if text in _NM_UNITS:
        return "nm"
    if text in _UM_UNITS:
        return "um"
    raise DescriptorError(
        f"unsupported wavelength units {units!r} on {where}; expected nanometres ('nm') or "
        "micrometres ('um')"
    )


def _factor(centre: float, units: str | None, band: str, where: str) -> float:
    """Multiplier to nm for a value from ``where``; raises when neither unit is plausible."""
    lo, hi = _PLAUSIBLE_NM
    if units == "nm":
        factor = 1.0
    elif units == "um":
        factor = 1000.0
    else:
        factor = 1000.0 if abs(centre) < 100.0 else 1.0
    nm = centre * factor
    if not lo <= nm <= hi:
        hint = f" (read as {units})" if units else ""
        raise DescriptorError(
            f"band {band!r}: centre wavelength {centre:g} from {where}{hint} is neither a "
            f"plausible micrometre nor nanometre value (expected {lo / 1000:g}-{hi / 1000:g} um "
            f"or {lo:g}-{hi:g} nm)"
        )
    return factor


def descriptors_to_nm(descriptors: np.ndarray) -> np.ndarray:
    """An ``(N, 3)`` wavelength array in nm, each band read as nm or um by its centre (as
    for DataArrays: below 100 it is micrometres)."""
    desc = np.array(descriptors, dtype=np.float64)
    for i, row in enumerate(desc):
        desc[i] = row * _factor(float(row[1]), None, str(i), "descriptors=")
    return desc


def _default_fwhm(centre_nm: float) -> float:
    for upper, fwhm in DEFAULT_FWHM_NM:
        if centre_nm < upper:
            return fwhm
    return DEFAULT_FWHM_NM[-1][1]


def _label(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


# --------------------------------------------------------------------------------------------
# structure: which dim / variables are bands


def find_band_dim(obj: xr.DataArray, band_dim: str = "band") -> str:
    """The band dimension of a DataArray (``band`` and ``bands`` are interchangeable)."""
    dims = tuple(str(d) for d in obj.dims)
    if band_dim in dims:
        return band_dim
    for alt in ("band", "bands"):
        if band_dim in ("band", "bands") and alt in dims:
            return alt
    raise InputError(
        f"no band dimension {band_dim!r}: the array has dims {dims}; pass band_dim= naming the "
        "dimension that holds the bands"
    )


def band_variables(ds: xr.Dataset) -> list[str]:
    """Data variables of an odc-stac style Dataset that are bands (they have y/x dims)."""
    return [
        str(name)
        for name, var in ds.data_vars.items()
        if len(_SPATIAL_DIMS.intersection(str(d) for d in var.dims)) >= 2
    ]


def stack_band_variables(ds: xr.Dataset, names: Sequence[str],
                         labels: Sequence[str] | None = None) -> xr.DataArray:
    """The variables ``names`` of a Dataset stacked along a ``band`` dim, labelled ``labels``
    (default: the variable names)."""
    import xarray as xr

    arrays = [ds[name] for name in names]
    return xr.concat(arrays, dim="band", coords="minimal", compat="override").assign_coords(
        band=list(labels if labels is not None else names)
    )


# --------------------------------------------------------------------------------------------
# gathering raw per-band metadata


@dataclass
class _Candidate:
    """What one source says about a band, still in the source's units."""

    source: str
    centre: float | None = None
    fwhm: float | None = None
    triple: tuple[float, float, float] | None = None
    units: str | None = None
    explicit: bool = False


@dataclass
class _Band:
    label: str
    lookup: list[str]
    candidates: list[_Candidate]


def _band_coord(obj: xr.DataArray, name: str, band_dim: str, n: int) -> list[Any] | None:
    """Values of a coord along the band dim (0-d coords broadcast), or None."""
    if name not in obj.coords:
        return None
    coord = obj.coords[name]
    if coord.dims == (band_dim,):
        return list(np.asarray(coord.values, dtype=object).tolist())
    if coord.ndim == 0:
        return [coord.values.item() if hasattr(coord.values, "item") else coord.values] * n
    return None


def _coord_units(obj: xr.DataArray, name: str) -> Any:
    units = obj.coords[name].attrs.get("units")
    if units is None:
        units = obj.coords[name].attrs.get("wavelength_units")
    if units is None and name in ("wavelength", "fwhm"):
        units = obj.attrs.get("wavelength_units")
    return units


def _per_band_list(value: Any, n: int) -> list[Any] | None:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == n and n > 0:
        return list(value)
    return None


def _from_attr_dict(attrs: Mapping[str, Any], source: str) -> _Candidate | None:
    centre = next((_as_float(attrs.get(k)) for k in _CENTRE_ATTRS if k in attrs), None)
    if centre is None:
        return None
    fwhm = next((_as_float(attrs.get(k)) for k in _FWHM_ATTRS if k in attrs), None)
    units = attrs.get("wavelength_units")
    return _Candidate(source, centre=centre, fwhm=fwhm, units=_parse_units(units, source))


def _gather_dataarray(obj: xr.DataArray, band_dim: str) -> list[_Band]:
    n = obj.sizes[band_dim]
    if band_dim in obj.coords:
        labels = [_label(v) for v in obj.coords[band_dim].values]
    else:
        labels = [str(i) for i in range(n)]
    lookup = [[lab] for lab in labels]
    long_names = _per_band_list(obj.attrs.get("long_name"), n)
    for key in ("long_name", "title", "name", "common_name"):
        values = _band_coord(obj, key, band_dim, n) if key != band_dim else None
        if key == "long_name" and values is None and long_names is not None:
            values = long_names
        for i, v in enumerate(values or []):
            if isinstance(v, str) and v and v not in lookup[i]:
                lookup[i].append(v)

    bands = [_Band(labels[i], lookup[i], []) for i in range(n)]

    for centre_name, fwhm_name, source in (
        ("center_wavelength", "full_width_half_max", "coords:stackstac"),
        ("wavelength", "fwhm", "coords:envi"),
    ):
        if centre_name == band_dim:
            centres: list[Any] | None = list(obj.coords[band_dim].values)
        else:
            centres = _band_coord(obj, centre_name, band_dim, n)
        if centres is None:
            continue
        units = _parse_units(_coord_units(obj, centre_name), f"coord {centre_name!r}")
        widths = _band_coord(obj, fwhm_name, band_dim, n) or [None] * n
        for i in range(n):
            centre = _as_float(centres[i])
            if centre is not None:
                bands[i].candidates.append(
                    _Candidate(source, centre=centre, fwhm=_as_float(widths[i]), units=units)
                )

    # per-band attrs on a DataArray: lists of length N, or STAC eo:bands / bands dicts
    attrs = obj.attrs
    units = _parse_units(attrs.get("wavelength_units"), "attr 'wavelength_units'")
    centres = next(
        (
            _per_band_list(attrs[k], n)
            for k in _CENTRE_ATTRS
            if k in attrs and _per_band_list(attrs[k], n) is not None
        ),
        None,
    )
    if centres is not None:
        widths = (
            next(
                (
                    _per_band_list(attrs[k], n)
                    for k in _FWHM_ATTRS
                    if k in attrs and _per_band_list(attrs[k], n) is not None
                ),
                None,
            )
            or [None] * n
        )
        for i in range(n):
            centre = _as_float(centres[i])
            if centre is not None:
                bands[i].candidates.append(
                    _Candidate("attrs", centre=centre, fwhm=_as_float(widths[i]), units=units)
                )
    for key in ("eo:bands", "bands"):
        entries = _per_band_list(attrs.get(key), n)
        if entries is None or not all(isinstance(e, Mapping) for e in entries):
            continue
        for i, entry in enumerate(entries):
            cand = _from_attr_dict(entry, "attrs")
            if cand is not None:
                bands[i].candidates.append(cand)
            for field in ("name", "common_name", "eo:common_name"):
                value = entry.get(field)
                if isinstance(value, str) and value and value not in bands[i].lookup:
                    bands[i].lookup.append(value)
    return bands


def _gather_dataset(ds: xr.Dataset) -> list[_Band]:
    bands = []
    for name in band_variables(ds):
        var = ds[name]
        lookup = [name]
        for key in ("long_name", "common_name", "eo:common_name"):
            value = var.attrs.get(key)
            if isinstance(value, str) and value and value not in lookup:
                lookup.append(value)
        cand = _from_attr_dict(var.attrs, "attrs")
        bands.append(_Band(name, lookup, [cand] if cand is not None else []))
    return bands


def _explicit_candidates(descriptors: Any, bands: list[_Band]) -> None:
    """Put the user's descriptors first in each band's candidate list."""
    labels = [b.label for b in bands]
    if isinstance(descriptors, Mapping):
        unknown = [str(k) for k in descriptors if str(k) not in labels]
        if unknown:
            raise DescriptorError(
                f"descriptors given for unknown band(s) {', '.join(map(repr, unknown))}; the "
                f"input's bands are {', '.join(map(repr, labels))}"
            )
        for key, value in descriptors.items():
            band = bands[labels.index(str(key))]
            band.candidates.insert(0, _explicit_value(value, band.label))
        return
    try:
        arr = np.asarray(descriptors, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DescriptorError(
            "descriptors= must be an (N, 3) array of [min, centre, max] wavelengths or a "
            f"mapping band label -> wavelengths, got {type(descriptors).__name__}"
        ) from err
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] != len(bands):
        raise DescriptorError(
            f"descriptors= has shape {arr.shape}, expected ({len(bands)}, 3): one [min, centre, "
            f"max] row per input band ({', '.join(map(repr, labels))}); use NaN rows for bands "
            "without wavelengths, or a mapping band label -> wavelengths"
        )
    for band, row in zip(bands, arr, strict=True):
        if np.isnan(row).all():
            continue
        band.candidates.insert(0, _explicit_value(tuple(row), band.label))


def _explicit_value(value: Any, band: str) -> _Candidate:
    if isinstance(value, Mapping):
        cand = _from_attr_dict(value, "descriptors")
        if cand is None:
            raise DescriptorError(
                f"descriptors[{band!r}] has no centre wavelength; give (min, centre, max), "
                "(centre, fwhm) or a centre"
            )
        cand.explicit = True
        return cand
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, 2, 3) or not np.isfinite(values).all():
        raise DescriptorError(
            f"descriptors[{band!r}] = {value!r}: expected finite (min, centre, max), "
            "(centre, fwhm) or a centre wavelength"
        )
    if values.size == 3:
        lo, mid, hi = (float(v) for v in values)
        return _Candidate("descriptors", centre=mid, triple=(lo, mid, hi), explicit=True)
    if values.size == 2:
        return _Candidate(
            "descriptors", centre=float(values[0]), fwhm=float(values[1]), explicit=True
        )
    return _Candidate("descriptors", centre=float(values[0]), explicit=True)


# --------------------------------------------------------------------------------------------
# sensor


def _sensor_names_in(obj: xr.DataArray | xr.Dataset) -> list[str]:
    names: list[str] = []
    for key in ("platform", "constellation"):  # stackstac: item properties become coords
        if key in obj.coords:
            values = np.asarray(obj.coords[key].values, dtype=object).ravel()
            names.extend(str(v) for v in values if isinstance(v, str) and v)
    for key in _SENSOR_ATTRS:
        value = obj.attrs.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    if not names:
        # odc-stac / our loaders may keep the attrs on the variables only
        for var in getattr(obj, "data_vars", {}).values():
            for key in _SENSOR_ATTRS:
                value = var.attrs.get(key)
                if isinstance(value, str) and value:
                    names.append(value)
    return list(dict.fromkeys(names))


def _lookup_sensor(
    obj: xr.DataArray | xr.Dataset, sensor: str | SensorInfo | None
) -> tuple[SensorInfo | None, list[str]]:
    """The catalogue sensor to use and the names tried (for error messages)."""
    from xsensei.sensors import UnknownSensorError, find_sensor, get_sensor

    if sensor is not None:
        try:
            return get_sensor(sensor), [str(sensor)]
        except UnknownSensorError as err:
            raise DescriptorError(
                f"{err} Or pass descriptors= with the band wavelengths."
            ) from None
    tried = _sensor_names_in(obj)
    for name in tried:
        info = find_sensor(name)
        if info is not None:
            return info, tried
    return None, tried


def _catalogue_band(info: SensorInfo | None, names: Sequence[str]) -> BandInfo | None:
    if info is None:
        return None
    for name in names:
        band = info.find_band(name)
        if band is not None:
            return band
    for name in names:
        for syn in _SYNONYMS.get(name.lower(), ()):
            band = info.find_band(syn)
            if band is not None:
                return band
    return None


# --------------------------------------------------------------------------------------------
# resolution


@dataclass
class _Result:
    wl: tuple[float, float, float] | None = None
    source: str = ""
    needs_width: bool = False  # centre only, width to be filled in later
    problem: str = ""


def _catalogue_band_at(sensor: SensorInfo | None, centre_nm: float) -> BandInfo | None:
    """The sensor's band whose [min, max] holds ``centre_nm`` (nearest centre if several)."""
    if sensor is None:
        return None
    hits = [b for b in sensor.bands if b.wl_min_nm <= centre_nm <= b.wl_max_nm]
    return min(hits, key=lambda b: abs(b.wl_center_nm - centre_nm), default=None)


def _resolve_one(
    band: _Band, cat: BandInfo | None, sensor: SensorInfo | None, sensor_name: str | None
) -> _Result:
    for cand in band.candidates:
        where = "descriptors=" if cand.explicit else cand.source
        centre = cand.centre
        if centre is None:
            continue
        factor = _factor(centre, cand.units, band.label, where)
        if cand.triple is not None:
            lo, mid, hi = (v * factor for v in cand.triple)
            if not lo <= mid <= hi:
                raise DescriptorError(
                    f"band {band.label!r}: wavelengths [{lo:g}, {mid:g}, {hi:g}] nm from {where} "
                    "are out of order; expected [min, centre, max] with min <= centre <= max"
                )
            return _Result((lo, mid, hi), cand.source)
        mid = centre * factor
        fwhm = None if cand.fwhm is None else cand.fwhm * factor
        if fwhm is not None and fwhm < 0:
            raise DescriptorError(
                f"band {band.label!r}: negative bandwidth (FWHM {cand.fwhm:g}) from {where}"
            )
        if fwhm:  # zero FWHM is a common "unknown" placeholder in ENVI headers
            return _Result((mid - fwhm / 2, mid, mid + fwhm / 2), cand.source)
        if cat is None or not cat.wl_min_nm <= mid <= cat.wl_max_nm:
            cat = _catalogue_band_at(sensor, mid)
        if cat is not None:
            return _Result(
                (float(cat.wl_min_nm), mid, float(cat.wl_max_nm)),
                f"{cand.source}+catalogue:{sensor_name}",
            )
        return _Result((mid, mid, mid), f"{cand.source}+default-width", needs_width=True)
    if cat is not None:
        return _Result(
            (float(cat.wl_min_nm), float(cat.wl_center_nm), float(cat.wl_max_nm)),
            f"catalogue:{sensor_name}",
        )
    return _Result(problem="no wavelengths")


def _fill_default_widths(results: list[_Result]) -> list[int]:
    centres = np.array([r.wl[1] for r in results if r.wl is not None], dtype=np.float64)
    filled = []
    for i, res in enumerate(results):
        if not res.needs_width or res.wl is None:
            continue
        mid = res.wl[1]
        fwhm = _default_fwhm(mid)
        gaps = np.abs(centres - mid)
        gaps = gaps[gaps > 0]
        if gaps.size:
            fwhm = min(fwhm, float(gaps.min()))
        res.wl = (mid - fwhm / 2, mid, mid + fwhm / 2)
        filled.append(i)
    return filled


def _fix_hint(labels: Sequence[str], sensor_info: SensorInfo | None, tried: list[str]) -> str:
    if sensor_info is not None:
        names = ", ".join(repr(b.name) for b in list(getattr(sensor_info, "bands", []))[:14])
        sensor_note = (
            f"sensor {sensor_info.name!r} has no band named like these (its bands: {names})"
        )
    elif tried:
        sensor_note = (
            f"sensor {', '.join(map(repr, tried))} from the metadata is not in the catalogue"
        )
    else:
        sensor_note = "no sensor was given or found in the attrs/coords"
    return (
        f"{sensor_note}. Fix it in one of these ways: pass descriptors= (an (N, 3) array of "
        "[min, centre, max] nm, or a mapping band -> (min, centre, max) or (centre, fwhm)); pass "
        "sensor= (e.g. 'sentinel-2a', 'landsat-8'; see xsensei.list_sensors()) with band names "
        "or common names from the catalogue (e.g. 'B04' or 'red'); or add 'center_wavelength' "
        "and 'full_width_half_max' coords (um) on the band dimension"
    )


def resolve_bands(
    obj: xr.DataArray | xr.Dataset,
    *,
    band_dim: str = "band",
    descriptors: Any = None,
    sensor: str | SensorInfo | None = None,
) -> ResolvedBands:
    """Wavelengths of every usable band of ``obj`` (see the module docstring for the order).

    ``descriptors`` may be an ``(N, 3)`` array over all input bands (nm or um; NaN rows = no
    wavelengths) or a mapping band label -> ``(min, centre, max)``, ``(centre, fwhm)`` or a
    centre; bands missing from a mapping fall through to the other sources. For a Dataset, each
    variable with y/x dims is a band. Raises :class:`DescriptorError` when no band resolves or
    metadata is malformed, :class:`InputError` when the band dimension is missing.
    """
    is_dataset = hasattr(obj, "data_vars")
    dim: str | None = None
    if is_dataset:
        bands = _gather_dataset(obj)  # type: ignore[arg-type]
        if not bands:
            raise InputError(
                "the Dataset has no band variables (data variables with y/x dims); variables: "
                f"{[str(v) for v in obj.data_vars]}"
            )
    else:
        dim = find_band_dim(obj, band_dim)  # type: ignore[arg-type]
        bands = _gather_dataarray(obj, dim)  # type: ignore[arg-type]
    if descriptors is not None:
        _explicit_candidates(descriptors, bands)

    sensor_info, tried = _lookup_sensor(obj, sensor)
    sensor_name = None if sensor_info is None else str(sensor_info.name)

    results: list[_Result] = []
    cats: list[BandInfo | None] = []
    for band in bands:
        cat = _catalogue_band(sensor_info, band.lookup)
        cats.append(cat)
        results.append(_resolve_one(band, cat, sensor_info, sensor_name))

    # edges at or below 300 nm cannot be encoded: an error for explicit values, else a drop
    for band, res in zip(bands, results, strict=True):
        if res.wl is not None and res.wl[0] <= _ENCODING_FLOOR_NM and not res.needs_width:
            if res.source == "descriptors":
                raise DescriptorError(
                    f"band {band.label!r}: min wavelength {res.wl[0]:g} nm is at or below 300 nm, "
                    "where SEnSeI's encoding log10(nm - 300) - 2 is undefined"
                )
            res.wl, res.problem = None, "below 300 nm"

    filled = _fill_default_widths(results)
    for i in filled:
        res = results[i]
        if res.wl is not None and res.wl[0] <= _ENCODING_FLOOR_NM:
            res.wl, res.problem = None, "below 300 nm"

    keep = [i for i, r in enumerate(results) if r.wl is not None]
    dropped = [bands[i].label for i in range(len(bands)) if results[i].wl is None]
    if not keep:
        listing = ", ".join(repr(b.label) for b in bands)
        raise DescriptorError(
            f"could not find wavelengths for any band ({listing}): "
            + _fix_hint([b.label for b in bands], sensor_info, tried)
        )
    if dropped:
        listing = ", ".join(
            f"{bands[i].label!r} ({results[i].problem})"
            for i in range(len(bands))
            if results[i].wl is None
        )
        warn_user(
            f"dropping band(s) without usable wavelengths: {listing}; pass descriptors= to "
            "keep them"
        )
    widths = [i for i in filled if results[i].wl is not None]
    if widths:
        warn_user(
            "no bandwidth known for band(s) "
            + ", ".join(
                f"{bands[i].label!r} (assumed FWHM {results[i].wl[2] - results[i].wl[0]:.3g} nm)"  # type: ignore[index]
                for i in widths
            )
            + "; pass descriptors= or add FWHM coords for exact values"
        )

    kinds, thermal = [], []
    for i in keep:
        mid = results[i].wl[1]  # type: ignore[index]
        cat = cats[i]
        cat_thermal = (
            cat is not None
            and getattr(cat, "kind", "reflective") == "thermal"
            and abs(float(cat.wl_center_nm) - mid) < 1000.0
        )
        is_thermal = mid > THERMAL_CENTRE_NM or cat_thermal
        kinds.append("thermal" if is_thermal else "reflective")
        spec = None
        if is_thermal and cat_thermal:
            values = (cat.k1, cat.k2, cat.bt_min_k, cat.bt_max_k)  # type: ignore[union-attr]
            if any(v is not None for v in values):
                spec = ThermalSpec(*(None if v is None else float(v) for v in values))
        thermal.append(spec)

    return ResolvedBands(
        names=tuple(bands[i].label for i in keep),
        indices=tuple(keep),
        wavelengths_nm=np.array([results[i].wl for i in keep], dtype=np.float64),
        kinds=tuple(kinds),
        thermal=tuple(thermal),
        sources=tuple(results[i].source for i in keep),
        dropped=tuple(dropped),
        sensor=sensor_name,
        band_dim=dim,
    )
