"""Radiometry: input scale and thermal bands as normalised brightness temperature.

SEnSeI sees every band on a roughly 0-1 scale. Reflective bands are TOA reflectance (float;
the contract of the whole package); thermal bands are brightness temperature rescaled between a
per-band minimum and maximum (paper eq. 3-4).

Input scale (DN -> reflectance) is resolved once, at graph-build time, by
:func:`scale_from_metadata` and checked on a small sample by :func:`check_reflectance_scale`;
:func:`to_model_units` then runs inside every Dask task on numpy blocks, so it is pure and cheap.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsensei.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from xsensei.band_metadata import ResolvedBands, ThermalSpec


def brightness_temperature(radiance: ArrayLike, k1: float, k2: float) -> NDArray[np.floating]:
    """Kelvin from at-sensor spectral radiance: ``BT = K2 / ln(K1 / L + 1)`` (paper eq. 3).

    Radiance must be positive (W m-2 sr-1 um-1); non-positive values give NaN.
    """
    if k1 <= 0 or k2 <= 0:
        raise InputError(f"thermal constants must be positive, got K1={k1}, K2={k2}")
    rad = np.asarray(radiance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bt = k2 / np.log(k1 / rad + 1.0)
    return np.where(rad > 0, bt, np.nan)


def radiance_from_brightness_temperature(
    bt_kelvin: ArrayLike, k1: float, k2: float
) -> NDArray[np.floating]:
    """Inverse of :func:`brightness_temperature`: ``L = K1 / (exp(K2 / BT) - 1)``."""
    bt = np.asarray(bt_kelvin, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rad = k1 / np.expm1(k2 / bt)
    return np.where(bt > 0, rad, np.nan)


def normalise_brightness_temperature(
    bt_kelvin: ArrayLike, bt_min: float, bt_max: float
) -> NDArray[np.floating]:
    """``(BT - BT_min) / (BT_max - BT_min)`` (paper eq. 4).

    The value SEnSeI sees for a thermal band.
    """
    if not bt_max > bt_min:
        raise InputError(f"bt_max ({bt_max}) must exceed bt_min ({bt_min})")
    bt = np.asarray(bt_kelvin, dtype=np.float64)
    return (bt - bt_min) / (bt_max - bt_min)


def celsius_to_kelvin(celsius: ArrayLike) -> NDArray[np.floating]:
    """Degrees Celsius to kelvin, for products that store brightness temperature in degC."""
    return np.asarray(celsius, dtype=np.float64) + 273.15


# ============================================================================================
# Input scale: digital numbers -> TOA reflectance

#: Brightness-temperature range (K) used for a thermal band whose catalogue entry has none.
#: Close to the ranges SEnSeI was trained with (Landsat 8 B10 132-249 K, B11 127-239 K,
#: Landsat 7 B6 169-252 K), so such a band looks to the model like the bands it knows.
DEFAULT_BT_RANGE_K = (130.0, 250.0)

#: Kelvin / Celsius split used by ``thermal_units="auto"``: no Earth scene is colder than
#: 150 K (-123 degC) nor hotter than 150 degC, so the rule is exact per pixel and
#: does not depend on how the scene is chunked.
_KELVIN_CELSIUS_SPLIT = 150.0
_THERMAL_UNITS = ("auto", "kelvin", "celsius", "radiance")
_UNIT_WORDS = {
    "k": "kelvin",
    "kelvin": "kelvin",
    "degk": "kelvin",
    "c": "celsius",
    "degc": "celsius",
    "celsius": "celsius",
    "degreescelsius": "celsius",
    "degree_celsius": "celsius",
    "°c": "celsius",
    "radiance": "radiance",
}

_DN_HINT = (
    "pass scale=0.0001 (Sentinel-2 L1C/L2A; processing baseline >= 04.00 also offset=-0.1) "
    "or scale=2.75e-05, offset=-0.2 (Landsat C2 L2), or convert to reflectance first"
)


@dataclass(frozen=True, eq=False)
class ScaleSpec:
    """Per-band linear scaling: ``value = DN * scale + offset`` (kept bands, ``resolved`` order).

    For reflective bands the result is TOA (or surface) reflectance. For thermal bands it is
    the quantity named in ``thermal_units`` (``"kelvin"``, ``"celsius"``, ``"radiance"``, or
    ``None`` = decided by :func:`to_model_units`). ``source`` says where the numbers came from.
    """

    scale: np.ndarray
    offset: np.ndarray
    source: str = "explicit"
    thermal_units: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        scale = np.array(self.scale, dtype=np.float64).reshape(-1)
        offset = np.array(self.offset, dtype=np.float64).reshape(-1)
        if scale.shape != offset.shape:
            raise InputError(f"scale {scale.shape} and offset {offset.shape} differ in length")
        if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
            raise InputError("scale and offset must be finite")
        if (scale == 0).any():
            raise InputError(
                f"scale is 0 for band(s) at position(s) {np.flatnonzero(scale == 0).tolist()}: "
                "every value would become the offset. Pass the factor that turns DN into "
                "reflectance, e.g. scale=0.0001 for Sentinel-2 L1C"
            )
        if self.thermal_units is not None and len(self.thermal_units) != scale.size:
            raise InputError("ScaleSpec.thermal_units needs one entry per band")
        for arr in (scale, offset):
            arr.setflags(write=False)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", offset)

    def __len__(self) -> int:
        return int(self.scale.size)

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.scale == 1.0) and np.all(self.offset == 0.0))


# --------------------------------------------------------------------------------------------
# helpers


def _finite(values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        arr = arr.astype(np.float64)
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    return flat.astype(np.float64, copy=False)


def _stats(values: np.ndarray) -> str:
    return f"median {np.median(values):.4g}, max {values.max():.4g}"


def _is_integer(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "iu"


def _is_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, Mapping) and np.ndim(value) == 0


def _band_key(name: str) -> str:
    """Offset-table key: 'B1', 'b01', 'band1' -> 'B01', 'B08A' -> 'B8A'; others upper-cased."""
    text = str(name).strip().upper()
    m = re.fullmatch(r"(?:B|BAND)_?0*(\d+)([A-Z]?)", text)
    if m:
        number, letter = int(m.group(1)), m.group(2)
        return f"B{number}{letter}" if letter else f"B{number:02d}"
    return text


def _input_band_names(obj: Any, resolved: ResolvedBands) -> list[str]:
    """Every input band's name, kept or not (a mapping scale may name bands a model drops)."""
    if hasattr(obj, "data_vars"):
        from xsensei.band_metadata import band_variables

        return [str(n) for n in band_variables(obj)]
    dim = resolved.band_dim
    if dim is not None and dim in obj.dims and dim in obj.coords:
        return [str(v) for v in obj[dim].values]
    return list(resolved.names)


