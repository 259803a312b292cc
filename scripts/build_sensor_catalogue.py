"""Build ``xsensei/sensors/catalogue.json`` from official spectral response functions (SRFs).

SEnSeI describes every band by three wavelengths (min, centre, max). This script derives them
from the published response curves so the table stays reproducible and reviewable:

* ``min`` / ``max``: the full-width-at-half-maximum (FWHM) edges, i.e. the first and last
  wavelength where the response reaches 0.5 of its peak, linearly interpolated between samples;
* ``centre``: the response-weighted centroid over the *in-band* region, i.e. the contiguous
  stretch around the peak where the response is >= 1 % of the peak (the in-band limit of the
  MODIS specification). Restricting to in-band keeps the faint out-of-band tails of the MODIS
  ocean bands 8-16 (tabulated from 380 to 1100 nm) and of the Landsat 8 TIRS curves (9-14 µm)
  from pulling the centroid by up to 4 nm; for every other curve it changes it by < 1 nm.

All values are in nm, rounded to 0.1 nm. Bands with no curve in the sources (PlanetScope,
PerúSat-1, SLSTR thermal, MODIS 17-36, generic RGB/NIR) use published nominal edges; each such
number carries a comment saying where it came from. Thermal constants (K1/K2, brightness
temperature normalisation range) are also documented inline.

Only this script reads the SRF directory; the ``xsensei`` package reads the JSON it writes.

Usage (from the repository root)::

    python scripts/build_sensor_catalogue.py --srf-dir ../shared/data/srf
    python scripts/build_sensor_catalogue.py --srf-dir ../shared/data/srf --check
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRF_DIR = REPO_ROOT.parent / "shared" / "data" / "srf"
DEFAULT_OUTPUT = REPO_ROOT / "xsensei" / "sensors" / "catalogue.json"

PYRSR = "pyrsr-0.8.0/data"
PY6S_CSV = "py6s-1.9.2/py6s_predefined_srfs_2p5nm.csv"

HALF_MAX = 0.5  # FWHM threshold, fraction of the peak response
IN_BAND = 0.01  # in-band threshold for the centroid, fraction of the peak response

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------
# Reading curves and deriving (min, centre, max)
# --------------------------------------------------------------------------------------------


def read_pyrsr_band(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pyrsr band file (``<n> <name>`` header, then ``wavelength response`` rows).

    pyrsr stores Landsat in µm and Sentinel-2 / MODIS in nm; a curve whose largest wavelength is
    below 100 can only be in µm, so it is converted to nm.
    """
    rows = path.read_text().splitlines()[1:]
    data = np.array([[float(v) for v in row.split()[:2]] for row in rows if row.strip()])
    wl, resp = data[:, 0], data[:, 1]
    if wl.max() < 100.0:
        wl = wl * 1000.0
    return wl, resp


