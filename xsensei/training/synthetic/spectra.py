"""Spectra on one common wavelength grid: real land spectra, hand-written models, atmosphere.

Everything reflective lives on :data:`GRID_NM` (350-2500 nm, 10 nm) so that a scene's few
endmember spectra can be band-integrated once per band set (band integration is linear) and the
image formed afterwards in band space. Sources:

- Land surfaces (soil, vegetation canopies, urban materials, non-photosynthetic vegetation,
  burn scars, sand/gravel): the 7,261-spectrum library shipped inside the PyPI package
  ``earthlib`` (MIT), read straight from its package data (no import, no network). Without
  earthlib, simple parametric stand-ins are used (see :func:`parametric_land`).
- Water (clear/turbid), snow (grain size), ice, sand and salt flats: models written here. Snow and
  cloud shapes are a handful of values read off the reference curves (ASTER snow spectra and the
  water/ice cloud reflectance of Kokhanovsky 2004, Earth-Sci. Rev. 64) at coarse wavelengths.
  Water uses the pure-water absorption coefficient (Pope & Fry 1997; Kou et al. 1993 above
  700 nm) in a Gordon-type ``R ~ 0.33 bb / (a + bb)`` model.
- Gas absorption: coarse water-vapour (720/820/940/1135/1380/1870 nm), O2-A and CO2 tables whose
  magnitude reproduces what sensors see (S2 B09 ~ 0.4 transmission for 2 cm, 1375 nm opaque below
  ~5 km); thermal bands get a window/absorption table used through brightness temperature.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "GRID_NM",
    "SURFACE_CLASSES",
    "SpectralLibrary",
    "cloud_shape",
    "gas_optical_depth",
    "ice_spectrum",
    "load_library",
    "salt_spectrum",
    "sand_spectrum",
    "snow_spectrum",
    "solar_weight",
    "thermal_absorption",
    "water_spectrum",
]

#: Common wavelength grid (nm) of every reflective spectrum: 350-2500 nm at 10 nm.
GRID_NM: NDArray[np.float64] = np.arange(350.0, 2501.0, 10.0)

#: Surface classes of the per-pixel class map (index = code).
SURFACE_CLASSES: tuple[str, ...] = (
    "vegetation",
    "soil",
    "urban",
    "npv",
    "burn",
    "sand",
    "salt",
    "water",
    "turbid_water",
    "snow",
    "ice",
)
CLASS = {name: i for i, name in enumerate(SURFACE_CLASSES)}


def _on_grid(wl: ArrayLike, values: ArrayLike) -> NDArray[np.float64]:
    """Linear interpolation onto :data:`GRID_NM`, constant beyond the tabulated ends."""
    return np.interp(GRID_NM, np.asarray(wl, float), np.asarray(values, float))


# --------------------------------------------------------------------------------------------
# clouds: reflectance of a thick water / ice cloud (Kokhanovsky 2004), read at coarse points.
# fmt: off
_CLOUD_WL = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1350, 1400, 1450, 1500,
             1600, 1700, 1800, 1850, 1900, 1950, 2000, 2050, 2150, 2250, 2350, 2450, 2500)
_CLOUD_WATER = (0.626, 0.629, 0.633, 0.638, 0.642, 0.644, 0.644, 0.652, 0.638, 0.642, 0.616,
                0.535, 0.363, 0.420, 0.549, 0.588, 0.549, 0.538, 0.300, 0.170, 0.230, 0.325,
                0.438, 0.463, 0.403, 0.285, 0.225)
_CLOUD_ICE = (0.608, 0.614, 0.620, 0.625, 0.630, 0.637, 0.640, 0.643, 0.642, 0.634, 0.637,
              0.633, 0.531, 0.328, 0.408, 0.489, 0.537, 0.552, 0.498, 0.294, 0.201, 0.218,
              0.382, 0.516, 0.440, 0.368, 0.340)

# fmt: on


@cache
def cloud_shape(phase: str) -> NDArray[np.float64]:
    """Cloud reflectance shape, normalised to 1 in the visible (phase 'water' or 'ice').

    The dips at 1.45/1.5, 1.95-2.0 um are droplet/crystal absorption: what separates cloud from
    snow (snow is far darker there) and water from ice clouds. Brightness comes from tau.
    """
    values = _CLOUD_WATER if phase == "water" else _CLOUD_ICE
    shape = _on_grid(_CLOUD_WL, values)
    return shape / shape[(GRID_NM >= 450) & (GRID_NM <= 650)].mean()


# --------------------------------------------------------------------------------------------
# snow and ice
# fmt: off
_SNOW_WL = (400, 500, 600, 700, 800, 900, 1000, 1030, 1100, 1200, 1260, 1300, 1350, 1400,
            1450, 1500, 1600, 1700, 1800, 1850, 1900, 1950, 2000, 2050, 2150, 2250, 2350,
            2450, 2500)
# ASTER fine / medium / granular snow (reflectance 0-1), read at _SNOW_WL.
_SNOW = (
    (0.988, 0.991, 0.987, 0.968, 0.946, 0.912, 0.839, 0.818, 0.848, 0.650, 0.648, 0.652, 0.657,
     0.610, 0.173, 0.085, 0.153, 0.284, 0.370, 0.392, 0.154, 0.054, 0.035, 0.046, 0.157, 0.279,
     0.095, 0.066, 0.056),
    (0.980, 0.984, 0.975, 0.949, 0.901, 0.840, 0.725, 0.683, 0.729, 0.550, 0.445, 0.449, 0.444,
     0.390, 0.049, 0.016, 0.036, 0.095, 0.156, 0.178, 0.037, 0.009, 0.005, 0.007, 0.038, 0.096,
     0.025, 0.017, 0.015),
    (0.970, 0.976, 0.964, 0.925, 0.858, 0.774, 0.609, 0.573, 0.627, 0.415, 0.303, 0.308, 0.307,
     0.251, 0.017, 0.005, 0.012, 0.037, 0.071, 0.084, 0.012, 0.003, 0.002, 0.002, 0.012, 0.037,
     0.018, 0.015, 0.014),
)

# fmt: on


@cache
def _snow_table() -> NDArray[np.float64]:
    return np.log(np.maximum(np.stack([_on_grid(_SNOW_WL, s) for s in _SNOW]), 1e-4))


def snow_spectrum(grain: float, brightness: float = 1.0, impurity: float = 0.0) -> NDArray:
    """Snow reflectance for a grain-size index in [0, 2] (0 fine, 1 medium, 2 granular/old).

    Interpolates the three reference spectra in log reflectance (absorption scales with grain
    size). ``impurity`` (0-1) darkens the blue/visible as soot and dust do; ``brightness``
    scales the whole spectrum (illumination, surface roughness).
    """
    table = _snow_table()
    g = float(np.clip(grain, 0.0, 2.0))
    i = min(int(g), 1)
    t = g - i
    spec = np.exp(table[i] * (1 - t) + table[i + 1] * t)
    if impurity > 0:
        vis = np.clip((900.0 - GRID_NM) / 500.0, 0.0, 1.0)
        spec = spec * (1.0 - 0.35 * impurity * vis)
    return spec * brightness


def ice_spectrum(darkness: float, brightness: float) -> NDArray[np.float64]:
    """Bare glacier / sea ice: bluish, darker than snow, near-black beyond 1.4 um.

    Written as coarse-grained snow raised to a power (longer photon paths in solid ice) with a
    blue tint; ``darkness`` in [1.2, 2.5] controls how fast the NIR falls.
    """
    base = np.exp(_snow_table()[2] * darkness)
    tint = 1.0 - 0.25 * np.clip((GRID_NM - 450.0) / 300.0, 0.0, 1.0)
    return np.clip(base * tint * brightness, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# water: Gordon-type model with tabulated pure-water absorption (1/m)
# fmt: off
_AW_WL = (350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950, 1000, 1100, 1200,
          1500, 2500)
_AW = (0.02, 0.0066, 0.0092, 0.0257, 0.0565, 0.2224, 0.34, 0.65, 2.47, 2.07, 4.3, 6.8, 28.0,
       36.0, 20.0, 100.0, 2000.0, 2000.0)

# fmt: on


def water_spectrum(
    chlorophyll: float, sediment: float, cdom: float, surface: float
) -> NDArray[np.float64]:
    """Water reflectance from constituents: chlorophyll (mg/m3), sediment backscatter (1/m).

    ``R = surface + 0.5 * 0.33 bb / (a + bb)``: pure water absorbs strongly beyond 700 nm, so
    even turbid water stays below ~0.05 in the NIR while its green/red rise with sediment.
    ``surface`` is the (spectrally flat) Fresnel/sky reflection, ~0.005-0.02.
    """
    wl = GRID_NM
    aw = np.exp(np.interp(wl, _AW_WL, np.log(_AW)))
    # phytoplankton absorption: peaks at 440 and 675 nm
    shape = 0.9 * np.exp(-(((wl - 440) / 45) ** 2)) + 0.5 * np.exp(-(((wl - 675) / 15) ** 2))
    shape += 0.15 * np.exp(-(((wl - 540) / 80) ** 2))
    a_ph = 0.06 * max(chlorophyll, 0.0) ** 0.65 * shape
    a_cdom = cdom * np.exp(-0.015 * (wl - 440.0))
    a_sed = 0.05 * sediment * np.exp(-0.011 * (wl - 440.0))
    bbw = 0.0019 * (550.0 / wl) ** 4.3
    bbp = (0.002 * max(chlorophyll, 0.0) ** 0.6 + sediment) * (550.0 / wl) ** 0.8
    bb = bbw + bbp
    r = 0.33 * bb / (aw + a_ph + a_cdom + a_sed + bb)
    return surface + 0.5 * r


# --------------------------------------------------------------------------------------------
# sand and salt / gypsum flats
def sand_spectrum(level: float, redness: float) -> NDArray[np.float64]:
    """Quartz sand: bright, rising through the visible (iron oxides), flat NIR/SWIR.

    ``level`` is the NIR plateau (0.3-0.6), ``redness`` (0-1) how steeply the blue is cut.
    Weak hydroxyl/clay features at 1.4, 1.9 and 2.2 um.
    """
    wl = GRID_NM
    rise = 1.0 / (1.0 + np.exp(-(wl - (520.0 + 60.0 * redness)) / (40.0 + 30.0 * redness)))
    spec = level * (0.35 + 0.65 * rise) * (1.0 + 0.05 * (wl - 1000.0) / 1500.0)
    for centre, width, depth in ((1410, 25, 0.06), (1910, 30, 0.1), (2205, 25, 0.07)):
        spec *= 1.0 - depth * np.exp(-(((wl - centre) / width) ** 2))
    return spec


def salt_spectrum(level: float, gypsum: float) -> NDArray[np.float64]:
    """Salt pan / playa: near-white and flat (cloud-like in the visible), SWIR hydration dips.

    ``gypsum`` (0-1) deepens the 1.45/1.75/1.94/2.2 um bound-water features; halite is flat.
    Unlike cloud and snow it stays bright at 1.6 um: a true confounder only spatial context or
    thermal bands settle.
    """
    wl = GRID_NM
    spec = level * (1.0 - 0.12 * np.clip((wl - 1000.0) / 1500.0, 0.0, 1.0))
    spec *= 1.0 - 0.1 * np.clip((450.0 - wl) / 100.0, 0.0, 1.0)
    features = ((1450, 40, 0.15), (1750, 20, 0.06), (1940, 40, 0.3), (2215, 30, 0.1))
    for centre, width, depth in features:
        spec *= 1.0 - (0.1 + 0.9 * gypsum) * depth * np.exp(-(((wl - centre) / width) ** 2))
    return spec


# --------------------------------------------------------------------------------------------
# fallback land models (used only without earthlib)
def parametric_land(kind: str, rng: np.random.Generator) -> NDArray[np.float64]:
    """Crude vegetation / soil / urban / npv / burn spectra, for installs without earthlib."""
    wl = GRID_NM
    swir_water = np.exp(-(((wl - 1450) / 60) ** 2)) + 1.3 * np.exp(-(((wl - 1940) / 70) ** 2))
    if kind == "vegetation":
        nir = rng.uniform(0.25, 0.55)
        edge = 1.0 / (1.0 + np.exp(-(wl - rng.uniform(705, 725)) / 12.0))
        green = 0.03 + rng.uniform(0.02, 0.06) * np.exp(-(((wl - 550) / 35) ** 2))
        spec = green * (1 - edge) + nir * edge * (1.0 - 0.45 * np.clip((wl - 1300) / 1200, 0, 1))
        spec *= 1.0 - 0.6 * swir_water
    elif kind in ("soil", "sand"):
        level = rng.uniform(0.15, 0.45)
        spec = level * (0.3 + 0.7 * np.clip((wl - 350) / 900, 0, 1) ** 0.6)
        spec *= 1.0 - 0.3 * swir_water - 0.1 * np.exp(-(((wl - 2200) / 30) ** 2))
    elif kind == "npv":
        spec = rng.uniform(0.2, 0.4) * (0.3 + 0.7 * np.clip((wl - 400) / 1300, 0, 1))
        spec *= 1.0 - 0.2 * swir_water - 0.2 * np.exp(-(((wl - 2100) / 40) ** 2))
    elif kind == "burn":
        spec = rng.uniform(0.03, 0.08) * (1.0 + 1.5 * np.clip((wl - 400) / 2000, 0, 1))
    else:  # urban
        spec = np.full_like(wl, rng.uniform(0.06, 0.3)) * (1 + rng.uniform(-0.2, 0.3) * wl / 2500)
    return np.clip(spec, 0.005, 1.0)


# --------------------------------------------------------------------------------------------
# earthlib
_EARTHLIB_CLASSES = {
    ("pervious", "vegetation"): "vegetation",
    ("pervious", "bare", "soil"): "soil",
    ("pervious", "bare", "sand"): "sand",
    ("pervious", "bare", "gravel"): "sand",
    ("pervious", "bare", "dirt"): "soil",
    ("pervious", "npv"): "npv",
    ("pervious", "burned"): "burn",
    ("impervious",): "urban",
}


@dataclass(frozen=True)
class SpectralLibrary:
    """Land spectra on :data:`GRID_NM`, grouped by surface class (row indices per class)."""

    spectra: NDArray[np.float32]  # (M, L)
    groups: dict[str, NDArray[np.intp]]
    source: str

    def draw(self, rng: np.random.Generator, kind: str) -> NDArray[np.float64]:
        """One random spectrum of a class (uniform within the class)."""
        if self.source == "parametric" or kind not in self.groups:
            return parametric_land(kind, rng)
        rows = self.groups[kind]
        return self.spectra[rows[rng.integers(len(rows))]].astype(np.float64)


def _earthlib_dir() -> str | None:
    """Package-data folder of earthlib, found without importing it (its import is slow)."""
    try:
        spec = importlib.util.find_spec("earthlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data")
    return path if os.path.isfile(os.path.join(path, "spectra.sli")) else None


def _header_wavelengths_nm(header_path: str) -> NDArray[np.float64]:
    with open(header_path, encoding="utf-8") as fh:
        text = fh.read()
    body = text.split("wavelength =", 1)[1].split("{", 1)[1].split("}", 1)[0]
    wl = np.array([float(v) for v in body.split(",")])
    units = text.split("wavelength units", 1)[1].split("\n", 1)[0].lower()
    return wl * 1000.0 if "micro" in units or wl.max() < 100 else wl


def _read_earthlib(data_dir: str) -> SpectralLibrary:
    wl = _header_wavelengths_nm(os.path.join(data_dir, "spectra.sli.hdr"))
    with open(os.path.join(data_dir, "spectra.csv"), encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    raw = np.fromfile(os.path.join(data_dir, "spectra.sli"), dtype="<f4")
    raw = raw.reshape(len(rows), wl.size).astype(np.float64)
    # linear interpolation matrix (gaps at 1.36-1.45 and 1.8-1.95 um are bridged; the
    # atmosphere removes those wavelengths anyway), constant beyond the measured range
    pos = np.interp(GRID_NM, wl, np.arange(wl.size, dtype=float))
    lo = np.floor(pos).astype(int).clip(0, wl.size - 2)
    t = pos - lo
    interp = np.zeros((GRID_NM.size, wl.size))
    interp[np.arange(GRID_NM.size), lo] = 1.0 - t
    interp[np.arange(GRID_NM.size), lo + 1] += t
    spectra = np.clip(raw @ interp.T, 0.0, 1.2).astype(np.float32)
    kinds: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        levels = (row["LEVEL_1"], row["LEVEL_2"], row["LEVEL_3"])
        for n in (3, 2, 1):
            kind = _EARTHLIB_CLASSES.get(levels[:n])
            if kind is not None:
                kinds.setdefault(kind, []).append(i)
                break
    groups = {k: np.asarray(v, dtype=np.intp) for k, v in kinds.items()}
    return SpectralLibrary(spectra=spectra, groups=groups, source="earthlib")


@cache
def load_library(source: str = "auto") -> SpectralLibrary:
    """The land spectral library: earthlib's package data, or parametric stand-ins.

    ``source``: 'earthlib' (error if missing), 'parametric', or 'auto' (earthlib when
    installed). Read once per process (~0.1 s).
    """
    if source not in ("auto", "earthlib", "parametric"):
        raise ValueError(f"unknown spectral library source {source!r}")
    data_dir = None if source == "parametric" else _earthlib_dir()
    if data_dir is None:
        if source == "earthlib":
            raise ImportError("earthlib is not installed: pip install earthlib")
        return SpectralLibrary(np.zeros((0, GRID_NM.size), np.float32), {}, "parametric")
    return _read_earthlib(data_dir)


# --------------------------------------------------------------------------------------------
# atmosphere: gas absorption (vertical optical depth, per cm precipitable water for H2O)
# fmt: off
_H2O_TABLE = (
    (350, 0.0), (700, 0.0), (715, 0.02), (725, 0.04), (735, 0.01), (800, 0.0), (815, 0.03),
    (825, 0.04), (835, 0.01), (880, 0.0), (900, 0.04), (910, 0.08), (920, 0.15), (930, 0.25),
    (940, 0.3), (950, 0.28), (960, 0.18), (970, 0.08), (980, 0.03), (995, 0.0), (1090, 0.02),
    (1110, 0.12), (1120, 0.3), (1130, 0.45), (1140, 0.45), (1150, 0.3), (1160, 0.15),
    (1170, 0.06), (1185, 0.0), (1290, 0.0), (1300, 0.02), (1320, 0.1), (1340, 0.6),
    (1350, 1.5), (1360, 4.0), (1370, 8.0), (1380, 10.0), (1390, 10.0), (1400, 9.0),
    (1410, 6.0), (1420, 4.0), (1430, 2.5), (1440, 1.5), (1450, 1.0), (1460, 0.6),
    (1470, 0.35), (1480, 0.2), (1500, 0.08), (1520, 0.03), (1560, 0.0), (1760, 0.0),
    (1780, 0.05), (1800, 0.3), (1820, 1.5), (1840, 4.0), (1860, 8.0), (1880, 10.0),
    (1900, 8.0), (1920, 5.0), (1940, 3.0), (1960, 1.5), (1980, 0.6), (2000, 0.3), (2050, 0.1),
    (2100, 0.0), (2400, 0.0), (2450, 0.05), (2500, 0.3),
)
# well-mixed gases (vertical optical depth at sea level): O2-A, O2 1.27 um, CO2 2.0/2.06 um,
# ozone Chappuis band
_MIXED_TABLE = (
    (350, 0.0), (500, 0.01), (600, 0.03), (700, 0.01), (750, 0.0), (760, 1.0), (770, 0.25),
    (780, 0.0), (1260, 0.0), (1270, 0.05), (1280, 0.0), (1990, 0.0), (2000, 0.1), (2010, 0.2),
    (2030, 0.05), (2050, 0.15), (2060, 0.2), (2070, 0.05), (2090, 0.0), (2300, 0.0),
    (2320, 0.03), (2350, 0.03), (2380, 0.0), (2500, 0.0),
)

# fmt: on


@cache
def gas_optical_depth() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(water vapour per cm, well-mixed gases) vertical optical depth on :data:`GRID_NM`."""
    h2o = np.array(_H2O_TABLE, dtype=float)
    mixed = np.array(_MIXED_TABLE, dtype=float)
    return np.interp(GRID_NM, h2o[:, 0], h2o[:, 1]), np.interp(GRID_NM, mixed[:, 0], mixed[:, 1])


