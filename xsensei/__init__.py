"""xsensei: cloud masks for any multispectral sensor, at any scene size.

Heavy parts (torch, the models) load on first use, so ``import xsensei`` stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it; resolved lazily by ``__getattr__``.
_LAZY = {
    "cloudmask": "xsensei.api",
    "to_zarr": "xsensei.io.zarr",
    "to_cog": "xsensei.io.geotiff",
    "demo_scene": "xsensei.demo",
    "stac_to_zarr": "xsensei.stac_job",
    "stack_items": "xsensei.io.stac",
    "SEnSeI": "xsensei.nn.sensei",
    "SEnSeIConfig": "xsensei.nn.sensei",
    "CloudMaskModel": "xsensei.nn.model",
    "PixelNet": "xsensei.nn.segmenters",
    "load_model": "xsensei.weights.checkpoint",
    "save_model": "xsensei.weights.checkpoint",
    "encode_wavelengths": "xsensei.descriptors",
    "get_sensor": "xsensei.sensors",
    "list_sensors": "xsensei.sensors",
}

__all__ = ["__version__", *sorted(_LAZY)]

from xsensei import accessor as _accessor  # noqa: E402,F401  (registers .sensei)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xsensei' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
