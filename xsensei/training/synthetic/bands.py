"""Band sets and band integration: from spectra on the common grid to band values.

A :class:`BandSet` is what SEnSeI sees of a sensor: names, [min, centre, max] wavelengths, kinds
(reflective / thermal) and, for thermal bands, the brightness-temperature range used to
normalise them. Reflective bands are integrated against a response curve weighted by solar
irradiance:

- catalogue sensors whose band was measured (Sentinel-2, Landsat 4-9, MODIS 1-16): the official
  curve from the PyPI package ``pyrsr`` when it is installed (its package data, read directly);
- everything else (no pyrsr, nominal bands, random bands): a flat-topped super-Gaussian
  ``exp(-ln2 ((lambda - mid) / half_width)^4)`` through the FWHM edges ``wl_min``/``wl_max``.

:func:`band_weights` says which one each band got. Weights sum to one, so a constant spectrum
integrates to that constant.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsensei.descriptors import encode_wavelengths, validate_wavelengths
from xsensei.radiometry import DEFAULT_BT_RANGE_K
from xsensei.sensors import get_sensor
from xsensei.training.synthetic.spectra import GRID_NM, solar_weight

__all__ = ["BandSet", "band_weights", "random_bandset", "sensor_bandset"]

_KINDS = ("reflective", "thermal")
_FINE_NM = np.arange(GRID_NM[0], GRID_NM[-1] + 0.5, 1.0)


@dataclass(frozen=True, eq=False)
class BandSet:
    """The bands of one (real or made-up) sensor, in the order the image stacks them.

    ``wavelengths_nm`` is ``(N, 3)`` [min, centre, max] nm (FWHM edges and centre), the triple
    SEnSeI's descriptors are built from. ``bt_range_k`` ``(N, 2)`` is the brightness-temperature
    range mapping thermal bands to 0-1 (the inference engine's normalisation; ignored for
    reflective bands). ``srf`` names an official response curve per band (``"pyrsr:<path>"``)
    or ``None`` for the synthetic flat-top shape.
    """

    names: tuple[str, ...]
    wavelengths_nm: NDArray[np.float64]
    kinds: tuple[str, ...]
    bt_range_k: NDArray[np.float64] | None = None
    srf: tuple[str | None, ...] | None = None
    _key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nm = validate_wavelengths(self.wavelengths_nm).reshape(-1, 3)
        n = nm.shape[0]
        names = tuple(str(v) for v in self.names)
        kinds = tuple(str(v) for v in self.kinds)
        if len(names) != n or len(kinds) != n:
            raise ValueError(f"{n} bands but {len(names)} names and {len(kinds)} kinds")
        bad = [k for k in kinds if k not in _KINDS]
        if bad:
            raise ValueError(f"band kinds must be one of {_KINDS}, got {bad[0]!r}")
        if self.bt_range_k is None:
            bt = np.tile(np.asarray(DEFAULT_BT_RANGE_K, dtype=float), (n, 1))
        else:
            bt = np.asarray(self.bt_range_k, dtype=float).reshape(n, 2)
        srf = (None,) * n if self.srf is None else tuple(self.srf)
        if len(srf) != n:
            raise ValueError(f"{n} bands but {len(srf)} srf entries")
        nm.flags.writeable = False
        bt.flags.writeable = False
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "wavelengths_nm", nm)
        object.__setattr__(self, "bt_range_k", bt)
        object.__setattr__(self, "srf", srf)
        key = (names, nm.round(4).tobytes(), kinds, bt.round(4).tobytes(), srf)
        object.__setattr__(self, "_key", key)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BandSet) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def key(self) -> tuple:
        """Hashable identity (for caches and seeding)."""
        return self._key

    @property
    def is_thermal(self) -> NDArray[np.bool_]:
        """Per-band mask of thermal (brightness-temperature) bands."""
        return np.array([k == "thermal" for k in self.kinds], dtype=bool)

    def descriptors(self) -> NDArray[np.float32]:
        """SEnSeI descriptors: ``log10(nm - 300) - 2`` of the (N, 3) wavelengths."""
        return encode_wavelengths(self.wavelengths_nm)

    def subset(self, indices: Sequence[int] | ArrayLike) -> BandSet:
        """The bands at ``indices``, in that order (for random band-subset training)."""
        idx = [int(i) for i in np.asarray(indices).ravel()]
        assert self.bt_range_k is not None and self.srf is not None
        return BandSet(
            names=tuple(self.names[i] for i in idx),
            wavelengths_nm=self.wavelengths_nm[idx],
            kinds=tuple(self.kinds[i] for i in idx),
            bt_range_k=self.bt_range_k[idx],
            srf=tuple(self.srf[i] for i in idx),
        )


def _pyrsr_data_dir() -> str | None:
    """pyrsr's package-data folder, found without importing pyrsr (it imports pandas)."""
    try:
        spec = importlib.util.find_spec("pyrsr")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data")
    return path if os.path.isdir(path) else None