def _n_input_bands(obj: Any, resolved: ResolvedBands) -> int:
    if hasattr(obj, "data_vars"):
        from xsensei.band_metadata import band_variables

        return len(band_variables(obj))
    if resolved.band_dim is not None and resolved.band_dim in obj.dims:
        return int(obj.sizes[resolved.band_dim])
    return len(resolved)


def _per_band(
    value: Any,
    names: Sequence[str] | None,
    indices: Sequence[int],
    n_in: int,
    what: str,
    default: float,
    all_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Explicit scalar / sequence / mapping -> one value per kept band (``indices`` are the
    kept bands' positions among ``n_in``). ``names`` None: the input has no band names (numpy).
    A mapping may also name the input's other bands (``all_names``), which it then ignores."""
    n = len(indices)
    if isinstance(value, Mapping):
        if names is None:
            raise InputError(
                f"{what}= as a mapping needs band names, which a numpy array has none of: pass "
                f"a scalar or one value per band, in band order"
            )
        keys = {str(k): float(v) for k, v in value.items()}
        unknown = sorted(set(keys) - set(names) - set(all_names or ()))
        if unknown:
            raise InputError(
                f"{what}= names unknown band(s) {unknown}; the bands are "
                f"{list(all_names or names)}"
            )
        return np.array([keys.get(name, default) for name in names], dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    arr = arr.reshape(-1)
    if arr.size == n:
        return arr.copy()
    if arr.size == n_in:
        return arr[list(indices)]
    if names is None and n == n_in:
        raise InputError(f"{what}= has {arr.size} values; expected a scalar or {n} (one per band)")
    kept = list(names) if names is not None else f"band positions {list(indices)}"
    raise InputError(
        f"{what}= has {arr.size} values; expected a scalar, {n} (the kept bands "
        f"{kept}) or {n_in} (all input bands)"
    )


def explicit_scale(
    scale: Any,
    offset: Any,
    thermal: ArrayLike,
    n_in: int,
    indices: Sequence[int],
    names: Sequence[str] | None = None,
    all_names: Sequence[str] | None = None,
) -> ScaleSpec:
    """The user's ``scale=`` / ``offset=`` for the kept bands: a scalar applies to reflective
    bands only (thermal bands never share the reflective DN convention), a sequence gives one
    value per kept or per input band, a mapping band -> value (needs ``names``)."""
    thermal = np.asarray(thermal, dtype=bool)
    sc = _per_band(1.0 if scale is None else scale, names, indices, n_in, "scale", 1.0,
                   all_names)
    of = _per_band(0.0 if offset is None else offset, names, indices, n_in, "offset", 0.0,
                   all_names)
    if _is_scalar(scale):
        sc = np.where(thermal, 1.0, sc)
    if _is_scalar(offset):
        of = np.where(thermal, 0.0, of)
    return ScaleSpec(sc, of, source="explicit")


def apply_scale(values: NDArray[np.float32], scale_spec: ScaleSpec) -> None:
    """In place: ``values * scale + offset``, bands on axis 0."""
    shape = (-1,) + (1,) * (values.ndim - 1)
    values *= scale_spec.scale.astype(np.float32).reshape(shape)
    values += scale_spec.offset.astype(np.float32).reshape(shape)


def _band_attrs(obj: Any, resolved: ResolvedBands) -> list[Mapping[str, Any]] | None:
    """Per kept band attrs of a Dataset's variables (None for a DataArray)."""
    if not hasattr(obj, "data_vars"):
        return None
    return [obj[name].attrs for name in resolved.names]


def _coord_per_band(obj: Any, name: str, resolved: ResolvedBands, n_in: int) -> list[Any] | None:
    if hasattr(obj, "data_vars") or name not in obj.coords:
        return None
    coord = obj.coords[name]
    if coord.ndim == 0:
        return [coord.values.item()] * len(resolved)
    if coord.dims == (resolved.band_dim,) and coord.size == n_in:
        values = np.asarray(coord.values, dtype=object).tolist()
        return [values[i] for i in resolved.indices]
    return None


def _attr_per_band(value: Any, resolved: ResolvedBands, n_in: int) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) == n_in:
            return [value[i] for i in resolved.indices]
        if len(value) == 1:
            return [value[0]] * len(resolved)
        return None
    return [value] * len(resolved)


def _unwrap(entry: Any) -> Mapping[str, Any] | None:
    if isinstance(entry, (list, tuple)) and len(entry) == 1:
        entry = entry[0]
    return entry if isinstance(entry, Mapping) else None


def _raster_bands(obj: Any, resolved: ResolvedBands, n_in: int) -> ScaleSpec | None:
    """STAC raster extension: ``raster:bands`` (v1) or ``raster:scale``/``raster:offset`` (1.1)."""
    n = len(resolved)
    entries: list[Mapping[str, Any] | None] = [None] * n
    per_var = _band_attrs(obj, resolved)
    if per_var is not None:
        for i, attrs in enumerate(per_var):
            entry = _unwrap(attrs.get("raster:bands"))
            if entry is None and ("raster:scale" in attrs or "raster:offset" in attrs):
                entry = {"scale": attrs.get("raster:scale"), "offset": attrs.get("raster:offset")}
            entries[i] = entry
    else:
        lists = (
            _attr_per_band(obj.attrs.get("raster:bands"), resolved, n_in)
            if isinstance(obj.attrs.get("raster:bands"), (list, tuple))
            else None
        )
        lists = lists or _coord_per_band(obj, "raster:bands", resolved, n_in)
        if lists is not None:
            entries = [_unwrap(e) for e in lists]
        stac11 = obj.attrs.get("bands")
        if all(e is None for e in entries) and isinstance(stac11, (list, tuple)):
            per = _attr_per_band(stac11, resolved, n_in) or []
            entries = [
                {"scale": e.get("raster:scale"), "offset": e.get("raster:offset")}
                if isinstance(e, Mapping)
                else None
                for e in per
            ] or entries
        if all(e is None for e in entries):
            scales = _attr_per_band(obj.attrs.get("raster:scale"), resolved, n_in)
            scales = scales or _coord_per_band(obj, "raster:scale", resolved, n_in)
            offsets = _attr_per_band(obj.attrs.get("raster:offset"), resolved, n_in)
            offsets = offsets or _coord_per_band(obj, "raster:offset", resolved, n_in)
            if scales is not None or offsets is not None:
                entries = [
                    {
                        "scale": None if scales is None else scales[i],
                        "offset": None if offsets is None else offsets[i],
                    }
                    for i in range(n)
                ]
    scale = np.ones(n)
    offset = np.zeros(n)
    found = False
    for i, entry in enumerate(entries):
        if entry is None:
            continue
        s_val, o_val = entry.get("scale"), entry.get("offset")
        if s_val is not None:
            scale[i] = float(s_val)
            found = True
        if o_val is not None:
            offset[i] = float(o_val)
            found = True
    if not found:
        return None
    return ScaleSpec(scale, offset, source="raster:bands")


def _cf_scale(obj: Any, resolved: ResolvedBands, n_in: int) -> ScaleSpec | None:
    """rioxarray / CF packing attrs ``scale_factor`` / ``add_offset`` (ignored when 1 / 0)."""
    n = len(resolved)
    per_var = _band_attrs(obj, resolved)
    if per_var is not None:
        scales = [a.get("scale_factor") for a in per_var]
        offsets = [a.get("add_offset") for a in per_var]
    else:
        scales = _attr_per_band(obj.attrs.get("scale_factor"), resolved, n_in) or [None] * n
        offsets = _attr_per_band(obj.attrs.get("add_offset"), resolved, n_in) or [None] * n
    scale = np.array([1.0 if v is None else float(v) for v in scales])
    offset = np.array([0.0 if v is None else float(v) for v in offsets])
    if np.all(scale == 1.0) and np.all(offset == 0.0):
        return None
    return ScaleSpec(scale, offset, source="scale_factor/add_offset")


def _metadata_values(obj: Any, keys: Sequence[str]) -> list[Any]:
    """Values of any of ``keys`` in the object's attrs, its variables' attrs or its coords."""
    found: list[Any] = []
    sources: list[Mapping[str, Any]] = [obj.attrs]
    sources += [v.attrs for v in getattr(obj, "data_vars", {}).values()]
    for attrs in sources:
        for key in keys:
            if key in attrs and attrs[key] is not None:
                found.append(attrs[key])
    for key in keys:
        if key in obj.coords:
            values = np.asarray(obj.coords[key].values, dtype=object).reshape(-1)
            found.extend(v for v in values.tolist() if v is not None)
    return found


def _baseline(obj: Any) -> float | None:
    values = _metadata_values(obj, ("processing_baseline", "s2:processing_baseline"))
    numbers = set()
    for v in values:
        try:
            numbers.add(round(float(str(v).strip().lstrip("N")), 2))
        except ValueError:
            continue
    if len(numbers) > 1:
        raise InputError(
            f"mixed Sentinel-2 processing baselines {sorted(numbers)} in one array: from 04.00 on "
            "the DN carry a +1000 offset, so one scale cannot fit all; split the time series by "
            "baseline or pass harmonised reflectance"
        )
    return numbers.pop() if numbers else None


def _s2_offset_for(table: Any, label: str, canonical: str | None, n_in: int, index: int) -> Any:
    if isinstance(table, Mapping):
        lookup = {_band_key(str(k)): v for k, v in table.items()}
        for key in (label, canonical):
            if key is not None and _band_key(key) in lookup:
                return lookup[_band_key(key)]
        values = set(map(float, table.values()))
        return values.pop() if len(values) == 1 else None
    if isinstance(table, (list, tuple, np.ndarray)):
        values = [float(v) for v in table]
        if len(set(values)) == 1:
            return values[0]
        if len(values) == n_in:
            return values[index]
        return None
    return table


def _sentinel2_scale(obj: Any, resolved: ResolvedBands, n_in: int) -> ScaleSpec | None:
    """Sentinel-2 L1C/L2A DN: ``(DN + ADD_OFFSET) / QUANTIFICATION_VALUE`` (offset from 04.00)."""
    baseline = _baseline(obj)
    offsets = _metadata_values(obj, ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET", "s2:add_offset"))
    quant = _metadata_values(
        obj, ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE", "s2:quantification_value")
    )
    if baseline is None and not offsets and not quant:
        return None
    q = float(quant[0]) if quant else 10000.0
    if q <= 0:
        raise InputError(f"Sentinel-2 quantification value must be positive, got {q}")
    canonical: list[str | None] = [None] * len(resolved)
    if resolved.sensor is not None:
        from xsensei.sensors import find_sensor

        info = find_sensor(resolved.sensor)
        if info is not None:
            for i, name in enumerate(resolved.names):
                band = info.find_band(name)
                canonical[i] = None if band is None else band.name
    default = -1000.0 if baseline is not None and baseline >= 4.0 else 0.0
    offset = np.zeros(len(resolved))
    for i, name in enumerate(resolved.names):
        value = None
        if offsets:
            value = _s2_offset_for(offsets[0], name, canonical[i], n_in, resolved.indices[i])
            if value is None:
                raise InputError(
                    f"cannot match the Sentinel-2 ADD_OFFSET values {offsets[0]!r} to band "
                    f"{name!r}; pass offset= explicitly"
                )
        offset[i] = (default if value is None else float(value)) / q
    thermal = np.array([k == "thermal" for k in resolved.kinds])
    scale = np.where(thermal, 1.0, 1.0 / q)
    offset = np.where(thermal, 0.0, offset)
    label = f"sentinel-2 baseline {baseline:05.2f}" if baseline is not None else "sentinel-2"
    return ScaleSpec(scale, offset, source=label)


def _data_are_raw(obj: Any, resolved: ResolvedBands, sample: np.ndarray | None) -> bool:
    """Integer data are DN; float data only when the sample shows DN-sized values.

    Float data are assumed decoded: rioxarray ``mask_and_scale=True``, xarray's CF decoding
    and stackstac's default ``rescale=True`` all apply the metadata scale already.
    """
    if hasattr(obj, "data_vars"):
        dtypes = [obj[name].dtype for name in resolved.names]
    else:
        dtypes = [obj.dtype]
    if any(_is_integer(d) for d in dtypes):
        return True
    if sample is None:
        return False
    reflective = np.asarray(sample)[~np.asarray(resolved.is_thermal)]
    return reflective.size > 0 and looks_like_dn(reflective)


def scale_from_metadata(
    obj: xr.DataArray | xr.Dataset,
    resolved: ResolvedBands,
    *,
    scale: Any = None,
    offset: Any = None,
    sample: np.ndarray | None = None,
) -> ScaleSpec | None:
    """How to turn ``obj``'s values into reflectance, or None when they need no scaling.

    Order: explicit ``scale=``/``offset=`` (scalar: reflective bands only, since thermal
    bands never share the reflective DN convention; or one value per kept band, per input
    band, or a mapping band -> value); STAC ``raster:bands`` / ``raster:scale`` /
    ``raster:offset`` in attrs or band coords; CF ``scale_factor``/``add_offset`` attrs;
    Sentinel-2 ``processing_baseline`` / ``*_ADD_OFFSET`` / ``QUANTIFICATION_VALUE`` (from
    04.00: ``(DN - 1000) / 10000``). Metadata scales apply only to raw DN: integer data, or
    float data whose ``sample`` (kept bands, ``resolved`` order) looks like DN; float data
    without a sample are taken as already decoded.
    """
    n_in = _n_input_bands(obj, resolved)
    if scale is not None or offset is not None:
        return explicit_scale(scale, offset, resolved.is_thermal, n_in, resolved.indices,
                              resolved.names, _input_band_names(obj, resolved))
    if not _data_are_raw(obj, resolved, sample):
        return None
    return _scale_in_metadata(obj, resolved, n_in)


def _scale_in_metadata(obj: Any, resolved: ResolvedBands, n_in: int) -> ScaleSpec | None:
    """The first scale the metadata holds: STAC raster, then CF, then Sentinel-2 baseline."""
    for finder in (_raster_bands, _cf_scale, _sentinel2_scale):
        spec = finder(obj, resolved, n_in)
        if spec is not None:
            return spec
    return None


def metadata_scale_hint(obj: xr.DataArray | xr.Dataset, resolved: ResolvedBands) -> str | None:
    """``"scale=..., offset=... (from <metadata>)"`` when ``obj`` carries scale metadata that
    was not applied (float data are taken as decoded): the fix to name if its values turn out
    to be digital numbers."""
    try:
        spec = _scale_in_metadata(obj, resolved, _n_input_bands(obj, resolved))
    except InputError:
        return None
    if spec is None:
        return None
    refl = ~np.asarray(resolved.is_thermal, dtype=bool)
    if not refl.any():
        return None

    def one(values: np.ndarray) -> str:
        vals = values[refl]
        return f"{vals[0]:g}" if (vals == vals[0]).all() else \
            "[" + ", ".join(f"{v:g}" for v in values) + "]"

    return f"scale={one(spec.scale)}, offset={one(spec.offset)} (from {spec.source})"


# --------------------------------------------------------------------------------------------
# checks (once, on a small sample at graph-build time)


def looks_like_dn(values_sample: ArrayLike) -> bool:
    """True for integer data, or floats whose robust (99th percentile) magnitude exceeds 5.

    TOA reflectance rarely exceeds 1.5 even over bright cloud, so anything far above that is
    digital numbers (or percent). Pass reflective bands only: brightness temperature is large.
    """
    arr = np.asarray(values_sample)
    if _is_integer(arr.dtype):
        return True
    finite = _finite(arr)
    if finite.size == 0:
        return False
    return bool(np.percentile(np.abs(finite), 99) > 5.0)


def looks_like_percent(values_sample: ArrayLike) -> bool:
    """Float reflectance in percent: robust max between 1.5 and 100, never far above 100."""
    arr = np.asarray(values_sample)
    if _is_integer(arr.dtype):
        return False
    finite = _finite(arr)
    if finite.size == 0:
        return False
    p1, p99 = np.percentile(finite, [1, 99])
    return bool(1.5 < p99 <= 100.5 and finite.max() <= 150.0 and p1 >= -5.0)


def _apply(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    return values * scale + offset


def _thermal_units_per_band(
    thermal_units: str | Sequence[str | None], resolved: ResolvedBands, spec: ScaleSpec | None
) -> list[str]:
    """One of 'auto' / 'kelvin' / 'celsius' / 'radiance' per kept band."""
    n = len(resolved)
    if isinstance(thermal_units, str):
        units: list[str | None] = [thermal_units] * n
    else:
        units = list(thermal_units)
        if len(units) != n:
            raise InputError(f"thermal_units has {len(units)} entries, expected {n}")
    out = []
    for i, unit in enumerate(units):
        u = "auto" if unit is None else str(unit).lower()
        u = _UNIT_WORDS.get(u.replace(" ", ""), u)
        if u not in _THERMAL_UNITS:
            raise InputError(
                f"thermal_units {unit!r} not understood; use one of {', '.join(_THERMAL_UNITS)}"
            )
        if u == "auto" and spec is not None and spec.thermal_units is not None:
            u = spec.thermal_units[i] or "auto"
        out.append(u)
    return out


def check_reflectance_scale(
    sample: ArrayLike,
    resolved: ResolvedBands,
    scale_spec: ScaleSpec | None,
    *,
    thermal_units: str | Sequence[str | None] = "auto",
) -> None:
    """Raise :class:`InputError` with a fix when the sample is not on the model's scale.

    ``sample`` holds the kept bands (``resolved`` order) along axis 0, raw as read. Catches DN
    without a scale, reflectance in percent, a scale applied twice, and thermal bands that are
    still DN or whose units (radiance vs degC) cannot be told apart.
    """
    arr = np.asarray(sample)
    if arr.ndim == 0 or arr.shape[0] != len(resolved):
        raise InputError(
            f"sample must have the {len(resolved)} kept bands on axis 0, got shape {arr.shape}"
        )
    thermal = np.asarray(resolved.is_thermal)
    units = _thermal_units_per_band(thermal_units, resolved, scale_spec)
    refl_idx = np.flatnonzero(~thermal)
    if refl_idx.size:
        raw = arr[refl_idx]
        finite_raw = _finite(raw)
        if finite_raw.size:
            if scale_spec is None or scale_spec.is_identity:
                if looks_like_percent(raw):
                    raise InputError(
                        f"values look like reflectance in percent ({_stats(finite_raw)}); "
                        "divide by 100 or pass scale=0.01 (8-bit digital numbers look the "
                        f"same: then {_DN_HINT})"
                    )
                if looks_like_dn(raw) and np.percentile(np.abs(finite_raw), 99) > 1.5:
                    raise InputError(
                        f"values look like digital numbers ({_stats(finite_raw)}); {_DN_HINT}"
                    )
            else:
                scaled = np.concatenate(
                    [
                        _apply(_finite(arr[i]), scale_spec.scale[i], scale_spec.offset[i])
                        for i in refl_idx
                    ]
                )
                p99 = float(np.percentile(np.abs(scaled), 99))
                if p99 > 5.0:
                    raise InputError(
                        f"after applying the scale from {scale_spec.source}, values still look "
                        f"like digital numbers ({_stats(scaled)}); {_DN_HINT}"
                    )
                if np.median(scaled) < -0.05 or (
                    p99 < 0.002 and not _is_integer(raw.dtype) and not looks_like_dn(raw)
                ):
                    raise InputError(
                        f"after applying the scale from {scale_spec.source}, values are "
                        f"implausible reflectance ({_stats(scaled)}): the data look like "
                        "reflectance already; pass scale=1.0 (or drop the scale metadata)"
                    )
    for i in np.flatnonzero(thermal):
        values = _finite(arr[i])
        if values.size == 0:
            continue
        if scale_spec is not None:
            values = _apply(values, scale_spec.scale[i], scale_spec.offset[i])
        name = resolved.names[i]
        spec = resolved.thermal[i]
        med = float(np.median(values))
        if med > 400.0:
            raise InputError(
                f"thermal band {name!r} looks like digital numbers ({_stats(values)}): "
                "brightness temperature is 180-340 K; pass a per-band scale/offset (e.g. "
                "Landsat C2 L2 ST_B10: scale 0.00341802, offset 149.0) or convert it first"
            )
        if units[i] == "radiance" and (spec is None or spec.k1 is None or spec.k2 is None):
            raise InputError(
                f"thermal band {name!r} is radiance but its K1/K2 constants are unknown; "
                "convert it to brightness temperature (K) first"
            )
        if units[i] == "auto" and med < _KELVIN_CELSIUS_SPLIT:
            p1, p99 = np.percentile(values, [1, 99])
            has_k = spec is not None and spec.k1 is not None and spec.k2 is not None
            if has_k and p1 >= 0.0 and p99 < 30.0:
                raise InputError(
                    f"thermal band {name!r} values ({_stats(values)}, none negative) could be "
                    "radiance (W m-2 sr-1 um-1) or degrees Celsius; pass "
                    "thermal_units='radiance' or thermal_units='celsius'"
                )


# --------------------------------------------------------------------------------------------
# the per-block transform (inside every Dask task)


def _thermal_to_normalised(
    values: np.ndarray, unit: str, spec: ThermalSpec | None, name: str
) -> np.ndarray:
    if unit == "radiance":
        if spec is None or spec.k1 is None or spec.k2 is None:
            raise InputError(f"thermal band {name!r}: radiance needs K1/K2, which are unknown")
        kelvin = brightness_temperature(values, spec.k1, spec.k2)
    elif unit == "celsius":
        kelvin = celsius_to_kelvin(values)
    elif unit == "kelvin":
        kelvin = values.astype(np.float64, copy=False)
    else:  # auto: per pixel, so the result does not depend on chunking
        kelvin = np.where(values < _KELVIN_CELSIUS_SPLIT, values + 273.15, values)
    lo, hi = DEFAULT_BT_RANGE_K
    if spec is not None and spec.bt_min_k is not None and spec.bt_max_k is not None:
        lo, hi = spec.bt_min_k, spec.bt_max_k
    return normalise_brightness_temperature(kelvin, lo, hi)


def to_model_units(
    block: ArrayLike,
    resolved: ResolvedBands,
    scale_spec: ScaleSpec | None,
    *,
    thermal_units: str | Sequence[str | None] = "auto",
) -> NDArray[np.float32]:
    """Values SEnSeI expects: reflectance for reflective bands, normalised BT for thermal ones.

    ``block`` is ``(N, ...)`` with the kept bands (``resolved`` order) on axis 0. The scale is
    applied first; thermal values are then read as kelvin / degC / radiance (``thermal_units``,
    or per band; ``"auto"`` takes the unit from ``scale_spec.thermal_units``, else per pixel:
    < 150 is degC, otherwise K; radiance is never guessed) and normalised with the catalogue's
    BT range, or :data:`DEFAULT_BT_RANGE_K` when the catalogue has none. NaN stays NaN.
    """
    arr = np.asarray(block)
    if arr.ndim == 0 or arr.shape[0] != len(resolved):
        raise InputError(
            f"block must have the {len(resolved)} kept bands on axis 0, got shape {arr.shape}"
        )
    out = arr.astype(np.float32, copy=True)
    if scale_spec is not None and not scale_spec.is_identity:
        if len(scale_spec) != len(resolved):
            raise InputError(
                f"scale has {len(scale_spec)} bands but {len(resolved)} bands were resolved"
            )
        apply_scale(out, scale_spec)
    thermal = np.flatnonzero(np.asarray(resolved.is_thermal))
    if thermal.size:
        units = _thermal_units_per_band(thermal_units, resolved, scale_spec)
        for i in thermal:
            out[i] = _thermal_to_normalised(
                out[i].astype(np.float64), units[i], resolved.thermal[i], resolved.names[i]
            )
    return out


# ============================================================================================
# Product metadata readers: Landsat MTL and Sentinel-2 MTD


def read_landsat_mtl(path: str | PathLike[str]) -> dict[str, str]:
    """Flat ``KEY -> value`` of a Landsat ``_MTL.txt`` (first occurrence wins; also GROUP.KEY)."""
    out: dict[str, str] = {}
    group = ""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            value = value.strip('"')
            if key == "GROUP":
                group = value
                continue
            if key == "END_GROUP":
                continue
            out.setdefault(key, value)
            out[f"{group}.{key}"] = value
    return out


def _mtl_band(band: str | int) -> str:
    """'B6_VCID_1', '6_VCID_1', 'band10', 10 -> the MTL suffix ('6_VCID_1', '10')."""
    text = str(band).strip().upper()
    text = re.sub(r"^(?:BAND|B)_?", "", text)
    m = re.fullmatch(r"0*(\d+)(.*)", text)
    if not m:
        raise InputError(f"cannot read a Landsat band number from {band!r}")
    return m.group(1) + m.group(2)


def _mtl_dict(mtl: str | PathLike[str] | Mapping[str, str]) -> Mapping[str, str]:
    return mtl if isinstance(mtl, Mapping) else read_landsat_mtl(mtl)


def landsat_scale_from_mtl(
    mtl: str | PathLike[str] | Mapping[str, str], bands: Sequence[str | int]
) -> ScaleSpec:
    """ScaleSpec from a Landsat Level-1 MTL for ``bands`` (in block order).

    Reflective bands: ``(DN * REFLECTANCE_MULT + REFLECTANCE_ADD) / sin(sun elevation)``, the
    sun-angle-corrected TOA reflectance SEnSeI was trained on. Thermal bands give radiance
    (``RADIANCE_MULT/ADD``) and are marked ``thermal_units="radiance"`` so
    :func:`to_model_units` applies K1/K2.
    """
    meta = _mtl_dict(mtl)
    try:
        sin_el = math.sin(math.radians(float(meta["SUN_ELEVATION"])))
    except KeyError:
        raise InputError("the MTL has no SUN_ELEVATION") from None
    scale, offset, units = [], [], []
    for band in bands:
        b = _mtl_band(band)
        if f"REFLECTANCE_MULT_BAND_{b}" in meta:
            scale.append(float(meta[f"REFLECTANCE_MULT_BAND_{b}"]) / sin_el)
            offset.append(float(meta[f"REFLECTANCE_ADD_BAND_{b}"]) / sin_el)
            units.append(None)
        elif f"RADIANCE_MULT_BAND_{b}" in meta:
            scale.append(float(meta[f"RADIANCE_MULT_BAND_{b}"]))
            offset.append(float(meta[f"RADIANCE_ADD_BAND_{b}"]))
            units.append("radiance")
        else:
            raise InputError(f"the MTL has no rescaling coefficients for band {band!r}")
    return ScaleSpec(
        np.array(scale), np.array(offset), source="landsat MTL", thermal_units=tuple(units)
    )


def landsat_toa_from_mtl(
    dn: ArrayLike, mtl_path: str | PathLike[str] | Mapping[str, str], band: str | int
) -> NDArray[np.float64]:
    """TOA reflectance (reflective band) or brightness temperature in K (thermal band) from DN.

    Uses the MTL's K1/K2 for thermal bands; DN 0 (fill) gives NaN.
    """
    meta = _mtl_dict(mtl_path)
    spec = landsat_scale_from_mtl(meta, [band])
    values = np.asarray(dn, dtype=np.float64)
    result = values * spec.scale[0] + spec.offset[0]
    if spec.thermal_units and spec.thermal_units[0] == "radiance":
        b = _mtl_band(band)
        k1 = float(meta[f"K1_CONSTANT_BAND_{b}"])
        k2 = float(meta[f"K2_CONSTANT_BAND_{b}"])
        result = brightness_temperature(result, k1, k2)
    return np.where(values == 0, np.nan, result)


def read_sentinel2_mtd(path: str | PathLike[str]) -> dict[str, Any]:
    """Scale-relevant fields of a Sentinel-2 L1C/L2A product ``MTD_MSIL*.xml`` as attrs.

    Returns ``processing_baseline``, the quantification value and per-band ADD_OFFSET (keyed
    ``B01``..``B12``, ``B8A``) under the MTD's own names, plus ``platform``; put them in a
    DataArray's attrs and :func:`scale_from_metadata` applies them.
    """
    root = ET.parse(path).getroot()
    out: dict[str, Any] = {}
    physical: dict[str, str] = {}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        text = (el.text or "").strip()
        if tag == "PROCESSING_BASELINE":
            out["processing_baseline"] = text
        elif tag == "SPACECRAFT_NAME":
            out["platform"] = text.lower()
        elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
            out[tag] = float(text)
        elif tag == "Spectral_Information":
            physical[el.get("bandId", "")] = _band_key(el.get("physicalBand", ""))
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            band_id = el.get("band_id", el.get("bandId", ""))
            key = physical.get(band_id, f"band_id {band_id}")
            out.setdefault(tag, {})[key] = float((el.text or "").strip())
    return out