def read_py6s_table(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the long py6s CSV (``band,sixs_index,wavelength_nm,response``) into curves by band."""
    rows: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            rows.setdefault(rec["band"], []).append(
                (float(rec["wavelength_nm"]), float(rec["response"]))
            )
    out = {}
    for band, pairs in rows.items():
        arr = np.array(sorted(pairs))
        out[band] = (arr[:, 0], arr[:, 1])
    return out


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def band_wavelengths(wl_nm: np.ndarray, response: np.ndarray) -> tuple[float, float, float]:
    """Return (FWHM min, in-band centroid, FWHM max) in nm, rounded to 0.1 nm."""
    order = np.argsort(wl_nm)
    wl = np.asarray(wl_nm, dtype=float)[order]
    r = np.clip(np.asarray(response, dtype=float)[order], 0.0, None)  # tiny negative noise
    peak_i = int(np.argmax(r))
    peak = r[peak_i]
    if peak <= 0:
        raise ValueError("response curve has no positive value")

    half = HALF_MAX * peak
    above = np.nonzero(r >= half)[0]
    i, j = int(above[0]), int(above[-1])
    # Interpolate each crossing between the last sample below and the first sample above half.
    lo = wl[i]
    if i > 0:
        lo = wl[i - 1] + (half - r[i - 1]) * (wl[i] - wl[i - 1]) / (r[i] - r[i - 1])
    hi = wl[j]
    if j < len(wl) - 1:
        hi = wl[j] + (r[j] - half) * (wl[j + 1] - wl[j]) / (r[j] - r[j + 1])

    thr = IN_BAND * peak
    a = peak_i
    while a > 0 and r[a - 1] >= thr:
        a -= 1
    b = peak_i
    while b < len(r) - 1 and r[b + 1] >= thr:
        b += 1
    sl = slice(a, b + 1)
    centre = _trapezoid(wl[sl] * r[sl], wl[sl]) / _trapezoid(r[sl], wl[sl])
    return round(float(lo), 1), round(float(centre), 1), round(float(hi), 1)


# --------------------------------------------------------------------------------------------
# Declarative sensor description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A measured response curve: ``source`` is "pyrsr" (path under data/) or "py6s" (band)."""

    source: str
    key: str
    note: str = ""


@dataclass(frozen=True)
class Nominal:
    """Published nominal band edges (nm); the centre defaults to the midpoint."""

    lo: float
    hi: float
    source: str
    centre: float | None = None


@dataclass(frozen=True)
class BandSpec:
    name: str
    common_name: str | None
    resolution_m: float | None
    spectral: Curve | Nominal
    aliases: tuple[str, ...] = ()
    kind: str = "reflective"
    k1: float | None = None
    k2: float | None = None
    bt_min_k: float | None = None
    bt_max_k: float | None = None


@dataclass(frozen=True)
class SensorSpec:
    name: str
    description: str
    aliases: tuple[str, ...]
    bands: tuple[BandSpec, ...]


def _numbered(n: int, *, two_digit: bool = True) -> tuple[str, ...]:
    """The obvious spellings of band number ``n``: B1, B01, band1, band01."""
    out = [f"B{n}", f"band{n}"]
    if two_digit:
        out += [f"B{n:02d}", f"band{n:02d}"]
    return tuple(out)


# ---- Sentinel-2 MSI ------------------------------------------------------------------------
# (band, number for aliases, common_name, GSD m, Earth Search v1 / other provider aliases)
_S2_BANDS: tuple[tuple[str, str, str | None, float, tuple[str, ...]], ...] = (
    ("B01", "1", "coastal", 60, ("coastal",)),
    ("B02", "2", "blue", 10, ("blue",)),
    ("B03", "3", "green", 10, ("green",)),
    ("B04", "4", "red", 10, ("red",)),
    ("B05", "5", "rededge", 20, ("rededge1",)),
    ("B06", "6", "rededge", 20, ("rededge2",)),
    ("B07", "7", "rededge", 20, ("rededge3",)),
    ("B08", "8", "nir", 10, ("nir",)),
    ("B8A", "8A", "nir08", 20, ("nir08", "B08A", "band8a", "narrow_nir")),
    ("B09", "9", "nir09", 60, ("nir09",)),
    ("B10", "10", "cirrus", 60, ("cirrus",)),
    ("B11", "11", "swir16", 20, ("swir16", "swir1")),
    ("B12", "12", "swir22", 20, ("swir22", "swir2")),
)


def _s2_bands(platform_dir: str, note: str = "") -> tuple[BandSpec, ...]:
    out = []
    for name, num, common, gsd, extra in _S2_BANDS:
        numbered = _numbered(int(num)) if num.isdigit() else ()
        out.append(
            BandSpec(
                name=name,
                common_name=common,
                resolution_m=gsd,
                spectral=Curve("pyrsr", f"{platform_dir}/MSI/band_{num}", note),
                aliases=(*numbered, *extra),
            )
        )
    return tuple(out)


# ---- Landsat --------------------------------------------------------------------------------
# Thermal constants. K1 [W/(m² sr µm)] and K2 [K] convert at-sensor radiance to brightness
# temperature. bt_min_k / bt_max_k are the SEnSeI paper's brightness-temperature normalisation
# range (Francis et al., "SEnSeI: A Deep Learning Module for Creating Sensor Independent Cloud
# Masks", IEEE TGRS 2022), given only for the bands the paper gives them for (L7 B6, L8 B10/B11).
# Landsat 8 B10/B11: K1/K2 = SEnSeI paper's values (= Landsat 8 MTL K1_CONSTANT_BAND_10/11
#   774.8853/1321.0789 and 480.8883/1201.1442 rounded to 0.01).
# Landsat 9 B10/B11: K1/K2 from Landsat 9 Collection 2 MTL files (THERMAL_CONSTANTS group);
#   no BT range in the paper -> null.
# Landsat 7 B6: Chander, Markham & Helder 2009 (Remote Sens. Environ. 113, 893-903) = the
#   SEnSeI paper's values.
# Landsat 5 TM B6: Chander et al. 2009 (also in every Landsat 5 MTL file).
# Landsat 4 TM B6: Chander et al. 2009.
_L8_B10 = {"k1": 774.89, "k2": 1321.08, "bt_min_k": 132.0, "bt_max_k": 249.0}
_L8_B11 = {"k1": 480.89, "k2": 1201.14, "bt_min_k": 127.0, "bt_max_k": 239.0}
_L9_B10 = {"k1": 799.0284, "k2": 1329.2405}
_L9_B11 = {"k1": 475.6581, "k2": 1198.3494}
_L7_B6 = {"k1": 666.09, "k2": 1282.71, "bt_min_k": 169.0, "bt_max_k": 252.0}
_L5_B6 = {"k1": 607.76, "k2": 1260.56}
_L4_B6 = {"k1": 671.62, "k2": 1284.30}


def _oli_tirs_bands(platform: str, b10: dict[str, float], b11: dict[str, float]) -> tuple:
    # (band number, common_name, GSD m, Landsat C2 STAC names (Planetary Computer / Earth Search)
    # and other common provider spellings)
    table: tuple[tuple[int, str, float, tuple[str, ...]], ...] = (
        (1, "coastal", 30, ("SR_B1", "coastal")),
        (2, "blue", 30, ("SR_B2", "blue")),
        (3, "green", 30, ("SR_B3", "green")),
        (4, "red", 30, ("SR_B4", "red")),
        (5, "nir08", 30, ("SR_B5", "nir08", "nir")),
        (6, "swir16", 30, ("SR_B6", "swir16", "swir1")),
        (7, "swir22", 30, ("SR_B7", "swir22", "swir2")),
        (8, "pan", 15, ("pan",)),
        (9, "cirrus", 30, ("cirrus",)),
        (10, "lwir11", 100, ("ST_B10", "lwir11", "lwir", "tirs1")),
        (11, "lwir12", 100, ("lwir12", "tirs2")),
    )
    out = []
    for n, common, gsd, extra in table:
        thermal = n >= 10
        consts = (b10 if n == 10 else b11) if thermal else {}
        out.append(
            BandSpec(
                name=f"B{n}",
                common_name=common,
                resolution_m=gsd,
                spectral=Curve("pyrsr", f"{platform}/OLI_TIRS/band_{n}"),
                aliases=(*_numbered(n), *extra),
                kind="thermal" if thermal else "reflective",
                **consts,
            )
        )
    return tuple(out)


def _tm_etm_bands(platform: str, instrument: str, b6: dict[str, float]) -> tuple:
    etm = instrument == "ETM+"
    # TM band 6 is 120 m native, ETM+ band 6 is 60 m native (both delivered resampled to 30 m).
    b6_gsd = 60 if etm else 120
    # ETM+ band 6 is recorded twice (low/high gain, files B6_VCID_1 / B6_VCID_2); pyrsr gives one
    # curve per gain and they are identical, so band_6H is used.
    b6_file = "band_6H" if etm else "band_6"
    b6_extra = ("B6_VCID_1", "B6_VCID_2", "B61", "B62", "B6H", "B6L") if etm else ()
    table: list[tuple[int, str, float, str, tuple[str, ...]]] = [
        (1, "blue", 30, "band_1", ("SR_B1", "blue")),
        (2, "green", 30, "band_2", ("SR_B2", "green")),
        (3, "red", 30, "band_3", ("SR_B3", "red")),
        (4, "nir08", 30, "band_4", ("SR_B4", "nir08", "nir")),
        (5, "swir16", 30, "band_5", ("SR_B5", "swir16", "swir1")),
        (6, "lwir", b6_gsd, b6_file, ("ST_B6", "lwir", *b6_extra)),
        (7, "swir22", 30, "band_7", ("SR_B7", "swir22", "swir2")),
    ]
    if etm:
        table.append((8, "pan", 15, "band_8", ("pan",)))
    out = []
    for n, common, gsd, fname, extra in table:
        thermal = n == 6
        out.append(
            BandSpec(
                name=f"B{n}",
                common_name=common,
                resolution_m=gsd,
                spectral=Curve("pyrsr", f"{platform}/{instrument}/{fname}"),
                aliases=(*_numbered(n), *extra),
                kind="thermal" if thermal else "reflective",
                **(b6 if thermal else {}),
            )
        )
    return tuple(out)


# ---- Sentinel-3 SLSTR -----------------------------------------------------------------------
# S1-S6 from the py6s curves. S7-S9, F1, F2 have no curve in the sources: nominal centre and
# width from the ESA Sentinel-3 SLSTR user guide, "Radiometric Resolution" table
# (sentinel.esa.int/web/sentinel/user-guides/sentinel-3-slstr/resolutions/radiometric):
#   S7 3.74 µm / 0.38 µm, S8 10.85 µm / 0.9 µm, S9 12.0 µm / 1.0 µm,
#   F1 = S7 and F2 = S8 (same detectors, extended dynamic range for fires).
# Edges = centre ± width / 2.
_SLSTR_TIR = {
    "S7": (3740.0, 380.0),
    "S8": (10850.0, 900.0),
    "S9": (12000.0, 1000.0),
    "F1": (3740.0, 380.0),
    "F2": (10850.0, 900.0),
}
_SLSTR_TIR_SOURCE = "nominal: ESA Sentinel-3 SLSTR user guide, radiometric resolution table"


def _slstr_bands(sat: str) -> tuple[BandSpec, ...]:
    vnir: tuple[tuple[int, str | None], ...] = (
        (1, "green"),
        (2, "red"),
        (3, "nir"),
        (4, "cirrus"),
        (5, "swir16"),
        (6, "swir22"),
    )
    out = [
        BandSpec(
            name=f"S{n}",
            common_name=common,
            resolution_m=500,
            spectral=Curve("py6s", f"{sat}_SLSTR_{n:02d}"),
            aliases=(f"S{n}_radiance_an", f"band{n}"),
        )
        for n, common in vnir
    ]
    tir: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
        ("S7", None, ("S7_BT_in",)),
        ("S8", "lwir11", ("S8_BT_in",)),
        ("S9", "lwir12", ("S9_BT_in",)),
        ("F1", None, ("F1_BT_fn",)),
        ("F2", None, ("F2_BT_in",)),
    )
    for name, common, extra in tir:
        centre, width = _SLSTR_TIR[name]
        out.append(
            BandSpec(
                name=name,
                common_name=common,
                resolution_m=1000,
                spectral=Nominal(centre - width / 2, centre + width / 2, _SLSTR_TIR_SOURCE, centre),
                aliases=extra,
                kind="thermal",
            )
        )
    return tuple(out)