def _srf_id(source: str | None) -> str | None:
    """``"pyrsr:<relative path>"`` when the catalogue's curve ships with installed pyrsr."""
    if not source or "pyrsr" not in source or "/data/" not in source:
        return None
    data_dir = _pyrsr_data_dir()
    if data_dir is None:
        return None
    rel = source.split("/data/", 1)[1].split()[0]
    return f"pyrsr:{rel}" if os.path.isfile(os.path.join(data_dir, rel)) else None


def sensor_bandset(sensor: str, bands: Sequence[str] | None = None) -> BandSet:
    """The catalogue sensor's bands (all, or ``bands`` by name/alias, in that order).

    Thermal bands carry the catalogue's BT range where known (Landsat 7/8), else the
    inference default, so synthetic thermal values match what the engine feeds the model.
    """
    info = get_sensor(sensor)
    chosen = list(info.bands) if bands is None else [info.band(b) for b in bands]
    bt = [
        (b.bt_min_k, b.bt_max_k)
        if b.bt_min_k is not None and b.bt_max_k is not None
        else DEFAULT_BT_RANGE_K
        for b in chosen
    ]
    return BandSet(
        names=tuple(b.name for b in chosen),
        wavelengths_nm=np.array([b.wavelengths_nm for b in chosen], dtype=float),
        kinds=tuple("thermal" if b.is_thermal else "reflective" for b in chosen),
        bt_range_k=np.array(bt, dtype=float),
        srf=tuple(_srf_id(b.source) if not b.is_thermal else None for b in chosen),
    )


def random_bandset(
    rng: np.random.Generator,
    n: int,
    *,
    thermal_prob: float = 0.1,
    centre_range_nm: tuple[float, float] = (400.0, 2400.0),
    width_range_nm: tuple[float, float] = (10.0, 200.0),
    thermal_centre_range_nm: tuple[float, float] = (8000.0, 13000.0),
    thermal_width_range_nm: tuple[float, float] = (300.0, 1200.0),
    mwir_prob: float = 0.0,
    mwir_centre_range_nm: tuple[float, float] = (3500.0, 4100.0),
    mwir_width_range_nm: tuple[float, float] = (100.0, 400.0),
) -> BandSet:
    """``n`` made-up bands so the model learns wavelengths, not a sensor's band list.

    Reflective centres are uniform in ``centre_range_nm``, widths log-uniform in
    ``width_range_nm``; each band is thermal with ``thermal_prob`` (8-13 um, 0.3-1.2 um wide
    like real thermal channels). Thermal bands use the default BT range. A thermal band is a
    mid-infrared one (3.5-4.1 um, 0.1-0.4 um wide, reflected sunlight plus emission, like
    SLSTR S7 or MODIS 20-23) with ``mwir_prob``: without them the model meets a 3.7 um band
    only in MODIS subsets and mistakes it for a long-wave channel. ``mwir_prob=0`` draws
    exactly the band sets of earlier versions (no extra random number is taken).
    """
    wl, kinds = [], []
    for _ in range(n):
        if rng.random() < thermal_prob:
            if mwir_prob > 0 and rng.random() < mwir_prob:
                centre = rng.uniform(*mwir_centre_range_nm)
                width = rng.uniform(*mwir_width_range_nm)
            else:
                centre = rng.uniform(*thermal_centre_range_nm)
                width = rng.uniform(*thermal_width_range_nm)
            kinds.append("thermal")
        else:
            centre = rng.uniform(*centre_range_nm)
            width = float(np.exp(rng.uniform(*np.log(width_range_nm))))
            kinds.append("reflective")
        lo = max(centre - width / 2, 360.0)
        wl.append((lo, centre, centre + width / 2))
    return BandSet(
        names=tuple(f"syn{i:02d}" for i in range(n)),
        wavelengths_nm=np.array(wl, dtype=float),
        kinds=tuple(kinds),
    )


