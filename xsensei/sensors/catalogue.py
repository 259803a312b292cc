"""Sensor catalogue: per-band wavelengths that SEnSeI needs to describe any sensor's bands.

The table lives in ``catalogue.json`` (package data), generated from official spectral response
curves by ``scripts/build_sensor_catalogue.py``. It is read once, lazily, on first lookup, so
importing :mod:`xsensei.sensors` costs nothing.

Names are matched after :func:`normalise_name`: case-insensitive, ignoring ``-``, ``_``, spaces
and accents, so ``"Sentinel-2A"``, ``"sentinel_2a"`` and ``"SENTINEL 2A"`` are the same sensor,
and ``"SR_B4"``, ``"sr-b4"`` the same band.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from xsensei.errors import XSenseiError

__all__ = [
    "BandInfo",
    "SensorInfo",
    "UnknownBandError",
    "UnknownSensorError",
    "find_sensor",
    "get_sensor",
    "list_sensors",
    "normalise_name",
]

_PACKAGE = "xsensei.sensors"
_CATALOGUE_FILE = "catalogue.json"

# File extensions stripped when a band is looked up by file name (e.g. "LC08_..._SR_B4.TIF").
_RASTER_SUFFIXES = frozenset(
    {"tif", "tiff", "jp2", "nc", "img", "vrt", "png", "jpg", "jpeg", "h5", "hdf", "zarr", "dat"}
)
# Trailing resolution token in file names such as "T33UUP_..._B8A_20m.jp2".
_RESOLUTION_TOKEN = re.compile(r"\d+m", re.IGNORECASE)


def normalise_name(name: str) -> str:
    """Lookup key for a sensor or band id: casefolded, accents, '-', '_' and spaces removed.

    Providers spell the same id many ways ("LANDSAT_8", "landsat-8", "Landsat 8"); comparing
    normalised keys makes every such spelling resolve without listing each one.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in stripped.casefold() if c not in "-_ ")


class _MessageKeyError(KeyError):
    # KeyError's str() is the repr of its argument; show the message as written instead.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownSensorError(XSenseiError, _MessageKeyError):
    """No sensor in the catalogue has this name or alias (message lists close matches)."""


class UnknownBandError(XSenseiError, _MessageKeyError):
    """A sensor has no band with this name, alias or (unambiguous) common name."""


@dataclass(frozen=True)
class BandInfo:
    """One spectral band: what SEnSeI needs to encode it, plus the ids providers use for it.

    Wavelengths are in nm: FWHM edges and response-weighted centre when a response curve was
    available, published nominal values otherwise (see ``source``). ``k1``/``k2`` convert
    thermal radiance to brightness temperature; ``bt_min_k``/``bt_max_k`` are the SEnSeI paper's
    normalisation range, where known.
    """

    name: str
    common_name: str | None
    wl_min_nm: float
    wl_center_nm: float
    wl_max_nm: float
    resolution_m: float | None
    kind: str
    aliases: tuple[str, ...] = ()
    k1: float | None = None
    k2: float | None = None
    bt_min_k: float | None = None
    bt_max_k: float | None = None
    source: str | None = None

    @property
    def wavelengths_nm(self) -> tuple[float, float, float]:
        """(min, centre, max) in nm: the triple SEnSeI's band descriptor is built from."""
        return (self.wl_min_nm, self.wl_center_nm, self.wl_max_nm)

    @property
    def is_thermal(self) -> bool:
        """True for emissive bands, which are normalised as brightness temperature, not TOA."""
        return self.kind == "thermal"