def _olci_bands(sat: str) -> tuple[BandSpec, ...]:
    # OLCI full-resolution products are 300 m. No STAC common names: several Oa bands would share
    # one (e.g. four bands in the STAC "red" range), so the Oa names are the only identifiers.
    return tuple(
        BandSpec(
            name=f"Oa{n:02d}",
            common_name=None,
            resolution_m=300,
            spectral=Curve("py6s", f"{sat}_OLCI_{n:02d}"),
            aliases=(f"Oa{n}", f"Oa{n:02d}_radiance", f"Oa{n:02d}_reflectance", f"band{n}"),
        )
        for n in range(1, 22)
    )


# ---- MODIS ----------------------------------------------------------------------------------
# Bands 1-16 from the pyrsr curves (NASA OBPG RSR files). Note: in both pyrsr and py6s the
# Aqua curves of bands 1-7 are identical to Terra's, so those bands come out identical.
# Bands 17-36 have no curve in the sources: nominal band edges from the NASA MODIS
# specifications table (modis.gsfc.nasa.gov/about/specifications.php), centre = midpoint.
_MODIS_SPEC_SOURCE = "nominal: NASA MODIS specifications table (modis.gsfc.nasa.gov)"
_MODIS_NOMINAL: dict[int, tuple[float, float]] = {
    17: (890.0, 920.0),
    18: (931.0, 941.0),
    19: (915.0, 965.0),
    20: (3660.0, 3840.0),
    21: (3929.0, 3989.0),
    22: (3929.0, 3989.0),
    23: (4020.0, 4080.0),
    24: (4433.0, 4498.0),
    25: (4482.0, 4549.0),
    26: (1360.0, 1390.0),
    27: (6535.0, 6895.0),
    28: (7175.0, 7475.0),
    29: (8400.0, 8700.0),
    30: (9580.0, 9880.0),
    31: (10780.0, 11280.0),
    32: (11770.0, 12270.0),
    33: (13185.0, 13485.0),
    34: (13485.0, 13785.0),
    35: (13785.0, 14085.0),
    36: (14085.0, 14385.0),
}
# Common names only where the band is the unambiguous land/cloud band of that STAC name.
_MODIS_COMMON = {
    1: "red",
    2: "nir",
    3: "blue",
    4: "green",
    6: "swir16",
    7: "swir22",
    26: "cirrus",
    31: "lwir11",
    32: "lwir12",
}
# Bands 20-25 and 27-36 are emissive (delivered as radiance -> brightness temperature).
_MODIS_THERMAL = {*range(20, 26), *range(27, 37)}