@lru_cache(maxsize=64)
def _read_curve(srf: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    data_dir = _pyrsr_data_dir()
    if data_dir is None:
        raise FileNotFoundError("pyrsr is not installed")
    table = np.loadtxt(os.path.join(data_dir, srf.split(":", 1)[1]), skiprows=1)
    wl, resp = table[:, 0], np.clip(table[:, 1], 0.0, None)
    if wl.max() < 100.0:  # micrometres
        wl = wl * 1000.0
    order = np.argsort(wl)
    return wl[order], resp[order]


def _flat_top(lo: float, hi: float) -> NDArray[np.float64]:
    mid = 0.5 * (lo + hi)
    half = max(0.5 * (hi - lo), 0.5)
    return np.exp(-np.log(2.0) * ((_FINE_NM - mid) / half) ** 4)


@lru_cache(maxsize=1)
def _hat_matrix() -> NDArray[np.float64]:
    """(fine, grid) linear-interpolation weights: a spectrum linear between grid points."""
    pos = (_FINE_NM - GRID_NM[0]) / (GRID_NM[1] - GRID_NM[0])
    lo = np.floor(pos).astype(int).clip(0, GRID_NM.size - 2)
    t = pos - lo
    hat = np.zeros((_FINE_NM.size, GRID_NM.size))
    hat[np.arange(_FINE_NM.size), lo] = 1.0 - t
    hat[np.arange(_FINE_NM.size), lo + 1] += t
    return hat


def band_weights(bandset: BandSet) -> tuple[NDArray[np.float64], tuple[str, ...]]:
    """``(N, L)`` weights on :data:`GRID_NM` (rows sum to 1; zero rows for thermal bands).

    Returns the weights and, per band, where its response came from ('pyrsr:...',
    'flat-top FWHM' or 'thermal'). Cached per band set.
    """
    return _band_weights_cached(bandset)


@lru_cache(maxsize=256)
def _band_weights_cached(bandset: BandSet) -> tuple[NDArray[np.float64], tuple[str, ...]]:
    solar = np.interp(_FINE_NM, GRID_NM, solar_weight())
    resp = np.zeros((len(bandset), _FINE_NM.size))
    sources = []
    assert bandset.srf is not None
    for i, (kind, srf) in enumerate(zip(bandset.kinds, bandset.srf, strict=True)):
        if kind == "thermal":
            sources.append("thermal")
            continue
        if srf is not None:
            try:
                wl, values = _read_curve(srf)
                resp[i] = np.interp(_FINE_NM, wl, values, left=0.0, right=0.0)
            except (FileNotFoundError, OSError, ValueError):
                resp[i] = 0.0
        if resp[i].sum() > 0:
            sources.append(srf or "")
            continue
        lo, _, hi = np.clip(bandset.wavelengths_nm[i], _FINE_NM[0], _FINE_NM[-1])
        resp[i] = _flat_top(lo, hi)
        sources.append("flat-top FWHM")
    weights = (resp * solar) @ _hat_matrix()
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    weights.flags.writeable = False
    return weights, tuple(sources)