@dataclass(frozen=True)
class SensorInfo:
    """A sensor (platform + instrument) and its bands, in the order the catalogue lists them."""

    name: str
    aliases: tuple[str, ...]
    bands: tuple[BandInfo, ...]
    description: str = ""
    # normalised band name/alias -> band position; common name -> positions (may be several)
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    _by_common: dict[str, tuple[int, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        by_common: dict[str, list[int]] = {}
        for i, band in enumerate(self.bands):
            for key in (band.name, *band.aliases):
                index.setdefault(normalise_name(key), i)
            if band.common_name:
                by_common.setdefault(normalise_name(band.common_name), []).append(i)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_by_common", {k: tuple(v) for k, v in by_common.items()})

    @property
    def band_names(self) -> tuple[str, ...]:
        """Canonical band names, in catalogue order."""
        return tuple(b.name for b in self.bands)

    def _lookup(self, name: str) -> BandInfo | None:
        key = normalise_name(name)
        i = self._index.get(key)
        if i is not None:
            return self.bands[i]
        hits = self._by_common.get(key, ())
        return self.bands[hits[0]] if len(hits) == 1 else None

    def find_band(self, name: str) -> BandInfo | None:
        """Band by name, alias or unambiguous common name; ``None`` if there is none.

        Names, then aliases, then STAC common names are tried (a common name shared by several
        bands, like Sentinel-2's three "rededge" bands, matches none). As a last resort a file
        name is understood: "LC08_..._SR_B4.TIF" or "T33UUP_..._B8A_20m.jp2" resolve through
        their trailing ``_``-separated tokens, so files can be mapped to bands without parsing.
        """
        band = self._lookup(name)
        if band is not None:
            return band
        for candidate in _filename_candidates(name):
            band = self._lookup(candidate)
            if band is not None:
                return band
        return None

    def band(self, name: str) -> BandInfo:
        """Like :meth:`find_band` but raises :class:`UnknownBandError` that lists valid names."""
        band = self.find_band(name)
        if band is not None:
            return band
        hits = self._by_common.get(normalise_name(name), ())
        if len(hits) > 1:
            names = ", ".join(self.bands[i].name for i in hits)
            raise UnknownBandError(
                f"{name!r} is the common name of several {self.name} bands ({names}); "
                "use one of those band names"
            )
        keys = [*self.band_names, *(a for b in self.bands for a in b.aliases)]
        close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownBandError(
            f"{self.name} has no band {name!r}.{hint} "
            f"Valid band names: {', '.join(self.band_names)} (aliases and STAC common names "
            "are accepted too)"
        )

    def __iter__(self) -> Iterator[BandInfo]:
        return iter(self.bands)

    def __len__(self) -> int:
        return len(self.bands)


def _filename_candidates(name: str) -> Iterator[str]:
    """Trailing ``_``-joined token groups of a file name, longest first."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if dot and ext.lower() in _RASTER_SUFFIXES:
        base = stem
    tokens = [t for t in base.split("_") if t]
    if len(tokens) > 1 and _RESOLUTION_TOKEN.fullmatch(tokens[-1]):
        tokens = tokens[:-1]
    for i in range(len(tokens)):
        yield "_".join(tokens[i:])


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _band_from_json(rec: Mapping[str, Any]) -> BandInfo:
    return BandInfo(
        name=rec["name"],
        common_name=rec.get("common_name"),
        wl_min_nm=float(rec["wl_min_nm"]),
        wl_center_nm=float(rec["wl_center_nm"]),
        wl_max_nm=float(rec["wl_max_nm"]),
        resolution_m=_opt_float(rec.get("resolution_m")),
        kind=rec.get("kind", "reflective"),
        aliases=tuple(rec.get("aliases", ())),
        k1=_opt_float(rec.get("k1")),
        k2=_opt_float(rec.get("k2")),
        bt_min_k=_opt_float(rec.get("bt_min_k")),
        bt_max_k=_opt_float(rec.get("bt_max_k")),
        source=rec.get("source"),
    )


@dataclass(frozen=True)
class _Catalogue:
    sensors: dict[str, SensorInfo]  # canonical name -> sensor, catalogue order
    index: dict[str, str]  # normalised name/alias -> canonical name


@cache
def _catalogue() -> _Catalogue:
    """Read and index ``catalogue.json`` once (the package never reads the raw SRF files)."""
    text = resources.files(_PACKAGE).joinpath(_CATALOGUE_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    sensors: dict[str, SensorInfo] = {}
    index: dict[str, str] = {}
    for rec in data["sensors"]:
        sensor = SensorInfo(
            name=rec["name"],
            aliases=tuple(rec.get("aliases", ())),
            bands=tuple(_band_from_json(b) for b in rec["bands"]),
            description=rec.get("description", ""),
        )
        sensors[sensor.name] = sensor
        for key in (sensor.name, *sensor.aliases):
            index.setdefault(normalise_name(key), sensor.name)
    return _Catalogue(sensors=sensors, index=index)


def list_sensors() -> list[str]:
    """Canonical sensor names, in catalogue order (grouped by mission)."""
    return list(_catalogue().sensors)


def find_sensor(name: str) -> SensorInfo | None:
    """Sensor by canonical name or any alias (normalised); ``None`` if unknown."""
    cat = _catalogue()
    canonical = cat.index.get(normalise_name(name))
    return None if canonical is None else cat.sensors[canonical]


def get_sensor(name: str | SensorInfo) -> SensorInfo:
    """Sensor by canonical name or any alias, e.g. a STAC ``platform``/``constellation`` value.

    A :class:`SensorInfo` is returned unchanged, so callers can accept either. Unknown names
    raise :class:`UnknownSensorError` (a ``KeyError``) naming close matches and all sensors.
    """
    if isinstance(name, SensorInfo):
        return name
    sensor = find_sensor(name)
    if sensor is not None:
        return sensor
    cat = _catalogue()
    close_keys = difflib.get_close_matches(normalise_name(name), list(cat.index), n=8, cutoff=0.6)
    close = list(dict.fromkeys(cat.index[k] for k in close_keys))[:4]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownSensorError(
        f"Unknown sensor {name!r}.{hint} Known sensors: {', '.join(cat.sensors)}. "
        "Aliases such as 'S2A', 'LANDSAT_8' or 'LC08' are accepted too."
    )