def _modis_bands(platform: str) -> tuple[BandSpec, ...]:
    out = []
    for n in range(1, 37):
        gsd = 250 if n <= 2 else 500 if n <= 7 else 1000
        extra = (f"sur_refl_b{n:02d}",) if n <= 7 else ()
        spectral: Curve | Nominal
        if n <= 16:
            spectral = Curve("pyrsr", f"{platform}/MODIS/band_{n}")
        else:
            lo, hi = _MODIS_NOMINAL[n]
            spectral = Nominal(lo, hi, _MODIS_SPEC_SOURCE)
        out.append(
            BandSpec(
                name=f"B{n:02d}",
                common_name=_MODIS_COMMON.get(n),
                resolution_m=gsd,
                spectral=spectral,
                aliases=(*_numbered(n), *extra),
                kind="thermal" if n in _MODIS_THERMAL else "reflective",
            )
        )
    return tuple(out)


# ---- PlanetScope ----------------------------------------------------------------------------
# No SRFs in the sources. Nominal band edges from Planet's "PlanetScope Product Specifications"
# (Table "PlanetScope Constellation and Sensor Specifications") and Planet's support article
# "PlanetScope 8-band asset: band order, wavelengths, and metadata". Native GSD 3.7 m (at the
# reference altitude; ortho products are resampled to 3 m). Band order = GeoTIFF band order.
_PS_DOVE_R = "nominal: Planet PlanetScope product spec, Dove-R (PS2.SD)"
_PS_DOVE_CLASSIC = "nominal: Planet PlanetScope product spec, Dove Classic (PS2)"
_PS_SUPERDOVE = "nominal: Planet PlanetScope product spec / 8-band article, SuperDove (PSB.SD)"


