"""The embedded default: a deterministic sample scene the package generates itself.

No download and no external data: ``xsensei demo`` and the quickstart use this scene.
"""

from __future__ import annotations

import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

#: Six Landsat-8/Sentinel-2-like bands: blue, green, red, nir, swir16, swir22 (nm).
DEMO_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
DEMO_WAVELENGTHS_NM = np.array(
    [[452, 482, 512], [533, 562, 590], [636, 655, 673], [851, 865, 879],
     [1567, 1609, 1651], [2107, 2201, 2294]], dtype=np.float64
)
# Typical TOA reflectance of the surfaces and of thick cloud in those bands.
_VEGETATION = np.array([0.08, 0.08, 0.05, 0.35, 0.18, 0.08])
_SOIL = np.array([0.12, 0.14, 0.18, 0.25, 0.32, 0.26])
_WATER = np.array([0.09, 0.07, 0.04, 0.02, 0.01, 0.005])
_CLOUD = np.array([0.55, 0.55, 0.56, 0.58, 0.40, 0.25])


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A spatially correlated field in [0, 1] from filtered noise (power-law spectrum)."""
    noise = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) / f**scale))
    field -= field.min()
    return field / field.max()


def demo_scene(size: int = 512, seed: int = 0, epsg: int = 32633) -> xr.DataArray:
    """A (band, y, x) TOA-reflectance scene with fields, a lake and clouds, CRS and coords.

    Deterministic for a given ``size`` and ``seed``; 30 m pixels on a UTM grid.
    """
    rng = np.random.default_rng(seed)
    land = _smooth_field(rng, size, 1.6)
    veg = _smooth_field(rng, size, 2.0)
    cloud = _smooth_field(rng, size, 2.2)
    surface = np.where(veg[..., None] > 0.5, _VEGETATION, _SOIL)
    surface = np.where(land[..., None] < 0.22, _WATER, surface)
    tau = np.clip((cloud - 0.55) / 0.25, 0, 1)[..., None]
    image = surface * (1 - tau) + _CLOUD * tau
    image = image + rng.normal(0, 0.004, image.shape)
    values = np.clip(image, 0, 1).astype(np.float32).transpose(2, 0, 1)
    x0, y0, res = 500_000.0, 5_200_000.0, 30.0
    da = xr.DataArray(
        values,
        dims=("band", "y", "x"),
        coords={
            "band": list(DEMO_BANDS),
            "y": y0 - res * (np.arange(size) + 0.5),
            "x": x0 + res * (np.arange(size) + 0.5),
            "center_wavelength": ("band", DEMO_WAVELENGTHS_NM[:, 1] / 1000),
            "full_width_half_max": ("band", np.ptp(DEMO_WAVELENGTHS_NM, axis=1) / 1000),
        },
        name="reflectance",
        attrs={"description": "xsensei synthetic demo scene (TOA reflectance)"},
    )
    return da.rio.write_crs(f"EPSG:{epsg}")