@cache
def solar_weight() -> NDArray[np.float64]:
    """Solar spectral irradiance shape on the grid (5778 K black body, relative).

    Band-averaged reflectance is irradiance-weighted; a black body is close enough for that.
    """
    wl_m = GRID_NM * 1e-9
    c2 = 1.4388e-2
    e = 1.0 / (wl_m**5 * np.expm1(c2 / (wl_m * 5778.0)))
    return e / e.max()


# --------------------------------------------------------------------------------------------
# thermal: vertical absorption optical depth at 2 cm water vapour and its scale height (km)
# fmt: off
_THERMAL_TABLE = (  # (um, optical depth, scale height km)
    (3.0, 3.0, 2.0), (3.4, 0.3, 2.0), (3.7, 0.08, 2.0), (3.95, 0.1, 2.0), (4.1, 1.0, 8.0),
    (4.3, 20.0, 8.0), (4.5, 3.0, 8.0), (4.8, 1.0, 2.0), (5.5, 5.0, 2.0), (6.2, 15.0, 2.0),
    (6.7, 20.0, 2.0), (7.3, 6.0, 2.0), (7.8, 1.5, 2.0), (8.5, 0.25, 2.0), (9.0, 0.2, 2.0),
    (9.6, 0.8, 8.0), (10.2, 0.15, 2.0), (11.0, 0.12, 2.0), (12.0, 0.2, 2.0), (12.8, 0.35, 2.0),
    (13.3, 0.8, 8.0), (13.6, 1.5, 8.0), (13.9, 3.0, 8.0), (14.2, 5.0, 8.0), (15.0, 10.0, 8.0),
)

# fmt: on


def thermal_absorption(centre_nm: float) -> tuple[float, float]:
    """(optical depth at 2 cm water vapour, absorber scale height km) for a thermal band.

    Window bands (8-12 um) are nearly transparent; 6.7 um water vapour and 4.3 / 13-15 um CO2
    bands see only the upper atmosphere, so there a high cloud is what changes the signal.
    """
    table = np.array(_THERMAL_TABLE)
    um = centre_nm / 1000.0
    depth = float(np.exp(np.interp(um, table[:, 0], np.log(table[:, 1]))))
    height = float(np.interp(um, table[:, 0], table[:, 2]))
    return depth, height