def _planet_bands(
    table: Sequence[tuple[str, str | None, float, float]], source: str
) -> tuple[BandSpec, ...]:
    return tuple(
        BandSpec(
            name=name,
            common_name=common,
            resolution_m=3.7,
            spectral=Nominal(lo, hi, source),
            aliases=_numbered(i, two_digit=False),
        )
        for i, (name, common, lo, hi) in enumerate(table, start=1)
    )


# ---- Generic --------------------------------------------------------------------------------
# Generic RGB / RGB+NIR cameras with unknown filters: the classic thirds of the visible spectrum
# (blue 400-500, green 500-600, red 600-700 nm, e.g. Schowengerdt, "Remote Sensing: Models and
# Methods for Image Processing", ch. 2) and a broad NIR band 760-900 nm (the Landsat TM band 4
# nominal range, typical of consumer/airborne NIR channels). GSD unknown -> null.
_GENERIC_SOURCE = "nominal: broad generic band (thirds of the visible spectrum / TM-like NIR)"
_GENERIC = {
    "red": (600.0, 700.0, ("R",)),
    "green": (500.0, 600.0, ("G",)),
    "blue": (400.0, 500.0, ("B",)),
    "nir": (760.0, 900.0, ("N", "NIR")),
}


def _generic_bands(names: Sequence[str]) -> tuple[BandSpec, ...]:
    out = []
    for i, name in enumerate(names, start=1):
        lo, hi, extra = _GENERIC[name]
        out.append(
            BandSpec(
                name=name,
                common_name=name,
                resolution_m=None,
                spectral=Nominal(lo, hi, _GENERIC_SOURCE),
                aliases=(*extra, *_numbered(i, two_digit=False)),
            )
        )
    return tuple(out)


