"""The ``.sensei`` accessor: a thin layer over :func:`xsensei.api.cloudmask`.

Registered on ``import xsensei`` for DataArray (``(band, y, x)`` or ``(time, band, y, x)``) and
Dataset (one variable per band, odc-stac style).
"""

from __future__ import annotations

from typing import Any

import xarray as xr


class _SenseiAccessor:
    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def cloudmask(self, descriptors: Any = None, **kwargs: Any) -> xr.DataArray:
        """Lazy cloud mask on this object's grid; see :func:`xsensei.cloudmask` for options."""
        from xsensei.api import cloudmask

        return cloudmask(self._obj, descriptors, **kwargs)  # type: ignore[return-value]

    def bands(self, descriptors: Any = None, **kwargs: Any) -> Any:
        """The band wavelengths xsensei would use, and where each came from (for checking)."""
        from xsensei.band_metadata import resolve_bands

        return resolve_bands(self._obj, descriptors=descriptors, **kwargs)

    def quicklook(self, mask: xr.DataArray, **kwargs: Any) -> Any:
        """RGB composite with ``mask`` overlaid (matplotlib Axes)."""
        from xsensei.plot import quicklook

        return quicklook(self._obj, mask, **kwargs)


@xr.register_dataarray_accessor("sensei")
class SenseiDataArrayAccessor(_SenseiAccessor):
    """``da.sensei.cloudmask()`` and friends."""


@xr.register_dataset_accessor("sensei")
class SenseiDatasetAccessor(_SenseiAccessor):
    """``ds.sensei.cloudmask()`` for a Dataset of one variable per band."""