def sensor_specs() -> tuple[SensorSpec, ...]:
    """The catalogue's content, before the curves are read."""
    s2c_note = "S2C has no SRF in the sources: S2B curve used as proxy (same MSI design)"
    return (
        SensorSpec(
            "sentinel-2a",
            "Sentinel-2A MSI. Also the representative for the constellation ids "
            "'sentinel-2' / 'S2' (S2A and S2B centres differ by <= 17 nm, B12 being the largest).",
            (
                "Sentinel-2A",
                "sentinel-2a",
                "SENTINEL2A",
                "S2A",
                "S2A_MSI",
                "Sentinel-2A MSI",
                "sentinel-2",
                "Sentinel-2",
                "S2",
                "S2_MSI",
                "S2MSI",
                "S2MSI1C",
                "S2MSI2A",
                "sentinel-2-l1c",
                "sentinel-2-l2a",
            ),
            _s2_bands("Sentinel-2A"),
        ),
        SensorSpec(
            "sentinel-2b",
            "Sentinel-2B MSI.",
            ("Sentinel-2B", "sentinel-2b", "SENTINEL2B", "S2B", "S2B_MSI", "Sentinel-2B MSI"),
            _s2_bands("Sentinel-2B"),
        ),
        SensorSpec(
            "sentinel-2c",
            "Sentinel-2C MSI. No S2C curve in the sources: values copied from S2B's curves.",
            ("Sentinel-2C", "sentinel-2c", "SENTINEL2C", "S2C", "S2C_MSI", "Sentinel-2C MSI"),
            _s2_bands("Sentinel-2B", s2c_note),
        ),
        SensorSpec(
            "landsat-4",
            "Landsat 4 TM.",
            ("Landsat-4", "LANDSAT_4", "Landsat 4", "LT04", "LT4", "L4", "landsat-4-tm"),
            _tm_etm_bands("Landsat-4", "TM", _L4_B6),
        ),
        SensorSpec(
            "landsat-5",
            "Landsat 5 TM. Also the representative for the bare instrument id 'TM'.",
            ("Landsat-5", "LANDSAT_5", "Landsat 5", "LT05", "LT5", "L5", "landsat-5-tm", "TM"),
            _tm_etm_bands("Landsat-5", "TM", _L5_B6),
        ),
        SensorSpec(
            "landsat-7",
            "Landsat 7 ETM+.",
            (
                "Landsat-7",
                "LANDSAT_7",
                "Landsat 7",
                "LE07",
                "LE7",
                "L7",
                "ETM+",
                "ETM",
                "ETM_PLUS",
                "landsat-7-etm+",
            ),
            _tm_etm_bands("Landsat-7", "ETM+", _L7_B6),
        ),
        SensorSpec(
            "landsat-8",
            "Landsat 8 OLI/TIRS.",
            (
                "Landsat-8",
                "LANDSAT_8",
                "Landsat 8",
                "LC08",
                "LC8",
                "L8",
                "OLI_TIRS",
                "OLI",
                "TIRS",
                "landsat-8-oli-tirs",
            ),
            _oli_tirs_bands("Landsat-8", _L8_B10, _L8_B11),
        ),
        SensorSpec(
            "landsat-9",
            "Landsat 9 OLI-2/TIRS-2.",
            (
                "Landsat-9",
                "LANDSAT_9",
                "Landsat 9",
                "LC09",
                "LC9",
                "L9",
                "OLI2_TIRS2",
                "OLI-2",
                "TIRS-2",
                "landsat-9-oli-tirs",
            ),
            _oli_tirs_bands("Landsat-9", _L9_B10, _L9_B11),
        ),
        SensorSpec(
            "sentinel-3a-slstr",
            "Sentinel-3A SLSTR (S1-S6 from curves, S7-S9/F1/F2 nominal). Also the "
            "representative for 'SLSTR' / 'sentinel-3-slstr'.",
            (
                "Sentinel-3A SLSTR",
                "S3A_SLSTR",
                "S3A_SL",
                "SLSTR",
                "sentinel-3-slstr",
                "Sentinel-3 SLSTR",
                "S3_SLSTR",
            ),
            _slstr_bands("S3A"),
        ),
        SensorSpec(
            "sentinel-3b-slstr",
            "Sentinel-3B SLSTR (S1-S6 from curves, S7-S9/F1/F2 nominal).",
            ("Sentinel-3B SLSTR", "S3B_SLSTR", "S3B_SL"),
            _slstr_bands("S3B"),
        ),
        SensorSpec(
            "sentinel-3a-olci",
            "Sentinel-3A OLCI. Also the representative for 'OLCI' / 'sentinel-3-olci'.",
            (
                "Sentinel-3A OLCI",
                "S3A_OLCI",
                "S3A_OL",
                "OLCI",
                "sentinel-3-olci",
                "Sentinel-3 OLCI",
                "S3_OLCI",
            ),
            _olci_bands("S3A"),
        ),
        SensorSpec(
            "sentinel-3b-olci",
            "Sentinel-3B OLCI.",
            ("Sentinel-3B OLCI", "S3B_OLCI", "S3B_OL"),
            _olci_bands("S3B"),
        ),
        SensorSpec(
            "modis-terra",
            "Terra MODIS (bands 1-16 from curves, 17-36 nominal). Also the representative for "
            "the bare instrument id 'MODIS'.",
            ("Terra", "MODIS", "terra-modis", "MODIS Terra", "Terra MODIS", "MOD", "EOS AM-1"),
            _modis_bands("Terra"),
        ),
        SensorSpec(
            "modis-aqua",
            "Aqua MODIS (bands 1-16 from curves, 17-36 nominal).",
            ("Aqua", "aqua-modis", "MODIS Aqua", "Aqua MODIS", "MYD", "EOS PM-1"),
            _modis_bands("Aqua"),
        ),
        SensorSpec(
            "planetscope-4band",
            "PlanetScope 4-band, Dove-R (PS2.SD) pass-bands, which SuperDove's 4-band products "
            "(its blue/green/red/nir bands) match to within 3 nm. Nominal values, no curves.",
            (
                "PlanetScope",
                "planetscope-4-band",
                "PS2.SD",
                "Dove-R",
                "planetscope-dove-r",
                "PSScene4Band",
            ),
            _planet_bands(
                (
                    ("blue", "blue", 464.0, 517.0),
                    ("green", "green", 547.0, 585.0),
                    ("red", "red", 650.0, 682.0),
                    ("nir", "nir", 846.0, 888.0),
                ),
                _PS_DOVE_R,
            ),
        ),
        SensorSpec(
            "planetscope-dove-classic",
            "PlanetScope Dove Classic (PS2), 4 bands, archive imagery before 2022 with much "
            "broader filters than Dove-R. Nominal values, no curves.",
            ("PS2", "Dove Classic", "Dove", "planetscope-ps2"),
            _planet_bands(
                (
                    ("blue", "blue", 455.0, 515.0),
                    ("green", "green", 500.0, 590.0),
                    ("red", "red", 590.0, 670.0),
                    ("nir", "nir", 780.0, 860.0),
                ),
                _PS_DOVE_CLASSIC,
            ),
        ),
        SensorSpec(
            "planetscope-8band",
            "PlanetScope SuperDove (PSB.SD) 8-band. Nominal values, no curves.",
            (
                "PSB.SD",
                "SuperDove",
                "planetscope-superdove",
                "planetscope-8-band",
                "PSScene8Band",
            ),
            _planet_bands(
                (
                    ("coastal_blue", "coastal", 431.0, 452.0),
                    ("blue", "blue", 465.0, 515.0),
                    ("green_i", None, 513.0, 549.0),  # no STAC name: "green" is band 4
                    ("green", "green", 547.0, 583.0),
                    ("yellow", "yellow", 600.0, 620.0),
                    ("red", "red", 650.0, 680.0),
                    ("rededge", "rededge", 697.0, 713.0),
                    ("nir", "nir", 845.0, 885.0),
                ),
                _PS_SUPERDOVE,
            ),
        ),
        SensorSpec(
            "perusat-1",
            "PerúSat-1 multispectral (2.8 m). Nominal values from the SEnSeI paper's table.",
            ("PerúSat-1", "PeruSat-1", "PERUSAT_1", "PerúSat", "PeruSat"),
            tuple(
                BandSpec(
                    name=name,
                    common_name=name,
                    resolution_m=2.8,  # CONIDA / Airbus NAOMI spec: 2.8 m MS, 0.7 m pan
                    # nominal: PerúSat-1 per the SEnSeI paper's sensor table (min/centre/max)
                    spectral=Nominal(lo, hi, "nominal: PerúSat-1 per the SEnSeI paper table", c),
                    aliases=extra,
                )
                for name, lo, c, hi, extra in (
                    ("blue", 450.0, 475.0, 500.0, ("B",)),
                    ("green", 530.0, 560.0, 590.0, ("G",)),
                    ("red", 630.0, 665.0, 700.0, ("R",)),
                    ("nir", 752.0, 819.0, 885.0, ("N",)),
                )
            ),
        ),
        SensorSpec(
            "rgb",
            "Generic 3-band RGB camera/image (band order red, green, blue), broad nominal bands.",
            ("RGB", "true-color", "true-colour"),
            _generic_bands(("red", "green", "blue")),
        ),
        SensorSpec(
            "rgbnir",
            "Generic 4-band RGB+NIR image (band order red, green, blue, nir), broad nominal bands.",
            ("RGBNIR", "RGBN", "RGB+NIR", "RGBI", "rgb-nir"),
            _generic_bands(("red", "green", "blue", "nir")),
        ),
    )


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------

SOURCES = (
    "pyrsr 0.8.0 package data (GFZ Potsdam, Apache-2.0): Sentinel-2A/2B MSI (ESA "
    "S2-SRF_COPE-GSEG-EOPG-TN-15-0007 v3.0), Landsat 4/5 TM, 7 ETM+, 8/9 OLI-TIRS (USGS/NASA RSR "
    "files), Terra/Aqua MODIS bands 1-16 (NASA OBPG RSR files).",
    "Py6S 1.9.2 PredefinedWavelengths (LGPL-3.0), 2.5 nm grid: Sentinel-3A/3B SLSTR S1-S6 and "
    "OLCI Oa01-Oa21.",
    "Nominal values (no curve available) documented per band in 'source' and in "
    "scripts/build_sensor_catalogue.py: ESA SLSTR user guide (S7-S9, F1, F2), NASA MODIS "
    "specifications (bands 17-36), Planet PlanetScope product specifications (Dove Classic, "
    "Dove-R, SuperDove), SEnSeI paper table (PerúSat-1), broad generic bands (rgb, rgbnir).",
    "Thermal constants: Landsat MTL files / Chander et al. 2009 (K1, K2); SEnSeI paper "
    "normalisation range (bt_min_k, bt_max_k; Landsat 7 and 8 only).",
)

METHOD = (
    "wl_min_nm / wl_max_nm: FWHM edges (first/last wavelength with response >= 0.5 x peak, "
    "linear interpolation); wl_center_nm: response-weighted centroid over the in-band region "
    "(contiguous response >= 0.01 x peak around the peak); nm, rounded to 0.1. Nominal bands: "
    "published edges, centre = published centre or midpoint."
)


def _norm(name: str) -> str:
    """Same normalisation as the package's lookups (kept in sync by tests)."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in stripped.casefold() if c not in "-_ ")


def _dedupe(items: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Drop repeated spellings (and those equal to ``exclude``), keeping the first order.

    Spellings that only differ in case or separators are kept on purpose: the JSON documents how
    providers write the ids, while lookups normalise them anyway.
    """
    seen = set(exclude)
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


class _Curves:
    """Lazy access to the SRF files under ``srf_dir``."""

    def __init__(self, srf_dir: Path) -> None:
        self.srf_dir = srf_dir
        self._py6s: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def get(self, curve: Curve) -> tuple[np.ndarray, np.ndarray]:
        if curve.source == "pyrsr":
            return read_pyrsr_band(self.srf_dir / PYRSR / curve.key)
        if curve.source == "py6s":
            if self._py6s is None:
                self._py6s = read_py6s_table(self.srf_dir / PY6S_CSV)
            return self._py6s[curve.key]
        raise ValueError(f"unknown curve source {curve.source!r}")


def _band_record(spec: BandSpec, curves: _Curves) -> dict[str, Any]:
    if isinstance(spec.spectral, Curve):
        lo, centre, hi = band_wavelengths(*curves.get(spec.spectral))
        path = (
            PYRSR + "/" + spec.spectral.key
            if spec.spectral.source == "pyrsr"
            else (f"{PY6S_CSV}:{spec.spectral.key}")
        )
        source = f"srf: {path}" + (f" ({spec.spectral.note})" if spec.spectral.note else "")
    else:
        nom = spec.spectral
        lo, hi = nom.lo, nom.hi
        centre = nom.centre if nom.centre is not None else (lo + hi) / 2
        lo, centre, hi = round(lo, 1), round(centre, 1), round(hi, 1)
        source = nom.source
    if not lo < centre < hi:
        raise ValueError(f"band {spec.name}: expected min < centre < max, got {lo}, {centre}, {hi}")
    return {
        "name": spec.name,
        "aliases": _dedupe(spec.aliases, exclude=[spec.name]),
        "common_name": spec.common_name,
        "wl_min_nm": float(lo),
        "wl_center_nm": float(centre),
        "wl_max_nm": float(hi),
        "resolution_m": None if spec.resolution_m is None else float(spec.resolution_m),
        "kind": spec.kind,
        "k1": spec.k1,
        "k2": spec.k2,
        "bt_min_k": spec.bt_min_k,
        "bt_max_k": spec.bt_max_k,
        "source": source,
    }


def _check_unique(sensors: list[dict[str, Any]]) -> None:
    """Sensor aliases must be unique across sensors; band keys unique within a sensor."""
    owner: dict[str, str] = {}
    for sensor in sensors:
        for key in {_norm(x) for x in [sensor["name"], *sensor["aliases"]]}:
            if key in owner:
                raise ValueError(f"sensor alias {key!r} used by {owner[key]} and {sensor['name']}")
            owner[key] = sensor["name"]
        band_owner: dict[str, str] = {}
        for band in sensor["bands"]:
            for key in {_norm(x) for x in [band["name"], *band["aliases"]]}:
                if key in band_owner:
                    raise ValueError(
                        f"{sensor['name']}: band key {key!r} used by {band_owner[key]} "
                        f"and {band['name']}"
                    )
                band_owner[key] = band["name"]


def build_catalogue(srf_dir: Path | str) -> dict[str, Any]:
    """Derive the whole catalogue (a JSON-ready dict) from the SRF directory."""
    srf_dir = Path(srf_dir)
    if not (srf_dir / PYRSR).is_dir() or not (srf_dir / PY6S_CSV).is_file():
        raise FileNotFoundError(f"{srf_dir} does not contain {PYRSR}/ and {PY6S_CSV}")
    curves = _Curves(srf_dir)
    sensors = []
    for spec in sensor_specs():
        sensors.append(
            {
                "name": spec.name,
                "description": spec.description,
                "aliases": _dedupe(spec.aliases, exclude=[spec.name]),
                "bands": [_band_record(b, curves) for b in spec.bands],
            }
        )
    _check_unique(sensors)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_by": (
            "scripts/build_sensor_catalogue.py "
            "(python scripts/build_sensor_catalogue.py --srf-dir ../shared/data/srf); "
            "do not edit by hand"
        ),
        "method": METHOD,
        "sources": list(SOURCES),
        "sensors": sensors,
    }


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with one band per line block and lists of scalars kept on one line (diff-friendly)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [
            f"{pad}  {json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1)}"
            for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list):
        if all(not isinstance(x, dict | list) for x in obj):
            return "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in obj) + "]"
        items = [f"{pad}  {dumps(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--srf-dir", type=Path, default=DEFAULT_SRF_DIR, help="SRF data folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON to write")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the JSON is out of date"
    )
    args = parser.parse_args(argv)

    text = dumps(build_catalogue(args.srf_dir)) + "\n"
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; rerun without --check", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    n = len(json.loads(text)["sensors"])
    print(f"wrote {args.output} ({n} sensors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
